import json

import pytest

from boshlab import wire


def test_request_is_protocol_3_with_reply_to() -> None:
    reply_to = wire.reply_subject("proc", "agent-1", "req-1")
    assert reply_to == "director.proc.agent-1.req-1"
    msg = json.loads(wire.encode_request("ping", [], reply_to))
    assert msg == {"protocol": 3, "method": "ping", "arguments": [], "reply_to": "director.proc.agent-1.req-1"}
    assert wire.request_id_of(reply_to) == "req-1"


def test_decode_request_round_trip() -> None:
    req = wire.decode_request(wire.encode_request("apply", [{"a": 1}], "director.p.a.r"))
    assert req == {"method": "apply", "arguments": [{"a": 1}], "reply_to": "director.p.a.r", "protocol": 3}


@pytest.mark.parametrize("raw, problem", [
    (b"{not json", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"method": "ping", "arguments": []}', "no reply_to"),
    (b'{"reply_to": "x", "arguments": []}', "no method"),
    (b'{"reply_to": "x", "method": "ping", "arguments": {}}', "arguments must be a JSON array"),
    (b'{"reply_to": "x", "method": "ping", "protocol": "3"}', "protocol must be an integer"),
])
def test_bad_requests_name_the_problem(raw: bytes, problem: str) -> None:
    with pytest.raises(wire.WireError, match=problem):
        wire.decode_request(raw)


def test_reply_to_of_only_when_answerable() -> None:
    assert wire.reply_to_of(b'{"reply_to": "director.a.b.c", "method": 5}') == "director.a.b.c"
    assert wire.reply_to_of(b"garbage") is None
    assert wire.reply_to_of(b'{"method": "ping"}') is None


def test_replies() -> None:
    assert json.loads(wire.encode_value("pong")) == {"value": "pong"}
    assert json.loads(wire.encode_exception("unknown message foo")) == {"exception": {"message": "unknown message foo"}}
    assert wire.decode_reply(b'{"value": "pong"}') == "pong"
    with pytest.raises(wire.AgentException, match="unknown message foo"):
        wire.decode_reply(wire.encode_exception("unknown message foo"))
    with pytest.raises(wire.WireError):
        wire.decode_reply(b'{"nothing": 1}')


def test_oversized_value_becomes_an_error_and_exceptions_are_truncated() -> None:
    big = "x" * (wire.MAX_REPLY_BYTES + 10)
    assert json.loads(wire.encode_value(big)) == {"exception": {"message": "Response exceeded maximum allowed length"}}
    out = wire.encode_exception(big)
    assert len(out) <= wire.MAX_REPLY_BYTES
    assert "TRUNCATED" in json.loads(out)["exception"]["message"]


def test_running_task_form() -> None:
    assert wire.running_task_id(wire.task_running("t1")) == "t1"
    assert wire.running_task_id({"agent_task_id": "t1", "state": "done"}) is None
    assert wire.running_task_id("applied") is None


def test_hm_subjects() -> None:
    assert wire.heartbeat_subject("a1") == "hm.agent.heartbeat.a1"
    assert wire.agent_id_of_hm_subject("hm.agent.heartbeat.a1") == "a1"
    with pytest.raises(wire.WireError):
        wire.agent_id_of_hm_subject("hm.agent")


@pytest.mark.parametrize("raw", [b"[" * 100_000 + b"]" * 100_000, b'{"a": ' * 100_000 + b"1" + b"}" * 100_000,
                                 b'{"reply_to": "r", "arguments": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"])
def test_json_nested_too_deep_is_a_wire_error_not_a_recursion_error(raw: bytes) -> None:
    with pytest.raises(wire.WireError, match="nested too deeply"):
        wire.parse_json(raw)
    with pytest.raises(wire.WireError, match="nested too deeply"):
        wire.decode_request(raw)
    with pytest.raises(wire.WireError):
        wire.decode_reply(raw)
    assert wire.reply_to_of(raw) is None


def test_every_undecodable_message_is_a_wire_error() -> None:
    for raw in (b"\xff\xfe", b'"\xff"', b"{\"a\": 1}x", b"NaN x"):
        with pytest.raises(wire.WireError, match="not JSON"):
            wire.parse_json(raw)
        assert wire.reply_to_of(raw) is None
    assert wire.MAX_REQUEST_BYTES == 1024 * 1024

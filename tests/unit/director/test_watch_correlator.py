"""The watch correlator (director/watch/correlator.py): NATS messages in, timeline events out. Pure: every
test feeds bytes with explicit times."""
from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from boshlab import wire
from boshlab.timeline import TimelineEvent, render_line
from director.watch.correlator import MAX_KEPT, MAX_SUMMARY, Correlator, Name

AGENT = "a1c3e5f7-0000-4000-8000-000000000001"
PROC = "0d1e2c3b-0000-4000-8000-00000000000f"
NAMES: dict[str, Name] = {AGENT: ("redis-solo", "redis/0", "5b0b0000-inst")}


def names(agent_id: str) -> Name | None:
    return NAMES.get(agent_id)


def request(c: Correlator, method: str, args: list[Any], req: str, ts: float,
            agent: str = AGENT) -> list[TimelineEvent]:
    reply_to = wire.reply_subject(PROC, agent, req)
    return c.feed(f"agent.{agent}", wire.encode_request(method, args, reply_to), ts)


def reply(c: Correlator, req: str, body: Any, ts: float, agent: str = AGENT) -> list[TimelineEvent]:
    return c.feed(wire.reply_subject(PROC, agent, req), json.dumps(body).encode(), ts)


def test_a_request_and_its_reply_are_paired_by_the_reply_to_uuid() -> None:
    c = Correlator(names)
    sent, = request(c, "ping", [], "r1", 100.0)
    assert sent["kind"] == "request" and sent["state"] == "sent" and sent["call"] == "r1"
    assert sent["method"] == "ping" and sent["instance"] == "redis/0" and sent["deployment"] == "redis-solo"
    assert sent["src"] == "director" and sent["dst"] == "redis/0" and sent["instance_id"] == "5b0b0000-inst"
    assert sent["message"]["reply_to"].endswith(".r1")
    # a reply to another request id is not this one's
    assert reply(c, "other", {"value": "pong"}, 100.01) == []
    got, = reply(c, "r1", {"value": "pong"}, 100.0034)
    assert got["kind"] == "reply" and got["state"] == "done" and got["call"] == "r1" and got["value"] == "pong"
    assert got["latency_ms"] == 3.4 and got["method"] == "ping" and got["instance"] == "redis/0"
    assert "polls" not in got
    # answered once: a second reply on the same subject is nothing
    assert reply(c, "r1", {"value": "pong"}, 100.01) == []
    line = render_line({**got, "ts": 0.0})
    assert line is not None and "ping" in line and '"pong"' in line


def test_an_agent_exception_is_a_failed_reply_with_its_message() -> None:
    c = Correlator(names)
    request(c, "apply", [{"job": {}}], "r2", 10.0)
    got, = reply(c, "r2", {"exception": {"message": "Action Failed apply: no such package"}}, 10.5)
    assert got["state"] == "failed" and got["exception"] == "Action Failed apply: no such package"
    assert got["latency_ms"] == 500.0 and got["arguments"] == [{"job": {}}]
    assert "value" not in got


def test_a_long_running_action_is_one_progress_and_one_reply_with_its_get_task_polls_folded() -> None:
    c = Correlator(names)
    first, = request(c, "drain", ["update", {}], "d1", 50.0)
    progress, = reply(c, "d1", {"value": {"agent_task_id": "t9", "state": "running"}}, 50.002)
    assert progress["kind"] == "progress" and progress["state"] == "running" and progress["agent_task_id"] == "t9"
    assert progress["call"] == "d1" and progress["method"] == "drain"
    polls = 0
    for i in range(5):
        ts = 50.1 + i
        assert request(c, "get_task", ["t9"], f"p{i}", ts) == []
        polls += 1
        if i < 4:
            assert reply(c, f"p{i}", {"value": {"agent_task_id": "t9", "state": "running"}}, ts + 0.001) == []
    done, = reply(c, "p4", {"value": 0}, 55.0)
    assert done["kind"] == "reply" and done["state"] == "done" and done["call"] == "d1" and done["method"] == "drain"
    assert done["polls"] == polls == 5 and done["value"] == 0 and done["agent_task_id"] == "t9"
    assert done["latency_ms"] == 5000.0          # from the drain request, not from the last poll
    assert done["arguments"] == ["update", {}]
    # the task is over: a get_task for it now is an ordinary request
    again, = request(c, "get_task", ["t9"], "late", 56.0)
    assert again["kind"] == "request" and again["method"] == "get_task"


def test_a_long_running_action_that_fails_is_a_failed_reply_with_polls() -> None:
    c = Correlator(names)
    request(c, "compile_package", ["blob", "sha1", "redis", "1", {}], "c1", 0.0)
    reply(c, "c1", {"value": {"agent_task_id": "t1", "state": "running"}}, 0.01)
    request(c, "get_task", ["t1"], "g1", 1.0)
    reply(c, "g1", {"value": {"agent_task_id": "t1", "state": "running"}}, 1.01)
    request(c, "get_task", ["t1"], "g2", 2.0)
    got, = reply(c, "g2", {"exception": {"message": "make: *** [all] Error 2"}}, 2.5)
    assert got["state"] == "failed" and got["polls"] == 2 and got["exception"] == "make: *** [all] Error 2"
    assert got["method"] == "compile_package" and got["latency_ms"] == 2500.0


def test_get_task_for_a_task_it_never_saw_start_is_an_ordinary_request_and_reply() -> None:
    c = Correlator(names)
    r, = request(c, "get_task", ["unknown"], "g", 1.0)
    assert r["kind"] == "request" and r["arguments"] == ["unknown"]
    got, = reply(c, "g", {"exception": {"message": "Task unknown could not be found"}}, 1.2)
    assert got["kind"] == "reply" and got["method"] == "get_task" and got["state"] == "failed"


def test_a_request_without_a_reply_times_out_after_the_timeout() -> None:
    c = Correlator(names, timeout=45.0)
    request(c, "get_state", [], "s1", 1000.0)
    assert c.expire(1044.0) == []
    got, = c.expire(1045.5)
    assert got["kind"] == "reply" and got["state"] == "timeout" and got["call"] == "s1" and got["method"] == "get_state"
    assert got["latency_ms"] == 45500.0
    assert c.expire(2000.0) == []                            # once
    assert reply(c, "s1", {"value": {}}, 2001.0) == []        # a reply after the timeout pairs with nothing
    line = render_line(got)
    assert line is not None and "no reply" in line


def test_the_same_request_sent_again_unanswered_means_the_first_timed_out() -> None:
    """A new VM is pinged every second until its agent answers: each unanswered ping is a timeout at once."""
    c = Correlator(names)
    request(c, "ping", [], "q1", 0.0)
    out = request(c, "ping", [], "q2", 1.0)
    assert [(e["kind"], e.get("state"), e["call"]) for e in out] == [("reply", "timeout", "q1"), ("request", "sent", "q2")]
    got, = reply(c, "q2", {"value": "pong"}, 1.2)
    assert got["state"] == "done" and got["call"] == "q2"
    assert c.expire(100.0) == []
    # two get_state at once (two readers of `instances --ps`) are two calls, neither timed out
    a, = request(c, "get_state", [], "s1", 200.0)
    b, = request(c, "get_state", [], "s2", 200.1)
    assert (a["kind"], b["kind"]) == ("request", "request")
    assert [e["call"] for e in reply(c, "s2", {"value": {}}, 200.2) + reply(c, "s1", {"value": {}}, 200.3)] == ["s2", "s1"]


def test_a_long_running_action_the_director_stops_polling_times_out_with_its_polls() -> None:
    c = Correlator(names, timeout=10.0)
    request(c, "fetch_logs", ["job", None], "f1", 0.0)
    reply(c, "f1", {"value": {"agent_task_id": "t2", "state": "running"}}, 0.1)
    request(c, "get_task", ["t2"], "g", 1.0)
    reply(c, "g", {"value": {"agent_task_id": "t2", "state": "running"}}, 1.1)
    assert c.expire(9.0) == []
    got, = c.expire(11.5)
    assert got["state"] == "timeout" and got["polls"] == 1 and got["method"] == "fetch_logs" and got["call"] == "f1"


def test_an_unknown_agent_is_named_by_its_id_and_named_later_when_the_director_knows_it() -> None:
    known: dict[str, Name] = {}
    c = Correlator(lambda a: known.get(a))
    sent, = request(c, "ping", [], "n1", 0.0, agent="new-agent")
    assert sent["instance"] is None and sent["dst"] == "new-agent" and sent["agent_id"] == "new-agent"
    known["new-agent"] = ("dep", "app/0", None)
    got, = reply(c, "n1", {"value": "pong"}, 0.5, agent="new-agent")
    assert got["instance"] == "app/0" and got["dst"] == "app/0" and got["deployment"] == "dep"


def heartbeat(c: Correlator, state: str, ts: float, agent: str = AGENT) -> list[TimelineEvent]:
    return c.feed(f"hm.agent.heartbeat.{agent}", json.dumps({"job_state": state, "vitals": {}}).encode(), ts)


def test_heartbeats_are_summarised_per_window_and_a_job_state_change_is_told_at_once() -> None:
    other = "b0000000-0000-4000-8000-000000000002"
    NAMES[other] = ("redis-solo", "redis/1", "inst-1")
    c = Correlator(names, window=10.0)
    assert heartbeat(c, "running", 0.0) == []
    assert heartbeat(c, "running", 1.0, other) == []
    assert c.tick(5.0) == []
    assert heartbeat(c, "running", 6.0) == []
    summary, = c.tick(10.0)
    assert summary["kind"] == "heartbeats"
    hb = summary["heartbeats"]
    assert hb["count"] == 3 and hb["instances"] == {"redis/0": "running", "redis/1": "running"} and hb["window_s"] == 10.0
    assert "changed" not in hb
    assert c.tick(30.0) == []                        # no heartbeat, no summary
    changed, = heartbeat(c, "failing", 31.0)
    assert changed["kind"] == "heartbeats" and changed["heartbeats"]["changed"] == ["redis/0"]
    assert changed["heartbeats"]["instances"]["redis/0"] == "failing" and changed["instance"] == "redis/0"
    assert heartbeat(c, "failing", 32.0) == []       # the same state again: no early event
    line = render_line(changed)
    assert line is not None and "failing" in line


def test_a_summary_names_at_most_max_summary_instances_changed_first_and_counts_the_rest() -> None:
    fleet = {f"c0000000-0000-4000-8000-{i:012d}": ("big", f"app/{i}", f"inst-{i}") for i in range(MAX_SUMMARY + 50)}
    c = Correlator(lambda a: fleet.get(a) or names(a), window=10.0)
    for i, agent in enumerate(fleet):
        assert heartbeat(c, "running", i * 0.001, agent) == []
    last = list(fleet)[-1]
    changed, = heartbeat(c, "failing", 1.0, last)     # an instance beyond the cap changes state
    hb = changed["heartbeats"]
    assert len(hb["instances"]) == MAX_SUMMARY and hb["omitted"] == 50
    assert hb["instances"][f"app/{MAX_SUMMARY + 49}"] == "failing", "the changed instance is always named"
    assert hb["count"] == MAX_SUMMARY + 51
    line = render_line(changed)
    assert line is not None and line.endswith("and 50 more")


def test_alerts_and_shutdowns() -> None:
    c = Correlator(names)
    alert = {"id": "x", "severity": 1, "title": "redis (10.0.0.5) - Does not exist - restart", "summary": "process is not running"}
    got, = c.feed(f"hm.agent.alert.{AGENT}", json.dumps(alert).encode(), 5.0)
    assert got["kind"] == "alert" and got["instance"] == "redis/0" and "Does not exist" in got["text"]
    assert "process is not running" in got["text"] and got["src"] == "redis/0"
    bad, = c.feed(f"hm.agent.alert.{AGENT}", b"\xff\xfe", 5.0)
    assert bad["kind"] == "alert" and "unreadable" in bad["text"]
    note, = c.feed(f"hm.agent.shutdown.{AGENT}", b"{}", 6.0)
    assert note["kind"] == "note" and "shutting down" in note["text"]


def test_garbage_is_a_note_and_other_subjects_are_ignored() -> None:
    c = Correlator(names)
    n, = c.feed(f"agent.{AGENT}", b"not json", 1.0)
    assert n["kind"] == "note" and "not an agent request" in n["text"]
    n, = c.feed(f"agent.{AGENT}", b'{"method": "ping"}', 1.0)
    assert n["kind"] == "note" and "reply_to" in n["text"]
    n, = c.feed(f"agent.{AGENT}", b"[" * 100_000 + b"]" * 100_000, 1.0)
    assert n["kind"] == "note"
    n, = c.feed(f"agent.{AGENT}", b" " * (5 * 1024 * 1024), 1.0)
    assert n["kind"] == "note" and "not read" in n["text"]
    assert c.feed("_INBOX.abc.def", b"anything", 1.0) == []
    assert c.feed("director.x.y.z", b"\x00", 1.0) == []        # no such request pending
    assert c.feed(f"hm.agent.heartbeat.{AGENT}", b"\x00garbage", 1.0) == []
    hb, = c.tick(100.0)
    assert hb["heartbeats"]["instances"] == {"redis/0": "?"}


def test_a_malformed_reply_is_a_failed_reply() -> None:
    c = Correlator(names)
    request(c, "ping", [], "m1", 0.0)
    got, = c.feed(wire.reply_subject(PROC, AGENT, "m1"), b"<html>", 0.1)
    assert got["state"] == "failed" and "malformed" in (got["exception"] or "")


def test_big_bodies_are_not_kept_whole() -> None:
    c = Correlator(names)
    big = {"blob": "x" * (MAX_KEPT + 10)}
    sent, = request(c, "apply", [big], "b1", 0.0)
    assert sent["message"]["truncated_bytes"] > MAX_KEPT and sent["arguments"] == ["…"]
    got, = reply(c, "b1", {"value": "y" * (MAX_KEPT + 10)}, 0.1)
    assert got["state"] == "done" and got["value"] == {"truncated_bytes": MAX_KEPT + 23}


def test_pending_calls_are_capped_oldest_first() -> None:
    c = Correlator(names, max_pending=100)
    for i in range(150):
        request(c, "get_state", [i], f"c{i}", float(i) / 1000)
    assert c.evicted == 50
    assert reply(c, "c0", {"value": 1}, 1.0) == []          # forgotten
    got, = reply(c, "c149", {"value": 1}, 1.0)
    assert got["call"] == "c149"
    assert len(c.expire(1000.0)) == 99                      # the rest time out, no more than the cap


@settings(max_examples=300, deadline=None)
@given(subject=st.sampled_from([f"agent.{AGENT}", f"hm.agent.heartbeat.{AGENT}", f"hm.agent.alert.{AGENT}",
                                f"director.{PROC}.{AGENT}.r", "x", f"hm.agent.shutdown.{AGENT}"]),
       payload=st.one_of(st.binary(max_size=200),
                         st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                                      lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                                          st.sampled_from(["method", "arguments", "reply_to", "value", "exception",
                                                           "agent_task_id", "state", "job_state", "message"]),
                                          inner, max_size=5), max_leaves=20).map(lambda v: json.dumps(v).encode())))
def test_nothing_a_message_holds_makes_it_raise(subject: str, payload: bytes) -> None:
    c = Correlator(names)
    request(c, "ping", [], "r", 0.0)
    for ev in c.feed(subject, payload, 1.0) + c.expire(1000.0) + c.tick(1000.0):
        json.dumps(ev, default=str)
        render_line(ev)

"""The deck's log format and Ruby's inspect (compared with what Ruby 3.1 itself prints)."""
import io
import logging
import os

import pytest

from agent.log import log, ruby_inspect, setup_logging


def test_message_line_is_the_decks_ruby_hash() -> None:
    assert ruby_inspect({"method": "ping", "arguments": [], "reply_to": "x"}) == \
        '{"method"=>"ping", "arguments"=>[], "reply_to"=>"x"}'


def test_nested_values() -> None:
    assert ruby_inspect({"a": None, "b": [True, False, 1.0], "c": {}, "d": -3}) == \
        '{"a"=>nil, "b"=>[true, false, 1.0], "c"=>{}, "d"=>-3}'


@pytest.mark.parametrize("value,ruby", [
    (1e14, "100000000000000.0"), (1e15, "1.0e+15"), (1234567890123456.0, "1.234567890123456e+15"),
    (100.0, "100.0"), (0.0001, "0.0001"), (0.00001, "1.0e-05"), (2.5e-5, "2.5e-05"), (-0.0, "-0.0"),
    (12345678.9, "12345678.9"), (0.5, "0.5"), (float("inf"), "Infinity"),
])
def test_floats_as_ruby_prints_them(value: float, ruby: str) -> None:
    assert ruby_inspect(value) == ruby


def test_strings_escape_like_ruby() -> None:
    s = 'a"b\\c\n\t\x1b\x00\x7f é #{z} #$x #@y # \u2028'
    assert ruby_inspect(s) == '"a\\"b\\\\c\\n\\t\\e\\u0000\\u007F é \\#{z} \\#$x \\#@y # \\u2028"'


def test_user_data_line_escapes_the_json() -> None:
    raw = '{"registry":{"endpoint":"http://u:p@director:25889"}}'
    assert ruby_inspect(raw) == '"{\\"registry\\":{\\"endpoint\\":\\"http://u:p@director:25889\\"}}"'


def test_log_lines_have_pid_and_level() -> None:
    out = io.StringIO()
    setup_logging(out)
    try:
        log.info("Heartbeat sent")
        log.debug("Heartbeat delivered")
        log.warning("careful")
    finally:
        setup_logging()
    pid = os.getpid()
    assert out.getvalue().splitlines() == [
        f"#[{pid}] INFO: Heartbeat sent", f"#[{pid}] DEBUG: Heartbeat delivered", f"#[{pid}] WARN: careful"]
    assert log.level == logging.DEBUG

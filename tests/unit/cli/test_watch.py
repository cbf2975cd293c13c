"""``bosh-lab watch``: replaying a recorded JSONL file (lines, folding, filters, pace, a bad line), the live
stream as JSONL passthrough from a tiny NDJSON server, colour only where it belongs, Ctrl-C."""
from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from cli.commands_watch import Printer, replay
from cli.errors import EXIT_UNREACHABLE, EXIT_USAGE, CLIError
from cli.main import parser, run
from tests.unit.conftest import Handler

ROOT = Path(__file__).resolve().parents[3]
T0 = 1764547200.0
DRAIN_ID, APPLY_ID = "11111111-aaaa", "22222222-bbbb"

EVENTS: list[dict[str, Any]] = [
    {"seq": 1, "ts": T0, "kind": "request", "src": "director", "dst": "redis/0", "deployment": "redis-solo",
     "instance": "redis/0", "instance_id": "inst-0", "agent_id": "agent-0", "subject": "agent.agent-0",
     "method": "drain", "call": DRAIN_ID, "arguments": ["update", {}], "state": "sent"},
    {"seq": 2, "ts": T0 + 0.003, "kind": "reply", "src": "redis/0", "dst": "director", "deployment": "redis-solo",
     "instance": "redis/0", "instance_id": "inst-0", "agent_id": "agent-0", "method": "drain", "call": DRAIN_ID,
     "arguments": ["update", {}], "state": "done", "latency_ms": 3.0, "value": 0},
    {"seq": 3, "ts": T0 + 0.5, "kind": "request", "src": "director", "dst": "redis/0", "deployment": "redis-solo",
     "instance": "redis/0", "instance_id": "inst-0", "agent_id": "agent-0", "method": "apply", "call": APPLY_ID,
     "arguments": [{"job": {"name": "redis"}}], "state": "sent"},
    {"seq": 4, "ts": T0 + 0.52, "kind": "progress", "src": "redis/0", "dst": "director", "deployment": "redis-solo",
     "instance": "redis/0", "method": "apply", "call": APPLY_ID, "state": "running", "agent_task_id": "task-9"},
    {"seq": 5, "ts": T0 + 1.0, "kind": "blob", "src": "redis/0", "dst": "blobstore", "deployment": "redis-solo",
     "instance": "redis/0", "blob": {"method": "GET", "id": "blob-redis", "path": "/ab/blob-redis", "status": 200,
                                     "bytes": 2048, "duration_ms": 12.0, "user": "agent"}},
    {"seq": 6, "ts": T0 + 1.7, "kind": "reply", "src": "redis/0", "dst": "director", "deployment": "redis-solo",
     "instance": "redis/0", "instance_id": "inst-0", "agent_id": "agent-0", "method": "apply", "call": APPLY_ID,
     "arguments": [{"job": {"name": "redis"}}], "state": "done", "agent_task_id": "task-9", "latency_ms": 1204.5,
     "polls": 5, "value": "applied"},
    {"seq": 7, "ts": T0 + 2.0, "kind": "request", "src": "director", "dst": "web/1", "deployment": "other",
     "instance": "web/1", "instance_id": "inst-w", "agent_id": "agent-w", "method": "ping", "call": "33", "arguments": [],
     "state": "sent"},
    {"seq": 8, "ts": T0 + 2.001, "kind": "reply", "src": "web/1", "dst": "director", "deployment": "other",
     "instance": "web/1", "instance_id": "inst-w", "agent_id": "agent-w", "method": "ping", "call": "33", "arguments": [],
     "state": "done", "latency_ms": 1.0, "value": "pong"},
]


def record(tmp_path: Path, events: list[dict[str, Any]] = EVENTS, extra: str = "") -> Path:
    path = tmp_path / "recorded.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events) + extra)
    return path


async def watch(capsys: pytest.CaptureFixture[str], *argv: str, director: str | None = None) -> tuple[int, list[str], str]:
    """``bosh-lab [-e DIRECTOR] watch ARGV`` as main() runs it: (exit code, stdout lines, stderr)."""
    try:
        code = await run(parser().parse_args([*(["-e", director] if director else []), "watch", *argv]))
    except CLIError as e:
        print(f"Error: {e}", file=sys.stderr)
        code = e.code
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


@pytest.fixture(autouse=True)
def plain_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BOSH_LAB_SCREENCAST", raising=False)
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()


async def test_replay_pairs_requests_with_replies_and_folds_long_running_actions(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, _ = await watch(capsys, "--replay", str(record(tmp_path)), "--speed", "0", "--utc")
    assert code == 0
    assert len(lines) == 5, lines   # 3 requests folded into their replies
    drain, running, blob, applied, ping = lines
    assert drain.startswith("00:00:00.003  director → redis/0") and 'drain ["update",{}] → 0  3 ms' in drain
    assert "apply" in running and "… running (agent task task-9)" in running
    assert "redis/0  ← blobstore  GET blob-redis 2.0 KiB 200" in blob
    assert "apply" in applied and "… applied in 1.2 s, 5 get_task polls → \"applied\"" in applied
    assert "web/1" in ping and '→ "pong"' in ping
    assert not any("\033[" in line for line in lines), "no colour when stdout is not a terminal"


async def test_replay_shows_requests_with_requests(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, _ = await watch(capsys, "--replay", str(record(tmp_path)), "--speed", "0", "--requests")
    assert code == 0
    assert len(lines) == 8
    assert lines[0].endswith('drain ["update",{}] …')


@pytest.mark.parametrize(("filters", "seqs"), [
    (["-d", "other"], ["ping"]),
    (["--instance", "redis/0"], ["drain", "apply", "blob-redis", "apply"]),
    (["--instance", "agent-w"], ["ping"]),
    (["--method", "apply"], ["apply", "apply"]),
    (["-d", "redis-solo", "--method", "drain"], ["drain"]),
    (["--history", "3"], ["apply", "ping"]),   # events, not lines: the ping request is folded
])
async def test_replay_filters(tmp_path: Path, capsys: pytest.CaptureFixture[str], filters: list[str],
                              seqs: list[str]) -> None:
    code, lines, _ = await watch(capsys, "--replay", str(record(tmp_path)), "--speed", "0", *filters)
    assert code == 0
    assert len(lines) == len(seqs), lines
    for line, word in zip(lines, seqs, strict=True):
        assert word in line


async def test_replay_keeps_the_recorded_pace(tmp_path: Path) -> None:
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(round(s, 4))
    args = parser().parse_args(["watch", "--replay", str(record(tmp_path)), "--speed", "2", "--method", "apply"])
    await replay(args, Printer(args, io.StringIO()), sleep=sleep)
    assert slept == [0.01, 0.59]   # (0.52 - 0.5) / 2 and (1.7 - 0.52) / 2: the gaps of the matching events


async def test_replay_speed_0_does_not_wait(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = [dict(e, ts=T0 + 100 * i) for i, e in enumerate(EVENTS)]
    start = time.monotonic()
    code, lines, _ = await watch(capsys, "--replay", str(record(tmp_path, events)), "--speed", "0")
    assert code == 0 and len(lines) == 5
    assert time.monotonic() - start < 5


async def test_replay_json_writes_the_lines_as_recorded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = record(tmp_path, EVENTS[:2], extra='{"kind":  "note", "ts": 1764547201, "text": "spaced"}\n')
    code, lines, _ = await watch(capsys, "--replay", str(path), "--speed", "0", "--json")
    assert code == 0
    assert lines == path.read_text().splitlines()


@pytest.mark.parametrize("bad", ["{not json", "[1, 2]", '{"ts": 1}', '{"kind": "reply", "ts": "noon"}'])
async def test_a_bad_line_is_a_usage_error_naming_its_number(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                             bad: str) -> None:
    path = record(tmp_path, EVENTS[:2], extra="\n" + bad + "\n")   # a blank line 3, the bad one is line 4
    code, lines, err = await watch(capsys, "--replay", str(path), "--speed", "0")
    assert code == EXIT_USAGE
    assert lines == [], "nothing is shown from a file with a bad line"
    assert f"{path}, line 4: not a watch event" in err


async def test_replay_of_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = await watch(capsys, "--replay", str(tmp_path / "nope.jsonl"))
    assert code == EXIT_USAGE and "No such file" in err


async def test_screencast_times_are_relative_to_the_first_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOSH_LAB_SCREENCAST", "1")
    code, lines, _ = await watch(capsys, "--replay", str(record(tmp_path)), "--speed", "0")
    assert code == 0
    assert [line[:12] for line in lines] == ["+0.000 s    ", "+0.517 s    ", "+0.997 s    ", "+1.697 s    ",
                                             "+1.998 s    "]


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("tty", "env", "coloured"), [
    (True, {}, True),
    (True, {"NO_COLOR": "1"}, False),
    (True, {"TERM": "dumb"}, False),
    (False, {}, False),
])
def test_colour_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch, tty: bool, env: dict[str, str],
                                   coloured: bool) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    out = Tty() if tty else io.StringIO()
    args = parser().parse_args(["watch"])
    printer = Printer(args, out)
    printer.show(json.dumps(EVENTS[1]), EVENTS[1])  # type: ignore[arg-type]
    assert ("\033[1m" in out.getvalue()) is coloured


# --- the live stream ---------------------------------------------------------------------------------------

LIVE = [json.dumps(e) for e in EVENTS[:6]] + ['{"kind":"note",  "ts": 1764547202.5, "seq": 9, "text": "as sent"}']


def ndjson_server(seen: list[dict[str, str]]) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        if request.path != "/watch":
            return web.json_response({"description": "no such path"}, status=404)
        seen.append(dict(request.query))
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        body = "\n".join(LIVE).encode() + b"\n"
        for i in range(0, len(body), 97):      # lines cut across chunks
            await resp.write(body[i:i + 97])
            await asyncio.sleep(0)
        await resp.write_eof()
        return resp
    return handler


async def test_json_passes_the_stream_through_as_received(http_server: Callable[[Handler], Awaitable[str]],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[dict[str, str]] = []
    url = await http_server(ndjson_server(seen))
    code, lines, _ = await watch(capsys, "--json", "--no-follow", "-d", "redis-solo", "--instance",
                                 "redis/0", "--method", "apply", "--history", "50", director=url)
    assert code == 0
    assert lines == LIVE
    assert seen == [{"deployment": "redis-solo", "instance": "redis/0", "method": "apply", "history": "50",
                     "follow": "0"}]


async def test_live_lines_and_the_end_of_a_followed_stream(http_server: Callable[[Handler], Awaitable[str]],
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[dict[str, str]] = []
    url = await http_server(ndjson_server(seen))
    code, lines, err = await watch(capsys, "--utc", director=url)
    assert seen == [{}], "no filters and no history unless asked"
    assert len(lines) == 5 and "drain" in lines[0] and lines[-1].endswith("as sent")
    assert code == EXIT_UNREACHABLE and "ended the watch stream" in err


async def test_an_unreachable_director_is_exit_3(capsys: pytest.CaptureFixture[str]) -> None:
    from tests.unit.conftest import free_port
    code, _, err = await watch(capsys, director=f"http://127.0.0.1:{free_port()}")
    assert code == EXIT_UNREACHABLE and "cannot reach the director" in err


def test_ctrl_c_ends_a_watch_cleanly(tmp_path: Path) -> None:
    events = [dict(EVENTS[1], ts=T0), dict(EVENTS[1], ts=T0 + 600)]   # the second one ten minutes later
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cli", "watch", "--replay", str(record(tmp_path, events))],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "drain" in first
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err


async def test_the_client_reads_lines_with_deadlines_and_limits(http_server: Callable[[Handler], Awaitable[str]]) -> None:
    from contextlib import aclosing

    from cli.client import DirectorClient, DirectorError, DirectorUnreachable

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.path == "/slow":
            await asyncio.sleep(2)
        resp = web.StreamResponse()
        await resp.prepare(request)
        if request.path == "/long":
            for _ in range(10):
                await resp.write(b"x" * 1000)
        else:
            await resp.write(b'{"a": 1}\r\n\n  \n{"b"')
            await resp.write(b': 2}\n{"c": 3}')      # the last line has no newline
        await resp.write_eof()
        return resp
    url = await http_server(handler)
    async with DirectorClient(url) as d:
        async with aclosing(d.lines("/ok")) as lines:
            assert [line async for line in lines] == [b'{"a": 1}', b'{"b": 2}', b'{"c": 3}']
        with pytest.raises(DirectorError, match="longer than 4096 bytes"):
            async with aclosing(d.lines("/long", max_line=4096)) as lines:
                [line async for line in lines]
        with pytest.raises(DirectorUnreachable, match="within 0.3 s"):
            async with aclosing(d.lines("/slow", headers_timeout=0.3)) as lines:
                [line async for line in lines]

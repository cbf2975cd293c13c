"""``bosh-lab watch``: what crosses NATS and the blobstore, live (``GET /watch``, docs/watch.md) or replayed
from a JSONL file recorded with ``--json``. One line per event through ``boshlab.timeline.render_line``
(a request is folded into its reply unless ``--requests``)."""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable
from contextlib import aclosing
from typing import Any, TextIO, cast

from boshlab.timeline import TimelineEvent, clock, matches, render_line, unanswered

from .client import DirectorClient
from .commands import Command
from .errors import EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, CLIError
from .output import colour

SCREENCAST_ENV = "BOSH_LAB_SCREENCAST"
EPILOG = f"""\
Lines: one per reply (its request folded in, unless --requests), a line when a long-running action starts
running, blob GETs and PUTs, heartbeat summaries, alerts, faults. Colour only on a terminal, never with
NO_COLOR or TERM=dumb. Ctrl-C ends it (exit 0).

--json writes the events as JSONL exactly as the director sent them; --replay FILE plays such a file back at
its recorded pace (--speed 2: twice as fast, --speed 0: at once); the filters apply to a replay too.

{SCREENCAST_ENV}=1: each line's time is relative to the first line shown ("+0.000 s", "+1.204 s"), not the
wall clock, so a recording of the output is the same from one run to the next (screencasts, docs).
"""


class Printer:
    """Prints events: JSONL as received (``--json``) or rendered lines, painted for ``out``."""

    def __init__(self, args: argparse.Namespace, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.as_json = bool(getattr(args, "json", False))
        self.utc = bool(getattr(args, "utc", False))
        self.requests = bool(getattr(args, "requests", False))
        self.screencast = os.environ.get(SCREENCAST_ENV, "") not in ("", "0")
        self.first_ts: float | None = None

    def paint(self, text: str, code: str) -> str:
        return colour(text, code, self.out)

    def line(self, event: TimelineEvent, pending: bool = False) -> str | None:
        text = render_line(event, self.paint, utc=self.utc, show_requests=self.requests, pending=pending)
        if text is None or not self.screencast:
            return text
        ts = float(event.get("ts", 0.0))
        if self.first_ts is None:
            self.first_ts = ts
        stamp = clock(ts, self.utc)
        if text.startswith(stamp):
            text = f"+{ts - self.first_ts:.3f} s".ljust(len(stamp)) + text[len(stamp):]
        return text

    def show(self, raw: str, event: TimelineEvent | None, pending: bool = False) -> None:
        if self.as_json:
            self.out.write(raw + "\n")
        elif event is not None and (text := self.line(event, pending)) is not None:
            self.out.write(text + "\n")
        self.out.flush()


def parse_event(raw: str) -> TimelineEvent:
    """A JSONL line as an event; ValueError saying what is wrong."""
    try:
        value = json.loads(raw)
    except ValueError as e:
        raise ValueError(f"not JSON ({e})") from None
    if not isinstance(value, dict):
        raise ValueError(f"not a JSON object but {type(value).__name__}")
    if not isinstance(value.get("kind"), str):
        raise ValueError("no \"kind\"")
    ts = value.get("ts")
    if isinstance(ts, bool) or not isinstance(ts, int | float):
        raise ValueError("no numeric \"ts\"")
    return cast(TimelineEvent, value)


def load_replay(path: str) -> list[tuple[str, TimelineEvent]]:
    """Every event of a recorded JSONL file (blank lines skipped), checked before any is shown."""
    events: list[tuple[str, TimelineEvent]] = []
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                raw = line.rstrip("\r\n")
                if not raw.strip():
                    continue
                try:
                    events.append((raw, parse_event(raw)))
                except ValueError as e:
                    raise CLIError(f"{path}, line {n}: not a watch event: {e}", EXIT_USAGE) from None
    except OSError as e:
        raise CLIError(f"{path}: {e.strerror or e}", EXIT_USAGE) from None
    except UnicodeDecodeError as e:
        raise CLIError(f"{path}: not UTF-8 text ({e.reason})", EXIT_USAGE) from None
    return events


def wanted(args: argparse.Namespace, event: TimelineEvent) -> bool:
    return matches(event, deployment=args.deployment, instance=args.instance, method=args.method)


async def replay(args: argparse.Namespace, printer: Printer, sleep: Callable[[float], Any] = asyncio.sleep) -> int:
    events = [(raw, ev) for raw, ev in load_replay(args.replay) if wanted(args, ev)]
    if args.history is not None:
        events = events[-args.history:] if args.history else []
    previous: float | None = None
    waiting = unanswered([ev for _, ev in events])     # a whole recording: its unanswered requests are known
    for raw, ev in events:
        ts = float(ev["ts"])
        if args.speed > 0 and previous is not None and ts > previous:
            await sleep((ts - previous) / args.speed)
        previous = ts
        printer.show(raw, ev, pending=int(ev.get("seq", 0)) in waiting)
    return EXIT_OK


async def live(d: DirectorClient, args: argparse.Namespace, printer: Printer) -> int:
    params: dict[str, str] = {}
    for key in ("deployment", "instance", "method"):
        if getattr(args, key):
            params[key] = getattr(args, key)
    if args.history is not None:
        params["history"] = str(args.history)
    if args.no_follow:
        params["follow"] = "0"
    held: list[tuple[str, TimelineEvent]] = []     # --no-follow: printed at the end, unanswered requests marked
    async with aclosing(d.lines("/watch", params=params)) as lines:
        async for data in lines:
            raw = data.decode(errors="replace")
            if printer.as_json:
                printer.show(raw, None)
                continue
            try:
                event = parse_event(raw)
            except ValueError as e:
                print(f"watch: skipping a line that is not an event: {e}", file=sys.stderr)
                continue
            if args.no_follow:
                held.append((raw, event))
            else:
                printer.show(raw, event)
    waiting = unanswered([ev for _, ev in held])
    for raw, event in held:
        printer.show(raw, event, pending=int(event.get("seq", 0)) in waiting)
    if not args.no_follow:
        raise CLIError("the director ended the watch stream (did it restart?)", EXIT_UNREACHABLE)
    return EXIT_OK


async def cmd_watch(d: DirectorClient, args: argparse.Namespace) -> int:
    if args.speed < 0:
        raise CLIError("--speed must be 0 (at once) or more", EXIT_USAGE)
    if args.history is not None and args.history < 0:
        raise CLIError("--history must be 0 or more", EXIT_USAGE)
    printer = Printer(args)
    # Ctrl-C ends the watch cleanly (exit 0): our own SIGINT handler cancels this task, so asyncio.run does
    # not turn it into KeyboardInterrupt.
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    interrupted = False

    def on_sigint() -> None:
        nonlocal interrupted
        interrupted = True
        if task is not None:
            task.cancel()
    handler = True
    try:
        loop.add_signal_handler(signal.SIGINT, on_sigint)
    except (NotImplementedError, RuntimeError, ValueError):   # not the main thread, or no signals here
        handler = False
    try:
        if args.replay:
            return await replay(args, printer)
        return await live(d, args, printer)
    except asyncio.CancelledError:
        if not interrupted:
            raise
        if task is not None:
            task.uncancel()
        return EXIT_OK
    except BrokenPipeError:   # piped into head and the like
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    finally:
        if handler:
            loop.remove_signal_handler(signal.SIGINT)


def add_parsers(add: Callable[..., argparse.ArgumentParser]) -> None:
    s = add("watch", "what crosses NATS and the blobstore, live (GET /watch) or replayed (--replay)")
    s.description = __doc__
    s.epilog = EPILOG
    s.formatter_class = argparse.RawDescriptionHelpFormatter
    s.add_argument("-d", "--deployment", default=None, help="only this deployment (default: all)")
    s.add_argument("--instance", help="only this instance: redis/0, a group (redis), an instance id or agent id")
    s.add_argument("--method", help="only requests and replies of this agent method (apply, drain, ...)")
    s.add_argument("--history", type=int, metavar="N", help="start with the last N events the director buffered")
    s.add_argument("--requests", action="store_true", help="a line for each request too (not only its reply)")
    s.add_argument("--no-follow", action="store_true", help="print what the director buffered and end")
    s.add_argument("--replay", metavar="FILE", help="play back a JSONL file recorded with --json")
    s.add_argument("--speed", type=float, default=1.0, metavar="X",
                   help="replay speed: 2 twice as fast, 0 at once (default 1, the recorded pace)")
    s.add_argument("--utc", action="store_true", help="times in UTC (default: local time)")


COMMANDS: dict[str, Command] = {"watch": cmd_watch}

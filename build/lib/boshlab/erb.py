"""Render job templates with Ruby's real ERB (``render.rb`` beside this file), through an asyncio subprocess.

Every render has a deadline (``timeout``, 30 s by default): past it, or when the awaiting task is cancelled,
the ruby process and anything a template started (its own process group) are killed and waited for; the
deadline raises RenderTimeout (a TemplateError) naming the template that was running. What templates write
to stdout goes to stderr (render.rb moves its result channel off fd 1), so it cannot spoil the result.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RENDER_RB = Path(__file__).with_name("render.rb")


class TemplateError(Exception):
    """A template could not be rendered; names the job, the template and (if any) the missing property."""

    def __init__(self, job: str, template: str, message: str, prop: str | None = None) -> None:
        self.job, self.template, self.property, self.detail = job, template, prop, message
        if prop:
            text = f"Error filling in template '{template}' for job '{job}': property '{prop}' has no value and no default"
        else:
            text = f"Error filling in template '{template}' for job '{job}': {message}"
        super().__init__(text)


class RenderTimeout(TemplateError):
    """Rendering did not finish within the deadline (``<% loop {} %>``)."""

    def __init__(self, job: str, template: str, timeout: float) -> None:
        super().__init__(job, template, f"rendering timed out after {timeout:g} s")
        self.timeout = timeout


RENDER_TIMEOUT = 30.0
STDERR_KEEP = 64 * 1024   # the tail of ruby's stderr (templates' stdout included) kept for error messages


@dataclass
class JobTemplates:
    """What a job gives the renderer: its name and ``{template source name: ERB text}``."""
    name: str
    templates: dict[str, str]


def ruby() -> str:
    exe = os.environ.get("BOSH_LAB_RUBY") or shutil.which("ruby")
    if not exe:
        raise RuntimeError("ruby is not installed: it renders the ERB templates (apt-get install ruby)")
    return exe


async def _read_tail(stream: asyncio.StreamReader, keep: int) -> bytes:
    buf = bytearray()
    while chunk := await stream.read(65536):
        buf += chunk
        if len(buf) > keep:
            del buf[:len(buf) - keep]
    return bytes(buf)


async def _feed(stdin: asyncio.StreamWriter, data: bytes) -> None:
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        stdin.write(data)
        await stdin.drain()
        stdin.close()


def _kill(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL ruby's process group (ruby and whatever a template started)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


async def render(jobs: list[JobTemplates], spec: dict[str, Any],
                 timeout: float = RENDER_TIMEOUT) -> dict[str, dict[str, str]]:
    """Render every template of every job against ``spec`` (whose ``properties`` feed ``p``).
    Returns ``{job: {template: text}}``; raises TemplateError for the first failure, RenderTimeout when it
    takes longer than ``timeout`` seconds."""
    payload = json.dumps({"spec": spec, "jobs": [{"name": j.name, "templates": j.templates} for j in jobs]})
    proc = await asyncio.create_subprocess_exec(
        ruby(), str(RENDER_RB), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, start_new_session=True)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    lines: list[bytes] = []

    async def read_results(stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            lines.append(line)

    try:
        async with asyncio.timeout(timeout):
            _, _, err = await asyncio.gather(_feed(proc.stdin, payload.encode()), read_results(proc.stdout),
                                             _read_tail(proc.stderr, STDERR_KEEP))
            await proc.wait()
    except BaseException as exc:   # the deadline, a cancel of the awaiting task, or any other error
        _kill(proc)
        await asyncio.shield(proc.wait())
        if isinstance(exc, TimeoutError):
            job, template = _running(lines, jobs)
            raise RenderTimeout(job, template, timeout) from None
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"ruby renderer failed (exit {proc.returncode}): {err.decode(errors='replace')[-2000:]}")
    messages = [json.loads(line) for line in lines if line.strip()]
    result = next((m for m in reversed(messages) if "rendered" in m or "error" in m), None)
    if result is None:
        job, template = _running(lines, jobs)
        raise TemplateError(job, template, "the renderer ended without a result "
                                           f"({err.decode(errors='replace')[-500:].strip()})")
    if "error" in result:
        e = result["error"]
        raise TemplateError(e["job"], e["template"], e["message"], e.get("property"))
    rendered: dict[str, dict[str, str]] = result["rendered"]
    return rendered


def _running(lines: list[bytes], jobs: list[JobTemplates]) -> tuple[str, str]:
    """The job and template render.rb announced last (the one running when it stopped)."""
    for line in reversed(lines):
        with contextlib.suppress(ValueError):
            msg = json.loads(line)
            if isinstance(msg, dict) and isinstance(msg.get("rendering"), dict):
                return str(msg["rendering"].get("job")), str(msg["rendering"].get("template"))
    first = jobs[0] if jobs else None
    return (first.name if first else "?"), (next(iter(first.templates), "?") if first else "?")

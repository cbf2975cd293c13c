"""The blobstore's access log -> ``blob`` events. nginx writes one JSON line per blob request (format
``watch`` in blobstore/nginx.conf) to a volume the director mounts read-only; ``LogTail`` follows the file
(polling; a rotated or truncated file is reopened from its start) and ``parse_line`` (pure) makes the event.

The requester: the director's DAV user is the director (no VM has its password); a VM's address is its
instance (``by_ip``); else the DAV user; else the address."""
from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from typing import Any

from boshlab.timeline import BLOBSTORE, DIRECTOR, BlobAccess, TimelineEvent

from .correlator import Names

log = logging.getLogger("director.watch")

MAX_LINE = 64 * 1024          # a longer line is skipped (nginx's lines are a few hundred bytes)
READ_CHUNK = 256 * 1024       # bytes read per poll at most (a burst is read over several polls)
POLL = 0.15                   # seconds between polls

ByIp = Callable[[str], str | None]      # address -> agent id (of a VM the director made)


def _num(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def parse_line(line: bytes | str, by_ip: ByIp | None = None, names: Names | None = None,
               director_user: str = "director") -> TimelineEvent | None:
    """One access-log line -> a ``blob`` event, or None when it is not one of ours (never raises)."""
    try:
        if len(line) > MAX_LINE:
            return None
        entry = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(entry, dict):
        return None
    method, uri = entry.get("request_method"), entry.get("uri")
    if not isinstance(method, str) or not isinstance(uri, str) or not method or not uri:
        return None
    status = _num(entry.get("status"))
    sent, received = _num(entry.get("body_bytes_sent")), _num(entry.get("content_length"))
    if received is None:
        received = _num(entry.get("request_length"))
    seconds = _num(entry.get("request_time"))
    user = entry.get("remote_user") if isinstance(entry.get("remote_user"), str) else ""
    addr = entry.get("remote_addr") if isinstance(entry.get("remote_addr"), str) else ""
    blob: BlobAccess = {"method": method[:16], "id": uri.rstrip("/").rsplit("/", 1)[-1][:200], "path": uri[:300],
                        "status": int(status) if status is not None else 0}
    size = sent if method in ("GET", "HEAD") else received
    if size is not None:
        blob["bytes"] = int(size)
    if seconds is not None:
        blob["duration_ms"] = round(seconds * 1000, 1)
    if user:
        blob["user"] = str(user)[:64]
    ev: TimelineEvent = {"kind": "blob", "dst": BLOBSTORE, "blob": blob, "deployment": None, "instance": None,
                         "instance_id": None, "agent_id": None}
    ts = _num(entry.get("msec"))
    if ts is not None:
        ev["ts"] = ts
    if user and user == director_user:
        ev["src"] = DIRECTOR
        return ev
    agent_id = None
    if addr and by_ip is not None:
        try:
            agent_id = by_ip(addr)
        except Exception:   # noqa: BLE001 - a lookup failing must not lose the event
            agent_id = None
    name = None
    if agent_id and names is not None:
        try:
            name = names(agent_id)
        except Exception:   # noqa: BLE001
            name = None
    if agent_id:
        ev["agent_id"] = agent_id
    if name is not None:
        ev["deployment"], ev["instance"], ev["instance_id"] = name
        ev["src"] = name[1]
    elif agent_id:
        ev["src"] = agent_id
    else:
        ev["src"] = str(user)[:64] if user else (str(addr)[:64] or "?")
    return ev


class Tailer:
    """Follows one file from its end (blocking reads: call ``poll`` in a thread). A file replaced (another
    inode) or truncated (smaller than where we are) is read again from its start; a line longer than
    ``MAX_LINE`` is skipped."""

    def __init__(self, path: str, from_start: bool = False) -> None:
        self.path = path
        self.from_start = from_start
        self._f: Any = None
        self._ino: tuple[int, int] | None = None
        self._pos = 0
        self._partial = b""
        self._skipping = False
        self._polled = False      # a file that appears after the first poll is read from its start
        self.skipped = 0          # over-long lines

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def _open(self, at_end: bool) -> bool:
        self.close()
        try:
            f = open(self.path, "rb")     # kept open between polls
        except OSError:
            return False
        st = os.fstat(f.fileno())
        self._f, self._ino = f, (st.st_dev, st.st_ino)
        self._pos = st.st_size if at_end else 0
        f.seek(self._pos)
        self._partial, self._skipping = b"", False
        return True

    def poll(self) -> list[bytes]:
        """The complete lines written since the last poll (at most ``READ_CHUNK`` bytes of them)."""
        if self._f is None:
            first, self._polled = not self._polled, True
            if not self._open(at_end=first and self._ino is None and not self.from_start):
                return []
        try:
            st = os.stat(self.path)
        except OSError:
            st = None
        if st is not None and ((st.st_dev, st.st_ino) != self._ino):
            self.close()                                    # rotated: the new file from its start
            if not self._open(at_end=False):
                return []
        elif st is not None and st.st_size < self._pos:
            self._f.seek(0)                                 # truncated in place
            self._pos, self._partial, self._skipping = 0, b"", False
        data = self._f.read(READ_CHUNK)
        if not data:
            return []
        self._pos += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        out: list[bytes] = []
        for line in lines:
            if self._skipping:
                self._skipping = False                      # the end of an over-long line
                continue
            if len(line) > MAX_LINE:
                self.skipped += 1
                continue
            if line.strip():
                out.append(line)
        if len(self._partial) > MAX_LINE:
            self._partial, self._skipping = b"", True
            self.skipped += 1
        return out


async def follow(path: str, on_event: Callable[[TimelineEvent], None], by_ip: ByIp | None = None,
                 names: Names | None = None, interval: float = POLL, from_start: bool = False,
                 director_user: str = "director") -> None:
    """Tail ``path`` until cancelled, turning each line into a ``blob`` event. Reads run in a thread."""
    tailer = Tailer(path, from_start)
    try:
        while True:
            try:
                lines = await asyncio.to_thread(tailer.poll)
            except OSError as e:
                log.warning("blobstore log %s: %s", path, e)
                tailer.close()
                lines = []
            for line in lines:
                ev = parse_line(line, by_ip, names, director_user)
                if ev is not None:
                    on_event(ev)
            if not lines:
                await asyncio.sleep(interval)
    finally:
        tailer.close()

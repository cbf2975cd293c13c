"""``fetch_logs(log_type, filters)`` (async) -> ``{"blobstore_id": "<uuid>", "sha1": "<sha1 of the tgz>"}``.

``log_type`` is ``job`` (``/var/vcap/sys/log``), ``agent`` (``/var/vcap/bosh/log``) or ``system``
(``/var/log``, under ``var/log/`` in the tarball), comma-joinable (``"job,agent"``); job and agent logs go to
the root of the tarball, as in BOSH's agent. ``filters`` are globs relative to each log dir (``*`` within a
path segment, ``**`` across segments, ``?``, ``[...]``); none (or null) means ``**/*``. Matching regular
files are tarred and gzipped (level 6, like ``tar czf``) in a thread, with their real owners, modes and
times; symlinks are stored as links, never followed. A file that shrinks while it is read is padded with
zeros (a log rotated underneath). The tarball is uploaded with the agent's blobstore credentials under a
new uuid and removed from the VM. An unknown log type, or a filter that is absolute or climbs out with
``..``, is an error naming it.
"""
from __future__ import annotations

import asyncio
import gzip
import os
import re
import tarfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from boshlab.contracts import LogsResult
from boshlab.dav import BlobstoreError

from ..log import log
from .base import Action, ActionError, Arg, json_type

DEFAULT_FILTERS = ("**/*",)
COMPRESS_LEVEL = 6


@dataclass(frozen=True)
class LogSource:
    log_type: str
    dir: Path
    prefix: str   # inside the tarball


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A doublestar glob as a regex over ``/``-separated relative paths."""
    out, i, n = [], 0, len(pattern)
    while i < n:
        c = pattern[i]
        if pattern.startswith("**", i):
            at_start = i == 0 or pattern[i - 1] == "/"
            if at_start and pattern.startswith("**/", i):
                out.append("(?:.*/)?")
                i += 3
                continue
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pattern.find("]", i + 2 if pattern[i + 1:i + 2] in ("!", "^") else i + 1)
            if j < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1:j]
                if body[:1] in ("!", "^"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out))


def check_filters(filters: list[Any] | None) -> list[str]:
    if not filters:
        return list(DEFAULT_FILTERS)
    checked = []
    for i, f in enumerate(filters, start=1):
        if not isinstance(f, str) or not f:
            raise ActionError(f"filter {i} must be a non-empty string, got {json_type(f)}")
        if f.startswith("/") or ".." in f.split("/"):
            raise ActionError(f"filter {f!r} must be a glob relative to the log directory (no leading '/', "
                              f"no '..')")
        checked.append(f)
    return checked


def select(base: Path, patterns: list[re.Pattern[str]]) -> list[tuple[Path, str]]:
    """(path, path relative to base) of every regular file or symlink under base matching a pattern."""
    found: list[tuple[Path, str]] = []
    if not base.is_dir():
        return found
    for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, base)
        names = sorted(filenames) + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        for name in names:
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            full = Path(dirpath, name)
            if (full.is_symlink() or full.is_file()) and any(p.fullmatch(rel) for p in patterns):
                found.append((full, rel))
    return found


class _Padded:
    """Reads exactly ``size`` bytes: a file that shrank is padded with zeros (tarfile insists on the size)."""

    def __init__(self, f: IO[bytes], size: int) -> None:
        self.f, self.left = f, size

    def read(self, n: int = -1) -> bytes:
        if n < 0 or n > self.left:
            n = self.left
        data = self.f.read(n)
        data += b"\0" * (n - len(data))
        self.left -= n
        return data


def write_tarball(files: list[tuple[Path, str]], out: Path) -> int:
    """tar.gz of ``files`` (path, name in the tarball) at ``out``; returns how many went in. Blocking."""
    count = 0
    with open(out, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb",
                                               compresslevel=COMPRESS_LEVEL) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, name in files:
            try:
                info = tar.gettarinfo(str(path), arcname="./" + name)
                if info.isreg():
                    with open(path, "rb") as f:
                        tar.addfile(info, _Padded(f, info.size))
                elif info.issym():
                    tar.addfile(info)
                else:
                    continue
            except FileNotFoundError:
                continue   # removed since it was listed
            count += 1
    return count


class FetchLogs(Action):
    name = "fetch_logs"
    args = (Arg("log type", str), Arg("filters", list, required=False, nullable=True))

    def is_async(self, protocol: int) -> bool:
        return True

    def sources(self, log_type: str) -> list[LogSource]:
        paths = self.services.paths
        known = {"job": LogSource("job", paths.job_logs, ""), "agent": LogSource("agent", paths.agent_logs, ""),
                 "system": LogSource("system", Path("/var/log"), "var/log/")}
        out: list[LogSource] = []
        for t in log_type.split(","):
            t = t.strip()
            if t not in known:
                raise ActionError(f"Invalid log type {t!r} (expected job, agent or system, comma-joinable)")
            if known[t] not in out:
                out.append(known[t])
        return out

    async def run(self, log_type: str, filters: list[Any] | None = None) -> LogsResult:
        sources = self.sources(log_type)
        globs = check_filters(filters)
        patterns = [glob_regex(g) for g in globs]

        def collect() -> list[tuple[Path, str]]:
            files: list[tuple[Path, str]] = []
            seen: set[str] = set()
            for src in sources:
                for path, rel in select(src.dir, patterns):
                    name = src.prefix + rel
                    if name in seen:
                        log.warning("fetch_logs: %s is in more than one log dir; keeping the first", name)
                        continue
                    seen.add(name)
                    files.append((path, name))
            return files

        files = await asyncio.to_thread(collect)
        tmp = self.services.paths.tmp
        tmp.mkdir(parents=True, exist_ok=True)
        tarball = tmp / f"logs-{uuid.uuid4()}.tgz"
        try:
            count = await asyncio.to_thread(write_tarball, files, tarball)
            size = tarball.stat().st_size
            try:
                async with self.services.blobstore() as dav:
                    blob_id, sha1 = await dav.put_file(tarball)
            except BlobstoreError as e:
                raise ActionError(f"Uploading the logs tarball: {e}") from None
        finally:
            tarball.unlink(missing_ok=True)
        log.info("fetch_logs %s %s: %d file(s) from %s, %d bytes, blob %s (sha1 %s)", log_type, ",".join(globs),
                 count, ", ".join(str(s.dir) for s in sources), size, blob_id, sha1)
        return {"blobstore_id": blob_id, "sha1": sha1}

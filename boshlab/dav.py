"""A client for BOSH's DAV blobstore (nginx WebDAV), the same scheme as bosh-davcli.

Blobs live at ``<endpoint>/<sha1(id)[:2]>/<id>``. PUT answers 201/204, GET 200, HEAD 200/404, DELETE 2xx or
404. Every request carries basic auth; failed requests are retried (3 attempts, as davcli does). Digests are
SHA1 hex strings, checked after every GET. Files are streamed in one pass, at the machine's speed: a GET writes
and hashes each megabyte in a thread while the next arrives; a PUT reads and hashes the next megabyte in a
thread while this one is sent (the digest is known when the upload ends: no second read of the file).

Deadlines (DavConfig fields, each attempt has its own): ``connect_timeout`` (10 s) to connect;
``read_timeout`` (60 s): no byte from the blobstore for that long (before the status line or mid-body) is an
error; ``request_timeout`` (300 s) + size / ``min_rate`` (256 KiB/s) for the whole request, the size being the
upload's or the download's Content-Length, so big blobs get longer. A blobstore that stalls ends, after the
retries, in a BlobstoreError naming the blob and the deadline that expired. The settings'
``blobstore.options`` may carry the same keys.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import aiohttp

from .httpauth import basic_auth

CHUNK = 1024 * 1024           # bytes handed to a thread at a time (file reads and writes, hashing)
READ_BUFSIZE = 4 * CHUNK      # a response's buffer (aiohttp's default, 64 KiB, pauses the socket often)
RETRY_ATTEMPTS = 3


def blob_path(blob_id: str) -> str:
    """``/<first byte of sha1(id) as two hex digits>/<id>`` (davcli and the 2013 Ruby client alike)."""
    if not blob_id or "/" in blob_id or blob_id in (".", ".."):
        raise ValueError(f"invalid blob id {blob_id!r}")
    return f"/{hashlib.sha1(blob_id.encode()).hexdigest()[:2]}/{blob_id}"


def sha1_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


class BlobstoreError(Exception):
    pass


class BlobNotFound(BlobstoreError):
    pass


class Sha1Mismatch(BlobstoreError):
    pass


class BlobstoreDenied(BlobstoreError):
    """The blobstore answered 401 or 403: no or wrong credentials, or a user not allowed to do that (an
    agent may not list blobs nor delete one). Not retried."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class BlobEntry:
    """One blob as the director's listing shows it (nginx autoindex)."""
    id: str
    path: str                # /<xx>/<id>
    size: int | None
    mtime: str | None        # as nginx gives it (RFC 1123)


TIMEOUT_OPTIONS = ("connect_timeout", "read_timeout", "request_timeout", "min_rate")


@dataclass(frozen=True)
class DavConfig:
    endpoint: str
    user: str | None = None
    password: str | None = None
    connect_timeout: float = 10.0        # seconds to connect
    read_timeout: float = 60.0           # seconds without a byte from the blobstore
    request_timeout: float = 300.0       # seconds for a whole request of a small blob ...
    min_rate: float = 256 * 1024         # ... plus one second per this many bytes of the blob

    def deadline(self, size: int | None) -> float:
        """The overall deadline of one request moving ``size`` bytes."""
        return self.request_timeout + (size or 0) / self.min_rate

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> DavConfig:
        """From a settings ``blobstore.options`` hash: ``{"endpoint", "user", "password"}`` and optionally
        ``connect_timeout``, ``read_timeout``, ``request_timeout`` (seconds), ``min_rate`` (bytes/s)."""
        endpoint = options.get("endpoint")
        if not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://")):
            raise BlobstoreError(f"blobstore options need an http(s) endpoint, got {endpoint!r}")
        limits: dict[str, float] = {}
        for key in TIMEOUT_OPTIONS:
            value = options.get(key)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise BlobstoreError(f"blobstore option {key} must be a positive number, got {value!r}")
            limits[key] = float(value)
        return cls(endpoint.rstrip("/"), options.get("user"), options.get("password"), **limits)


Sized = Callable[[int | None], None]   # tells _retry the blob's size once known (the overall deadline grows)


class DavClient:
    """Async DAV client. Pass ``session`` to share one aiohttp session (the transport seam for tests)."""

    def __init__(self, config: DavConfig, session: aiohttp.ClientSession | None = None) -> None:
        self.config = config
        self._session = session
        self._own_session = session is None

    async def __aenter__(self) -> DavClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    def url(self, blob_id: str) -> str:
        return self.config.endpoint + blob_path(blob_id)

    def _timeout(self) -> aiohttp.ClientTimeout:
        """Per request (it overrides a shared session's): connect and read deadlines; the overall one is
        ``asyncio.timeout`` in :meth:`_retry`, as it depends on the blob's size."""
        return aiohttp.ClientTimeout(total=None, sock_connect=self.config.connect_timeout,
                                     sock_read=self.config.read_timeout)

    def _sess(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout(), read_bufsize=READ_BUFSIZE)
        return self._session

    def _auth(self) -> dict[str, str]:
        return basic_auth(self.config.user, self.config.password or "") if self.config.user else {}

    def _check_denied(self, method: str, status: int) -> None:
        if status in (401, 403):
            raise BlobstoreDenied(f"{method} answered {status}", status)

    def _timeout_text(self, e: BaseException) -> str:
        if isinstance(e, aiohttp.ConnectionTimeoutError):
            return f"could not connect within {self.config.connect_timeout:g} s (connect deadline)"
        return f"no data from the blobstore for {self.config.read_timeout:g} s (read deadline)"

    async def _retry(self, what: str, blob_id: str, fn: Callable[[Sized], Awaitable[Any]],
                     size: int | None = None, *, target: str | None = None) -> Any:
        """``fn`` with the retries, each attempt under the overall deadline for ``size`` bytes (``fn`` may
        give the size later: ``sized(content_length)``). Errors end in a BlobstoreError naming the blob."""
        last: Exception | None = None
        detail = ""
        loop = asyncio.get_running_loop()
        for _ in range(RETRY_ATTEMPTS):
            start = loop.time()
            known = size
            try:
                async with asyncio.timeout(self.config.deadline(size)) as cm:
                    def sized(n: int | None, start: float = start, cm: asyncio.Timeout = cm) -> None:
                        nonlocal known
                        known = n
                        cm.reschedule(start + self.config.deadline(n))
                    return await fn(sized)
            except (BlobNotFound, Sha1Mismatch):
                raise
            except BlobstoreDenied as e:     # not retried: the same credentials get the same answer
                raise BlobstoreDenied(f"{what} {target or f'blob {blob_id} at {self.url(blob_id)}'}: {e}",
                                      e.status) from e
            except TimeoutError as e:
                last = e
                if isinstance(e, aiohttp.ServerTimeoutError):
                    detail = self._timeout_text(e)
                else:
                    of = f" for {known} bytes" if known else ""
                    detail = f"not done within {round(self.config.deadline(known), 1):g} s (overall deadline{of})"
            except (aiohttp.ClientError, BlobstoreError) as e:
                last, detail = e, str(e)
        target = target or f"blob {blob_id} at {self.url(blob_id)}"
        raise BlobstoreError(f"{what} {target}: {detail}") from last

    async def exists(self, blob_id: str) -> bool:
        async def go(sized: Sized) -> bool:
            async with self._sess().head(self.url(blob_id), headers=self._auth(), timeout=self._timeout()) as r:
                if r.status == 200:
                    return True
                if r.status == 404:
                    return False
                self._check_denied("HEAD", r.status)
                raise BlobstoreError(f"HEAD answered {r.status}")
        return bool(await self._retry("checking", blob_id, go))

    async def put_bytes(self, data: bytes, blob_id: str | None = None) -> tuple[str, str]:
        """Upload bytes; returns ``(blob_id, sha1)``."""
        blob_id = blob_id or str(uuid.uuid4())
        digest = hashlib.sha1(data).hexdigest()

        async def go(sized: Sized) -> None:
            async with self._sess().put(self.url(blob_id), data=data, headers=self._auth(),
                                        timeout=self._timeout()) as r:
                if r.status not in (201, 204):
                    self._check_denied("PUT", r.status)
                    raise BlobstoreError(f"PUT answered {r.status}")
        await self._retry("uploading", blob_id, go, len(data))
        return blob_id, digest

    async def put_file(self, path: str | os.PathLike[str], blob_id: str | None = None) -> tuple[str, str]:
        """Stream a file up, hashing it on the way (one read of the file); returns ``(blob_id, sha1)``."""
        blob_id = blob_id or str(uuid.uuid4())
        size = os.path.getsize(path)
        digest = ""

        async def go(sized: Sized) -> None:
            nonlocal digest
            h = hashlib.sha1()
            sent = 0

            async def body() -> AsyncIterator[bytes]:
                nonlocal sent
                f = await asyncio.to_thread(open, path, "rb")
                ahead: asyncio.Future[bytes] | None = None
                try:
                    ahead = asyncio.ensure_future(asyncio.to_thread(_read_hashed, f, h))
                    while chunk := await ahead:
                        # read and hash the next chunk in a thread while this one is sent
                        ahead = asyncio.ensure_future(asyncio.to_thread(_read_hashed, f, h))
                        sent += len(chunk)
                        yield chunk
                    if sent != size:
                        raise BlobstoreError(f"{path} changed while it was uploaded ({sent} bytes read, {size} "
                                             f"expected)")
                finally:
                    if ahead is not None and not ahead.done():
                        await asyncio.wait({ahead})
                    await asyncio.to_thread(f.close)

            headers = {"Content-Length": str(size), **self._auth()}
            async with self._sess().put(self.url(blob_id), data=body(), headers=headers,
                                        timeout=self._timeout()) as r:
                if r.status not in (201, 204):
                    self._check_denied("PUT", r.status)
                    raise BlobstoreError(f"PUT answered {r.status}")
            if sent != size:
                raise BlobstoreError(f"{path} changed while it was uploaded ({sent} bytes sent, {size} expected)")
            digest = h.hexdigest()
        await self._retry("uploading", blob_id, go, size)
        return blob_id, digest

    async def get_file(self, blob_id: str, dest: str | os.PathLike[str], sha1: str | None = None) -> str:
        """Stream a blob into ``dest``; verify ``sha1`` when given (the file is removed on mismatch).
        Returns the sha1 of what was downloaded."""
        async def go(sized: Sized) -> str:
            h = hashlib.sha1()
            async with self._sess().get(self.url(blob_id), headers=self._auth(), timeout=self._timeout()) as r:
                if r.status == 404:
                    raise BlobNotFound(f"blob {blob_id} not found in the blobstore")
                if r.status != 200:
                    self._check_denied("GET", r.status)
                    raise BlobstoreError(f"GET answered {r.status}")
                sized(r.content_length)
                f = await asyncio.to_thread(open, dest, "wb")
                try:
                    await _write_hashed(r.content, f, h)
                finally:
                    await asyncio.to_thread(f.close)
            return h.hexdigest()
        got = str(await self._retry("downloading", blob_id, go))
        if sha1 is not None:
            check_sha1(blob_id, sha1, got, dest)
        return got

    async def get_bytes(self, blob_id: str, sha1: str | None = None) -> bytes:
        async def go(sized: Sized) -> bytes:
            async with self._sess().get(self.url(blob_id), headers=self._auth(), timeout=self._timeout()) as r:
                if r.status == 404:
                    raise BlobNotFound(f"blob {blob_id} not found in the blobstore")
                if r.status != 200:
                    self._check_denied("GET", r.status)
                    raise BlobstoreError(f"GET answered {r.status}")
                sized(r.content_length)
                return await r.read()
        data: bytes = await self._retry("downloading", blob_id, go)
        if sha1 is not None:
            check_sha1(blob_id, sha1, hashlib.sha1(data).hexdigest())
        return data

    async def stream(self, blob_id: str) -> AsyncGenerator[tuple[int | None, bytes], None]:
        """A blob as it comes: first ``(content length or None, b"")``, then ``(None, chunk)``s.
        Raises BlobNotFound before yielding anything when it does not exist. The connect and read deadlines
        apply (the consumer sets the pace, so there is no overall one); they end in a BlobstoreError."""
        try:
            async with self._sess().get(self.url(blob_id), headers=self._auth(), timeout=self._timeout()) as r:
                if r.status == 404:
                    raise BlobNotFound(f"blob {blob_id} not found in the blobstore")
                if r.status != 200:
                    raise BlobstoreError(f"GET {blob_id} answered {r.status}")
                yield r.content_length, b""
                async for chunk in r.content.iter_chunked(CHUNK):
                    yield None, chunk
        except aiohttp.ServerTimeoutError as e:
            raise BlobstoreError(f"streaming blob {blob_id} at {self.url(blob_id)}: {self._timeout_text(e)}") from e
        except aiohttp.ClientError as e:
            raise BlobstoreError(f"streaming blob {blob_id} at {self.url(blob_id)}: {e}") from e

    async def sha1_of(self, blob_id: str) -> str | None:
        """The sha1 of a blob as the blobstore holds it now (streamed, never all in memory); None if missing."""
        h = hashlib.sha1()
        try:
            async with contextlib.aclosing(self.stream(blob_id)) as chunks:
                async for _, chunk in chunks:
                    h.update(chunk)
        except BlobNotFound:
            return None
        return h.hexdigest()

    async def _index(self, path: str) -> list[dict[str, Any]]:
        """nginx's ``autoindex_format json`` listing of a directory (``/`` or ``/<xx>/``), with retries."""
        url = self.config.endpoint + path

        async def go(sized: Sized) -> list[dict[str, Any]]:
            async with self._sess().get(url, headers=self._auth(), timeout=self._timeout()) as r:
                if r.status == 404:
                    return []
                if r.status != 200:
                    self._check_denied("GET", r.status)
                    raise BlobstoreError(f"GET answered {r.status}")
                try:
                    entries = await r.json(content_type=None)
                except ValueError:
                    entries = None
            if not isinstance(entries, list):
                raise BlobstoreError(f"GET {url}: not a JSON listing (is autoindex_format json on?)")
            return [e for e in entries if isinstance(e, dict)]
        entries: list[dict[str, Any]] = await self._retry("listing", path, go, target=url)
        return entries

    async def list_blobs(self, concurrency: int = 8) -> list[BlobEntry]:
        """Every blob, sorted by id: the listing of ``/`` then of each ``/<xx>/`` (nginx autoindex, which the
        lab's blobstore allows the director only: an agent gets BlobstoreDenied)."""
        top = await self._index("/")
        dirs = sorted(str(e["name"]) for e in top
                      if e.get("type") == "directory" and re.fullmatch(r"[0-9a-fA-F]{2}", str(e.get("name", ""))))
        sem = asyncio.Semaphore(concurrency)

        async def one(d: str) -> list[BlobEntry]:
            async with sem:
                entries = await self._index(f"/{d}/")
            return [BlobEntry(str(e["name"]), f"/{d}/{e['name']}",
                              int(e["size"]) if isinstance(e.get("size"), int) else None,
                              str(e["mtime"]) if e.get("mtime") is not None else None)
                    for e in entries if e.get("type") == "file" and e.get("name")]
        found = [b for chunk in await asyncio.gather(*(one(d) for d in dirs)) for b in chunk]
        return sorted(found, key=lambda b: b.id)

    async def delete(self, blob_id: str) -> None:
        async def go(sized: Sized) -> None:
            async with self._sess().delete(self.url(blob_id), headers=self._auth(), timeout=self._timeout()) as r:
                if not (200 <= r.status < 300 or r.status == 404):
                    raise BlobstoreError(f"DELETE answered {r.status}")
        await self._retry("deleting", blob_id, go)


def _read_hashed(f: BinaryIO, h: Any) -> bytes:
    """The next chunk of ``f``, added to the hash (in a thread: hashlib and file reads release the GIL)."""
    chunk = f.read(CHUNK)
    h.update(chunk)
    return chunk


def _write_parts(f: BinaryIO, h: Any, parts: list[bytes]) -> None:
    for part in parts:
        f.write(part)
        h.update(part)


async def _write_hashed(content: aiohttp.StreamReader, f: BinaryIO, h: Any) -> None:
    """Everything ``content`` gives, written to ``f`` and hashed: a megabyte at a time in a thread, while the
    event loop receives the next one. The thread is done with ``f`` when this returns or raises."""
    pending: asyncio.Future[None] | None = None
    parts: list[bytes] = []
    held = 0
    try:
        async for data in content.iter_any():
            parts.append(data)
            held += len(data)
            if held >= CHUNK:
                if pending is not None:
                    await pending
                pending = asyncio.ensure_future(asyncio.to_thread(_write_parts, f, h, parts))
                parts, held = [], 0
        if pending is not None:
            await pending
        if parts:
            pending = asyncio.ensure_future(asyncio.to_thread(_write_parts, f, h, parts))
            await pending
    finally:
        if pending is not None and not pending.done():
            await asyncio.wait({pending})    # never close the file under a writing thread


def check_sha1(blob_id: str, expected: str, actual: str, path: str | os.PathLike[str] | None = None) -> None:
    """Raise Sha1Mismatch (removing ``path``) when the digests differ. Accepts ``sha1:<hex>`` too."""
    want = expected.split(":", 1)[1] if expected.startswith("sha1:") else expected
    if want.lower() != actual.lower():
        if path is not None:
            Path(path).unlink(missing_ok=True)
        raise Sha1Mismatch(f"sha1 mismatch for blob {blob_id}: expected {want}, got {actual}")

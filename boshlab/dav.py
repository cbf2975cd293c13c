"""A client for BOSH's DAV blobstore (nginx WebDAV), the same scheme as bosh-davcli.

Blobs live at ``<endpoint>/<sha1(id)[:2]>/<id>``. PUT answers 201/204, GET 200, HEAD 200/404, DELETE 2xx or
404. Every request carries basic auth; failed requests are retried (3 attempts, as davcli does). Digests are
SHA1 hex strings, checked after every GET. Files are streamed; hashing of files runs in a thread.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from .httpauth import basic_auth

CHUNK = 1024 * 1024
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


@dataclass(frozen=True)
class DavConfig:
    endpoint: str
    user: str | None = None
    password: str | None = None

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> "DavConfig":
        """From a settings ``blobstore.options`` hash: ``{"endpoint", "user", "password"}``."""
        endpoint = options.get("endpoint")
        if not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://")):
            raise BlobstoreError(f"blobstore options need an http(s) endpoint, got {endpoint!r}")
        return cls(endpoint.rstrip("/"), options.get("user"), options.get("password"))


class DavClient:
    """Async DAV client. Pass ``session`` to share one aiohttp session (the transport seam for tests)."""

    def __init__(self, config: DavConfig, session: aiohttp.ClientSession | None = None) -> None:
        self.config = config
        self._session = session
        self._own_session = session is None

    async def __aenter__(self) -> "DavClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    def url(self, blob_id: str) -> str:
        return self.config.endpoint + blob_path(blob_id)

    def _sess(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
        return self._session

    def _auth(self) -> dict[str, str]:
        return basic_auth(self.config.user, self.config.password or "") if self.config.user else {}

    async def _retry(self, what: str, blob_id: str, fn: Any) -> Any:
        last: Exception | None = None
        for _ in range(RETRY_ATTEMPTS):
            try:
                return await fn()
            except (BlobNotFound, Sha1Mismatch):
                raise
            except (aiohttp.ClientError, asyncio.TimeoutError, BlobstoreError) as e:
                last = e
        raise BlobstoreError(f"{what} blob {blob_id} at {self.url(blob_id)}: {last}") from last

    async def exists(self, blob_id: str) -> bool:
        async def go() -> bool:
            async with self._sess().head(self.url(blob_id), headers=self._auth()) as r:
                if r.status == 200:
                    return True
                if r.status == 404:
                    return False
                raise BlobstoreError(f"HEAD answered {r.status}")
        return bool(await self._retry("checking", blob_id, go))

    async def put_bytes(self, data: bytes, blob_id: str | None = None) -> tuple[str, str]:
        """Upload bytes; returns ``(blob_id, sha1)``."""
        blob_id = blob_id or str(uuid.uuid4())
        digest = hashlib.sha1(data).hexdigest()

        async def go() -> None:
            async with self._sess().put(self.url(blob_id), data=data, headers=self._auth()) as r:
                if r.status not in (201, 204):
                    raise BlobstoreError(f"PUT answered {r.status}")
        await self._retry("uploading", blob_id, go)
        return blob_id, digest

    async def put_file(self, path: str | os.PathLike[str], blob_id: str | None = None) -> tuple[str, str]:
        """Stream a file up; returns ``(blob_id, sha1)``."""
        blob_id = blob_id or str(uuid.uuid4())
        digest = await asyncio.to_thread(sha1_file, path)
        size = os.path.getsize(path)

        async def body() -> AsyncIterator[bytes]:
            with open(path, "rb") as f:
                while chunk := await asyncio.to_thread(f.read, CHUNK):
                    yield chunk

        async def go() -> None:
            headers = {"Content-Length": str(size), **self._auth()}
            async with self._sess().put(self.url(blob_id), data=body(), headers=headers) as r:
                if r.status not in (201, 204):
                    raise BlobstoreError(f"PUT answered {r.status}")
        await self._retry("uploading", blob_id, go)
        return blob_id, digest

    async def get_file(self, blob_id: str, dest: str | os.PathLike[str], sha1: str | None = None) -> str:
        """Stream a blob into ``dest``; verify ``sha1`` when given (the file is removed on mismatch).
        Returns the sha1 of what was downloaded."""
        async def go() -> str:
            h = hashlib.sha1()
            async with self._sess().get(self.url(blob_id), headers=self._auth()) as r:
                if r.status == 404:
                    raise BlobNotFound(f"blob {blob_id} not found in the blobstore")
                if r.status != 200:
                    raise BlobstoreError(f"GET answered {r.status}")
                with open(dest, "wb") as f:
                    async for chunk in r.content.iter_chunked(CHUNK):
                        h.update(chunk)
                        await asyncio.to_thread(f.write, chunk)
            return h.hexdigest()
        got = str(await self._retry("downloading", blob_id, go))
        if sha1 is not None:
            check_sha1(blob_id, sha1, got, dest)
        return got

    async def get_bytes(self, blob_id: str, sha1: str | None = None) -> bytes:
        async def go() -> bytes:
            async with self._sess().get(self.url(blob_id), headers=self._auth()) as r:
                if r.status == 404:
                    raise BlobNotFound(f"blob {blob_id} not found in the blobstore")
                if r.status != 200:
                    raise BlobstoreError(f"GET answered {r.status}")
                return await r.read()
        data: bytes = await self._retry("downloading", blob_id, go)
        if sha1 is not None:
            check_sha1(blob_id, sha1, hashlib.sha1(data).hexdigest())
        return data

    async def delete(self, blob_id: str) -> None:
        async def go() -> None:
            async with self._sess().delete(self.url(blob_id), headers=self._auth()) as r:
                if not (200 <= r.status < 300 or r.status == 404):
                    raise BlobstoreError(f"DELETE answered {r.status}")
        await self._retry("deleting", blob_id, go)


def check_sha1(blob_id: str, expected: str, actual: str, path: str | os.PathLike[str] | None = None) -> None:
    """Raise Sha1Mismatch (removing ``path``) when the digests differ. Accepts ``sha1:<hex>`` too."""
    want = expected.split(":", 1)[1] if expected.startswith("sha1:") else expected
    if want.lower() != actual.lower():
        if path is not None:
            Path(path).unlink(missing_ok=True)
        raise Sha1Mismatch(f"sha1 mismatch for blob {blob_id}: expected {want}, got {actual}")

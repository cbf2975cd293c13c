"""The DAV client streams files in one pass: a GET writes and hashes in a thread while the next bytes arrive,
a PUT hashes what it sends (no read of the file beforehand). Against a loopback aiohttp server."""
from __future__ import annotations

import hashlib
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

import boshlab.dav as dav_module
from boshlab.dav import BlobstoreError, DavClient, DavConfig, Sha1Mismatch, blob_path
from tests.unit.conftest import Handler

Store = dict[str, bytes]


@pytest.fixture
async def server(http_server: Callable[[Handler], Awaitable[str]]) -> tuple[str, Store]:
    """A DAV fake that answers GETs in small pieces (as a socket does) and stores PUT bodies."""
    store: Store = {}

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.method == "PUT":
            store[request.path] = await request.read()
            return web.Response(status=201)
        if request.path not in store:
            return web.Response(status=404)
        body = store[request.path]
        resp = web.StreamResponse(headers={"Content-Length": str(len(body))})
        await resp.prepare(request)
        for i in range(0, len(body), 200_003):      # odd-sized pieces: chunk boundaries never line up
            await resp.write(body[i:i + 200_003])
        await resp.write_eof()
        return resp

    return await http_server(handler), store


async def test_put_file_hashes_while_sending_and_reads_the_file_once(server: tuple[str, Store], tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint, store = server
    data = os.urandom(5 * dav_module.CHUNK + 12345)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    reads: list[int] = []
    real = dav_module._read_hashed

    def counting(f: object, h: object) -> bytes:
        chunk = real(f, h)  # type: ignore[arg-type]
        reads.append(len(chunk))
        return chunk
    monkeypatch.setattr(dav_module, "_read_hashed", counting)
    monkeypatch.setattr(dav_module, "sha1_file", lambda path: pytest.fail("put_file must not hash the file first"))
    async with DavClient(DavConfig(endpoint, "agent", "agent")) as c:
        blob_id, sha1 = await c.put_file(src)
    assert sha1 == hashlib.sha1(data).hexdigest()
    assert store[blob_path(blob_id)] == data
    assert sum(reads) == len(data)       # every byte read once, then the empty read that ends it
    assert reads[-1] == 0


async def test_put_file_of_an_empty_file(server: tuple[str, Store], tmp_path: Path) -> None:
    endpoint, store = server
    (tmp_path / "empty").write_bytes(b"")
    async with DavClient(DavConfig(endpoint, "agent", "agent")) as c:
        blob_id, sha1 = await c.put_file(tmp_path / "empty")
    assert sha1 == hashlib.sha1(b"").hexdigest()
    assert store[blob_path(blob_id)] == b""


async def test_get_file_writes_and_hashes_every_byte_in_order(server: tuple[str, Store], tmp_path: Path) -> None:
    endpoint, store = server
    data = os.urandom(7 * dav_module.CHUNK + 999)
    store[blob_path("big")] = data
    async with DavClient(DavConfig(endpoint, "agent", "agent")) as c:
        got = await c.get_file("big", tmp_path / "out", hashlib.sha1(data).hexdigest())
        assert got == hashlib.sha1(data).hexdigest()
        assert (tmp_path / "out").read_bytes() == data
        store[blob_path("small")] = b"abc"
        assert await c.get_file("small", tmp_path / "small") == hashlib.sha1(b"abc").hexdigest()
        assert (tmp_path / "small").read_bytes() == b"abc"
        with pytest.raises(Sha1Mismatch):
            await c.get_file("big", tmp_path / "bad", "0" * 40)
        assert not (tmp_path / "bad").exists()


async def test_a_file_that_shrinks_during_the_upload_is_an_error(server: tuple[str, Store], tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint, _ = server
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * (2 * dav_module.CHUNK))
    real_size = os.path.getsize
    monkeypatch.setattr(os.path, "getsize", lambda p: real_size(p) + 10)   # the size it had before
    async with DavClient(DavConfig(endpoint, "agent", "agent", request_timeout=5)) as c:
        with pytest.raises(BlobstoreError):
            await c.put_file(src)

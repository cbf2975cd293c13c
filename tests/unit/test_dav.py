"""The DAV client against a small in-process DAV server (a fake of the nginx boundary; the real nginx is
exercised end to end)."""
import hashlib

import pytest
from aiohttp import web

from boshlab.dav import BlobNotFound, DavClient, DavConfig, Sha1Mismatch, blob_path


def test_blob_path_is_sha1_prefix_of_the_id():
    # the deck's package blob: /<first byte of sha1(id)>/<id>
    blob_id = "13db6a1a-c262-4cc1-b765-b401b47cd366"
    assert blob_path(blob_id) == f"/{hashlib.sha1(blob_id.encode()).hexdigest()[:2]}/{blob_id}"
    assert blob_path("abc") == "/a9/abc"
    for bad in ("", "a/b", ".."):
        with pytest.raises(ValueError):
            blob_path(bad)


@pytest.fixture
async def dav(http_server):
    """A small DAV fake (BOSH's verbs and status codes) on a loopback port: (endpoint, store, requests seen)."""
    store: dict[str, bytes] = {}
    seen: list[tuple[str, str, str | None]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append((request.method, request.path, request.headers.get("Authorization")))
        if request.headers.get("Authorization") is None:
            return web.Response(status=401)
        if request.method == "PUT":
            store[request.path] = await request.read()
            return web.Response(status=201)
        if request.path not in store:
            return web.Response(status=404)
        if request.method == "DELETE":
            del store[request.path]
            return web.Response(status=204)
        return web.Response(body=store[request.path] if request.method == "GET" else b"")

    return await http_server(handler), store, seen


async def test_put_get_exists_delete(dav, tmp_path):
    endpoint, store, seen = dav
    async with DavClient(DavConfig(endpoint, "agent", "agent")) as c:
        blob_id, sha1 = await c.put_bytes(b"hello")
        assert sha1 == hashlib.sha1(b"hello").hexdigest()
        assert blob_path(blob_id) in store
        assert await c.exists(blob_id)
        assert await c.get_bytes(blob_id, sha1) == b"hello"
        src = tmp_path / "src.bin"
        src.write_bytes(b"x" * (3 * 1024 * 1024 + 7))
        fid, fsha = await c.put_file(src)
        dest = tmp_path / "dest.bin"
        assert await c.get_file(fid, dest, fsha) == fsha
        assert dest.read_bytes() == src.read_bytes()
        await c.delete(blob_id)
        assert not await c.exists(blob_id)
        await c.delete(blob_id)  # 404 counts as deleted
    assert all(auth and auth.startswith("Basic ") for _, _, auth in seen)


async def test_sha1_mismatch_is_rejected_and_file_removed(dav, tmp_path):
    endpoint, _, _ = dav
    async with DavClient(DavConfig(endpoint, "agent", "agent")) as c:
        blob_id, _ = await c.put_bytes(b"real content")
        dest = tmp_path / "out"
        with pytest.raises(Sha1Mismatch, match="expected 0000"):
            await c.get_file(blob_id, dest, "0" * 40)
        assert not dest.exists()
        with pytest.raises(Sha1Mismatch):
            await c.get_bytes(blob_id, "f" * 40)


async def test_missing_blob(dav, tmp_path):
    endpoint, _, _ = dav
    async with DavClient(DavConfig(endpoint, "agent", "agent")) as c:
        with pytest.raises(BlobNotFound):
            await c.get_file("no-such-blob", tmp_path / "x")

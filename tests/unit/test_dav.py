"""The DAV client against a small in-process DAV server (a fake of the nginx boundary; the real nginx is
exercised end to end)."""
import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web

from boshlab.dav import BlobNotFound, BlobstoreError, DavClient, DavConfig, Sha1Mismatch, blob_path
from tests.unit.conftest import Handler

Dav = tuple[str, dict[str, bytes], list[tuple[str, str, str | None]]]


def test_blob_path_is_sha1_prefix_of_the_id() -> None:
    # the deck's package blob: /<first byte of sha1(id)>/<id>
    blob_id = "13db6a1a-c262-4cc1-b765-b401b47cd366"
    assert blob_path(blob_id) == f"/{hashlib.sha1(blob_id.encode()).hexdigest()[:2]}/{blob_id}"
    assert blob_path("abc") == "/a9/abc"
    for bad in ("", "a/b", ".."):
        with pytest.raises(ValueError):
            blob_path(bad)


@pytest.fixture
async def dav(http_server: Callable[[Handler], Awaitable[str]]) -> Dav:
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


async def test_put_get_exists_delete(dav: Dav, tmp_path: Path) -> None:
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


async def test_sha1_mismatch_is_rejected_and_file_removed(dav: Dav, tmp_path: Path) -> None:
    endpoint, _, _ = dav
    async with DavClient(DavConfig(endpoint, "agent", "agent")) as c:
        blob_id, _ = await c.put_bytes(b"real content")
        dest = tmp_path / "out"
        with pytest.raises(Sha1Mismatch, match="expected 0000"):
            await c.get_file(blob_id, dest, "0" * 40)
        assert not dest.exists()
        with pytest.raises(Sha1Mismatch):
            await c.get_bytes(blob_id, "f" * 40)


async def test_missing_blob(dav: Dav, tmp_path: Path) -> None:
    endpoint, _, _ = dav
    async with DavClient(DavConfig(endpoint, "agent", "agent")) as c:
        with pytest.raises(BlobNotFound):
            await c.get_file("no-such-blob", tmp_path / "x")


# --- deadlines: a blobstore that stalls ------------------------------------------------------------

Respond = Callable[[asyncio.StreamReader, asyncio.StreamWriter, asyncio.Event], Awaitable[None]]


@asynccontextmanager
async def raw_http(respond: Respond) -> AsyncIterator[tuple[str, list[float]]]:
    """A loopback TCP server that reads a request's head and then does what ``respond`` does (typically:
    nothing, for ever). Yields the endpoint and the times connections came in (one per attempt)."""
    release = asyncio.Event()
    seen: list[float] = []

    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(time.monotonic())
        try:
            await reader.readuntil(b"\r\n\r\n")
            await respond(reader, writer, release)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        release.set()
        server.close()
        await server.wait_closed()


async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, release: asyncio.Event) -> None:
    await release.wait()


async def stop_mid_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, release: asyncio.Event) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
    await writer.drain()
    await release.wait()


def trickle(total: int, step: int, every: float) -> Respond:
    """Announce ``total`` bytes, then send ``step`` bytes every ``every`` seconds: never silent for long."""
    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, release: asyncio.Event) -> None:
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {total}\r\n\r\n".encode())
        sent = 0
        while sent < total and not release.is_set():
            writer.write(b"y" * min(step, total - sent))
            sent += step
            await writer.drain()
            await asyncio.sleep(every)
    return respond


@pytest.mark.parametrize("respond", [never_answer, stop_mid_body], ids=["no-answer", "stops-mid-body"])
async def test_a_silent_blobstore_hits_the_read_deadline(respond: Respond, tmp_path: Path) -> None:
    async with raw_http(respond) as (endpoint, seen):
        config = DavConfig(endpoint, "agent", "agent", read_timeout=0.3)
        async with DavClient(config) as c:
            for call in (lambda: c.get_bytes("blob-1"), lambda: c.get_file("blob-1", tmp_path / "f")):
                seen.clear()
                start = time.monotonic()
                with pytest.raises(BlobstoreError) as e:
                    await asyncio.wait_for(call(), 10)
                assert time.monotonic() - start < 3        # 3 attempts of 0.3 s, not for ever
                assert len(seen) == 3                      # each attempt retried, as davcli does
                assert "downloading blob blob-1" in str(e.value)
                assert "no data from the blobstore for 0.3 s (read deadline)" in str(e.value)


async def test_every_verb_has_the_read_deadline() -> None:
    async with raw_http(never_answer) as (endpoint, _):
        async with DavClient(DavConfig(endpoint, "agent", "agent", read_timeout=0.2)) as c:
            for what, call in [("checking", c.exists("b")), ("uploading", c.put_bytes(b"data", "b")),
                               ("deleting", c.delete("b"))]:
                with pytest.raises(BlobstoreError, match=f"{what} blob b at .*0.2 s \\(read deadline\\)"):
                    await asyncio.wait_for(call, 10)
            with pytest.raises(BlobstoreError, match="streaming blob b .*0.2 s \\(read deadline\\)"):
                await asyncio.wait_for(anext(c.stream("b")), 10)


async def test_a_trickling_blobstore_hits_the_overall_deadline() -> None:
    async with raw_http(trickle(1000, 1, 0.05)) as (endpoint, seen):
        config = DavConfig(endpoint, "agent", "agent", read_timeout=5, request_timeout=0.4, min_rate=1e9)
        async with DavClient(config) as c:
            start = time.monotonic()
            with pytest.raises(BlobstoreError) as e:
                await asyncio.wait_for(c.get_bytes("blob-2"), 10)
            assert time.monotonic() - start < 4
            assert len(seen) == 3
            assert "downloading blob blob-2" in str(e.value) and "not done within 0.4 s (overall deadline for 1000 bytes)" in str(e.value)


async def test_the_overall_deadline_grows_with_the_blobs_size() -> None:
    # 1000 bytes in ~0.6 s: more than the 0.2 s base, less than 0.2 s + 1000 B / (1000 B/s)
    async with raw_http(trickle(1000, 100, 0.06)) as (endpoint, seen):
        config = DavConfig(endpoint, "agent", "agent", read_timeout=5, request_timeout=0.2, min_rate=1000)
        async with DavClient(config) as c:
            assert await asyncio.wait_for(c.get_bytes("big"), 10) == b"y" * 1000
        assert len(seen) == 1
    assert DavConfig("http://x", request_timeout=10, min_rate=100).deadline(1000) == 20


def test_deadlines_have_defaults_and_come_from_the_settings_options() -> None:
    default = DavConfig.from_options({"endpoint": "http://b:25250/"})
    assert (default.connect_timeout, default.read_timeout, default.request_timeout) == (10, 60, 300)
    c = DavConfig.from_options({"endpoint": "http://b", "read_timeout": 5, "request_timeout": 30.5, "min_rate": 1e6})
    assert (c.endpoint, c.read_timeout, c.request_timeout, c.min_rate) == ("http://b", 5, 30.5, 1e6)
    for bad in (0, -1, "5", True):
        with pytest.raises(BlobstoreError, match="read_timeout must be a positive number"):
            DavConfig.from_options({"endpoint": "http://b", "read_timeout": bad})

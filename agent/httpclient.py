"""A small HTTP/1.1 client on asyncio streams, for the agent's two small conversations: the registry (its
settings, at boot) and monit's API on loopback (every status and action).

Why not aiohttp: importing it costs a VM about 8 MiB of memory and, on a busy machine, a noticeable part of
the agent's start-up (issue 12: VMs ready fast, VMs small). These requests are tiny, one per connection
(``Connection: close``), so a few lines do. Blobs are another matter: they go through ``boshlab.dav``
(aiohttp, streaming), imported only when an action fetches or uploads a blob.

Every request has one deadline for all of it (connect, send, answer): ``TimeoutError`` when it expires.
A connection that fails or an answer that is not HTTP raises :class:`HTTPError` (an ``OSError``, as socket
errors are). Bodies are bounded (``max_body``)."""
from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_BODY = 16 * 1024 * 1024
MAX_HEADER_LINE = 64 * 1024


class HTTPError(OSError):
    """The server cannot be reached or its answer is not HTTP."""


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]      # names in lower case
    body: bytes

    def text(self) -> str:
        return self.body.decode(errors="replace")


async def request(method: str, url: str, headers: dict[str, str] | None = None, body: bytes = b"",
                  timeout: float = 10.0, max_body: int = MAX_BODY) -> Response:
    """One request on a connection of its own, within ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        return await _request(method, url, headers or {}, body, max_body)


def _target(url: str) -> tuple[str, str, int, bool, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HTTPError(f"not an http(s) URL: {url!r}")
    tls = parts.scheme == "https"
    try:
        port = parts.port or (443 if tls else 80)
    except ValueError as e:
        raise HTTPError(f"bad port in {url!r}: {e}") from None
    host_header = parts.netloc.rpartition("@")[2]
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.hostname, host_header, port, tls, path


async def _request(method: str, url: str, headers: dict[str, str], body: bytes, max_body: int) -> Response:
    host, host_header, port, tls, path = _target(url)
    ssl_ctx = None
    if tls:   # the lab's registry is plain http: ssl (OpenSSL) is loaded only when https is asked for
        import ssl
        ssl_ctx = ssl.create_default_context()
    reader, writer = await asyncio.open_connection(host, port, ssl=ssl_ctx, limit=MAX_HEADER_LINE)
    try:
        head = [f"{method} {path} HTTP/1.1", f"Host: {host_header}", "Connection: close",
                "Accept-Encoding: identity"]
        if body or method in ("POST", "PUT"):
            head.append(f"Content-Length: {len(body)}")
        head += [f"{k}: {v}" for k, v in headers.items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
        status, resp_headers = await _read_head(reader)
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return Response(status, resp_headers, b"")
        return Response(status, resp_headers, await _read_body(reader, resp_headers, max_body))
    finally:
        writer.close()
        with contextlib.suppress(OSError, asyncio.CancelledError):
            await writer.wait_closed()


async def _line(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as e:
        raise HTTPError("the server closed the connection before it answered" if not e.partial
                        else "the server's answer ended in its header") from None
    except asyncio.LimitOverrunError:
        raise HTTPError("the server's answer has a header line that is too long") from None


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    status_line = (await _line(reader)).decode("latin-1").strip()
    version, _, rest = status_line.partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/") or not code.isdigit():
        raise HTTPError(f"not an HTTP answer: {status_line[:100]!r}")
    headers: dict[str, str] = {}
    for _ in range(200):
        line = (await _line(reader)).decode("latin-1").strip()
        if not line:
            return int(code), headers
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    raise HTTPError("the server's answer has too many header lines")


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str], max_body: int) -> bytes:
    try:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            out = bytearray()
            while True:
                size = int((await _line(reader)).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    return bytes(out)
                if len(out) + size > max_body:
                    raise HTTPError(f"the server's answer is larger than {max_body} bytes")
                out += await reader.readexactly(size)
                await reader.readexactly(2)
        if "content-length" in headers:
            length = int(headers["content-length"])
            if length > max_body:
                raise HTTPError(f"the server's answer is larger than {max_body} bytes")
            return await reader.readexactly(length)
        data = await reader.read(max_body + 1)
        rest = data
        while rest and len(data) <= max_body:
            rest = await reader.read(max_body + 1 - len(data))
            data += rest
        if len(data) > max_body:
            raise HTTPError(f"the server's answer is larger than {max_body} bytes")
        return data
    except ValueError:
        raise HTTPError("the server's answer has a bad Content-Length or chunk size") from None
    except asyncio.IncompleteReadError:
        raise HTTPError("the server closed the connection in the middle of its answer") from None

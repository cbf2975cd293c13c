"""The one client of the director's HTTP API: the CLI, the end-to-end tests and bench/ all use it.

It is the only code that knows the API's URLs, its authentication (HTTP basic, admin/admin by default) and
how errors come back (a status and a JSON ``{"description": ...}``). Callers get Python values and typed
errors, never text to scrape:

* :class:`DirectorError` (``status``, ``description``) for every answer >= 400, as one of
  :class:`DirectorBadRequest` (400), :class:`DirectorNotFound` (404), :class:`DirectorConflict` (409, e.g. the
  deployment is locked by another task) or :class:`DirectorError` itself for the rest;
* :class:`DirectorUnreachable` when no answer came (connection refused or lost, timeout);
* :class:`TaskStillRunning` when :meth:`DirectorClient.wait_task` gave up.

:class:`DirectorClient` is asynchronous (aiohttp). :class:`SyncDirectorClient` offers the same operations to
synchronous code (pytest end-to-end tests, bench scripts): it runs a :class:`DirectorClient` on an event loop
of its own, in a thread of its own, so it also works where another loop already runs.
"""
from __future__ import annotations

import asyncio
import base64
import json as jsonlib
import threading
import time
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import aiohttp

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:25555"
ACTIVE_TASK_STATES = ("queued", "processing", "cancelling")
"""A task in one of these states has not ended yet."""

Params = Mapping[str, str]
Auth = bool | tuple[str, str]


# --- errors ---------------------------------------------------------------------------------------------

class DirectorClientError(Exception):
    """Anything this client raises."""


class DirectorError(DirectorClientError):
    """The director answered with an error status; ``description`` is its explanation."""

    def __init__(self, status: int, description: str) -> None:
        super().__init__(f"director answered {status}: {description}")
        self.status = status
        self.description = description

    @staticmethod
    def for_status(status: int, description: str) -> DirectorError:
        cls = _ERRORS.get(status, DirectorError)
        return cls(status, description)


class DirectorBadRequest(DirectorError):
    """400: the request (manifest, parameters) is not valid."""


class DirectorNotFound(DirectorError):
    """404: no such deployment, instance, task, release, disk or resource."""


class DirectorConflict(DirectorError):
    """409: the deployment is locked by another task, the task is not running, ..."""


_ERRORS: dict[int, type[DirectorError]] = {400: DirectorBadRequest, 404: DirectorNotFound, 409: DirectorConflict}


class DirectorUnreachable(DirectorClientError):
    """No answer: the director is down, the URL is wrong, or it did not answer in time."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach the director at {url}: {reason}")
        self.url = url
        self.reason = reason


class TaskStillRunning(DirectorClientError):
    """:meth:`DirectorClient.wait_task` gave up before the task ended."""

    def __init__(self, task_id: int, timeout: float) -> None:
        super().__init__(f"task {task_id} still running after {timeout}s")
        self.task_id = task_id
        self.timeout = timeout


# --- values ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Response:
    """A whole answer: status, body and headers."""
    status: int
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return jsonlib.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


@dataclass(frozen=True)
class TaskOutput:
    """A piece of a task's output (``GET /tasks/N/output``) from an offset on."""
    data: bytes
    next_offset: int
    state: str

    @property
    def text(self) -> str:
        return self.data.decode(errors="replace")

    @property
    def ended(self) -> bool:
        return self.state not in ACTIVE_TASK_STATES


def basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def _error_description(r: aiohttp.ClientResponse) -> str:
    """The director's ``{"description": ...}``, or the body as text."""
    raw = await r.read()
    if not raw.strip():
        return "None"   # as aiohttp's ClientResponse.json() reads an empty body
    try:
        body = jsonlib.loads(raw)
    except ValueError:
        return raw.decode(errors="replace").strip()
    msg = body.get("description", body) if isinstance(body, dict) else body
    return str(msg)


# --- the asynchronous client ----------------------------------------------------------------------------

class DirectorClient:
    """The director's API over aiohttp. ``timeout`` (seconds, None: no limit) applies to each request unless
    the call gives its own; connecting gives up after ``connect_timeout``. Use ``async with`` or
    :meth:`close`."""

    def __init__(self, url: str = DEFAULT_URL, user: str = "admin", password: str = "admin", *,
                 timeout: float | None = None, connect_timeout: float = 10) -> None:
        self.url = url.rstrip("/")
        self.user = user
        self._auth = basic_auth(user, password)
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> DirectorClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _sess(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout, sock_connect=self._connect_timeout))
        return self._session

    def _headers(self, auth: Auth, content_type: str | None) -> dict[str, str]:
        headers: dict[str, str] = {}
        if auth is True:
            headers["Authorization"] = self._auth
        elif isinstance(auth, tuple):
            headers["Authorization"] = basic_auth(*auth)
        if content_type is not None:
            headers["Content-Type"] = content_type
        return headers

    async def request(self, method: str, path: str, *, params: Params | None = None, json: Any = None,
                      data: Any = None, content_type: str | None = None, auth: Auth = True, check: bool = True,
                      timeout: float | None = None) -> aiohttp.ClientResponse:
        """One request; the answer unread (stream it, or read it). ``path`` may carry a query string.
        ``json`` (not None) is sent as JSON, ``data`` (bytes, str or a binary file) as it is, with
        ``content_type``. ``check``: an answer >= 400 raises :class:`DirectorError` (the body read)."""
        kw: dict[str, Any] = {"headers": self._headers(auth, content_type)}
        if params:
            kw["params"] = dict(params)
        if json is not None:
            kw["json"] = json
        if data is not None:
            kw["data"] = data
        if timeout is not None:
            kw["timeout"] = aiohttp.ClientTimeout(total=timeout, sock_connect=self._connect_timeout)
        try:
            r = await self._sess().request(method, self.url + path, **kw)
        except aiohttp.ClientConnectionError as e:
            raise DirectorUnreachable(self.url, str(e)) from None
        except TimeoutError:
            raise DirectorUnreachable(self.url, f"no answer to {method} {path} in time") from None
        if check and r.status >= 400:
            try:
                description = await _error_description(r)
            finally:
                r.release()
            raise DirectorError.for_status(r.status, description)
        return r

    async def fetch(self, method: str, path: str, *, params: Params | None = None, json: Any = None,
                    data: Any = None, content_type: str | None = None, auth: Auth = True, check: bool = True,
                    timeout: float | None = None) -> Response:
        """:meth:`request` with the whole body read."""
        r = await self.request(method, path, params=params, json=json, data=data, content_type=content_type,
                               auth=auth, check=check, timeout=timeout)
        try:
            body = await r.read()
        except aiohttp.ClientConnectionError as e:
            raise DirectorUnreachable(self.url, str(e)) from None
        finally:
            r.release()
        return Response(r.status, body, dict(r.headers))

    async def get_json(self, path: str, *, params: Params | None = None) -> Any:
        return (await self.fetch("GET", path, params=params)).json()

    async def send_json(self, method: str, path: str, body: Any = None, *, params: Params | None = None) -> Any:
        """Send ``body`` as JSON (None: no body); the JSON answer."""
        return (await self.fetch(method, path, json=body, params=params)).json()

    async def send(self, method: str, path: str, data: bytes | str | None = None, *,
                   content_type: str | None = None, params: Params | None = None) -> Any:
        """Send ``data`` as it is (a YAML manifest, a tarball); the JSON answer."""
        return (await self.fetch(method, path, data=data, content_type=content_type, params=params)).json()

    async def upload(self, path: str, file: Path, *, content_type: str = "application/x-compressed",
                     method: str = "POST", params: Params | None = None) -> Any:
        """Stream a file (a release tarball) as the body; the JSON answer."""
        with open(file, "rb") as f:
            return (await self.fetch(method, path, data=f, content_type=content_type, params=params)).json()

    async def stream(self, path: str, *, params: Params | None = None,
                     chunk_size: int | None = None) -> AsyncGenerator[bytes, None]:
        """A resource's body as it comes (``chunk_size`` None: whatever arrives), e.g. a log bundle
        (``/resources/ID``) or live logs (``.../logs/follow``)."""
        r = await self.request("GET", path, params=params)
        try:
            if chunk_size is None:
                async for chunk in r.content.iter_any():
                    yield chunk
            else:
                async for chunk in r.content.iter_chunked(chunk_size):
                    yield chunk
        except aiohttp.ClientConnectionError as e:
            raise DirectorUnreachable(self.url, str(e)) from None
        finally:
            r.release()

    async def lines(self, path: str, *, params: Params | None = None, headers_timeout: float = 30,
                    max_line: int = 16 * 1024 * 1024) -> AsyncGenerator[bytes, None]:
        """A streamed line-oriented body (JSONL, e.g. ``GET /watch``), one line at a time without its newline
        (blank lines skipped; a last line without a newline is given too). The answer's headers must come
        within ``headers_timeout`` seconds (:class:`DirectorUnreachable` if not); then there is no read
        deadline, as a stream may be quiet for long. A line longer than ``max_line`` bytes is an error."""
        try:
            async with asyncio.timeout(headers_timeout):
                r = await self.request("GET", path, params=params)
        except TimeoutError:
            raise DirectorUnreachable(self.url, f"no answer to GET {path} within {headers_timeout:g} s") from None
        pending: list[bytes] = []       # the line being received, in pieces
        pending_len = 0
        try:
            async for chunk in r.content.iter_any():
                while (i := chunk.find(b"\n")) >= 0:
                    line = b"".join([*pending, chunk[:i]]).rstrip(b"\r")
                    pending, pending_len, chunk = [], 0, chunk[i + 1:]
                    if line.strip():
                        yield line
                pending.append(chunk)
                pending_len += len(chunk)
                if pending_len > max_line:
                    raise DirectorError(r.status, f"GET {path}: a line longer than {max_line} bytes")
            last = b"".join(pending).rstrip(b"\r")
            if last.strip():
                yield last
        except aiohttp.ClientError as e:
            raise DirectorUnreachable(self.url, f"GET {path}: {e}") from None
        finally:
            r.release()

    # --- tasks ----------------------------------------------------------------------------------------

    async def start_task(self, method: str, path: str, *, json: Any = None, data: bytes | str | None = None,
                         content_type: str | None = None, params: Params | None = None) -> int:
        """A request that starts a task (the director answers 202 ``{"id": N}``); the task's id."""
        reply = (await self.fetch(method, path, json=json, data=data, content_type=content_type,
                                  params=params)).json()
        return int(reply["id"])

    async def task(self, task_id: int) -> dict[str, Any]:
        task: dict[str, Any] = await self.get_json(f"/tasks/{task_id}")
        return task

    async def task_output(self, task_id: int, kind: str = "event", offset: int = 0) -> TaskOutput:
        """``kind``: event, debug or result; the output from byte ``offset`` on."""
        r = await self.fetch("GET", f"/tasks/{task_id}/output", params={"type": kind, "offset": str(offset)})
        return TaskOutput(r.body, int(r.headers.get("X-Next-Offset", offset + len(r.body))),
                          r.headers.get("X-Task-State", "processing"))

    async def follow(self, task_id: int, kind: str = "event", on_output: Callable[[bytes], None] | None = None,
                     interval: float = 0.3) -> dict[str, Any]:
        """Read a task's output as it grows (each new piece to ``on_output``) until the task ends; the task."""
        offset = 0
        while True:
            out = await self.task_output(task_id, kind, offset)
            offset = out.next_offset
            if out.data and on_output is not None:
                on_output(out.data)
            if out.ended:
                return await self.task(task_id)
            await asyncio.sleep(interval)

    async def wait_task(self, task_id: int, timeout: float | None = None, interval: float = 1.0) -> dict[str, Any]:
        """Poll a task until it ends; the task. :class:`TaskStillRunning` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            task = await self.task(task_id)
            if task["state"] not in ACTIVE_TASK_STATES:
                return task
            if deadline is not None and time.monotonic() >= deadline:
                raise TaskStillRunning(task_id, timeout if timeout is not None else 0)
            await asyncio.sleep(interval)


# --- the synchronous client ------------------------------------------------------------------------------

class SyncDirectorClient:
    """:class:`DirectorClient`'s operations for synchronous code: each call runs on a private event loop in a
    thread of this client's own. ``timeout`` (seconds, None: no limit) applies to each request (each poll of
    :meth:`wait_task`, which has a timeout of its own). Use ``with`` or :meth:`close`."""

    def __init__(self, url: str = DEFAULT_URL, user: str = "admin", password: str = "admin", *,
                 timeout: float | None = 60, connect_timeout: float = 10) -> None:
        self.url = url.rstrip("/")
        self._client = DirectorClient(url, user, password, timeout=timeout, connect_timeout=connect_timeout)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"director-client {self.url}",
                                        daemon=True)
        self._thread.start()

    def __enter__(self) -> SyncDirectorClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self._client.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def fetch(self, method: str, path: str, *, params: Params | None = None, json: Any = None,
              data: bytes | str | None = None, content_type: str | None = None, auth: Auth = True,
              check: bool = True, timeout: float | None = None) -> Response:
        """One request, the whole answer. ``check=False``: an answer >= 400 is returned, not raised."""
        return self._run(self._client.fetch(method, path, params=params, json=json, data=data,
                                            content_type=content_type, auth=auth, check=check, timeout=timeout))

    def get_json(self, path: str, *, params: Params | None = None) -> Any:
        return self._run(self._client.get_json(path, params=params))

    def send_json(self, method: str, path: str, body: Any = None, *, params: Params | None = None) -> Any:
        return self._run(self._client.send_json(method, path, body, params=params))

    def send(self, method: str, path: str, data: bytes | str | None = None, *, content_type: str | None = None,
             params: Params | None = None) -> Any:
        return self._run(self._client.send(method, path, data, content_type=content_type, params=params))

    def upload(self, path: str, file: Path, *, content_type: str = "application/x-compressed",
               method: str = "POST", params: Params | None = None) -> Any:
        return self._run(self._client.upload(path, file, content_type=content_type, method=method, params=params))

    def stream(self, path: str, *, params: Params | None = None, chunk_size: int | None = None) -> Iterator[bytes]:
        """As :meth:`DirectorClient.stream`, one chunk at a time."""
        agen = self._client.stream(path, params=params, chunk_size=chunk_size)

        async def next_chunk() -> bytes | None:
            try:
                return await agen.__anext__()
            except StopAsyncIteration:
                return None
        try:
            while (chunk := self._run(next_chunk())) is not None:
                yield chunk
        finally:
            if not self._loop.is_closed():
                self._run(agen.aclose())

    def start_task(self, method: str, path: str, *, json: Any = None, data: bytes | str | None = None,
                   content_type: str | None = None, params: Params | None = None) -> int:
        return self._run(self._client.start_task(method, path, json=json, data=data, content_type=content_type,
                                                 params=params))

    def task(self, task_id: int) -> dict[str, Any]:
        return self._run(self._client.task(task_id))

    def task_output(self, task_id: int, kind: str = "event", offset: int = 0) -> TaskOutput:
        return self._run(self._client.task_output(task_id, kind, offset))

    def follow(self, task_id: int, kind: str = "event", on_output: Callable[[bytes], None] | None = None,
               interval: float = 0.3) -> dict[str, Any]:
        """As :meth:`DirectorClient.follow`; ``on_output`` runs in the client's thread."""
        return self._run(self._client.follow(task_id, kind, on_output, interval))

    def wait_task(self, task_id: int, timeout: float | None = None, interval: float = 1.0) -> dict[str, Any]:
        return self._run(self._client.wait_task(task_id, timeout, interval))


__all__ = ["ACTIVE_TASK_STATES", "DEFAULT_URL", "DirectorBadRequest", "DirectorClient", "DirectorClientError",
           "DirectorConflict", "DirectorError", "DirectorNotFound", "DirectorUnreachable", "Response",
           "SyncDirectorClient", "TaskOutput", "TaskStillRunning", "basic_auth"]

"""Fixtures every unit test may use: a loopback HTTP server for a handler, a real nats-server, and the director's
store on a fresh sqlite file."""
from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from director.store import Store
from tests.support import nats_server as support
from tests.support.nats_server import free_port

__all__ = ["free_port"]     # tests import it from here

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def http_server() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """``await http_server(handler)`` -> base URL of a loopback server answering every path with it."""
    runners: list[web.AppRunner] = []

    async def make(handler: Handler) -> str:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}"

    yield make
    for r in runners:
        await r.cleanup()



@dataclass
class NatsServer:
    port: int
    user: str = "nats"
    password: str = "nats"

    @property
    def url(self) -> str:
        return f"nats://{self.user}:{self.password}@127.0.0.1:{self.port}"


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A real nats-server (Debian's, ``apt-get install nats-server``) with the deck's user/password auth."""
    try:
        support.executable()
    except support.NatsServerMissing as e:
        pytest.skip(f"{e}: the NATS round trip needs it")
    with support.nats_server(tmp_path, lambda port: f'listen: 127.0.0.1:{port}\n'
                             'authorization { user: "nats", password: "nats" }\n') as port:
        yield NatsServer(port)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """The director's store, opened on a sqlite file of its own."""
    s = Store(tmp_path / "director.sqlite3")
    await s.open()
    yield s
    await s.close()

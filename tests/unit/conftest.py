"""Fixtures every unit test may use: a loopback HTTP server for a handler, and a real nats-server."""
from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
    exe = shutil.which("nats-server") or next((p for p in ("/usr/sbin/nats-server", "/usr/bin/nats-server")
                                               if Path(p).exists()), None)
    if exe is None:
        pytest.skip("nats-server is not installed (apt-get install nats-server): the NATS round trip needs it")
    server = NatsServer(free_port())
    conf = tmp_path / "nats.conf"
    conf.write_text(f'listen: 127.0.0.1:{server.port}\nauthorization {{ user: "nats", password: "nats" }}\n')
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", server.port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        raise RuntimeError("nats-server did not start")
    yield server
    proc.terminate()
    proc.wait(5)

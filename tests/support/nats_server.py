"""A real nats-server (Debian's, ``apt-get install nats-server``) on a free port of 127.0.0.1, for the unit
tests and the benches: started with the configuration given, ready when it accepts connections."""
from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

START_DEADLINE = 10.0     # seconds nats-server may take to listen


class NatsServerMissing(Exception):
    pass


def executable() -> str:
    exe = shutil.which("nats-server") or next((p for p in ("/usr/sbin/nats-server", "/usr/bin/nats-server")
                                               if Path(p).exists()), None)
    if exe is None:
        raise NatsServerMissing("nats-server is not installed (apt-get install nats-server)")
    return exe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def nats_server(workdir: Path, config: Callable[[int], str]) -> Iterator[int]:
    """Runs nats-server with ``config(port)`` (written to ``workdir/nats.conf``, so an ``include`` resolves
    beside it) and yields the port once it listens; stops it afterwards."""
    exe = executable()
    port = free_port()
    conf = workdir / "nats.conf"
    conf.write_text(config(port))
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + START_DEADLINE
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"nats-server did not start ({conf})") from None
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

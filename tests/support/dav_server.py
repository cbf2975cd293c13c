"""A real DAV blobstore for tests: Debian's nginx (``apt-get install nginx-light``) run with the lab's own
``blobstore/nginx.conf``, rewritten for a temp dir and a free loopback port, and the user files
``blobstore/entrypoint.sh`` writes (``{PLAIN}`` passwords: director/director may delete, agent/agent not)."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NGINX_CONF = ROOT / "blobstore" / "nginx.conf"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def nginx_exe() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)


@dataclass(frozen=True)
class DavServer:
    port: int
    root: Path
    director_user: str = "director"
    director_password: str = "director"
    agent_user: str = "agent"
    agent_password: str = "agent"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def store(self) -> Path:
        return self.root / "store"

    @property
    def watch_log(self) -> Path:
        """nginx's JSON line per blob request (log_format watch), as the director's watch tails it."""
        return self.root / "watch.log"


def render_conf(root: Path, port: int) -> str:
    """blobstore/nginx.conf with its container paths moved under ``root``; every rewrite must apply (so a
    change of the real config that this does not follow fails here, loudly)."""
    text = NGINX_CONF.read_text()
    user = "user root;" if os.getuid() == 0 else ""
    rewrites = [
        ("user www-data;", user),
        ("worker_processes auto;", "worker_processes 1;"),
        ("pid /run/nginx.pid;", f"pid {root}/nginx.pid;"),
        ("error_log stderr notice;", f"error_log {root}/error.log notice;"),
        ("access_log /dev/stdout blobstore;", f"access_log {root}/access.log blobstore;"),
        ("listen 25250 default_server;", f"listen 127.0.0.1:{port} default_server;"),
        ("/var/vcap/store/blobstore", str(root)),
        ("/var/log/blobstore/watch.log", str(root / "watch.log")),
        ("/etc/nginx/blobstore", str(root / "auth")),
    ]
    for old, new in rewrites:
        if old not in text:
            raise AssertionError(f"blobstore/nginx.conf no longer has {old!r}: update tests/support/dav_server.py")
        text = text.replace(old, new)
    text = text.replace("keepalive_timeout 75s;", "keepalive_timeout 75s;\n  "
                        f"proxy_temp_path {root}/proxy_tmp;\n  fastcgi_temp_path {root}/fastcgi_tmp;")
    return text


def start_nginx(root: Path) -> tuple[DavServer, subprocess.Popen[bytes]]:
    exe = nginx_exe()
    if exe is None:
        raise FileNotFoundError("nginx")
    server = DavServer(_free_port(), root)
    for d in ("store", "tmp", "auth", "proxy_tmp", "fastcgi_tmp"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "auth" / "users").write_text(f"{server.director_user}:{{PLAIN}}{server.director_password}\n"
                                         f"{server.agent_user}:{{PLAIN}}{server.agent_password}\n")
    (root / "auth" / "director_users").write_text(f"{server.director_user}:{{PLAIN}}{server.director_password}\n")
    overwrite = (NGINX_CONF.parent / "overwrite.conf.in").read_text()   # the image's rule, as its entrypoint fills it
    (root / "auth" / "overwrite.conf").write_text(overwrite.replace("@DIRECTOR_USER@", server.director_user))
    conf = root / "nginx.conf"
    conf.write_text(render_conf(root, server.port))
    proc = subprocess.Popen([exe, "-c", str(conf), "-p", str(root), "-e", str(root / "error.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = (proc.stderr.read() if proc.stderr else b"").decode(errors="replace")
            log = (root / "error.log").read_text(errors="replace") if (root / "error.log").exists() else ""
            raise RuntimeError(f"nginx exited with {proc.returncode}: {err} {log}")
        try:
            socket.create_connection(("127.0.0.1", server.port), timeout=0.2).close()
            return server, proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("nginx did not start listening within 10 s")


@pytest.fixture(scope="session")
def dav_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DavServer]:
    """nginx WebDAV on a free loopback port for the whole session."""
    if nginx_exe() is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light): the director tests need a DAV blobstore")
    server, proc = start_nginx(tmp_path_factory.mktemp("dav"))
    yield server
    proc.send_signal(signal.SIGQUIT)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)

"""Who may use NATS, kept in step with the VMs (BOSH's nats-sync): the director, its read-only ``monitor``
identity (the watch tap: subscribe to everything, publish nothing), the operator (people on the host) and one
user per agent VM, allowed only what an agent needs:

    subscribe  agent.<its id>                        (the director's requests to it)
    publish    director.>  and  hm.agent.*.<its id>  (its replies; its heartbeats, alerts, shutdown notice)

So no VM can read another's apply spec, command another agent, or forge another agent's heartbeat. The
director writes ``<auth dir>/auth.conf`` (a volume shared with the nats container only) and the nats container
reloads nats-server when the file changes; the director then waits until nats-server says it loaded it
(``config_load_time`` in its monitoring ``/varz``), so a new VM's agent never races its own user. A deleted
VM's user is removed the same way, and nats-server closes its connections."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import time
from pathlib import Path

import aiohttp

from boshlab.httpauth import with_userinfo

log = logging.getLogger("director.nats_auth")
RELOAD_WAIT = 10.0        # seconds to wait for nats-server to load a new users file


class NatsAuthError(Exception):
    pass


def _q(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def agent_permissions(agent_id: str) -> str:
    return (f'{{publish: {{allow: ["director.>", "hm.agent.*.{_q(agent_id)}"]}}, '
            f'subscribe: {{allow: ["agent.{_q(agent_id)}"]}}}}')


MONITOR_USER = "monitor"
MONITOR_PERMISSIONS = '{publish: {deny: [">"]}, subscribe: {allow: [">"]}}'   # read-only: the watch tap


def render(director_password: str, operator: tuple[str, str] | None, agents: dict[str, str],
           monitor_password: str | None = None) -> str:
    """The ``authorization`` block nats-server includes (with ``monitor_password``: the read-only ``monitor``
    user the director's watch tap connects as, as nats/entrypoint.sh writes it)."""
    users = [f'    {{user: "director", password: "{_q(director_password)}"}}']
    if monitor_password is not None:
        users.append(f'    {{user: "{MONITOR_USER}", password: "{_q(monitor_password)}", '
                     f'permissions: {MONITOR_PERMISSIONS}}}')
    if operator is not None:
        users.append(f'    {{user: "{_q(operator[0])}", password: "{_q(operator[1])}"}}')
    for agent_id, password in sorted(agents.items()):
        users.append(f'    {{user: "{_q(agent_id)}", password: "{_q(password)}", '
                     f'permissions: {agent_permissions(agent_id)}}}')
    return "authorization {\n  timeout: 2\n  users = [\n" + "\n".join(users) + "\n  ]\n}\n"


class NatsAuth:
    """Per-agent NATS users. Without an auth directory (a plain nats-server: the unit tests' default) it is
    off and every agent gets the shared mbus URL, as in the 2013 deck."""

    def __init__(self, auth_dir: str, monitor_url: str = "", reload_wait: float = RELOAD_WAIT) -> None:
        self.dir = Path(auth_dir) if auth_dir else None
        self.varz_url = monitor_url.rstrip("/")     # nats-server's HTTP monitoring (/varz)
        self.reload_wait = reload_wait
        self.agents: dict[str, str] = {}
        self.suspended: set[str] = set()   # agents cut off NATS (a fault verb): kept out of auth.conf across syncs
        self._lock = asyncio.Lock()
        self._changes = 0         # changes made to ``agents``
        self._applied = 0         # of which nats-server has loaded

    @property
    def enabled(self) -> bool:
        return self.dir is not None

    def director_url(self, mbus: str) -> str:
        """The director's own connection URL (its password was made by the nats container at first start)."""
        assert self.dir is not None
        try:
            password = (self.dir / "director.password").read_text().strip()
        except OSError as e:
            raise NatsAuthError(f"{self.dir}/director.password: {e.strerror or e} (the nats container writes it at "
                                f"its first start into the nats-auth volume the director shares)") from None
        return with_userinfo(mbus, "director", password)

    def monitor_url(self, mbus: str) -> str:
        """The watch tap's connection URL: the read-only ``monitor`` user (its password was made by the nats
        container at first start). Without an auth directory (a plain nats-server) the URL as given."""
        if self.dir is None:
            return mbus
        try:
            password = (self.dir / "monitor.password").read_text().strip()
        except OSError as e:
            raise NatsAuthError(f"{self.dir}/monitor.password: {e.strerror or e} (the nats container writes it at "
                                f"its first start into the nats-auth volume the director shares)") from None
        return with_userinfo(mbus, MONITOR_USER, password)

    def _monitor_password(self) -> str | None:
        assert self.dir is not None
        try:
            return (self.dir / "monitor.password").read_text().strip()
        except FileNotFoundError:
            return None

    def _operator(self) -> tuple[str, str] | None:
        assert self.dir is not None
        try:
            return ((self.dir / "operator.user").read_text().strip(),
                    (self.dir / "operator.password").read_text().strip())
        except FileNotFoundError:
            return None

    async def sync(self, agents: dict[str, str]) -> None:
        """Exactly these agents (id -> password) may connect (at start-up: the VMs that exist)."""
        if self.dir is None:
            return
        self.agents = dict(agents)
        await self._apply()

    async def add(self, agent_id: str) -> str:
        """A new agent's password; returns once nats-server accepts it."""
        password = secrets.token_urlsafe(18)
        if self.dir is None:
            return password
        self.agents[agent_id] = password
        await self._apply()
        return password

    async def remove(self, agent_ids: list[str]) -> None:
        if self.dir is None or not any(a in self.agents for a in agent_ids):
            return
        for a in agent_ids:
            self.agents.pop(a, None)
        await self._apply()

    async def suspend(self, agent_id: str) -> None:
        """Cut an agent off NATS (``bosh-lab fault cut-nats``): its user leaves auth.conf, so nats-server closes
        its connection and refuses it; ``sync`` and ``add`` keep it out until ``resume``."""
        self.suspended.add(agent_id)
        if self.dir is not None:
            await self._apply()

    async def resume(self, agent_id: str) -> None:
        if agent_id not in self.suspended:
            return
        self.suspended.discard(agent_id)
        if self.dir is not None:
            await self._apply()

    def allowed(self) -> dict[str, str]:
        """The agents that may connect now: every known agent but the suspended ones."""
        return {a: p for a, p in self.agents.items() if a not in self.suspended}

    async def _apply(self) -> None:
        """Write the users and wait for nats-server to load them. Changes made while a write is under way
        share the next one: VMs created side by side wait for one reload, not one each."""
        self._changes += 1
        wanted = self._changes
        async with self._lock:
            if self._applied >= wanted:
                return            # a write that started after this change already carried it
            target = self._changes
            await self._write()
            self._applied = target

    async def _write(self) -> None:
        assert self.dir is not None
        directory = self.dir
        before = await self._load_time()

        def write() -> bool:
            text = render((directory / "director.password").read_text().strip(), self._operator(), self.allowed(),
                          self._monitor_password())
            path = directory / "auth.conf"
            try:
                if path.read_text() == text:
                    return False      # nothing changes: nats-server has nothing to reload
            except FileNotFoundError:
                pass
            tmp = directory / f".auth.conf.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                f.write(text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
            return True
        if not await asyncio.to_thread(write) or not self.varz_url:
            return
        deadline = time.monotonic() + self.reload_wait
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            now = await self._load_time()
            if now is not None and now != before:
                return
        raise NatsAuthError(f"nats-server did not load the new users within {self.reload_wait:g} s "
                            f"(is the nats container's reload-on-change running? {self.varz_url}/varz)")

    async def _load_time(self) -> str | None:
        if not self.varz_url:
            return None
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as s, \
                    s.get(f"{self.varz_url}/varz") as r:
                return str(json.loads(await r.text()).get("config_load_time"))
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            log.warning("reading %s/varz: %s", self.varz_url, e)
            return None

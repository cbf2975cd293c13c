"""Making a VM ready for work: ``create_vm`` through the CPI, its settings into the registry, then ``ping``
until the agent answers (naming why within seconds when it does not), then its persistent disks mounted.
Used for instances and compilation VMs alike."""
from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from boshlab.contracts import BlobstoreSettings, NetworkSpec, PersistentDiskRef, Settings, UserData
from boshlab.httpauth import with_userinfo

from .cpi import CPI, DISK_MOUNT_DIR, CPIError, VMInfo
from .diagnose import diagnose_agent_log, tail
from .nats_auth import NatsAuth, NatsAuthError
from .nats_rpc import AgentError, Agents, RpcTimeout
from .planner import netmask
from .store import Registry
from .tasks import Task, TaskFailed

DIAGNOSE_AFTER = 3.0             # seconds of silence before the director looks into the VM
# Then it looks again after 2 s, 3 s, 4.5 s... (at most every 10 s): each look is a `docker exec` in a VM that
# is still booting, and a deploy of many VMs on a busy machine must not slow every boot down with them.
LOOK_EVERY, LOOK_GROWTH, LOOK_EVERY_MAX = 2.0, 1.5, 10.0
# A ping sent before the agent subscribes is lost: ask again soon. The first pings wait 50 ms, then at most
# PING_EVERY (an agent that is up answers in milliseconds, so a lost ping costs at most that much); the VM's
# state is looked at (a Docker call) at most every VM_STATUS_EVERY seconds, not after every ping.
FIRST_PING_TIMEOUT = 0.05
PING_EVERY = 0.25
VM_STATUS_EVERY = 1.0


@dataclass(frozen=True)
class AgentEnv:
    """What every new VM's agent is told: where the registry, NATS and the blobstore are."""
    registry_url: str                # without credentials: each VM gets its own
    mbus: str
    blobstore: BlobstoreSettings
    heartbeat_interval: float
    wait_timeout: float = 300.0      # seconds to wait for the first ping


@dataclass(frozen=True)
class ReadyVM:
    agent_id: str
    info: VMInfo
    settings: Settings

    @property
    def cid(self) -> str:
        return self.info.cid


NetworksFor = Callable[[VMInfo], dict[str, NetworkSpec]]


def default_networks(vm: VMInfo) -> dict[str, NetworkSpec]:
    """A compilation VM's one network: the lab's."""
    return {"default": {"type": "dynamic", "ip": vm.ip, "netmask": netmask(vm.prefix_len), "gateway": vm.gateway,
                        "dns": ["127.0.0.11"], "default": ["dns", "gateway"], "cloud_properties": {}}}


def disk_settings(cids: list[str]) -> dict[str, PersistentDiskRef]:
    """``disks.persistent`` of the registry settings for the disks attached to a VM."""
    return {cid: {"path": f"{DISK_MOUNT_DIR}/{cid}"} for cid in cids}


class VMs:
    def __init__(self, cpi: CPI, registry: Registry, agents: Agents, env: AgentEnv, task: Task,
                 nats_auth: NatsAuth | None = None) -> None:
        self.cpi, self.registry, self.agents, self.env, self.task = cpi, registry, agents, env, task
        self.nats_auth = nats_auth or NatsAuth("")

    def name_for(self, what: str, agent_id: str) -> str:
        return f"{self.cpi.lab}-{what}-{agent_id[:8]}"

    async def create(self, what: str, metadata: dict[str, str], networks_for: NetworksFor = default_networks,
                     static: dict[str, str] | None = None, disk_cids: list[str] | None = None,
                     label: str | None = None) -> ReadyVM:
        """create_vm + settings in the registry + wait until the agent answers ping (+ mount its disks).
        A VM that does not become ready is deleted again."""
        agent_id = str(uuid.uuid4())
        name = self.name_for(what, agent_id)
        # The VM's own registry credentials: it can read its settings and no other VM's.
        registry_password = secrets.token_urlsafe(18)
        user_data: UserData = {"registry": {"endpoint": with_userinfo(self.env.registry_url, agent_id,
                                                                         registry_password)},
                               "server": {"name": name}}
        disks = list(disk_cids or [])
        # The agent's own NATS user (subscribe agent.<id>, publish director.> and hm.agent.*.<id> only), made
        # while Docker makes the VM: the agent needs it only once it has its settings, which name it.
        adding = asyncio.ensure_future(self.nats_auth.add(agent_id))
        try:
            vm = await self.cpi.create_vm(agent_id, name, user_data, metadata, static or {}, disks)
        except BaseException as e:
            await asyncio.shield(self._forget_user(agent_id, adding))
            if isinstance(e, CPIError):
                raise TaskFailed(str(e)) from None
            raise
        try:
            try:
                nats_password = await adding
            except NatsAuthError as e:
                raise TaskFailed(f"creating the NATS user of agent {agent_id}: {e}") from None
            mbus = with_userinfo(self.env.mbus, agent_id, nats_password) if self.nats_auth.enabled else self.env.mbus
            shown = ", ".join([vm.ip, *(static or {}).values()])
            self.task.info(f"created VM {name} ({vm.cid[:12]}) for agent {agent_id}, ip {shown}")
            settings: Settings = {
                "agent_id": agent_id, "vm": {"name": name}, "mbus": mbus, "blobstore": self.env.blobstore,
                "networks": networks_for(vm),
                "disks": {"system": "/dev/sda", "ephemeral": None, "persistent": disk_settings(disks)}, "ntp": [],
                "env": {"bosh": {"heartbeat_interval": self.env.heartbeat_interval}},
            }
            await self.registry.put(vm.cid, settings, agent_id, registry_password)
            await self.wait_until_ready(agent_id, vm.cid, name)
            if disks:
                await self.mount_disks(agent_id, disks, label or name)
        except BaseException:
            await asyncio.shield(self.delete(vm.cid))
            await asyncio.shield(self.nats_auth.remove([agent_id]))
            raise
        return ReadyVM(agent_id, vm, settings)

    async def _forget_user(self, agent_id: str, adding: asyncio.Future[str]) -> None:
        """The VM was not made: once its NATS user is in (or failed), take it out again."""
        if not adding.done():
            await asyncio.wait([adding])
        if not adding.cancelled():
            adding.exception()      # retrieved: a failed add is no news here
        await self.nats_auth.remove([agent_id])

    async def delete(self, cid: str) -> None:
        """Delete the VM, its settings and its agent's NATS user (its connection is closed)."""
        settings = await self.registry.get(cid)
        await self.cpi.delete_vm(cid)
        await self.registry.delete(cid)
        if settings is not None:
            await self.nats_auth.remove([settings["agent_id"]])

    async def wait_until_ready(self, agent_id: str, cid: str, name: str) -> None:
        """Ping until the agent answers. When it does not, say why within seconds: the VM exited (exit code
        and last output), the director's own NATS connection is down, or the agent's log names the cause
        (settings not in the registry, wrong credentials, NATS unreachable)."""
        started = time.monotonic()
        deadline = started + self.env.wait_timeout
        client = self.agents(agent_id)
        last_look = 0.0
        look_every = LOOK_EVERY
        last_status = started
        log_tail = ""
        ping_timeout = FIRST_PING_TIMEOUT
        while time.monotonic() < deadline:
            if not self.agents.connected:
                await asyncio.sleep(1)
                if not self.agents.connected:
                    raise TaskFailed(f"Cannot ping agent {agent_id} on VM {name}: the director has no NATS connection "
                                     f"(NATS unreachable at {self.agents.redacted_url})")
            if await client.ping(ping_timeout):
                self.task.info(f"agent {agent_id} on {name} answered ping after {time.monotonic() - started:.1f}s")
                return
            ping_timeout = min(PING_EVERY, ping_timeout * 2)
            if time.monotonic() - last_status < VM_STATUS_EVERY:
                continue
            last_status = time.monotonic()
            status = await self.cpi.vm_status(cid)
            if not status.running:
                what = f"exited with code {status.exit_code}" if status.exists else "vanished (its container was removed)"
                raise TaskFailed(f"VM {name} ({cid[:12]}) {what} before its agent answered ping. "
                                 f"Last output:\n{status.logs}")
            now = time.monotonic()
            if now - started >= DIAGNOSE_AFTER and now - last_look >= look_every:
                if last_look:
                    look_every = min(LOOK_EVERY_MAX, look_every * LOOK_GROWTH)
                last_look = now
                try:
                    _, log_tail = await self.cpi.exec(cid, ["tail", "-n", "60", "/var/vcap/bosh/log/current"])
                except CPIError as e:   # the VM may be going away; the next round says so
                    self.task.info(f"reading the agent log of {name}: {e}")
                    continue
                found = diagnose_agent_log(log_tail)
                if found is not None:
                    raise TaskFailed(f"Agent {agent_id} on VM {name} does not answer ping: {found}. "
                                     f"The agent's log ends with:\n{tail(log_tail)}")
        raise TaskFailed(f"Timed out pinging agent {agent_id} on VM {name} after {self.env.wait_timeout:g} seconds. "
                         f"The agent's log ends with:\n{tail(log_tail, 15)}")

    async def mount_disks(self, agent_id: str, cids: list[str], label: str) -> None:
        """mount_disk for each disk (in order: the first at /var/vcap/store), then list_disk must list them all."""
        agent = self.agents(agent_id)
        try:
            for cid in cids:
                self.task.info(f"{label}: mount_disk {cid}")
                await agent.send_message("mount_disk", cid)
            listed = await agent.send_message("list_disk")
        except (AgentError, RpcTimeout) as e:
            raise TaskFailed(f"{label}: {e}") from None
        missing = [c for c in cids if not isinstance(listed, list) or c not in listed]
        if missing:
            raise TaskFailed(f"{label}: the agent does not list disk(s) {', '.join(missing)} as mounted after "
                             f"mount_disk (list_disk answered {json.dumps(listed)})")

"""The Docker CPI: agent VMs are containers made from the stemcell image, persistent disks are Docker
volumes (docker SDK, called in threads of its own). The only module that imports ``docker``.

Every VM carries labels naming the lab, the deployment and the instance, so the lab's own commands (and the
director after a restart) find them all. User data goes into the container as
``/var/vcap/bosh/user_data.json`` before it starts, like a config drive.

Disks: Docker cannot add a mount to a running container, so a disk is given to a VM when the VM is created
(``create_vm(disk_cids=...)``); ``live_disk_attach`` is False and the director recreates the VM instead of
calling ``attach_disk``. Volumes have no size: the size asked for is recorded by the director only.
"""
from __future__ import annotations

import asyncio
import io
import ipaddress
import json
import logging
import socket
import tarfile
import time
import uuid
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import docker
import docker.errors
import docker.types
from docker.models.containers import Container

from boshlab.contracts import UserData

from . import (
    DISK_MOUNT_DIR,
    LABEL_AGENT,
    LABEL_LAB,
    LABEL_RANGE,
    LABEL_ROLE,
    VM_ROLES,
    CPIError,
    CPISettings,
    Stemcell,
    VMInfo,
    VMRecord,
    VMStatus,
)

log = logging.getLogger("director.cpi")
T = TypeVar("T")

USER_DATA_PATH = "/var/vcap/bosh/user_data.json"
METADATA_FILE = "vm_metadata.json"        # set_vm_metadata: labels cannot change, so a file in the VM holds it


def _one_file_tar(name: str, data: Any) -> bytes:
    raw = json.dumps(data).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(raw), 0o600, int(time.time())
        tar.addfile(info, io.BytesIO(raw))
    return buf.getvalue()


def create(settings: CPISettings) -> DockerCPI:
    return DockerCPI(settings.stemcell_image, settings.lab, settings.network, settings.threads)


class DockerCPI:
    live_disk_attach = False

    def __init__(self, image: str, lab: str = "", network: str = "", threads: int = 16) -> None:
        self.image = image
        self.lab = lab
        self.network = network
        self._client: docker.DockerClient | None = None
        self._blank_labels: dict[str, str] | None = None    # the image's compose labels, blanked (per image)
        # Docker calls get threads of their own: a burst of create_vm (seconds each) must never hold up the
        # database and the registry the new agents are asking for their settings.
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="cpi")

    def _thread(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        return asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _docker(self) -> docker.DockerClient:
        if self._client is None:
            try:
                self._client = docker.from_env()
                self._client.ping()
            except docker.errors.DockerException as e:
                self._client = None
                raise CPIError(f"the Docker engine is not reachable (is /var/run/docker.sock mounted?): {e}") from None
        return self._client

    # --- discovery -----------------------------------------------------------------------------------

    def _discover(self) -> None:
        """Find the lab name and network from the director's own container, when not configured."""
        if self.lab and self.network:
            return
        try:
            me = self._docker().containers.get(socket.gethostname())
        except docker.errors.NotFound:
            if not self.network:
                raise CPIError("BOSH_LAB_NETWORK is not set and the director is not running in a container "
                               "whose networks could be used") from None
            self.lab = self.lab or "bosh-lab"
            return
        labels = me.labels or {}
        self.lab = self.lab or labels.get("com.docker.compose.project", "bosh-lab")
        if not self.network:
            nets = list((me.attrs.get("NetworkSettings") or {}).get("Networks") or {})
            if not nets:
                raise CPIError("the director's container is on no network")
            self.network = nets[0]

    async def setup(self) -> None:
        await self._thread(self._discover)
        log.info("Docker CPI: lab %r, network %r, stemcell image %r", self.lab, self.network, self.image)

    async def stemcell(self) -> Stemcell:
        """The stemcell the image is: name and version from its labels (else the image id)."""
        def go() -> Stemcell:
            try:
                img = self._docker().images.get(self.image)
            except docker.errors.ImageNotFound:
                raise CPIError(f"stemcell image {self.image} does not exist: build it with `docker compose build`") from None
            labels = img.labels or {}
            return Stemcell(labels.get("io.bosh-lab.stemcell.name", "bosh-stemcell"),
                            labels.get("io.bosh-lab.stemcell.version", img.short_id.split(":")[-1]), str(img.id))
        return await self._thread(go)

    # --- VMs -----------------------------------------------------------------------------------------

    async def create_vm(self, agent_id: str, name: str, user_data: UserData, metadata: dict[str, str],
                        networks: dict[str, str] | None = None, disk_cids: list[str] | None = None) -> VMInfo:
        """A container on the lab's network (where NATS, the blobstore and the registry are), plus, for each
        ``networks`` entry, on that Docker network with that IPv4 address (manual networks). Each of ``disk_cids``
        (persistent disks: Docker volumes named by their cid) is mounted at ``/var/vcap/store_disks/<cid>``:
        Docker cannot add a mount to a running container, so attaching a disk means (re)creating the VM with
        it (director/disks.py). ``SYS_ADMIN`` (and no AppArmor profile) lets the agent bind-mount a disk at
        ``/var/vcap/store`` inside the VM (mount_disk)."""
        def go() -> VMInfo:
            cli = self._docker()
            all_labels = {**self._unset_compose_labels(), LABEL_LAB: self.lab, LABEL_AGENT: agent_id, **metadata}
            try:
                c: Container = cli.containers.create(
                    self.image, name=name, hostname=agent_id[:12], labels=all_labels, detach=True,
                    network=self.network, init=True, tty=False, cap_add=["SYS_ADMIN"],
                    security_opt=["apparmor=unconfined"],
                    volumes={cid: {"bind": f"{DISK_MOUNT_DIR}/{cid}", "mode": "rw"} for cid in disk_cids or []})
            except docker.errors.ImageNotFound:
                raise CPIError(f"stemcell image {self.image} does not exist: build it with `docker compose build`") from None
            except docker.errors.APIError as e:
                raise CPIError(f"create_vm {name}: {e.explanation or e}") from None
            try:
                for net_name, ip in (networks or {}).items():
                    cli.networks.get(net_name).connect(c, ipv4_address=ip)
                ud = dict(user_data, instance_id=c.id)
                c.put_archive("/var/vcap/bosh", _one_file_tar("user_data.json", ud))
                c.start()
                c.reload()
            except docker.errors.APIError as e:
                c.remove(force=True)
                raise CPIError(f"starting VM {name}: {e.explanation or e}") from None
            nets = c.attrs["NetworkSettings"]["Networks"] or {}
            net = nets.get(self.network) or {}
            addresses = {k: str(v.get("IPAddress", "")) for k, v in nets.items()}
            return VMInfo(str(c.id), name, str(net.get("IPAddress", "")), int(net.get("IPPrefixLen") or 0),
                          str(net.get("Gateway", "")), addresses)
        made = self._thread(go)
        try:
            return await asyncio.shield(made)
        except asyncio.CancelledError:
            # The task was cancelled while Docker made the container: wait for it, then delete it (no orphan).
            try:
                vm = await made
            except CPIError:
                raise asyncio.CancelledError() from None
            await self.delete_vm(vm.cid)
            raise

    def _unset_compose_labels(self) -> dict[str, str]:
        """Compose stamps the images it builds with ``com.docker.compose.project/service`` of the project that
        built them; containers inherit image labels, so a VM would look like a ``stemcell`` container of that
        (maybe another) project to ``docker compose``. Blank them: VMs belong to the director, not to compose."""
        if self._blank_labels is not None:   # asked once, not once per VM (a Docker call less per create_vm)
            return self._blank_labels
        try:
            img = self._docker().images.get(self.image)
        except docker.errors.DockerException:
            return {}
        self._blank_labels = {k: "" for k in (img.labels or {}) if k.startswith("com.docker.compose.")}
        return self._blank_labels

    async def ensure_network(self, subnet: ipaddress.IPv4Network, gateway: ipaddress.IPv4Address) -> str:
        """The Docker network for a manual network's subnet: this lab's, made now if need be. A range that
        overlaps any other Docker network is refused, naming that network."""
        name = f"{self.lab}-net-{subnet.network_address}-{subnet.prefixlen}"

        def go() -> str:
            cli = self._docker()
            for n in cli.networks.list():
                cfg = ((n.attrs.get("IPAM") or {}).get("Config") or [])
                for c in cfg:
                    try:
                        other = ipaddress.ip_network(str(c.get("Subnet")), strict=False)
                    except ValueError:
                        continue
                    if not isinstance(other, ipaddress.IPv4Network) or not other.overlaps(subnet):
                        continue
                    labels = n.attrs.get("Labels") or {}
                    if n.name == name and labels.get(LABEL_LAB) == self.lab and other == subnet:
                        gw = c.get("Gateway")
                        if gw and gw != str(gateway):
                            raise CPIError(f"Docker network {name} has gateway {gw}, the manifest says {gateway}: "
                                           f"delete the deployments on {subnet} first")
                        return name
                    raise CPIError(f"network range {subnet} overlaps Docker network '{n.name}' ({other}); "
                                   f"choose a range no Docker network uses (see `docker network inspect`)")
            try:
                cli.networks.create(name, driver="bridge", labels={LABEL_LAB: self.lab, LABEL_RANGE: str(subnet)},
                                    ipam=docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(
                                        subnet=str(subnet), gateway=str(gateway))]))
            except docker.errors.APIError as e:
                raise CPIError(f"creating Docker network {name} for {subnet}: {e.explanation or e}") from None
            log.info("created Docker network %s for %s (gateway %s)", name, subnet, gateway)
            return name
        return await self._thread(go)

    async def remove_unused_networks(self) -> list[str]:
        """Delete this lab's manual-network Docker networks that no container uses any more."""
        def go() -> list[str]:
            gone = []
            for n in self._docker().networks.list(filters={"label": f"{LABEL_LAB}={self.lab}"}):
                n.reload()
                if not n.attrs.get("Containers"):
                    try:
                        n.remove()
                        gone.append(str(n.name))
                    except docker.errors.APIError as e:
                        log.warning("could not remove network %s: %s", n.name, e)
            return gone
        return await self._thread(go)

    async def reboot_vm(self, cid: str) -> None:
        def go() -> None:
            try:
                self._docker().containers.get(cid).restart(timeout=10)
            except docker.errors.NotFound:
                raise CPIError(f"VM {cid[:12]} does not exist") from None
            except docker.errors.APIError as e:
                raise CPIError(f"rebooting VM {cid[:12]}: {e.explanation or e}") from None
        await self._thread(go)

    async def delete_vm(self, cid: str) -> None:
        def go() -> None:
            try:
                self._docker().containers.get(cid).remove(force=True, v=True)
            except docker.errors.NotFound:
                pass
        await self._thread(go)

    async def vm_status(self, cid: str, tail: int = 20) -> VMStatus:
        def go() -> VMStatus:
            try:
                c = self._docker().containers.get(cid)
            except docker.errors.NotFound:
                return VMStatus(False)
            state = c.attrs.get("State") or {}
            logs = ""
            if not state.get("Running"):
                logs = c.logs(tail=tail).decode(errors="replace") if tail else ""
            return VMStatus(True, bool(state.get("Running")), state.get("ExitCode"), str(state.get("Status")), logs)
        return await self._thread(go)

    async def exec(self, cid: str, cmd: list[str]) -> tuple[int, str]:
        def go() -> tuple[int, str]:
            try:
                r = self._docker().containers.get(cid).exec_run(cmd)
            except docker.errors.NotFound:
                raise CPIError(f"exec in VM {cid[:12]}: it does not exist") from None
            except docker.errors.APIError as e:
                raise CPIError(f"exec in VM {cid[:12]}: {e.explanation or e}") from None
            return int(r.exit_code or 0), r.output.decode(errors="replace")
        return await self._thread(go)

    async def list_vms(self) -> list[VMRecord]:
        """Every VM of this lab (instances and compilation VMs)."""
        def go() -> list[VMRecord]:
            out = []
            for c in self._docker().containers.list(all=True, filters={"label": f"{LABEL_LAB}={self.lab}"}):
                labels = dict(c.labels or {})
                if labels.get(LABEL_ROLE) not in VM_ROLES:
                    continue   # not a VM (e.g. a container a test made with the lab's label)
                out.append(VMRecord(str(c.id), str(c.name), str(c.status), labels))
            return out
        return await self._thread(go)

    async def has_vm(self, cid: str) -> bool:
        return (await self.vm_status(cid, tail=0)).exists

    async def set_vm_metadata(self, cid: str, metadata: dict[str, str]) -> None:
        """Docker labels cannot change after creation: the metadata goes into the VM as
        ``/var/vcap/bosh/vm_metadata.json`` (what ``bosh-lab vms`` and a person in the VM can read)."""
        def go() -> None:
            try:
                self._docker().containers.get(cid).put_archive("/var/vcap/bosh", _one_file_tar(METADATA_FILE, metadata))
            except docker.errors.NotFound:
                raise CPIError(f"set_vm_metadata: VM {cid[:12]} does not exist") from None
            except docker.errors.APIError as e:
                raise CPIError(f"set_vm_metadata {cid[:12]}: {e.explanation or e}") from None
        await self._thread(go)

    async def stream_exec(self, cid: str, cmd: list[str]) -> AsyncGenerator[bytes, None]:
        """Run ``cmd`` in the VM and yield its output as it comes (a TTY: stdout and stderr together).
        Closing the iterator closes the exec's socket."""
        def start() -> Any:
            api = self._docker().api
            ex = api.exec_create(cid, cmd, stdout=True, stderr=True, tty=True)
            return api.exec_start(ex["Id"], socket=True, tty=True)
        sock = await self._thread(start)
        raw: socket.socket = getattr(sock, "_sock", sock)
        try:
            while True:
                data = await asyncio.to_thread(raw.recv, 1 << 14)
                if not data:
                    return
                yield data
        finally:
            try:
                raw.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            raw.close()

    # --- disks (Docker volumes named by their cid) ----------------------------------------------------

    async def create_disk(self, size_mb: int, metadata: dict[str, str]) -> str:
        cid = f"{self.lab}-disk-{uuid.uuid4()}"

        def go() -> None:
            try:
                self._docker().volumes.create(name=cid, driver="local", labels={LABEL_LAB: self.lab, **metadata})
            except docker.errors.APIError as e:
                raise CPIError(f"create_disk {cid}: {e.explanation or e}") from None
        await self._thread(go)
        return cid

    async def delete_disk(self, cid: str) -> bool:
        def go() -> bool:
            try:
                self._docker().volumes.get(cid).remove(force=True)
            except docker.errors.NotFound:
                return False
            except docker.errors.APIError as e:
                raise CPIError(f"delete_disk {cid}: {e.explanation or e}") from None
            return True
        return await self._thread(go)

    async def has_disk(self, cid: str) -> bool:
        def go() -> bool:
            try:
                self._docker().volumes.get(cid)
            except docker.errors.NotFound:
                return False
            return True
        return await self._thread(go)

    async def list_disks(self, metadata: dict[str, str]) -> list[str]:
        def go() -> list[str]:
            labels = [f"{LABEL_LAB}={self.lab}"] + [f"{k}={v}" for k, v in metadata.items()]
            return [str(v.name) for v in self._docker().volumes.list(filters={"label": labels})]
        return await self._thread(go)

    async def attach_disk(self, vm_cid: str, disk_cid: str) -> None:
        raise CPIError(f"attach_disk {disk_cid}: Docker cannot add a mount to the running container {vm_cid[:12]}; "
                       f"the disk is attached by creating the VM with it")

    async def detach_disk(self, vm_cid: str, disk_cid: str) -> None:
        raise CPIError(f"detach_disk {disk_cid}: Docker cannot remove a mount from the running container "
                       f"{vm_cid[:12]}; the disk is detached by creating the VM without it")

    # --- the lab's own services (game-day faults) -----------------------------------------------------

    async def pause_service(self, name: str, paused: bool) -> None:
        """``docker pause``/``unpause`` the container of compose service ``name`` of the director's project."""
        def go() -> None:
            cli = self._docker()
            project = self.lab
            try:
                me = cli.containers.get(socket.gethostname())
                project = str((me.labels or {}).get(COMPOSE_PROJECT, "")) or project
            except docker.errors.NotFound:
                pass
            found = cli.containers.list(all=True, filters={"label": [f"{COMPOSE_PROJECT}={project}",
                                                                     f"{COMPOSE_SERVICE}={name}"]})
            if not found:
                raise CPIError(f"no container of service '{name}' in compose project '{project}'")
            for c in found:
                c.reload()
                state = c.attrs.get("State") or {}
                try:
                    if paused and not state.get("Paused"):
                        if not state.get("Running"):
                            raise CPIError(f"service '{name}' ({c.name}) is not running: {c.status}")
                        c.pause()
                    elif not paused and state.get("Paused"):
                        c.unpause()
                except docker.errors.APIError as e:
                    raise CPIError(f"{'pausing' if paused else 'unpausing'} {c.name}: {e.explanation or e}") from None
        await self._thread(go)

    async def close(self) -> None:
        if self._client is not None:
            await self._thread(self._client.close)
            self._client = None
        self._pool.shutdown(wait=False)


# --- for the reaper (director/reaper.py): which compose project this container is, and whether its director runs

COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"


def compose_project(env_project: str = "") -> str:
    """The compose project of the container this runs in (else ``env_project``)."""
    cli = docker.from_env()
    try:
        me = cli.containers.get(socket.gethostname())
        return str((me.labels or {}).get(COMPOSE_PROJECT, "")) or env_project
    except docker.errors.NotFound:
        return env_project
    finally:
        cli.close()


def service_running(project: str, service: str) -> bool:
    cli = docker.from_env()
    try:
        found = cli.containers.list(all=True, filters={"label": [f"{COMPOSE_PROJECT}={project}",
                                                                 f"{COMPOSE_SERVICE}={service}"]})
        return any(c.status in ("running", "restarting") for c in found)
    finally:
        cli.close()

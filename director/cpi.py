"""A Docker CPI: agent VMs are containers made from the stemcell image (docker SDK, called in threads).

Every VM carries labels naming the lab, the deployment and the instance, so the lab's own commands (and the
director after a restart) find them all. User data goes into the container as
``/var/vcap/bosh/user_data.json`` before it starts, like a config drive.
"""
from __future__ import annotations

import asyncio
import io
import json
import logging
import socket
import tarfile
import time
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container

log = logging.getLogger("director.cpi")

LABEL_LAB = "io.bosh-lab.lab"
LABEL_DEPLOYMENT = "io.bosh-lab.deployment"
LABEL_INSTANCE = "io.bosh-lab.instance"
LABEL_AGENT = "io.bosh-lab.agent-id"
LABEL_ROLE = "io.bosh-lab.role"          # "instance" or "compilation"
USER_DATA_PATH = "/var/vcap/bosh/user_data.json"


class CPIError(Exception):
    pass


@dataclass
class VMInfo:
    cid: str
    name: str
    ip: str
    prefix_len: int
    gateway: str


@dataclass
class VMStatus:
    exists: bool
    running: bool = False
    exit_code: int | None = None
    status: str = "missing"
    logs: str = ""


def _user_data_tar(data: dict[str, Any]) -> bytes:
    raw = json.dumps(data).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("user_data.json")
        info.size, info.mode, info.mtime = len(raw), 0o600, int(time.time())
        tar.addfile(info, io.BytesIO(raw))
    return buf.getvalue()


class DockerCPI:
    def __init__(self, image: str, lab: str = "", network: str = "") -> None:
        self.image = image
        self.lab = lab
        self.network = network
        self._client: docker.DockerClient | None = None

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
        await asyncio.to_thread(self._discover)
        log.info("Docker CPI: lab %r, network %r, stemcell image %r", self.lab, self.network, self.image)

    async def stemcell(self) -> dict[str, str]:
        """The stemcell the image is: name and version from its labels (else the image id)."""
        def go() -> dict[str, str]:
            try:
                img = self._docker().images.get(self.image)
            except docker.errors.ImageNotFound:
                raise CPIError(f"stemcell image {self.image} does not exist: build it with `docker compose build`") from None
            labels = img.labels or {}
            return {"name": labels.get("io.bosh-lab.stemcell.name", "bosh-stemcell"),
                    "version": labels.get("io.bosh-lab.stemcell.version", img.short_id.split(":")[-1]),
                    "image_id": str(img.id)}
        return await asyncio.to_thread(go)

    # --- VMs -----------------------------------------------------------------------------------------

    async def create_vm(self, agent_id: str, name: str, user_data: dict[str, Any], labels: dict[str, str]) -> VMInfo:
        def go() -> VMInfo:
            cli = self._docker()
            all_labels = {LABEL_LAB: self.lab, LABEL_AGENT: agent_id, **labels}
            try:
                c: Container = cli.containers.create(
                    self.image, name=name, hostname=agent_id[:12], labels=all_labels, detach=True,
                    network=self.network, init=True, tty=False)
            except docker.errors.ImageNotFound:
                raise CPIError(f"stemcell image {self.image} does not exist: build it with `docker compose build`") from None
            except docker.errors.APIError as e:
                raise CPIError(f"create_vm {name}: {e.explanation or e}") from None
            try:
                ud = dict(user_data, instance_id=c.id)
                c.put_archive("/var/vcap/bosh", _user_data_tar(ud))
                c.start()
                c.reload()
            except docker.errors.APIError as e:
                c.remove(force=True)
                raise CPIError(f"starting VM {name}: {e.explanation or e}") from None
            net = (c.attrs["NetworkSettings"]["Networks"] or {}).get(self.network) or {}
            return VMInfo(str(c.id), name, net.get("IPAddress", ""), int(net.get("IPPrefixLen") or 0),
                          net.get("Gateway", ""))
        return await asyncio.to_thread(go)

    async def delete_vm(self, cid: str) -> None:
        def go() -> None:
            try:
                self._docker().containers.get(cid).remove(force=True, v=True)
            except docker.errors.NotFound:
                pass
        await asyncio.to_thread(go)

    async def vm_status(self, cid: str, tail: int = 20) -> VMStatus:
        def go() -> VMStatus:
            try:
                c = self._docker().containers.get(cid)
            except docker.errors.NotFound:
                return VMStatus(False)
            state = c.attrs.get("State") or {}
            logs = ""
            if not state.get("Running"):
                logs = c.logs(tail=tail).decode(errors="replace")
            return VMStatus(True, bool(state.get("Running")), state.get("ExitCode"), str(state.get("Status")), logs)
        return await asyncio.to_thread(go)

    async def exec_in(self, cid: str, cmd: list[str]) -> tuple[int, str]:
        def go() -> tuple[int, str]:
            r = self._docker().containers.get(cid).exec_run(cmd)
            return int(r.exit_code or 0), r.output.decode(errors="replace")
        return await asyncio.to_thread(go)

    async def list_vms(self) -> list[dict[str, str]]:
        """Every container of this lab: cid, name, labels, status."""
        def go() -> list[dict[str, str]]:
            out = []
            for c in self._docker().containers.list(all=True, filters={"label": f"{LABEL_LAB}={self.lab}"}):
                out.append({"cid": str(c.id), "name": str(c.name), "status": str(c.status), **(c.labels or {})})
            return out
        return await asyncio.to_thread(go)

    async def close(self) -> None:
        if self._client is not None:
            await asyncio.to_thread(self._client.close)
            self._client = None

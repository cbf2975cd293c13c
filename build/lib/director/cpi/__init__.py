"""The CPI port: how the director makes and unmakes VMs and disks, named after BOSH's CPI API
(``create_vm``, ``delete_vm``, ``has_vm``, ``reboot_vm``, ``set_vm_metadata``, ``create_disk``,
``delete_disk``, ``has_disk``, ``attach_disk``, ``detach_disk``), plus what a lab needs to look inside a VM
(``vm_status``, ``exec``, ``stream_exec``) and to find its VMs again (``list_vms``).

A CPI is one module in this package exposing ``create(settings) -> CPI``; ``load(name, settings)`` picks it
(``BOSH_LAB_CPI``, default ``docker``). Tests pass a CPI object of their own (a fake whose VMs run the real
agent in-process)."""
from __future__ import annotations

import importlib
import ipaddress
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from boshlab.contracts import UserData

LABEL_LAB = "io.bosh-lab.lab"
LABEL_DEPLOYMENT = "io.bosh-lab.deployment"
LABEL_INSTANCE = "io.bosh-lab.instance"
LABEL_AGENT = "io.bosh-lab.agent-id"
LABEL_ROLE = "io.bosh-lab.role"          # "instance" or "compilation"
LABEL_RANGE = "io.bosh-lab.range"        # on networks the director made for a manual network's subnet
VM_ROLES = ("instance", "compilation")
DISK_MOUNT_DIR = "/var/vcap/store_disks"    # where a VM sees its persistent disks (agent/disks.py)


class CPIError(Exception):
    """A CPI call failed; the text names the call and the cause."""


@dataclass(frozen=True)
class CPISettings:
    """What any CPI may need to know about the lab (each CPI reads what it uses)."""
    stemcell_image: str
    lab: str = ""
    network: str = ""
    threads: int = 16


@dataclass(frozen=True)
class Stemcell:
    name: str
    version: str
    cid: str          # the image the VMs are made from


@dataclass(frozen=True)
class VMInfo:
    cid: str
    name: str
    ip: str
    prefix_len: int
    gateway: str
    addresses: dict[str, str] = field(default_factory=dict)   # CPI network -> IPv4 address


@dataclass(frozen=True)
class VMStatus:
    exists: bool
    running: bool = False
    exit_code: int | None = None
    status: str = "missing"
    logs: str = ""


@dataclass(frozen=True)
class VMRecord:
    """A VM of this lab as the CPI finds it (``list_vms``): its cid, name and metadata."""
    cid: str
    name: str
    status: str
    metadata: dict[str, str]

    @property
    def role(self) -> str:
        return self.metadata.get(LABEL_ROLE, "")


@runtime_checkable
class CPI(Protocol):
    lab: str
    live_disk_attach: bool   # False: a disk can only be given to a VM when it is created (Docker)

    async def setup(self) -> None: ...
    async def close(self) -> None: ...
    async def stemcell(self) -> Stemcell: ...

    async def create_vm(self, agent_id: str, name: str, user_data: UserData, metadata: dict[str, str],
                        networks: dict[str, str] | None = None, disk_cids: list[str] | None = None) -> VMInfo:
        """A started VM whose agent reads ``user_data``; ``networks``: extra CPI network -> static IP;
        ``disk_cids``: persistent disks attached from the start (at ``DISK_MOUNT_DIR/<cid>``)."""
    async def delete_vm(self, cid: str) -> None: ...
    async def has_vm(self, cid: str) -> bool: ...
    async def reboot_vm(self, cid: str) -> None: ...
    async def set_vm_metadata(self, cid: str, metadata: dict[str, str]) -> None: ...
    async def list_vms(self) -> list[VMRecord]: ...
    async def vm_status(self, cid: str, tail: int = 20) -> VMStatus: ...
    async def exec(self, cid: str, cmd: list[str]) -> tuple[int, str]: ...
    def stream_exec(self, cid: str, cmd: list[str]) -> AsyncGenerator[bytes, None]: ...

    async def create_disk(self, size_mb: int, metadata: dict[str, str]) -> str: ...
    async def delete_disk(self, cid: str) -> bool:
        """False when the disk did not exist."""
    async def has_disk(self, cid: str) -> bool: ...
    async def list_disks(self, metadata: dict[str, str]) -> list[str]: ...
    async def attach_disk(self, vm_cid: str, disk_cid: str) -> None: ...
    async def detach_disk(self, vm_cid: str, disk_cid: str) -> None: ...

    async def ensure_network(self, subnet: ipaddress.IPv4Network, gateway: ipaddress.IPv4Address) -> str:
        """The CPI network for a manual network's subnet (made now if need be); its name."""
    async def remove_unused_networks(self) -> list[str]: ...

    async def pause_service(self, name: str, paused: bool) -> None:
        """Freeze (``paused``) or thaw one of the lab's own services (``blobstore``, ``nats``): the processes stop
        but keep their sockets, as a hung server does (game-day faults). CPIError names a service it cannot find."""


def load(name: str, settings: CPISettings) -> CPI:
    """The CPI module's ``create(settings)``: ``docker`` is ``director.cpi.docker_cpi``; a dotted name is any
    importable module (a CPI kept outside the director, e.g. the tests' fake)."""
    module_name = name if "." in name else f"{__name__}.{name}_cpi"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:
            raise
        raise CPIError(f"unknown CPI {name!r}: no module {module_name}") from None
    create = getattr(module, "create", None)
    if not callable(create):
        raise CPIError(f"CPI module {module_name} has no create(settings) function")
    cpi = create(settings)
    if not isinstance(cpi, CPI):
        raise CPIError(f"{module_name}.create() made {type(cpi).__name__}, which lacks the CPI's methods")
    return cpi

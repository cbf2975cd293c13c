"""A fake CPI for the director's tests, like BOSH's dummy CPI: its VMs run the REAL agent code in-process.

* A VM is a temp dir (the agent's ``Paths`` are rooted there: the VM's ``/var/vcap``) and an asyncio task
  running the agent's boot (the same steps as ``agent.boot.configure``/``run``), with the fakes of
  ``tests/support/fakes.py`` for monit, mount(8) and useradd. The agent reads ``bosh/user_data.json`` (written
  by ``create_vm``, ``instance_id`` = the cid, as the Docker CPI does), fetches its settings from the
  director's registry over HTTP, talks to a real NATS, fetches blobs from a real DAV blobstore, renders
  templates with Ruby and runs drain scripts as real processes.
* The VM's "root filesystem" is its dir: paths in the settings under ``/var/vcap/`` (the persistent disks'
  ``/var/vcap/store_disks/<cid>``) are read under the VM's dir. The agent's log lines go to
  ``bosh/log/current`` under the VM's dir (``exec tail -n N /var/vcap/bosh/log/current`` reads it).
* A disk is a temp dir; attaching it links it at ``store_disks/<cid>`` in the VM (a volume for the fake
  mounter). ``live_disk_attach=False`` (the default, like Docker): disks only come with ``create_vm``.
* ``kill_vm(cid)``: the agent stops as if the container exited (``vm_status``: exists, not running).

``close()`` keeps the VMs (they outlive the director, as Docker's containers do); ``shutdown()`` ends them."""
from __future__ import annotations

import asyncio
import contextlib
import contextvars
import copy
import ipaddress
import json
import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncGenerator, Coroutine, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from agent.action.base import Services, blobstore_client
from agent.applier import Applier
from agent.boot import restore_jobs, setup_monit_user
from agent.disks import PersistentDisks
from agent.dispatcher import Dispatcher, build_registry
from agent.heartbeat import Heartbeater, collect_payload
from agent.log import DeckFormatter
from agent.log import log as agent_log
from agent.mbus import MBus
from agent.paths import Paths
from agent.settings import SettingsError, SettingsService, fetch_from_registry, heartbeat_interval
from agent.spec import SpecStore
from agent.tasks import TaskManager
from agent.vitals import Vitals
from boshlab.contracts import Settings, UserData
from director.cpi import CPI, DISK_MOUNT_DIR, LABEL_AGENT, LABEL_LAB, CPIError, CPISettings, Stemcell, VMInfo, VMRecord, VMStatus

from .fakes import FakeMounter, FakeUsers, VMSupervisor

VM_BASE = "/var/vcap"
AGENT_LOG = "/var/vcap/bosh/log/current"
KILLED_EXIT = 137           # what Docker reports for a container that was killed

_CURRENT_VM: contextvars.ContextVar[FakeVM | None] = contextvars.ContextVar("fake_cpi_vm", default=None)


class _VMLogRouter(logging.Handler):
    """One handler on the agent's logger: each record goes to the log file of the VM whose agent (task
    context) emitted it, in svlogd's ``-tt`` format."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(DeckFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        vm = _CURRENT_VM.get()
        if vm is None:
            return
        try:
            stamp = time.strftime("%Y-%m-%d_%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs * 1000):06d}"
            with open(vm.log_file, "a") as f:
                f.write(f"{stamp} {self.format(record)}\n")
        except OSError:
            pass


def _task_factory(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **kwargs: Any) -> asyncio.Task[Any]:
    """Every task made inside a VM's agent is that VM's: killing the VM cancels them all."""
    task: asyncio.Task[Any] = asyncio.Task(coro, loop=loop, **kwargs)
    vm = _CURRENT_VM.get()
    if vm is not None:
        vm.tasks.add(task)
        task.add_done_callback(vm.tasks.discard)
    return task


class _Hooks:
    """What every fake CPI shares, installed while at least one is set up: the log router on the agent's logger
    (at DEBUG) and the task factory of the event loop."""

    def __init__(self) -> None:
        self.users: set[int] = set()
        self.router = _VMLogRouter()
        self.level = logging.NOTSET
        self.old_factory: Any = None

    def acquire(self, cpi: object) -> None:
        if not self.users:
            agent_log.addHandler(self.router)
            self.level = agent_log.level
            agent_log.setLevel(logging.DEBUG)
            loop = asyncio.get_running_loop()
            self.old_factory = loop.get_task_factory()
            loop.set_task_factory(cast(Any, _task_factory))
        self.users.add(id(cpi))

    def release(self, cpi: object) -> None:
        if id(cpi) not in self.users:
            return
        self.users.discard(id(cpi))
        if not self.users:
            agent_log.removeHandler(self.router)
            agent_log.setLevel(self.level)
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().set_task_factory(self.old_factory)


_hooks = _Hooks()


@dataclass
class FakeVM:
    cid: str
    agent_id: str
    name: str
    root: Path
    metadata: dict[str, str]
    user_data: dict[str, Any]
    mounter: FakeMounter = field(default_factory=FakeMounter)
    users: FakeUsers = field(default_factory=FakeUsers)
    supervisor: VMSupervisor | None = None
    task: asyncio.Task[int] | None = None
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)    # every task the agent made
    mbus: MBus | None = None
    exit_code: int | None = None
    vm_metadata: dict[str, str] = field(default_factory=dict)
    boots: int = 0
    agent_down: bool = False        # ``sv down /etc/service/agent``: the agent stopped, the VM runs on

    @property
    def paths(self) -> Paths:
        return Paths(self.root)

    @property
    def log_file(self) -> Path:
        return self.paths.agent_logs / "current"

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def host_path(self, vm_path: str) -> Path:
        """A path as the VM sees it (``/var/vcap/...``) -> where it is on this machine."""
        if vm_path == VM_BASE or vm_path.startswith(VM_BASE + "/"):
            return self.root / vm_path[len(VM_BASE):].lstrip("/")
        raise CPIError(f"VM {self.cid}: {vm_path} is outside /var/vcap (the fake VM has nothing else)")


def _rooted_settings(vm: FakeVM, settings: Settings) -> Settings:
    """The registry's settings with the persistent disks' VM paths turned into paths under the VM's dir."""
    out = copy.deepcopy(settings)
    persistent = (out.get("disks") or {}).get("persistent")
    if isinstance(persistent, dict):
        for cid, value in list(persistent.items()):
            raw = value.get("path") if isinstance(value, dict) else value
            if isinstance(raw, str) and raw.startswith(VM_BASE + "/"):
                path = str(vm.host_path(raw))
                persistent[cid] = {**value, "path": path} if isinstance(value, dict) else path
    return out


async def _agent_main(vm: FakeVM) -> int:
    """``agent.boot.configure`` + ``run``, in-process, with the fakes and the VM's root. (boot.configure has
    seams for the supervisor and the mounter only; users and the settings fetcher are set here.)"""
    paths = vm.paths
    agent_log.info("Starting agent bosh-lab (fake CPI VM %s, boot %d)...", vm.cid, vm.boots)
    agent_log.info("Configuring agent...")
    paths.ensure_layout()
    setup_monit_user(paths)
    agent_log.info("Configuring instance")

    async def fetch(user_data: UserData) -> Settings:
        return _rooted_settings(vm, await fetch_from_registry(user_data))

    settings_service = SettingsService(paths, fetcher=fetch, attempts=20, retry_delay=0.25)
    try:
        settings = await settings_service.load()
    except SettingsError as e:
        agent_log.error("Cannot configure the agent: %s", e)
        return 1
    await PersistentDisks(paths, settings_service, vm.mounter).remount_at_boot()
    supervisor = vm.supervisor = VMSupervisor(paths)
    specs = SpecStore(paths)
    tasks = TaskManager()
    mbus = vm.mbus = MBus(settings["mbus"], settings["agent_id"])
    vitals = Vitals(paths)
    applier = Applier(paths, lambda: blobstore_client(settings_service), supervisor)
    services = Services(paths, settings_service, specs, supervisor, applier, tasks, mbus, vitals, vm.mounter, vm.users)
    dispatcher = Dispatcher(build_registry(services), tasks, mbus.publish)
    await mbus.connect()
    await mbus.subscribe(dispatcher.handle)
    heartbeater = Heartbeater(mbus, settings["agent_id"], lambda: collect_payload(specs.load(), supervisor, vitals),
                              heartbeat_interval(settings))
    background = [asyncio.create_task(heartbeater.run()), asyncio.create_task(restore_jobs(paths, specs, supervisor))]
    agent_log.info("Agent %s is ready, waiting for the director", settings["agent_id"])
    try:
        await asyncio.Event().wait()
    finally:
        for t in background:
            t.cancel()
    return 0


class FakeCPI:
    """The director's CPI port (``director.cpi.CPI``) over in-process VMs. ``root``: where VMs and disks live."""

    def __init__(self, root: Path, lab: str = "fake-lab", live_disk_attach: bool = False) -> None:
        self.root = Path(root)
        self.lab = lab
        self.live_disk_attach = live_disk_attach
        self.vms: dict[str, FakeVM] = {}
        self.disks: dict[str, dict[str, str]] = {}       # cid -> metadata
        self.disk_sizes: dict[str, int] = {}
        self.networks: list[str] = []
        self.removed_networks: list[str] = []
        self.calls: list[str] = []                        # "create_vm <cid>", "attach_disk <vm> <disk>", ...
        self.services = {"blobstore": False, "nats": False}   # the lab's services -> paused (pause_service)

    # --- lifecycle -----------------------------------------------------------------------------------

    async def setup(self) -> None:
        (self.root / "vms").mkdir(parents=True, exist_ok=True)
        (self.root / "disks").mkdir(parents=True, exist_ok=True)
        _hooks.acquire(self)

    async def close(self) -> None:
        """The director is done with the CPI: the VMs keep running (a new director finds them)."""

    async def shutdown(self) -> None:
        """End every VM and remove the fake's dirs (the test is over)."""
        for vm in list(self.vms.values()):
            await self._stop_agent(vm, KILLED_EXIT)
        self.vms.clear()
        _hooks.release(self)

    async def stemcell(self) -> Stemcell:
        return Stemcell("bosh-stemcell", "0.1.0", "fake")

    # --- the agent of a VM ---------------------------------------------------------------------------

    def _start_agent(self, vm: FakeVM) -> None:
        vm.boots += 1
        vm.exit_code = None
        vm.agent_down = False
        vm.mbus = None
        token = _CURRENT_VM.set(vm)
        try:
            vm.task = asyncio.create_task(_agent_main(vm), name=f"fake-vm-{vm.cid}")
        finally:
            _CURRENT_VM.reset(token)

        def ended(t: asyncio.Task[int]) -> None:
            if vm.exit_code is None and not t.cancelled():
                exc = t.exception()
                vm.exit_code = 1 if exc is not None else t.result()
                if exc is not None:
                    with open(vm.log_file, "a") as f:
                        f.write(f"agent crashed: {type(exc).__name__}: {exc}\n")
        vm.task.add_done_callback(ended)

    async def _stop_agent(self, vm: FakeVM, exit_code: int) -> None:
        """As if the container's processes died: NATS connection dropped, every agent task (drain scripts
        included) cancelled, mounts gone (the fake mounter's symlinks undone)."""
        if vm.exit_code is None:
            vm.exit_code = exit_code
        if vm.mbus is not None and vm.mbus.nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(vm.mbus.nc.close(), 5)
        pending = [t for t in [vm.task, *vm.tasks] if t is not None and not t.done()]
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.wait(pending, timeout=15)
        for target in list(vm.mounter.mounts):
            with contextlib.suppress(Exception):
                await vm.mounter.unmount(target)

    def _vm(self, cid: str, call: str) -> FakeVM:
        vm = self.vms.get(cid)
        if vm is None:
            raise CPIError(f"{call}: VM {cid} does not exist")
        return vm

    def agent_log_text(self, cid: str) -> str:
        vm = self.vms.get(cid)
        return vm.log_file.read_text(errors="replace") if vm is not None and vm.log_file.exists() else ""

    async def kill_vm(self, cid: str) -> None:
        """Test hook: the VM's processes die (its container exited); it still exists."""
        await self._stop_agent(self._vm(cid, "kill_vm"), KILLED_EXIT)

    # --- VMs -----------------------------------------------------------------------------------------

    async def create_vm(self, agent_id: str, name: str, user_data: UserData, metadata: dict[str, str],
                        networks: dict[str, str] | None = None, disk_cids: list[str] | None = None) -> VMInfo:
        cid = f"fake-vm-{uuid.uuid4()}"
        for d in disk_cids or []:
            if d not in self.disks:
                raise CPIError(f"create_vm {name}: disk {d} does not exist")
        root = self.root / "vms" / cid
        (root / "bosh").mkdir(parents=True)
        ud = dict(user_data, instance_id=cid)
        (root / "bosh" / "user_data.json").write_text(json.dumps(ud))
        vm = FakeVM(cid, agent_id, name, root, {LABEL_LAB: self.lab, LABEL_AGENT: agent_id, **metadata}, ud)
        self.vms[cid] = vm
        for d in disk_cids or []:
            self._link_disk(vm, d)
        self.calls.append(f"create_vm {cid} disks={','.join(disk_cids or [])}")
        self._start_agent(vm)
        addresses = {"fake": "127.0.0.1", **{n: ip for n, ip in (networks or {}).items()}}
        return VMInfo(cid, name, "127.0.0.1", 8, "127.0.0.1", addresses)

    async def delete_vm(self, cid: str) -> None:
        vm = self.vms.pop(cid, None)
        self.calls.append(f"delete_vm {cid}")
        if vm is None:
            return
        await self._stop_agent(vm, KILLED_EXIT)
        shutil.rmtree(vm.root, ignore_errors=True)

    async def has_vm(self, cid: str) -> bool:
        return cid in self.vms

    async def reboot_vm(self, cid: str) -> None:
        vm = self._vm(cid, "reboot_vm")
        self.calls.append(f"reboot_vm {cid}")
        await self._stop_agent(vm, 0)
        self._start_agent(vm)

    async def set_vm_metadata(self, cid: str, metadata: dict[str, str]) -> None:
        self._vm(cid, "set_vm_metadata").vm_metadata = dict(metadata)

    async def list_vms(self) -> list[VMRecord]:
        return [VMRecord(vm.cid, vm.name, "running" if vm.running else "exited", dict(vm.metadata))
                for vm in self.vms.values()]

    async def vm_status(self, cid: str, tail: int = 20) -> VMStatus:
        vm = self.vms.get(cid)
        if vm is None:
            return VMStatus(False)
        if vm.running or vm.agent_down:
            return VMStatus(True, True, None, "running")
        lines = self.agent_log_text(cid).splitlines()[-tail:] if tail else []
        return VMStatus(True, False, vm.exit_code, "exited", "\n".join(lines) + ("\n" if lines else ""))

    async def exec(self, cid: str, cmd: list[str]) -> tuple[int, str]:
        """``tail -n N <file under /var/vcap>`` (what the director reads: the agent's log); ``sv down|force-stop|up
        /etc/service/agent`` (the agent stops answering / starts again, the VM runs on); ``[timeout N] sh -c
        SCRIPT``, run by this machine's sh with ``/var/vcap`` in the script meaning the VM's dir (the fault verbs'
        scripts, which touch only files under /var/vcap)."""
        vm = self._vm(cid, "exec")
        if len(cmd) == 3 and cmd[0] == "sv" and cmd[1] in ("down", "force-stop", "up") and cmd[2] == "/etc/service/agent":
            if cmd[1] != "up" and vm.running:
                vm.agent_down = True
                await self._stop_agent(vm, 0)
                vm.exit_code = None
            elif cmd[1] == "up" and vm.agent_down:
                vm.agent_down = False
                self._start_agent(vm)
            return 0, ""
        if not vm.running and not vm.agent_down:
            raise CPIError(f"exec in VM {cid}: it is not running")
        deadline = 60.0
        if len(cmd) > 2 and cmd[0] == "timeout" and cmd[1].isdigit():
            deadline, cmd = float(cmd[1]), cmd[2:]
        if len(cmd) == 3 and cmd[0] == "sh" and cmd[1] == "-c":
            script = cmd[2].replace(VM_BASE, str(vm.root))
            proc = await asyncio.create_subprocess_exec("sh", "-c", script, stdout=asyncio.subprocess.PIPE,
                                                        stderr=asyncio.subprocess.STDOUT)
            try:
                out, _ = await asyncio.wait_for(proc.communicate(), deadline)
            except TimeoutError:
                proc.kill()
                await proc.wait()
                return 124, ""
            return int(proc.returncode or 0), out.decode(errors="replace").replace(str(vm.root), VM_BASE)
        if len(cmd) == 4 and cmd[0] == "tail" and cmd[1] == "-n" and cmd[2].isdigit():
            path = vm.host_path(cmd[3])
            if not path.is_file():
                return 1, f"tail: cannot open '{cmd[3]}' for reading: No such file or directory\n"
            lines = path.read_text(errors="replace").splitlines(keepends=True)
            n = int(cmd[2])
            return 0, "".join(lines[-n:] if n else [])
        raise CPIError(f"exec in VM {cid}: the fake CPI runs only `tail -n N FILE`, not {cmd!r}")

    async def stream_exec(self, cid: str, cmd: list[str]) -> AsyncGenerator[bytes, None]:
        """``tail [-n N] [-f|-F] FILE``: the file's last lines (then, with -f, what is appended, until closed)."""
        vm = self._vm(cid, "stream_exec")
        if not cmd or cmd[0] != "tail":
            raise CPIError(f"stream_exec in VM {cid}: the fake CPI runs only tail, not {cmd!r}")
        follow = any(a in ("-f", "-F") for a in cmd)
        n = 10
        if "-n" in cmd and cmd.index("-n") + 1 < len(cmd) and cmd[cmd.index("-n") + 1].isdigit():
            n = int(cmd[cmd.index("-n") + 1])
        path = vm.host_path(cmd[-1])
        data = path.read_bytes() if path.is_file() else b""
        yield b"".join(data.splitlines(keepends=True)[-n:] if n else [])
        pos = len(data)
        while follow and cid in self.vms:
            await asyncio.sleep(0.1)
            if path.is_file() and path.stat().st_size > pos:
                with open(path, "rb") as f:
                    f.seek(pos)
                    more = f.read()
                pos += len(more)
                yield more

    # --- disks ---------------------------------------------------------------------------------------

    def disk_dir(self, cid: str) -> Path:
        return self.root / "disks" / cid

    async def create_disk(self, size_mb: int, metadata: dict[str, str]) -> str:
        cid = f"fake-disk-{uuid.uuid4()}"
        self.disk_dir(cid).mkdir(parents=True)
        self.disks[cid] = {LABEL_LAB: self.lab, **metadata}
        self.disk_sizes[cid] = size_mb
        self.calls.append(f"create_disk {cid} {size_mb}")
        return cid

    async def delete_disk(self, cid: str) -> bool:
        self.calls.append(f"delete_disk {cid}")
        if cid not in self.disks:
            return False
        del self.disks[cid]
        shutil.rmtree(self.disk_dir(cid), ignore_errors=True)
        return True

    async def has_disk(self, cid: str) -> bool:
        return cid in self.disks

    async def list_disks(self, metadata: dict[str, str]) -> list[str]:
        want = {LABEL_LAB: self.lab, **metadata}
        return [cid for cid, md in self.disks.items() if all(md.get(k) == v for k, v in want.items())]

    def _link_disk(self, vm: FakeVM, disk_cid: str) -> None:
        link = vm.host_path(f"{DISK_MOUNT_DIR}/{disk_cid}")
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(self.disk_dir(disk_cid), target_is_directory=True)
        vm.mounter.volumes.add(link)

    def attached(self, vm_cid: str) -> list[str]:
        """The disks linked into a VM."""
        vm = self._vm(vm_cid, "attached")
        d = vm.host_path(DISK_MOUNT_DIR)
        return sorted(p.name for p in d.iterdir()) if d.is_dir() else []

    async def attach_disk(self, vm_cid: str, disk_cid: str) -> None:
        if not self.live_disk_attach:
            raise CPIError(f"attach_disk {disk_cid}: this fake CPI (live_disk_attach=False) attaches disks only "
                           f"when it creates a VM")
        vm = self._vm(vm_cid, "attach_disk")
        if disk_cid not in self.disks:
            raise CPIError(f"attach_disk: disk {disk_cid} does not exist")
        if disk_cid in self.attached(vm_cid):
            raise CPIError(f"attach_disk: disk {disk_cid} is attached to {vm_cid} already")
        self._link_disk(vm, disk_cid)
        self.calls.append(f"attach_disk {vm_cid} {disk_cid}")

    async def detach_disk(self, vm_cid: str, disk_cid: str) -> None:
        if not self.live_disk_attach:
            raise CPIError(f"detach_disk {disk_cid}: this fake CPI (live_disk_attach=False) detaches disks only "
                           f"by making a new VM")
        vm = self._vm(vm_cid, "detach_disk")
        link = vm.host_path(f"{DISK_MOUNT_DIR}/{disk_cid}")
        if link in vm.mounter.mounts.values() or not link.is_symlink():
            raise CPIError(f"detach_disk: disk {disk_cid} is not attached to {vm_cid} or still mounted")
        link.unlink()
        vm.mounter.volumes.discard(link)
        self.calls.append(f"detach_disk {vm_cid} {disk_cid}")

    # --- networks ------------------------------------------------------------------------------------

    async def ensure_network(self, subnet: ipaddress.IPv4Network, gateway: ipaddress.IPv4Address) -> str:
        name = f"{self.lab}-net-{subnet.network_address}-{subnet.prefixlen}"
        if name not in self.networks:
            self.networks.append(name)
        return name

    async def remove_unused_networks(self) -> list[str]:
        gone, self.networks = self.networks, []
        self.removed_networks.extend(gone)
        return gone

    # --- the lab's services --------------------------------------------------------------------------

    async def pause_service(self, name: str, paused: bool) -> None:
        if name not in self.services:
            raise CPIError(f"no container of service '{name}' in compose project '{self.lab}'")
        self.services[name] = paused
        self.calls.append(f"pause_service {name} {paused}")


@contextlib.contextmanager
def in_vm(vm: FakeVM) -> Generator[None, None, None]:
    """Run code as the VM's (its log lines go to its log)."""
    token = _CURRENT_VM.set(vm)
    try:
        yield
    finally:
        _CURRENT_VM.reset(token)


def _implements_the_port(root: Path) -> CPI:
    """mypy checks here that FakeCPI has every method of the director's CPI port, with its types."""
    return FakeCPI(root)


def create(settings: CPISettings) -> FakeCPI:
    """What ``director.cpi.load`` calls (``BOSH_LAB_CPI=tests.support.fake_cpi``): VMs under a temp dir."""
    return FakeCPI(Path(tempfile.mkdtemp(prefix="fake-cpi-")), lab=settings.lab or "fake-lab")

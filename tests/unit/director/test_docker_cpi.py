"""The Docker CPI (director/cpi/docker_cpi.py) against a fake of the docker SDK client at its boundary:
``docker.from_env`` returns a small in-memory client whose containers, images, networks, volumes and low-level
``api`` record every call. What is checked is what the CPI asks Docker to do, in what order, and how each
Docker failure becomes a CPIError that names the call and the cause."""
from __future__ import annotations

import asyncio
import io
import ipaddress
import json
import socket
import sys
import tarfile
import threading
import types
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from director.cpi import (
    CPI,
    DISK_MOUNT_DIR,
    LABEL_AGENT,
    LABEL_DEPLOYMENT,
    LABEL_LAB,
    LABEL_RANGE,
    LABEL_ROLE,
    CPIError,
    CPISettings,
    Stemcell,
    VMStatus,
    docker_cpi,
    load,
)
from director.cpi.docker_cpi import DockerCPI

IMAGE = "bosh-lab-stemcell:latest"


def api_error(text: str) -> docker.errors.APIError:
    return docker.errors.APIError(text, explanation=text)


# --- the fake docker SDK client ------------------------------------------------------------------------


class FakeContainer:
    def __init__(self, client: FakeClient, cid: str, name: str, labels: dict[str, str], kwargs: dict[str, Any]) -> None:
        self.client, self.id, self.name, self.labels, self.kwargs = client, cid, name, labels, kwargs
        self.status = "created"
        self.attrs: dict[str, Any] = {"State": {"Running": False, "Status": "created", "ExitCode": 0},
                                      "NetworkSettings": {"Networks": {}}}
        self.archives: list[tuple[str, bytes]] = []
        self.removed: dict[str, Any] | None = None
        self.log_text = b""
        self.fail_start: docker.errors.APIError | None = None
        self.exec_result: Any = None
        self.exec_error: Exception | None = None
        self.put_error: Exception | None = None
        self.restarted: list[int] = []

    def put_archive(self, path: str, data: bytes) -> bool:
        if self.put_error is not None:
            raise self.put_error
        self.client.events.append(f"put_archive {self.id} {path}")
        self.archives.append((path, data))
        return True

    def start(self) -> None:
        self.client.events.append(f"start {self.id}")
        if self.fail_start is not None:
            raise self.fail_start
        self.status = "running"
        self.attrs["State"] = {"Running": True, "Status": "running", "ExitCode": 0}

    def reload(self) -> None:
        self.client.events.append(f"reload {self.id}")
        nets = {self.kwargs["network"]: {"IPAddress": "172.20.0.5", "IPPrefixLen": 16, "Gateway": "172.20.0.1"}}
        for net, ip in self.client.connected.get(self.id, {}).items():
            nets[net] = {"IPAddress": ip, "IPPrefixLen": 24, "Gateway": "10.9.0.1"}
        self.attrs["NetworkSettings"] = {"Networks": nets}

    def remove(self, **kwargs: Any) -> None:
        self.client.events.append(f"remove {self.id}")
        self.removed = kwargs
        self.client.containers.by_id.pop(self.id, None)

    def logs(self, tail: int) -> bytes:
        self.client.events.append(f"logs {self.id} {tail}")
        return self.log_text

    def exec_run(self, cmd: list[str]) -> Any:
        self.client.events.append(f"exec {self.id} {' '.join(cmd)}")
        if self.exec_error is not None:
            raise self.exec_error
        return self.exec_result

    def restart(self, timeout: int) -> None:
        self.restarted.append(timeout)


class FakeContainers:
    def __init__(self, client: FakeClient) -> None:
        self.client = client
        self.by_id: dict[str, FakeContainer] = {}
        self.created: list[tuple[str, dict[str, Any]]] = []
        self.create_error: Exception | None = None
        self.list_filters: list[dict[str, Any]] = []
        self.gate: threading.Event | None = None       # create() waits for it (a slow Docker)
        self.next_fail_start: docker.errors.APIError | None = None

    def create(self, image: str, **kwargs: Any) -> FakeContainer:
        if self.gate is not None:
            self.gate.wait(10)
        if self.create_error is not None:
            raise self.create_error
        self.created.append((image, kwargs))
        cid = f"c{len(self.created):03d}" + "0" * 60
        c = FakeContainer(self.client, cid, kwargs["name"], dict(kwargs["labels"]), kwargs)
        c.fail_start = self.next_fail_start
        self.by_id[cid] = c
        self.client.events.append(f"create {cid}")
        return c

    def add(self, cid: str, name: str, labels: dict[str, str], status: str = "running") -> FakeContainer:
        c = FakeContainer(self.client, cid, name, labels, {"network": "lab-net"})
        c.status = status
        self.by_id[cid] = c
        return c

    def get(self, cid: str) -> FakeContainer:
        if cid not in self.by_id:
            raise docker.errors.NotFound(f"No such container: {cid}")
        return self.by_id[cid]

    def list(self, all: bool = False, filters: dict[str, Any] | None = None) -> list[FakeContainer]:
        self.list_filters.append({"all": all, **(filters or {})})
        want = (filters or {}).get("label")
        wanted = [want] if isinstance(want, str) else list(want or [])
        return [c for c in self.by_id.values()
                if all_labels_match(c.labels, wanted) and (all or c.status == "running")]


def all_labels_match(labels: dict[str, str], wanted: list[str]) -> bool:
    for w in wanted:
        k, _, v = w.partition("=")
        if labels.get(k) != v:
            return False
    return True


class FakeImage:
    def __init__(self, labels: dict[str, str] | None) -> None:
        self.labels = labels
        self.id = "sha256:" + "ab" * 32
        self.short_id = "sha256:abababababab"


class FakeImages:
    def __init__(self) -> None:
        self.by_name: dict[str, FakeImage] = {}

    def get(self, name: str) -> FakeImage:
        if name not in self.by_name:
            raise docker.errors.ImageNotFound(f"No such image: {name}")
        return self.by_name[name]


class FakeNetwork:
    def __init__(self, client: FakeClient, name: str, subnet: str | None = None, gateway: str | None = None,
                 labels: dict[str, str] | None = None, containers: dict[str, Any] | None = None) -> None:
        self.client, self.name = client, name
        cfg = [{"Subnet": subnet, "Gateway": gateway}] if subnet is not None else []
        self.attrs: dict[str, Any] = {"IPAM": {"Config": cfg}, "Labels": labels or {}, "Containers": containers or {}}
        self.reloaded = 0
        self.removed = False
        self.remove_error: Exception | None = None

    def connect(self, container: FakeContainer, ipv4_address: str) -> None:
        self.client.events.append(f"connect {container.id} {self.name} {ipv4_address}")
        self.client.connected.setdefault(container.id, {})[self.name] = ipv4_address

    def reload(self) -> None:
        self.reloaded += 1

    def remove(self) -> None:
        if self.remove_error is not None:
            raise self.remove_error
        self.removed = True


class FakeNetworks:
    def __init__(self, client: FakeClient) -> None:
        self.client = client
        self.all: list[FakeNetwork] = []
        self.created: list[tuple[str, dict[str, Any]]] = []
        self.create_error: Exception | None = None
        self.list_filters: list[dict[str, Any] | None] = []

    def list(self, filters: dict[str, Any] | None = None) -> list[FakeNetwork]:
        self.list_filters.append(filters)
        want = (filters or {}).get("label")
        wanted = [want] if isinstance(want, str) else list(want or [])
        return [n for n in self.all if all_labels_match(n.attrs["Labels"], wanted)]

    def get(self, name: str) -> FakeNetwork:
        for n in self.all:
            if n.name == name:
                return n
        raise docker.errors.NotFound(f"network {name} not found")

    def create(self, name: str, **kwargs: Any) -> FakeNetwork:
        if self.create_error is not None:
            raise self.create_error
        self.created.append((name, kwargs))
        n = FakeNetwork(self.client, name, labels=kwargs.get("labels"))
        self.all.append(n)
        return n


class FakeVolume:
    def __init__(self, volumes: FakeVolumes, name: str, labels: dict[str, str]) -> None:
        self.volumes, self.name, self.labels = volumes, name, labels
        self.remove_error: Exception | None = None

    def remove(self, force: bool = False) -> None:
        if self.remove_error is not None:
            raise self.remove_error
        self.volumes.removed.append((self.name, force))
        del self.volumes.by_name[self.name]


class FakeVolumes:
    def __init__(self) -> None:
        self.by_name: dict[str, FakeVolume] = {}
        self.created: list[dict[str, Any]] = []
        self.removed: list[tuple[str, bool]] = []
        self.create_error: Exception | None = None

    def create(self, name: str, driver: str, labels: dict[str, str]) -> FakeVolume:
        if self.create_error is not None:
            raise self.create_error
        self.created.append({"name": name, "driver": driver, "labels": labels})
        v = self.by_name[name] = FakeVolume(self, name, labels)
        return v

    def get(self, name: str) -> FakeVolume:
        if name not in self.by_name:
            raise docker.errors.NotFound(f"get {name}: no such volume")
        return self.by_name[name]

    def list(self, filters: dict[str, Any]) -> list[FakeVolume]:
        return [v for v in self.by_name.values() if all_labels_match(v.labels, list(filters["label"]))]


class FakeAPI:
    """The low-level client: exec_start(socket=True) answers one end of a socket pair the test writes into."""

    def __init__(self) -> None:
        self.execs: list[tuple[str, list[str], dict[str, Any]]] = []
        self.peer: socket.socket | None = None

    def exec_create(self, cid: str, cmd: list[str], **kwargs: Any) -> dict[str, str]:
        self.execs.append((cid, cmd, kwargs))
        return {"Id": "exec-1"}

    def exec_start(self, exec_id: str, socket: bool, tty: bool) -> Any:
        assert exec_id == "exec-1" and socket and tty
        ours, self.peer = _socketpair()
        return types.SimpleNamespace(_sock=ours)   # what docker-py answers: a wrapper with the raw socket


def _socketpair() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair()


class FakeClient:
    def __init__(self) -> None:
        self.events: list[str] = []
        self.connected: dict[str, dict[str, str]] = {}
        self.containers = FakeContainers(self)
        self.images = FakeImages()
        self.networks = FakeNetworks(self)
        self.volumes = FakeVolumes()
        self.api = FakeAPI()
        self.pings = 0
        self.closed = 0

    def ping(self) -> bool:
        self.pings += 1
        return True

    def close(self) -> None:
        self.closed += 1


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> FakeClient:
    c = FakeClient()
    c.images.by_name[IMAGE] = FakeImage({"com.docker.compose.project": "other", "com.docker.compose.service": "stemcell",
                                         "io.bosh-lab.stemcell.name": "bosh-docker-ubuntu",
                                         "io.bosh-lab.stemcell.version": "1.42"})
    monkeypatch.setattr(docker, "from_env", lambda: c)
    return c


@pytest.fixture
async def cpi(client: FakeClient) -> AsyncIterator[DockerCPI]:
    c = DockerCPI(IMAGE, lab="lab1", network="lab-net", threads=2)
    yield c
    await c.close()


def untar(data: bytes) -> dict[str, Any]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        out = {}
        for m in tar.getmembers():
            f = tar.extractfile(m)
            assert f is not None
            out[m.name] = json.loads(f.read())
            assert m.mode == 0o600, "user data holds credentials: only root reads it"
        return out


USER_DATA: Any = {"registry": {"endpoint": "http://registry:25889"}, "server": {"name": "vm-1"}}


# --- the port --------------------------------------------------------------------------------------------


def test_the_docker_cpi_is_a_cpi_and_load_picks_it(client: FakeClient) -> None:
    cpi = load("docker", CPISettings(IMAGE, lab="l", network="n", threads=1))
    assert isinstance(cpi, DockerCPI) and isinstance(cpi, CPI)
    assert (cpi.image, cpi.lab, cpi.network, cpi.live_disk_attach) == (IMAGE, "l", "n", False)
    assert not isinstance(object(), CPI), "the runtime-checkable Protocol really checks the methods"


def test_load_names_what_is_wrong(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(CPIError, match=r"unknown CPI 'nosuch': no module director\.cpi\.nosuch_cpi"):
        load("nosuch", CPISettings(IMAGE))
    with pytest.raises(CPIError, match=r"CPI module json\.decoder has no create\(settings\) function"):
        load("json.decoder", CPISettings(IMAGE))
    pkg = tmp_path / "labcpis"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "notcpi.py").write_text("def create(settings):\n    return object()\n")
    (pkg / "broken.py").write_text("import no_such_dependency_of_a_cpi\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(CPIError, match=r"labcpis\.notcpi\.create\(\) made object, which lacks the CPI's methods"):
        load("labcpis.notcpi", CPISettings(IMAGE))
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_of_a_cpi"):
        load("labcpis.broken", CPISettings(IMAGE))   # a CPI module that fails to import is not "unknown"
    for name in ("labcpis.notcpi", "labcpis.broken", "labcpis"):
        monkeypatch.delitem(sys.modules, name, raising=False)


async def test_an_unreachable_engine_is_a_cpi_error_and_is_asked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def refuse() -> FakeClient:
        calls.append(1)
        raise docker.errors.DockerException("Error while fetching server API version")
    monkeypatch.setattr(docker, "from_env", refuse)
    cpi = DockerCPI(IMAGE, "lab1", "lab-net", threads=1)
    try:
        with pytest.raises(CPIError, match=r"Docker engine is not reachable .*docker\.sock.*server API version"):
            await cpi.delete_vm("x")
        with pytest.raises(CPIError):
            await cpi.has_disk("x")
        assert len(calls) == 2, "a failed connection is not kept: the next call tries again"
    finally:
        await cpi.close()


# --- discovery -------------------------------------------------------------------------------------------


async def test_setup_takes_lab_and_network_from_the_directors_own_container(client: FakeClient) -> None:
    me = client.containers.add(socket.gethostname(), "director", {"com.docker.compose.project": "mylab"})
    me.attrs["NetworkSettings"] = {"Networks": {"mylab_default": {}, "other": {}}}
    cpi = DockerCPI(IMAGE, threads=1)
    try:
        await cpi.setup()
        assert (cpi.lab, cpi.network) == ("mylab", "mylab_default")
    finally:
        await cpi.close()
    configured = DockerCPI(IMAGE, lab="given", network="given-net", threads=1)
    try:
        await configured.setup()
        assert (configured.lab, configured.network) == ("given", "given-net")
    finally:
        await configured.close()


async def test_setup_outside_a_container(client: FakeClient) -> None:
    cpi = DockerCPI(IMAGE, network="some-net", threads=1)
    try:
        await cpi.setup()
        assert (cpi.lab, cpi.network) == ("bosh-lab", "some-net")
    finally:
        await cpi.close()
    lost = DockerCPI(IMAGE, threads=1)
    try:
        with pytest.raises(CPIError, match="BOSH_LAB_NETWORK is not set"):
            await lost.setup()
    finally:
        await lost.close()


async def test_setup_in_a_container_on_no_network(client: FakeClient) -> None:
    me = client.containers.add(socket.gethostname(), "director", {})
    me.attrs["NetworkSettings"] = {"Networks": None}
    cpi = DockerCPI(IMAGE, threads=1)
    try:
        with pytest.raises(CPIError, match="on no network"):
            await cpi.setup()
        assert cpi.lab == "bosh-lab", "no compose label: the default lab name"
    finally:
        await cpi.close()


async def test_stemcell_from_the_image_labels(cpi: DockerCPI, client: FakeClient) -> None:
    assert await cpi.stemcell() == Stemcell("bosh-docker-ubuntu", "1.42", "sha256:" + "ab" * 32)
    client.images.by_name[IMAGE] = FakeImage(None)
    assert await cpi.stemcell() == Stemcell("bosh-stemcell", "abababababab", "sha256:" + "ab" * 32)
    del client.images.by_name[IMAGE]
    with pytest.raises(CPIError, match=rf"stemcell image {IMAGE} does not exist: build it with `docker compose build`"):
        await cpi.stemcell()


# --- VMs -------------------------------------------------------------------------------------------------


async def test_create_vm_puts_user_data_in_before_start_and_asks_for_everything(cpi: DockerCPI,
                                                                                 client: FakeClient) -> None:
    client.networks.all.append(FakeNetwork(client, "lab1-net-10.9.0.0-24", "10.9.0.0/24", "10.9.0.1"))
    meta = {LABEL_DEPLOYMENT: "redis", LABEL_ROLE: "instance"}
    vm = await cpi.create_vm("agent-0123456789abcdef", "redis-0", USER_DATA, meta,
                             networks={"lab1-net-10.9.0.0-24": "10.9.0.7"}, disk_cids=["lab1-disk-a", "lab1-disk-b"])
    (image, kw), = client.containers.created
    c = client.containers.by_id[vm.cid]
    assert image == IMAGE and kw["name"] == "redis-0" and kw["hostname"] == "agent-012345"
    assert kw["network"] == "lab-net" and kw["init"] is True and "SYS_ADMIN" in kw["cap_add"]
    assert kw["volumes"] == {"lab1-disk-a": {"bind": f"{DISK_MOUNT_DIR}/lab1-disk-a", "mode": "rw"},
                             "lab1-disk-b": {"bind": f"{DISK_MOUNT_DIR}/lab1-disk-b", "mode": "rw"}}
    assert kw["labels"] == {"com.docker.compose.project": "", "com.docker.compose.service": "",
                            LABEL_LAB: "lab1", LABEL_AGENT: "agent-0123456789abcdef", **meta}
    (path, tar), = c.archives
    assert path == "/var/vcap/bosh"
    assert untar(tar) == {"user_data.json": {**USER_DATA, "instance_id": vm.cid}}
    order = [e.split()[0] for e in client.events]
    assert order == ["create", "connect", "put_archive", "start", "reload"]
    assert client.events[1] == f"connect {vm.cid} lab1-net-10.9.0.0-24 10.9.0.7"
    assert (vm.name, vm.ip, vm.prefix_len, vm.gateway) == ("redis-0", "172.20.0.5", 16, "172.20.0.1")
    assert vm.addresses == {"lab-net": "172.20.0.5", "lab1-net-10.9.0.0-24": "10.9.0.7"}


async def test_create_vm_keeps_the_image_labels_alone_when_none_are_composes(cpi: DockerCPI,
                                                                             client: FakeClient) -> None:
    client.images.by_name[IMAGE].labels = {"maintainer": "x"}
    vm = await cpi.create_vm("a1", "vm", USER_DATA, {"k": "v"})
    assert client.containers.created[0][1]["labels"] == {LABEL_LAB: "lab1", LABEL_AGENT: "a1", "k": "v"}
    assert client.containers.created[0][1]["volumes"] == {}
    assert vm.cid in client.containers.by_id


async def test_a_vm_that_cannot_start_is_removed_and_named(cpi: DockerCPI, client: FakeClient) -> None:
    client.containers.next_fail_start = api_error("OCI runtime create failed: no space left")
    with pytest.raises(CPIError, match="starting VM redis-0: OCI runtime create failed: no space left"):
        await cpi.create_vm("a1", "redis-0", USER_DATA, {})
    assert client.containers.by_id == {}, "no container is left behind"
    assert client.events[-1].startswith("remove ")


async def test_a_missing_stemcell_image_names_the_image_and_the_build(cpi: DockerCPI, client: FakeClient) -> None:
    client.containers.create_error = docker.errors.ImageNotFound("No such image")
    with pytest.raises(CPIError) as e:
        await cpi.create_vm("a1", "redis-0", USER_DATA, {})
    assert IMAGE in str(e.value) and "`docker compose build`" in str(e.value)
    client.containers.create_error = api_error("Conflict. The container name is already in use")
    with pytest.raises(CPIError, match="create_vm redis-0: Conflict"):
        await cpi.create_vm("a1", "redis-0", USER_DATA, {})


async def test_create_vm_without_the_image_blanks_nothing(cpi: DockerCPI, client: FakeClient) -> None:
    """The compose labels are looked up on the image; an image lookup error only means nothing to blank (the
    create call says what is wrong)."""
    del client.images.by_name[IMAGE]
    client.containers.create_error = docker.errors.ImageNotFound("No such image")
    with pytest.raises(CPIError, match="does not exist"):
        await cpi.create_vm("a1", "vm", USER_DATA, {})


async def test_a_cancelled_create_vm_deletes_the_vm_docker_made(cpi: DockerCPI, client: FakeClient) -> None:
    client.containers.gate = threading.Event()
    task = asyncio.create_task(cpi.create_vm("a1", "slow-0", USER_DATA, {}))
    await asyncio.sleep(0.1)
    task.cancel()
    await asyncio.sleep(0.05)
    client.containers.gate.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(client.containers.created) == 1, "the container was made"
    assert client.containers.by_id == {}, "and deleted: no orphan VM"


async def test_a_cancelled_create_vm_that_failed_is_still_cancelled(cpi: DockerCPI, client: FakeClient) -> None:
    client.containers.gate = threading.Event()
    client.containers.create_error = api_error("no space left on device")
    task = asyncio.create_task(cpi.create_vm("a1", "slow-0", USER_DATA, {}))
    await asyncio.sleep(0.1)
    task.cancel()
    client.containers.gate.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert client.containers.created == [] and not any(e.startswith("remove") for e in client.events)


async def test_delete_vm(cpi: DockerCPI, client: FakeClient) -> None:
    c = client.containers.add("vm1", "vm1", {LABEL_LAB: "lab1"})
    await cpi.delete_vm("vm1")
    assert c.removed == {"force": True, "v": True} and "vm1" not in client.containers.by_id
    await cpi.delete_vm("vm1")      # gone already: fine
    assert not await cpi.has_vm("vm1")


async def test_vm_status_missing_running_and_exited(cpi: DockerCPI, client: FakeClient) -> None:
    assert await cpi.vm_status("nope") == VMStatus(False)
    c = client.containers.add("vm1", "vm1", {})
    c.attrs["State"] = {"Running": True, "Status": "running", "ExitCode": 0}
    assert await cpi.vm_status("vm1") == VMStatus(True, True, 0, "running", "")
    assert not any(e.startswith("logs") for e in client.events), "a running VM's logs are not read"
    c.attrs["State"] = {"Running": False, "Status": "exited", "ExitCode": 137}
    c.log_text = b"agent: cannot fetch settings\n\xff"
    st = await cpi.vm_status("vm1", tail=5)
    assert (st.exists, st.running, st.exit_code, st.status) == (True, False, 137, "exited")
    assert st.logs.startswith("agent: cannot fetch settings\n") and client.events[-1] == "logs vm1 5"
    assert await cpi.has_vm("vm1")
    assert (await cpi.vm_status("vm1", tail=0)).logs == ""


async def test_exec_answers_the_exit_code_and_output_and_names_errors(cpi: DockerCPI, client: FakeClient) -> None:
    c = client.containers.add("vm1234567890abcdef", "vm1", {})
    c.exec_result = types.SimpleNamespace(exit_code=3, output=b"tail: no file\n")
    assert await cpi.exec("vm1234567890abcdef", ["tail", "-n", "5", "/x"]) == (3, "tail: no file\n")
    c.exec_result = types.SimpleNamespace(exit_code=None, output=b"ok")
    assert await cpi.exec("vm1234567890abcdef", ["true"]) == (0, "ok")
    c.exec_error = api_error("container is not running")
    with pytest.raises(CPIError, match="exec in VM vm1234567890: container is not running"):
        await cpi.exec("vm1234567890abcdef", ["true"])
    with pytest.raises(CPIError, match="exec in VM gone: it does not exist"):
        await cpi.exec("gone", ["true"])


async def test_reboot_vm(cpi: DockerCPI, client: FakeClient) -> None:
    c = client.containers.add("vm1", "vm1", {})
    await cpi.reboot_vm("vm1")
    assert c.restarted == [10]
    with pytest.raises(CPIError, match="VM nope does not exist"):
        await cpi.reboot_vm("nope")

    def fail(timeout: int) -> None:
        raise api_error("cannot restart")
    c.restart = fail   # type: ignore[method-assign]
    with pytest.raises(CPIError, match="rebooting VM vm1: cannot restart"):
        await cpi.reboot_vm("vm1")


async def test_list_vms_are_this_labs_instances_and_compilation_vms(cpi: DockerCPI, client: FakeClient) -> None:
    client.containers.add("i1", "redis-0", {LABEL_LAB: "lab1", LABEL_ROLE: "instance", LABEL_DEPLOYMENT: "r"})
    client.containers.add("c1", "compile-0", {LABEL_LAB: "lab1", LABEL_ROLE: "compilation"}, status="exited")
    client.containers.add("t1", "test-thing", {LABEL_LAB: "lab1"})
    client.containers.add("o1", "other-lab", {LABEL_LAB: "lab2", LABEL_ROLE: "instance"})
    client.containers.add("x1", "odd-role", {LABEL_LAB: "lab1", LABEL_ROLE: "director"})
    vms = await cpi.list_vms()
    assert sorted((v.cid, v.name, v.status, v.role) for v in vms) == [
        ("c1", "compile-0", "exited", "compilation"), ("i1", "redis-0", "running", "instance")]
    assert client.containers.list_filters[-1] == {"all": True, "label": f"{LABEL_LAB}=lab1"}
    assert next(v for v in vms if v.cid == "i1").metadata[LABEL_DEPLOYMENT] == "r"


async def test_set_vm_metadata_puts_a_file_in_the_vm(cpi: DockerCPI, client: FakeClient) -> None:
    c = client.containers.add("vm1", "vm1", {})
    await cpi.set_vm_metadata("vm1", {"deployment": "redis", "index": "0"})
    (path, tar), = c.archives
    assert path == "/var/vcap/bosh" and untar(tar) == {"vm_metadata.json": {"deployment": "redis", "index": "0"}}
    with pytest.raises(CPIError, match="set_vm_metadata: VM nope does not exist"):
        await cpi.set_vm_metadata("nope", {})
    c.put_error = api_error("read-only file system")
    with pytest.raises(CPIError, match="set_vm_metadata vm1: read-only file system"):
        await cpi.set_vm_metadata("vm1", {})


async def test_stream_exec_yields_the_output_until_the_exec_ends(cpi: DockerCPI, client: FakeClient) -> None:
    stream = cpi.stream_exec("vm1", ["tail", "-F", "/var/vcap/sys/log/x.log"])
    first = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0.1)
    peer = client.api.peer
    assert peer is not None
    peer.sendall(b"line 1\n")
    assert await first == b"line 1\n"
    peer.sendall(b"line 2\n")
    assert await anext(stream) == b"line 2\n"
    peer.close()
    rest = [chunk async for chunk in stream]
    assert rest == []
    (cid, cmd, kw), = client.api.execs
    assert cid == "vm1" and cmd[0] == "tail" and kw == {"stdout": True, "stderr": True, "tty": True}


async def test_closing_stream_exec_closes_the_socket(cpi: DockerCPI, client: FakeClient) -> None:
    stream = cpi.stream_exec("vm1", ["tail", "-F", "x"])
    first = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0.1)
    peer = client.api.peer
    assert peer is not None
    peer.sendall(b"x")
    assert await first == b"x"
    await stream.aclose()
    peer.settimeout(2)
    assert peer.recv(10) == b"", "the CPI's end is shut down: the exec's peer sees EOF"
    peer.close()


async def test_close_closes_the_client(client: FakeClient) -> None:
    cpi = DockerCPI(IMAGE, "lab1", "lab-net", threads=1)
    await cpi.has_vm("x")
    await cpi.close()
    assert client.closed == 1 and client.pings == 1
    await cpi.close()
    assert client.closed == 1


# --- disks -------------------------------------------------------------------------------------------------


async def test_disks_are_volumes_of_the_lab(cpi: DockerCPI, client: FakeClient) -> None:
    cid = await cpi.create_disk(1024, {LABEL_DEPLOYMENT: "redis"})
    assert cid.startswith("lab1-disk-")
    assert client.volumes.created == [{"name": cid, "driver": "local",
                                       "labels": {LABEL_LAB: "lab1", LABEL_DEPLOYMENT: "redis"}}]
    other = await cpi.create_disk(10, {LABEL_DEPLOYMENT: "web"})
    assert other != cid
    assert await cpi.has_disk(cid) and not await cpi.has_disk("nope")
    assert await cpi.list_disks({LABEL_DEPLOYMENT: "redis"}) == [cid]
    assert sorted(await cpi.list_disks({})) == sorted([cid, other])
    assert await cpi.delete_disk(cid) is True
    assert client.volumes.removed == [(cid, True)]
    assert await cpi.delete_disk(cid) is False, "a disk that does not exist"
    assert not await cpi.has_disk(cid)


async def test_disk_errors_are_named(cpi: DockerCPI, client: FakeClient) -> None:
    client.volumes.create_error = api_error("volume plugin failed")
    with pytest.raises(CPIError, match=r"create_disk lab1-disk-\S+: volume plugin failed"):
        await cpi.create_disk(1, {})
    client.volumes.create_error = None
    cid = await cpi.create_disk(1, {})
    client.volumes.by_name[cid].remove_error = api_error("volume is in use")
    with pytest.raises(CPIError, match=f"delete_disk {cid}: volume is in use"):
        await cpi.delete_disk(cid)


async def test_docker_cannot_attach_or_detach_a_disk_to_a_running_vm(cpi: DockerCPI) -> None:
    assert cpi.live_disk_attach is False
    with pytest.raises(CPIError, match="attach_disk d1: Docker cannot add a mount .* by creating the VM with it"):
        await cpi.attach_disk("vm1234567890abc", "d1")
    with pytest.raises(CPIError, match="detach_disk d1: Docker cannot remove a mount .* without it"):
        await cpi.detach_disk("vm1234567890abc", "d1")


# --- networks ----------------------------------------------------------------------------------------------


NET = ipaddress.IPv4Network("10.9.0.0/24")
GW = ipaddress.IPv4Address("10.9.0.1")


async def test_ensure_network_makes_a_lab_network(cpi: DockerCPI, client: FakeClient) -> None:
    client.networks.all += [FakeNetwork(client, "bridge", "172.17.0.0/16", "172.17.0.1"),
                            FakeNetwork(client, "host"), FakeNetwork(client, "weird", "not-a-subnet"),
                            FakeNetwork(client, "v6", "fd00::/64")]
    assert await cpi.ensure_network(NET, GW) == "lab1-net-10.9.0.0-24"
    (name, kw), = client.networks.created
    assert name == "lab1-net-10.9.0.0-24" and kw["driver"] == "bridge"
    assert kw["labels"] == {LABEL_LAB: "lab1", LABEL_RANGE: "10.9.0.0/24"}
    pool, = kw["ipam"]["Config"]
    assert (pool["Subnet"], pool["Gateway"]) == ("10.9.0.0/24", "10.9.0.1")


async def test_ensure_network_returns_the_labs_existing_network(cpi: DockerCPI, client: FakeClient) -> None:
    client.networks.all.append(FakeNetwork(client, "lab1-net-10.9.0.0-24", "10.9.0.0/24", "10.9.0.1",
                                           labels={LABEL_LAB: "lab1"}))
    assert await cpi.ensure_network(NET, GW) == "lab1-net-10.9.0.0-24"
    assert client.networks.created == [], "nothing new is made"
    with pytest.raises(CPIError, match="has gateway 10.9.0.1, the manifest says 10.9.0.254"):
        await cpi.ensure_network(NET, ipaddress.IPv4Address("10.9.0.254"))


async def test_ensure_network_refuses_an_overlapping_range_naming_the_network(cpi: DockerCPI,
                                                                            client: FakeClient) -> None:
    client.networks.all.append(FakeNetwork(client, "someone-elses", "10.9.0.0/16", "10.9.0.1"))
    with pytest.raises(CPIError, match=r"10\.9\.0\.0/24 overlaps Docker network 'someone-elses' \(10\.9\.0\.0/16\)"):
        await cpi.ensure_network(NET, GW)
    assert client.networks.created == []
    # the same name and range but another lab's: refused as well
    client.networks.all[:] = [FakeNetwork(client, "lab1-net-10.9.0.0-24", "10.9.0.0/24", "10.9.0.1",
                                          labels={LABEL_LAB: "lab2"})]
    with pytest.raises(CPIError, match="overlaps Docker network 'lab1-net-10.9.0.0-24'"):
        await cpi.ensure_network(NET, GW)


async def test_ensure_network_names_a_docker_refusal(cpi: DockerCPI, client: FakeClient) -> None:
    client.networks.create_error = api_error("Pool overlaps with other one on this address space")
    with pytest.raises(CPIError, match="creating Docker network lab1-net-10.9.0.0-24 for 10.9.0.0/24: Pool overlaps"):
        await cpi.ensure_network(NET, GW)


async def test_remove_unused_networks_removes_only_the_labs_empty_ones(cpi: DockerCPI, client: FakeClient) -> None:
    empty = FakeNetwork(client, "lab1-net-a", labels={LABEL_LAB: "lab1"})
    used = FakeNetwork(client, "lab1-net-b", labels={LABEL_LAB: "lab1"}, containers={"c1": {}})
    stuck = FakeNetwork(client, "lab1-net-c", labels={LABEL_LAB: "lab1"})
    stuck.remove_error = api_error("network has active endpoints")
    foreign = FakeNetwork(client, "lab2-net-a", labels={LABEL_LAB: "lab2"})
    client.networks.all += [empty, used, stuck, foreign]
    assert await cpi.remove_unused_networks() == ["lab1-net-a"]
    assert empty.removed and not used.removed and not stuck.removed and not foreign.removed
    assert used.reloaded == 1, "the network's containers are read fresh"
    assert client.networks.list_filters[-1] == {"label": f"{LABEL_LAB}=lab1"}


# --- for the reaper ------------------------------------------------------------------------------------------


def test_compose_project_and_service_running(client: FakeClient) -> None:
    assert docker_cpi.compose_project("fallback") == "fallback", "not in a container"
    client.containers.add(socket.gethostname(), "reaper", {"com.docker.compose.project": "mylab"})
    assert docker_cpi.compose_project("fallback") == "mylab"
    client.containers.by_id[socket.gethostname()].labels = {}
    assert docker_cpi.compose_project("fallback") == "fallback"
    assert client.closed == 3
    director = {"com.docker.compose.project": "mylab", "com.docker.compose.service": "director"}
    assert not docker_cpi.service_running("mylab", "director")
    client.containers.add("d1", "director", director, status="exited")
    assert not docker_cpi.service_running("mylab", "director")
    client.containers.add("d2", "director-2", director, status="restarting")
    assert docker_cpi.service_running("mylab", "director")
    assert not docker_cpi.service_running("otherlab", "director")

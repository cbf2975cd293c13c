"""Property-based fuzzing (hypothesis) of the director's manifest parser and HTTP API, in-process (issue 8).

(a) ``director.manifest.parse_manifest`` on generated YAML: manifest-like documents with random types and
    values, raw random text, YAML token soup and documents with anchors/aliases/merge keys. Property: it
    returns a ``Manifest`` or raises ``ManifestError`` (nothing else), within the hypothesis deadline.
(b) the API app (``director.api.make_apps``) over a real ``Operations`` and a real sqlite ``Store`` in tmp
    (``director.lab.Lab`` with the fake CPI, never started; NATS unreachable; an in-process fake DAV that has no
    blobs) and a seeded deployment ``redis-solo`` with one instance (so instance routes get past their lookups),
    driven through aiohttp's test client: methods, the real route table with random path parameters, random
    query strings, bodies and Basic auth headers; the registry app too. Property: no response has a status >= 500,
    except the named 502/503/504 "the director has no NATS connection" (by design: no NATS runs here).

The bugs the fuzzing found (8: PyYAML constructor errors, over-long digit strings, ids beyond sqlite's
integers, undecodable bodies and charsets, lone surrogates, a huge output offset, errors after a log stream
began, an unreachable blobstore) are fixed; their minimal inputs are the regression tests at the end. The
server's exceptions are read from aiohttp's "Error handling request" log. Counts go to
``$FUZZ_COUNTS_DIR/director.json`` when that variable is set (bench/fuzz.py).
"""
from __future__ import annotations

import base64
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from director.api import make_apps
from director.config import Config
from director.lab import Lab
from director.manifest import Manifest, ManifestError, parse_manifest
from tests.support.fake_cpi import FakeCPI
from tests.unit.agent.conftest import FakeDav
from tests.unit.conftest import Handler

# --- profiles ------------------------------------------------------------------------------------------
_SUPPRESS = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large,
             HealthCheck.filter_too_much]
settings.register_profile("ci", max_examples=300, deadline=None, database=None, print_blob=True,
                          suppress_health_check=_SUPPRESS)
settings.register_profile("bench", max_examples=8000, deadline=None, database=None, print_blob=True,
                          suppress_health_check=_SUPPRESS)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
BENCH = os.environ.get("HYPOTHESIS_PROFILE") == "bench"

# examples per test: the manifest tests are cheap, the API ones cost a request each
MANIFEST_EXAMPLES = 4000 if BENCH else 400
API_EXAMPLES = int(os.environ.get("FUZZ_API_EXAMPLES", 2500 if BENCH else 150))

COUNTS: dict[str, int] = {"manifests": 0, "manifests_ok": 0, "api_requests": 0, "api_client_refused": 0, "api_no_nats": 0}
NO_NATS = re.compile(r'"code": 50[234], "description": "[^"]*the director has no NATS connection')
STATUSES: dict[str, int] = {}      # API answers by status
BY_TEST: dict[str, int] = {}       # cases per test


def count_case() -> None:
    test = os.environ.get("PYTEST_CURRENT_TEST", "?").split("::")[-1].split(" ")[0]
    BY_TEST[test] = BY_TEST.get(test, 0) + 1


@pytest.fixture(scope="module", autouse=True)
def _write_counts() -> Any:
    yield
    out = os.environ.get("FUZZ_COUNTS_DIR")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        Path(out, "director.json").write_text(json.dumps({**COUNTS, "api_statuses": STATUSES, "cases_by_test": BY_TEST}, indent=1) + "\n")


# --- (a) manifests -------------------------------------------------------------------------------------

NAMES = ["redis", "redis-solo", "dummy", "a", "A.b_c-1", "", "-x", "../x", "é", "default", "n1", "latest", "x y"]
DIGITS = st.integers(1, 6000).map(lambda n: "9" * n)
scalar = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-(2**200), max_value=2**200)
          | st.floats() | st.text(max_size=20) | st.sampled_from(NAMES) | DIGITS
          | st.sampled_from(["50%", "0%", "%", "1000-30000", "5 - 1", "30000-1000", "10.0.0.0/24", "10.0.0.0/8",
                             "10.0.0.5", "10.0.0.2 - 10.0.0.9", "10.0.0.9-10.0.0.2", "10.0.0.1/33", "::1", "manual",
                             "dynamic", "٣", "0x1f", "1e3", "-1", "true", "~"]))
any_value = st.recursive(scalar, lambda c: st.lists(c, max_size=4) | st.dictionaries(
    st.text(max_size=10) | st.sampled_from(["name", "version", "release", "jobs", "templates", "networks"]),
    c, max_size=4), max_leaves=12)


def maybe(s: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the well-shaped value, sometimes anything."""
    return st.one_of(s, s, s, s, s, s, s, any_value)


name_s = maybe(st.sampled_from(["redis", "dummy", "g", "j", "n1", "r"]) | st.sampled_from(NAMES))
release_s = maybe(st.fixed_dictionaries({"name": name_s}, optional={"version": maybe(st.sampled_from(["latest", "1", "1.2"]))}))
update_s = maybe(st.fixed_dictionaries({}, optional={
    "canaries": maybe(st.integers(-2, 10)), "max_in_flight": maybe(st.sampled_from([1, 2, "25%", "0", "100%", "3"]) | DIGITS),
    "canary_watch_time": maybe(st.sampled_from(["1000-30000", 5000, "10-1", "x"]) | DIGITS),
    "update_watch_time": maybe(st.sampled_from(["1000-30000", 0, "-", " 5 - 6 "]) | DIGITS),
    "serial": maybe(st.booleans())}))
ips_s = maybe(st.lists(st.sampled_from(["10.0.0.2 - 10.0.0.9", "10.0.0.5", "10.0.0.20", "10.0.1.0", "10.0.0.0 - 10.0.255.255",
                                        "10.0.0.1", "x"]), max_size=3) | st.sampled_from(["10.0.0.5", "10.0.0.2-10.0.0.3"]))
subnet_s = maybe(st.fixed_dictionaries({"range": maybe(st.sampled_from(["10.0.0.0/24", "10.0.0.0/16", "10.0.0.0/30",
                                                                        "10.0.0.0/8", "10.0.0.1/24", "bogus"]))},
                                       optional={"gateway": maybe(st.sampled_from(["10.0.0.1", "10.0.0.0", "10.0.0.255", "1.1.1.1"])),
                                                 "reserved": ips_s, "static": ips_s, "dns": maybe(st.lists(scalar, max_size=2))}))
network_s = maybe(st.fixed_dictionaries({"name": name_s}, optional={
    "type": maybe(st.sampled_from(["dynamic", "manual", "vip"])), "subnets": maybe(st.lists(subnet_s, max_size=2)),
    "cloud_properties": maybe(st.dictionaries(st.text(max_size=5), scalar, max_size=2))}))
job_s = maybe(st.fixed_dictionaries({"name": name_s}, optional={
    "release": name_s, "properties": maybe(st.dictionaries(st.text(max_size=8), any_value, max_size=3))}))
group_net_s = maybe(st.fixed_dictionaries({"name": name_s}, optional={"static_ips": ips_s}) | name_s
                    | st.lists(name_s, max_size=2))   # a network name given as a list: a ManifestError
group_s = maybe(st.fixed_dictionaries({"name": name_s}, optional={
    "instances": maybe(st.integers(-1, 4)), "jobs": maybe(st.lists(job_s, min_size=1, max_size=3)),
    "templates": maybe(st.lists(name_s | job_s, max_size=2)), "template": name_s,
    "networks": maybe(st.lists(group_net_s, max_size=2)), "persistent_disk": maybe(st.integers(-1, 4096)),
    "vm_type": scalar, "resource_pool": scalar, "update": update_s,
    "properties": maybe(st.dictionaries(st.text(max_size=8), any_value, max_size=3)),
    "cloud_properties": maybe(st.dictionaries(st.text(max_size=8), scalar, max_size=2))}))
manifest_doc = maybe(st.fixed_dictionaries({"name": name_s}, optional={
    "releases": maybe(st.lists(release_s, max_size=3)), "release": release_s, "update": update_s,
    "networks": maybe(st.lists(network_s, max_size=3)),
    "compilation": maybe(st.fixed_dictionaries({}, optional={"workers": maybe(st.integers(-1, 8))})),
    "instance_groups": maybe(st.lists(group_s, min_size=1, max_size=3)), "jobs": maybe(st.lists(group_s, max_size=2)),
    "properties": maybe(st.dictionaries(st.text(max_size=8), any_value, max_size=3)),
    "stemcells": any_value, "director_uuid": scalar}))


@st.composite
def manifest_yaml(draw: st.DrawFn) -> str:
    doc = draw(manifest_doc)
    return yaml.safe_dump(doc, default_flow_style=draw(st.sampled_from([None, True, False])),
                          allow_unicode=draw(st.booleans()), sort_keys=draw(st.booleans()))


YAML_TOKENS = ["name: ", "releases:", "- ", "  ", "\n", ": ", "&a ", "*a", "<<: ", "<<: *a", "!!int ", "!!timestamp ",
               "!!binary ", "!!set ", "!!omap ", "!!python/object:os.system ", "!!float ", "!!str ", "{", "}", "[", "]",
               ",", "? ", "'", '"', "|", ">", "#", "---\n", "...\n", "%YAML 1.1\n", "~", "2001-02-30", "2001-12-14",
               "2001-13-01", "12:30:45", "0x1F", "0o17", "0b101", "1_000", ".inf", ".nan", "-.inf", "yes", "no", "null",
               "instance_groups:", "jobs:", "networks:", "update:", "max_in_flight: ", "canaries: ", "instances: ",
               "redis", "\t", "\x00", "\ufeff", "é", "\\u0000", "9" * 4400, "=", "1:2:3", "60:60"]
yaml_soup = st.lists(st.sampled_from(YAML_TOKENS) | st.text(max_size=6), max_size=40).map("".join)


@st.composite
def aliased_yaml(draw: st.DrawFn) -> str:
    """Anchors, aliases and merge keys: self-referencing, multiplying ('billion laughs'), merged into groups."""
    width = draw(st.integers(1, 12))
    depth = draw(st.integers(1, 9))
    lines = ["a0: &a0 [" + ", ".join(["x"] * width) + "]"]
    for i in range(1, depth + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    base = draw(st.sampled_from(["", "name: &n d\nreleases: [{name: &r r}]\n",
                                 "name: d\nreleases: &rels [{name: r}]\nrelease: *rels\n"]))
    group = draw(st.sampled_from([
        "instance_groups:\n- &g {name: g, jobs: [{name: j}]}\n- *g\n",
        "instance_groups:\n- &g {name: g, jobs: [{name: j}]}\n- <<: *g\n  name: h\n",
        "instance_groups:\n- {<<: [*a0], name: g}\n",
        f"instance_groups: *a{depth}\n",
        "instance_groups:\n- &self {name: g, jobs: [*self]}\n",
        "instance_groups: &loop [*loop]\n",
        "update: &u {canaries: 1}\ninstance_groups:\n- {name: g, jobs: [{name: j}], update: *u, properties: {<<: *u}}\n",
        "networks: [&net {name: n}]\ninstance_groups:\n- {name: g, jobs: [{name: j}], networks: [*net, *net]}\n",
    ]))
    return "\n".join(lines) + "\n" + base + group


def check_manifest(text: str) -> None:
    COUNTS["manifests"] += 1
    count_case()
    try:
        m = parse_manifest(text)
    except ManifestError:
        return
    assert isinstance(m, Manifest)
    COUNTS["manifests_ok"] += 1


manifest_settings = settings(max_examples=MANIFEST_EXAMPLES, deadline=timedelta(seconds=2))


@manifest_settings
@given(text=manifest_yaml())
@example(text="name: d\nreleases: [{name: r}]\ninstance_groups: [{name: g, jobs: [{name: j}], networks: [[n]]}]\n")
def test_manifest_like_documents(text: str) -> None:
    check_manifest(text)


@manifest_settings
@given(text=st.text(max_size=300) | yaml_soup)
def test_random_text_and_yaml_soup(text: str) -> None:
    check_manifest(text)


@manifest_settings
@given(text=aliased_yaml())
def test_anchors_and_aliases(text: str) -> None:
    check_manifest(text)


# --- (b) the API ---------------------------------------------------------------------------------------

ADMIN = "Basic " + base64.b64encode(b"admin:admin").decode()


SEED_MANIFEST = ("name: redis-solo\nreleases: [{name: redis, version: '1'}]\n"
                 "instance_groups: [{name: redis, instances: 1, jobs: [{name: redis}]}]\n")
SEED_INSTANCE = "0b1c2d3e-0000-4000-8000-000000000001"


@dataclass
class Api:
    client: TestClient[Any, Any]
    registry: TestClient[Any, Any]
    lab: Lab

    async def seed(self) -> None:
        """A deployment ``redis-solo`` with one instance ``redis/0`` on VM ``vm-1`` (the fake CPI has no such VM,
        NATS is unreachable), so the instance routes get past their lookups. Again after a fuzzed delete."""
        store = self.lab.store
        if self.lab.tasks.lock_holder("redis-solo") is not None:
            return   # a fuzzed task (delete, recreate...) has it: seeding now would race it
        await store.deployments.save("redis-solo", SEED_MANIFEST, {"redis": "1"})
        if await store.instances.get(SEED_INSTANCE) is None:
            try:
                await store.instances.vm_created(SEED_INSTANCE, "redis-solo", "redis", 0, "agent-1", "vm-1", "vm-1",
                                                 "10.0.0.5", {}, "started")
            except AssertionError:
                pass   # a task that took the lock meanwhile deleted it again: seeded next time


@pytest.fixture
async def api(tmp_path: Path, http_server: Callable[[Handler], Awaitable[str]]) -> AsyncIterator[Api]:
    dav = FakeDav()
    dav.url = await http_server(dav.handler)
    config = Config(name="fuzz-director", data_dir=str(tmp_path / "director"), nats_url="nats://nats:nats@127.0.0.1:9",
                    agent_mbus="nats://nats:nats@127.0.0.1:9", blobstore_endpoint=dav.url,
                    blobstore_director_user="agent", blobstore_director_password="agent", registry_host="127.0.0.1",
                    lab_name="fuzz-lab", workshop=False, max_release_bytes=1 << 20, rpc_timeout=1.0, poll_interval=0.05,
                    agent_wait_timeout=1.0, max_running_tasks=8)
    Path(config.data_dir).mkdir(parents=True)
    lab = Lab(config, cpi=FakeCPI(tmp_path / "cpi"))
    await lab.store.open()

    async def nothing() -> None:
        pass

    app, registry_app = make_apps(config, lab.operations, lab.process_uuid, nothing, nothing)
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    registry: TestClient[Any, Any] = TestClient(TestServer(registry_app))
    await client.start_server()
    await registry.start_server()
    a = Api(client, registry, lab)
    await a.seed()
    yield a
    await client.close()
    await registry.close()
    await lab.tasks.cancel_all()
    await lab.store.close()


def _route_templates() -> list[tuple[str, str]]:
    from director.api import instances, routes
    out = []
    for table in (routes.routes, instances.routes):
        for r in table:
            assert isinstance(r, web.RouteDef)
            out.append((r.method, r.path))
    return out


ROUTES = _route_templates()
SEGMENTS = ["1", "0", "-1", "99999999999999999999999", "abc", "redis-solo", "redis", "*", "..", ".", "%2e%2e", "é", "☃",
            "a b", "%00", "%ff", "0x1", "1.5", "١", "dummy", "latest", "' OR 1=1 --", "a" * 300, "~", "%2F"]
SEEDED = {"name": ["redis-solo"], "group": ["redis", "*"], "ref": ["0", "0b1c", SEED_INSTANCE, "1"], "id": ["1", "2", "3", "0"],
          "cid": ["disk-1", "vm-1"], "blob_id": ["x", "..", "%2e%2e"]}
segment = st.sampled_from(SEGMENTS) | st.text(min_size=1, max_size=20).map(lambda s: quote(s, safe=""))


@st.composite
def api_path(draw: st.DrawFn) -> tuple[str, str]:
    method, template = draw(st.sampled_from(ROUTES))
    if draw(st.integers(0, 4)) == 0:
        method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"]))
    seeded = draw(st.integers(0, 2)) == 0     # the seeded deployment's names, so handlers get past their lookups
    path = re.sub(r"\{([^}]+)\}", lambda m: draw(st.sampled_from(SEEDED[m.group(1)]) if seeded else segment), template)
    if draw(st.integers(0, 19)) == 0:
        path = draw(st.sampled_from(["/", "//", "/tasks/", "/deployments//instances", "/nope", "/tasks/1/output/x",
                                     "/../etc/passwd", "/%2e%2e/%2e%2e/"]))
    return method, path


QUERY_KEYS = ["offset", "limit", "state", "type", "format", "version", "force", "skip_drain", "orphaned", "filters",
              "deployment", "x"]
QUERY_VALUES = ["-5", "-1", "0", "abc", "", "1e3", "99999999999999999999", "9223372036854775807", "9" * 4400, "٣", "0x10", "event", "debug",
                "result", "full", "started", "stopped", "restart", "recreate", "true", "false", "queued,processing",
                "job", "agent", "system", "job,agent", "../x", "*", ",", "é", "\x00"]
query = st.lists(st.tuples(st.sampled_from(QUERY_KEYS) | st.text(max_size=6),
                           st.sampled_from(QUERY_VALUES) | st.text(max_size=12)), max_size=4)

json_body = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10)
                         | st.sampled_from(["", "redis", "recreate_vm", "ignore", "\ud800", "a\x00b"]),
                         lambda c: st.lists(c, max_size=3) | st.dictionaries(
                             st.sampled_from(["enabled", "resurrection_paused", "deployment", "resolutions", "command",
                                              "user", "public_key", "user_regex", "method", "arguments"])
                             | st.text(max_size=6), c, max_size=4), max_leaves=8)
body = st.one_of(
    st.none(),
    json_body.map(lambda v: json.dumps(v).encode()),
    manifest_yaml().map(str.encode),
    yaml_soup.map(lambda s: s.encode(errors="surrogatepass")),
    st.binary(max_size=300),
    st.sampled_from([b"\x1f\x8b\x08\x00", b"{", b"[]", b"null", b"NaN", b"\xff\xfe", b"\x00" * 64]),
)


@st.composite
def auth(draw: st.DrawFn) -> str | None:
    kind = draw(st.integers(0, 9))
    if kind < 6:
        return ADMIN
    if kind == 6:
        return None
    if kind == 7:
        return "Basic " + base64.b64encode(draw(st.binary(max_size=30))).decode()
    if kind == 8:
        return "Basic " + draw(st.text(max_size=20))   # includes non-ASCII
    return draw(st.sampled_from(["Basic", "Basic ", "Bearer x", "basic YWRtaW46YWRtaW4=", "Basic YWRtaW46YWRtaW4",
                                 "Basic YWRtaW46YWRtaW4=\x00", "Basic äöü", "Basic " + "A" * 5000]))


class ServerErrors(logging.Handler):
    """The exceptions aiohttp's server logs for requests that end in a 500 ("Error handling request")."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.errors: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            self.errors.append(record.exc_info[1])


async def check_request(client: TestClient[Any, Any], method: str, path: str, params: list[tuple[str, str]],
                        data: bytes | None, authorization: str | None, content_type: str | None) -> None:
    headers: dict[str, str] = {}
    if authorization is not None:
        headers["Authorization"] = authorization
    if content_type is not None:
        headers["Content-Type"] = content_type
    qs = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in params)
    target = path + ("?" + qs if qs else "")
    if len(target.encode()) > 8000:
        # aiohttp's server refuses a request line over 8190 bytes before the app sees it (and a HEAD client then
        # chokes on the error's body): nothing of ours to test
        COUNTS["api_client_refused"] += 1
        return
    COUNTS["api_requests"] += 1
    count_case()
    errors = ServerErrors()
    server_log = logging.getLogger("aiohttp.server")
    server_log.addHandler(errors)
    try:
        try:
            resp = await client.request(method, target, data=data, headers=headers)
        except (ValueError, UnicodeEncodeError):
            # the client refuses to send it (e.g. a header it cannot encode); the raw-socket test covers those
            COUNTS["api_client_refused"] += 1
            return
        async with resp:
            try:
                raw = await resp.read()
            except aiohttp.ClientPayloadError as e:   # the server failed after it began to answer
                raw = f"(answer cut off: {e})".encode()
                status = 500
            else:
                status = resp.status
            STATUSES[str(status)] = STATUSES.get(str(status), 0) + 1
            text = raw.decode(errors="replace")
            if status < 500:
                return
            if status in (502, 503, 504) and NO_NATS.search(text) and not errors.errors:
                # by design: the agent is out of reach (the lab's NATS is not running here), a named error
                COUNTS["api_no_nats"] += 1
                return
    finally:
        server_log.removeHandler(errors)
    raise AssertionError(f"{method} {target} -> {status}: {text[:300]!r}; auth {authorization!r}, "
                         f"content-type {content_type!r}, body {data[:300] if data else data!r}; server: "
                         f"{[f'{type(e).__name__}: {e}' for e in errors.errors]}")


api_settings = settings(max_examples=API_EXAMPLES)


@api_settings
@given(req=api_path(), params=query, data=body, authorization=auth(),
       content_type=st.none() | st.sampled_from(["application/json", "text/yaml", "application/octet-stream",
                                                 "text/plain; charset=utf-16", "multipart/form-data", "x/y; charset=nope"]))
@example(req=("GET", "/tasks/1/output"), params=[("offset", "-5")], data=None, authorization=ADMIN, content_type=None)
@example(req=("PUT", "/resurrection"), params=[], data=b'{"enabled": true, "deployment": ""}', authorization=ADMIN,
         content_type="application/json")
@example(req=("POST", "/deployments"), params=[],
         data=b"name: d\nreleases: [{name: r}]\ninstance_groups: [{name: g, jobs: [{name: j}], networks: [[n]]}]\n",
         authorization=ADMIN, content_type="text/yaml")
async def test_api_requests(api: Api, req: tuple[str, str], params: list[tuple[str, str]],
                            data: bytes | None, authorization: str | None, content_type: str | None) -> None:
    method, path = req
    await api.seed()
    await check_request(api.client, method, path, params, data, authorization, content_type)


@api_settings
@given(header=st.binary(min_size=0, max_size=40), path=st.sampled_from(["/deployments", "/tasks", "/info", "/releases"]))
@example(header="Basic äöü".encode(), path="/deployments")
@example(header=b"Basic \xff\xfe", path="/tasks")
async def test_raw_authorization_bytes(api: Api, header: bytes, path: str) -> None:
    """Any bytes as the Authorization header (non-ASCII, Latin-1, invalid UTF-8), sent over a raw socket."""
    import asyncio
    header = header.replace(b"\r", b"").replace(b"\n", b"")
    host, port = api.client.server.host, api.client.server.port
    assert port is not None
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: " + header + b"\r\n\r\n")
        await writer.drain()
        status_line = await reader.readline()
    finally:
        writer.close()
    COUNTS["api_requests"] += 1
    count_case()
    parts = status_line.split()
    assert len(parts) >= 2, status_line
    assert int(parts[1]) < 500, (header, status_line)


@settings(max_examples=API_EXAMPLES // 3)
@given(instance_id=st.sampled_from(["vm-1", "", "..", "%00", "é", "9" * 30]) | segment, authorization=auth())
async def test_registry_requests(api: Api, instance_id: str, authorization: str | None) -> None:
    """The registry app (agents read their settings there): same property."""
    await check_request(api.registry, "GET", f"/instances/{instance_id}/settings", [], None, authorization, None)


# --- regressions: the bugs the fuzzing found (minimal inputs), fixed ---------------------------------------

FOUND_MANIFEST_BUGS = [
    pytest.param("a: " + "1" * 4301, id="yaml-int-over-4300-digits"),
    pytest.param("a: 2001-02-30", id="yaml-impossible-date"),
    pytest.param("!!int", id="yaml-empty-int-tag"),
    pytest.param("!!bool x", id="yaml-bool-tag"),
    pytest.param("a: !!float x", id="yaml-float-tag"),
    pytest.param("name: a\nreleases: [{name: r}]\nupdate: {max_in_flight: '" + "1" * 4301 + "'}\n", id="max-in-flight-digits"),
    pytest.param("name: a\nreleases: [{name: r}]\nupdate: {canary_watch_time: '" + "1" * 4301 + "'}\n", id="watch-time-digits"),
]


@pytest.mark.parametrize("text", FOUND_MANIFEST_BUGS)
def test_found_manifest_bugs_stay_fixed(text: str) -> None:
    try:
        parse_manifest(text)
    except ManifestError:
        return
    except Exception as e:  # noqa: BLE001 - the bug: anything else escapes
        raise AssertionError(f"{type(e).__name__}: {e}") from None


FOUND_API_BUGS = [
    pytest.param("POST", "/deployments", b"name: 2001-02-30\n", {}, id="deploy-yaml-date"),
    pytest.param("POST", "/deployments", b"!!int", {}, id="deploy-yaml-empty-int"),
    pytest.param("POST", "/deployments", b"\xff", {}, id="deploy-body-not-utf8"),
    pytest.param("POST", "/deployments", b"name: d", {"Content-Type": "text/plain; charset=nope"}, id="deploy-unknown-charset"),
    pytest.param("PUT", "/resurrection", b"{}", {"Content-Type": "application/json; charset=nope"}, id="json-unknown-charset"),
    pytest.param("PUT", "/resurrection", b'{"enabled": true, "deployment": "\\ud800"}', {}, id="json-lone-surrogate"),
    pytest.param("POST", "/deployments", b'name: "\\ud800"\n', {}, id="yaml-lone-surrogate"),
    pytest.param("GET", "/tasks/9223372036854775808", None, {}, id="task-id-over-int64"),
    pytest.param("DELETE", "/task/9223372036854775808", None, {}, id="cancel-task-id-over-int64"),
    pytest.param("GET", "/tasks/9223372036854775808/output", None, {}, id="task-output-id-over-int64"),
    pytest.param("GET", "/tasks?limit=9223372036854775808", None, {}, id="tasks-limit-over-int64"),
    pytest.param("GET", "/deployments/redis-solo/instances/redis/0/logs/follow", None, {}, id="follow-logs-vm-gone"),
    pytest.param("GET", "/tasks/1/output?offset=9223372036854775807", None, {}, id="task-output-offset-int64-max"),
]


@pytest.mark.parametrize("method,path,data,headers", FOUND_API_BUGS)
async def test_found_api_bugs_stay_fixed(api: Api, method: str, path: str, data: bytes | None,
                              headers: dict[str, str]) -> None:
    async with await api.client.post("/deployments", data=b"name: d\n", headers={"Authorization": ADMIN}) as resp:
        assert resp.status == 202   # task 1 exists
    async with await api.client.request(method, path, data=data, headers={"Authorization": ADMIN, **headers}) as resp:
        try:
            await resp.read()
        except aiohttp.ClientPayloadError as e:
            raise AssertionError(f"answer cut off: {e}") from None
        assert resp.status < 500, resp.status

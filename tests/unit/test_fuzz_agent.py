"""Property-based fuzzing (hypothesis) of the agent's real dispatcher, in-process (issue 8).

Raw NATS payloads go through ``Dispatcher.handle`` exactly as the subscription delivers them: arbitrary bytes,
arbitrary JSON, and requests whose ``method`` is one of the agent's real actions (or a random string) with
random arguments, ``reply_to`` present/absent/of the wrong type and a random ``protocol``. Properties:

* no exception escapes ``handle``;
* a message whose ``reply_to`` is a non-empty string (in a JSON object) gets exactly one reply, on that subject,
  strict JSON of the form ``{"value": ...}`` or ``{"exception": {"message": str}}``; any other message none;
* the agent answers ``ping`` after every batch, and after all of them once its tasks have finished.

The agent runs on the unit tests' fakes (tests/support/fakes.py: job supervisor, mounter, users) over a tmp
``/var/vcap``; the blobstore is the in-process fake DAV. Host safety: ``fetch_logs`` never gets the ``system``
log type (it would tar the host's real /var/log), see ``_safe``. Nothing else is excluded: ssh uses FakeUsers
(homes under the tmp base), mount/unmount/migrate_disk the FakeMounter (no disk is in the settings, so they
fail early), compile_package/apply only reach the fake DAV (random blob ids: 404) before any script runs.

Counts: ``hypothesis`` profiles ``ci`` (default) and ``bench`` (``HYPOTHESIS_PROFILE=bench``, see bench/fuzz.py);
the number of messages run is written to ``$FUZZ_COUNTS_DIR/agent.json`` when that variable is set.
"""
from __future__ import annotations

import asyncio
import base64
import copy
import json
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.action.base import Services
from agent.dispatcher import ACTIONS, Dispatcher, build_registry
from agent.paths import Paths
from tests.support.fakes import FakeMounter, FakeSupervisor, FakeUsers
from tests.unit.agent.conftest import FakeDav, FakePublisher, FakeRegistry, make_settings
from tests.unit.conftest import Handler

# --- profiles ------------------------------------------------------------------------------------------
# ci: the whole fuzz set (agent + director) in well under a minute on 2 shared cores.
# bench: >= 100,000 agent messages (batches of up to BATCH messages per example).
settings.register_profile("ci", max_examples=300, deadline=None, database=None, print_blob=True,
                          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                                 HealthCheck.data_too_large])
settings.register_profile("bench", max_examples=8000, deadline=None, database=None, print_blob=True,
                          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                                 HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
BENCH = os.environ.get("HYPOTHESIS_PROFILE") == "bench"

BATCH = 16        # messages per hypothesis example at most
FAST_BATCH = 60   # ... for the fast generator
# examples per test, (ci, bench): ci ~20 s on 2 shared cores; bench >= 100,000 messages in all
EXAMPLES = {"bytes": (300, 2000), "json": (150, 1500), "requests": (150, 2000), "fast": (150, 3000), "limit": (150, 1500)}


def examples(test: str) -> settings:
    return settings(max_examples=EXAMPLES[test][1 if BENCH else 0])


COUNTS: dict[str, int] = {"messages": 0, "replies": 0, "examples": 0}
BY_TEST: dict[str, int] = {}   # messages per test


def current_test() -> str:
    return os.environ.get("PYTEST_CURRENT_TEST", "?").split("::")[-1].split(" ")[0]


@pytest.fixture(scope="module", autouse=True)
def _write_counts() -> Any:
    yield
    out = os.environ.get("FUZZ_COUNTS_DIR")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        Path(out, "agent.json").write_text(json.dumps({**COUNTS, "messages_by_test": BY_TEST}, indent=1) + "\n")


# --- the agent under test ------------------------------------------------------------------------------

@dataclass
class Agent:
    services: Services
    dispatcher: Dispatcher
    small: Dispatcher                 # the same agent with a 512-byte message limit (the "too large" path)
    replies: list[tuple[str, bytes]] = field(default_factory=list)


def build_services(base: Path, dav_url: str) -> Services:
    from agent.action.base import blobstore_client
    from agent.applier import Applier
    from agent.settings import SettingsService
    from agent.spec import SpecStore
    from agent.tasks import TaskManager
    from agent.vitals import Vitals

    paths = Paths(base / "vcap")
    paths.ensure_layout()
    registry = FakeRegistry(make_settings(dav_url))
    supervisor = FakeSupervisor(paths)
    svc_settings = SettingsService(paths, fetcher=registry.fetch, retry_delay=0)
    svc_settings.user_data = {"registry": {"endpoint": "http://registry.invalid"}, "instance_id": "vm-1"}
    svc_settings.use(copy.deepcopy(registry.settings))
    applier = Applier(paths, lambda: blobstore_client(svc_settings), supervisor)
    return Services(paths, svc_settings, SpecStore(paths), supervisor, applier, TaskManager(), FakePublisher(),
                    Vitals(paths), FakeMounter(), FakeUsers())


@pytest.fixture
async def agent(tmp_path: Path, http_server: Callable[[Handler], Awaitable[str]]) -> AsyncIterator[Agent]:
    dav = FakeDav()
    dav.url = await http_server(dav.handler)
    services = build_services(tmp_path, dav.url)
    a = Agent(services, Dispatcher({}, services.tasks, _no_reply), Dispatcher({}, services.tasks, _no_reply))

    async def reply(subject: str, payload: bytes) -> None:
        a.replies.append((subject, payload))

    registry = build_registry(services)
    a.dispatcher = Dispatcher(registry, services.tasks, reply)
    a.small = Dispatcher(registry, services.tasks, reply, max_message_bytes=512)
    yield a
    # every task the fuzzing queued ends, and the agent still answers
    await _until_idle(services, timeout=120)
    await _expect_pong(a)


async def _no_reply(subject: str, payload: bytes) -> None:
    pass


async def _until_idle(services: Services, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while any(t.state == "running" for t in services.tasks.tasks.values()) or services.tasks.queued:
        assert loop.time() < deadline, "the agent's tasks did not finish"
        await asyncio.sleep(0.05)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"not strict JSON: {name}")


def strict_json(payload: bytes) -> Any:
    """JSON as every other implementation reads it: no NaN/Infinity."""
    return json.loads(payload, parse_constant=_reject_constant)


def expected_reply_to(data: bytes) -> str | None:
    """The oracle, independent of boshlab.wire: a JSON object whose reply_to is a non-empty string."""
    try:
        msg = json.loads(data)
    except (ValueError, RecursionError):
        return None
    if isinstance(msg, dict) and isinstance(msg.get("reply_to"), str) and msg["reply_to"]:
        return str(msg["reply_to"])
    return None


def check_reply(payload: bytes) -> None:
    reply = strict_json(payload)
    assert isinstance(reply, dict), reply
    if set(reply) == {"exception"}:
        exc = reply["exception"]
        assert isinstance(exc, dict) and set(exc) == {"message"} and isinstance(exc["message"], str), reply
    else:
        assert set(reply) == {"value"}, reply


async def send(a: Agent, data: bytes, small: bool = False) -> None:
    """One message through ``handle``; checks the property for it."""
    dispatcher = a.small if small else a.dispatcher
    before = len(a.replies)
    await dispatcher.handle(data)   # nothing may escape
    COUNTS["messages"] += 1
    new = a.replies[before:]
    reply_to = expected_reply_to(data)
    if small and len(data) > 8 * dispatcher.max_message_bytes:
        reply_to = None   # documented: far too large a message is dropped unparsed
    if reply_to is None:
        assert new == [], (data[:300], new)
        return
    assert len(new) == 1, (data[:300], new)
    subject, payload = new[0]
    assert subject == reply_to
    check_reply(payload)
    COUNTS["replies"] += 1


async def _expect_pong(a: Agent) -> None:
    before = len(a.replies)
    await a.dispatcher.handle(json.dumps({"protocol": 3, "method": "ping", "arguments": [],
                                          "reply_to": "director.fuzz.agent-1.ping"}).encode())
    assert [(s, json.loads(p)) for s, p in a.replies[before:]] == [("director.fuzz.agent-1.ping", {"value": "pong"})]


async def run_batch(a: Agent, batch: list[bytes], small: bool = False) -> None:
    COUNTS["examples"] += 1
    test = current_test()
    BY_TEST[test] = BY_TEST.get(test, 0) + len(batch)
    for data in batch:
        await send(a, data, small)
    await _expect_pong(a)
    del a.replies[:]


# --- strategies ----------------------------------------------------------------------------------------

ACTION_NAMES = sorted({n for cls in ACTIONS for n in (cls.name, *cls.aliases)})
ARGS_OF = {n: cls.args for cls in ACTIONS for n in (cls.name, *cls.aliases)}

INTERESTING_TEXT = ["", "setup", "cleanup", "update", "shutdown", "status", "job", "agent", "job,agent", "full",
                    "../x", "../../etc/passwd", "/", ".", "*", "**", "bosh_x", "a" * 300, "é∂ƒ☃", "\x00", "nope",
                    "deployment", "0", "-1", "null", "1e309", "redis", "redis/0", " job ", "job,,", ",", "\ud800", "a\udfffb"]

json_leaf = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-(2**80), max_value=2**80)
             | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30)
             | st.sampled_from(INTERESTING_TEXT))
json_value = st.recursive(json_leaf, lambda c: st.lists(c, max_size=5) | st.dictionaries(
    st.text(max_size=12) | st.sampled_from(["name", "job", "jobs", "packages", "networks", "deployment", "user",
                                            "public_key", "user_regex", "blobstore_id", "sha1", "version",
                                            "template", "templates", "index", "id", "properties", "persistent_disk",
                                            "rendered_templates_archive", "configuration_hash", "resource_pool"]),
    c, max_size=6), max_leaves=15)
# with the non-standard constants Python's json reads and writes (a Python director could send them)
json_value_nan = st.recursive(json_leaf | st.floats(), lambda c: st.lists(c, max_size=4)
                              | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=8)

SSH_PARAMS = st.fixed_dictionaries({}, optional={
    "user": st.sampled_from(["bosh_x", "root", "vcap", "bad name", "", "b" * 40]) | json_leaf,
    "public_key": st.sampled_from(["nope", "ssh-ed25519 AAAA", "ssh-rsa " + base64.b64encode(b"\x00\x00\x00\x07ssh-rsa").decode(),
                                   "ssh-ed25519 !!!"]) | json_leaf,
    "user_regex": st.sampled_from(["(", "^bosh_", ".*", "a{99999999}", "(a+)+$", "[", "x" * 600]) | json_leaf,
})


def arg_for(kind: type) -> st.SearchStrategy[Any]:
    if kind is str:
        return st.sampled_from(INTERESTING_TEXT) | st.text(max_size=40)
    if kind is dict:
        return SSH_PARAMS | st.dictionaries(st.text(max_size=12), json_value, max_size=6)
    if kind is list:
        return st.lists(st.sampled_from(INTERESTING_TEXT) | json_leaf, max_size=4)
    return json_value


@st.composite
def arguments(draw: st.DrawFn, method: str) -> Any:
    declared = ARGS_OF.get(method)
    how = draw(st.integers(0, 9))
    if declared is not None and how < 6:
        # well-typed (mostly): reaches the action's own checks and body
        args = [draw(arg_for(a.kind)) for a in declared]
        if how == 5 and args:
            args = args[:draw(st.integers(0, len(args)))]   # some missing
        if how == 4:
            args += draw(st.lists(json_value, max_size=2))   # extra ones
        return args
    if how < 9:
        return draw(st.lists(json_value, max_size=6))
    return draw(json_value)   # arguments not a list (wrong type), or absent below


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    method: Any = draw(st.sampled_from(ACTION_NAMES) | st.sampled_from(ACTION_NAMES) | st.text(max_size=20)
                       | json_leaf)
    msg: dict[str, Any] = {}
    if draw(st.booleans()) or not isinstance(method, str):
        msg["method"] = method
    elif draw(st.integers(0, 3)):
        msg["method"] = method
    args = draw(arguments(method if isinstance(method, str) else ""))
    if draw(st.integers(0, 9)):
        msg["arguments"] = args
    reply_to = draw(st.sampled_from(["director.fuzz.agent-1.r", "director.fuzz.agent-1.é", "x"]) | st.text(max_size=20)
                    | json_value)
    if draw(st.integers(0, 5)):
        msg["reply_to"] = reply_to
    if draw(st.booleans()):
        msg["protocol"] = draw(st.sampled_from([0, 1, 2, 3, 4]) | json_leaf)
    if draw(st.integers(0, 9)) == 0:
        msg.update(draw(st.dictionaries(st.text(max_size=8), json_value, max_size=3)))
    return msg


def _safe(msg: Any) -> Any:
    """Host safety: ``fetch_logs`` of type ``system`` would tar the host's /var/log; ask for ``agent`` instead."""
    if isinstance(msg, dict) and msg.get("method") == "fetch_logs" and isinstance(msg.get("arguments"), list) \
            and msg["arguments"] and isinstance(msg["arguments"][0], str) and "system" in msg["arguments"][0]:
        msg = dict(msg, arguments=["agent", *msg["arguments"][1:]])
    return msg


@st.composite
def encoded(draw: st.DrawFn, obj: st.SearchStrategy[Any]) -> bytes:
    msg = _safe(draw(obj))
    text = json.dumps(msg, ensure_ascii=draw(st.booleans()), indent=draw(st.sampled_from([None, None, 1])))
    data = text.encode("utf-8", "surrogatepass")   # a lone surrogate unescaped: bytes that are not UTF-8
    mutation = draw(st.integers(0, 19))
    if mutation == 0 and data:   # truncated
        data = data[:draw(st.integers(0, len(data) - 1))]
    elif mutation == 1:          # invalid UTF-8 spliced in
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00"])) + data[at:]
    elif mutation == 2:          # trailing garbage / whitespace
        data += draw(st.sampled_from([b" ", b"\n", b"}", b"x", b"\r\n"]))
    return data


raw_bytes = st.binary(max_size=200) | st.sampled_from([
    b"", b"{}", b"[]", b"null", b"NaN", b"{\"reply_to\": \"r\"}", b"[" * 100_000, b"{\"a\":" * 3000 + b"1" + b"}" * 3000,
    b"{\"reply_to\": \"r\", \"method\": \"ping\", \"arguments\": [" + b"9" * 5000 + b"]}",
    b"{\"reply_to\": \"r\", \"method\": \"ping\", \"reply_to\": 5}", b"{\"reply_to\": 5, \"reply_to\": \"r\"}",
    "{\"reply_to\": \"r\", \"method\": \"pïng\"}".encode("utf-16"), b"\xef\xbb\xbf{\"reply_to\": \"r\"}",
])


# --- a fast generator for volume: hypothesis draws the seed (so failures replay and shrink to the seed and
# the batch size), Python's random draws the messages, ~100x cheaper than drawing each value with hypothesis.

def fast_json(rng: random.Random, depth: int = 0) -> Any:
    k = rng.randrange(10 if depth < 3 else 7)
    if k == 0:
        return None
    if k == 1:
        return rng.random() < 0.5
    if k == 2:
        return rng.choice([0, 1, -1, 3, 2**31, -(2**63), 2**64 + 1, 10**30, rng.randrange(-1000, 1000)])
    if k == 3:
        return rng.choice([0.5, -1.5, 1e308, -0.0, 1e-320, rng.random()])
    if k in (4, 5, 6):
        return fast_text(rng)
    if k in (7, 8):
        return [fast_json(rng, depth + 1) for _ in range(rng.randrange(5))]
    return {fast_text(rng): fast_json(rng, depth + 1) for _ in range(rng.randrange(5))}


ALPHABET = "abcxyz_-./ 0123456789é☃\u0000\t\n\"'{}[]*?%"


def fast_text(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return rng.choice(INTERESTING_TEXT)
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randrange(12)))


def fast_arg(rng: random.Random, kind: type) -> Any:
    if rng.random() < 0.15:
        return fast_json(rng)
    if kind is str:
        return fast_text(rng)
    if kind is dict:
        d = {rng.choice(["user", "public_key", "user_regex", "deployment", "job", "jobs", "packages", "networks",
                         "name", "blobstore_id", "sha1", "version", "index", "id"]): fast_json(rng, 1)
             for _ in range(rng.randrange(5))}
        if rng.random() < 0.3:
            d["user_regex"] = rng.choice(["(", "^bosh_", ".*", "(a+)+$", "[", "x" * 600])
        return d
    if kind is list:
        return [fast_text(rng) if rng.random() < 0.8 else fast_json(rng, 1) for _ in range(rng.randrange(4))]
    return fast_json(rng)


def fast_request(rng: random.Random) -> bytes:
    if rng.random() < 0.05:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(60)))
    method: Any = rng.choice(ACTION_NAMES) if rng.random() < 0.85 else fast_json(rng, 2)
    msg: dict[str, Any] = {}
    if rng.random() < 0.95:
        msg["method"] = method
    declared = ARGS_OF.get(method) if isinstance(method, str) else None
    if declared is not None and rng.random() < 0.7:
        args: Any = [fast_arg(rng, a.kind) for a in declared]
        if rng.random() < 0.2:
            args = args[:rng.randrange(len(args) + 1)]
    else:
        args = [fast_json(rng, 1) for _ in range(rng.randrange(4))] if rng.random() < 0.9 else fast_json(rng, 1)
    if rng.random() < 0.95:
        msg["arguments"] = args
    r = rng.random()
    if r < 0.8:
        msg["reply_to"] = rng.choice(["director.fuzz.agent-1.r", "director.fuzz.agent-1.é", "x"])
    elif r < 0.95:
        msg["reply_to"] = fast_json(rng, 2)
    if rng.random() < 0.7:
        msg["protocol"] = rng.choice([3, 3, 2, 1, 0, 4, -1, 2**70, "3", None, 3.0, True])
    data = json.dumps(_safe(msg), ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")
    m = rng.random()
    if m < 0.03:
        data = data[:rng.randrange(len(data))]
    elif m < 0.05:
        at = rng.randrange(len(data) + 1)
        data = data[:at] + rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80"]) + data[at:]
    return data


# --- the properties ------------------------------------------------------------------------------------

@examples("bytes")
@given(batch=st.lists(raw_bytes, min_size=1, max_size=BATCH))
async def test_arbitrary_bytes(agent: Agent, batch: list[bytes]) -> None:
    await run_batch(agent, batch)


@examples("json")
@given(batch=st.lists(encoded(json_value | json_value_nan), min_size=1, max_size=BATCH))
async def test_arbitrary_json(agent: Agent, batch: list[bytes]) -> None:
    await run_batch(agent, batch)


@examples("requests")
@given(batch=st.lists(encoded(requests()), min_size=1, max_size=BATCH))
async def test_requests(agent: Agent, batch: list[bytes]) -> None:
    await run_batch(agent, batch)


@examples("fast")
@given(rng=st.randoms(use_true_random=False), size=st.integers(1, FAST_BATCH))
async def test_requests_fast(agent: Agent, rng: random.Random, size: int) -> None:
    """The volume: up to FAST_BATCH requests per example from the fast generator."""
    await run_batch(agent, [fast_request(rng) for _ in range(size)])


@examples("limit")
@given(batch=st.lists(encoded(requests()) | raw_bytes, min_size=1, max_size=BATCH // 2))
async def test_requests_over_the_size_limit(agent: Agent, batch: list[bytes]) -> None:
    """The same agent with a 512-byte limit: messages over it are refused by name, or dropped past 8x."""
    await run_batch(agent, batch, small=True)

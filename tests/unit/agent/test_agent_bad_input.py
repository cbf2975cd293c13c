"""Every message that takes arguments, sent with missing or wrongly typed ones: an exception naming the
problem, nothing on disk changed, and the agent still answers ping. Extra arguments are ignored."""
from typing import Any

import pytest

from .conftest import FakeMounter, FakeUsers, call, snapshot

SPEC = {"deployment": "d"}

BAD = [
    ("get_state", [5], "argument 1 (state type) must be a string, got an integer"),
    ("state", [[]], "argument 1 (state type) must be a string, got an array"),
    ("get_task", [], "Not enough arguments, expected 1, got 0"),
    ("get_task", [1.5], "argument 1 (agent task id) must be a string, got a number"),
    ("cancel_task", [], "Not enough arguments, expected 1, got 0"),
    ("cancel_task", [{}], "argument 1 (agent task id) must be a string, got an object"),
    ("apply", [], "Not enough arguments, expected 1, got 0"),
    ("apply", ["spec"], "argument 1 (apply spec) must be an object, got a string"),
    ("apply", [None], "argument 1 (apply spec) must be an object, got null"),
    ("drain", [], "Not enough arguments, expected 1, got 0"),
    ("drain", [True], "argument 1 (drain type) must be a string, got a boolean"),
    ("drain", ["update"], "drain 'update' needs the new apply spec as argument 2"),
    ("drain", ["update", "spec"], "argument 2 (apply spec) must be an object, got a string"),
    ("drain", ["later", SPEC], "Unknown drain type 'later' (expected update, shutdown or status)"),
    ("compile_package", [], "Not enough arguments, expected 5, got 0"),
    ("compile_package", ["id", "sha1", "pkg", "1.0"], "Not enough arguments, expected 5, got 4"),
    ("compile_package", ["id", "sha1", "pkg", 1, {}], "argument 4 (package version) must be a string, got an integer"),
    ("compile_package", ["id", "sha1", "pkg", "1.0", []], "argument 5 (dependencies) must be an object, got an array"),
    ("compile_package", ["id", "sha1", "../x", "1.0", {}], "package: '../x' is not a valid name"),
    ("mount_disk", [], "Not enough arguments, expected 1, got 0"),
    ("mount_disk", [7], "argument 1 (disk cid) must be a string, got an integer"),
    ("mount_disk", [""], "disk cid must not be empty"),
    ("mount_disk", ["nope"], "Persistent disk with volume id 'nope' could not be found"),
    ("unmount_disk", [], "Not enough arguments, expected 1, got 0"),
    ("unmount_disk", [None], "argument 1 (disk cid) must be a string, got null"),
    ("unmount_disk", ["nope"], "Persistent disk with volume id 'nope' could not be found"),
    ("migrate_disk", ["old", "new"], "Migrating persistent disk: no disk is mounted at"),
    ("fetch_logs", [], "Not enough arguments, expected 1, got 0"),
    ("fetch_logs", [["job"]], "argument 1 (log type) must be a string, got an array"),
    ("fetch_logs", ["jobs"], "Invalid log type 'jobs'"),
    ("fetch_logs", ["job", {"glob": "*"}], "argument 2 (filters) must be an array, got an object"),
    ("fetch_logs", ["job", [None]], "filter 1 must be a non-empty string, got null"),
    ("fetch_logs", ["job", ["../../x"]], "filter '../../x' must be a glob relative to the log directory"),
    ("ssh", [], "Not enough arguments, expected 2, got 0"),
    ("ssh", ["setup"], "Not enough arguments, expected 2, got 1"),
    ("ssh", [1, {}], "argument 1 (ssh command) must be a string, got an integer"),
    ("ssh", ["setup", []], "argument 2 (ssh params) must be an object, got an array"),
    ("ssh", ["setup", {}], "ssh setup: params have no user"),
    ("ssh", ["setup", {"user": "bosh_x", "public_key": "nope"}], "public_key does not look like an ssh public key"),
    ("ssh", ["setup", {"user": "bad name", "public_key": "x"}], "user name 'bad name' is not valid"),
    ("ssh", ["cleanup", {"user_regex": "("}], "is not a valid regular expression"),
    ("ssh", ["bogus", {}], "Unknown command for SSH method: 'bogus'"),
]


@pytest.mark.parametrize("method,args,message", BAD, ids=[f"{m}-{i}" for i, (m, _, _) in enumerate(BAD)])
async def test_bad_arguments(services: Any, users: FakeUsers, mounter: FakeMounter, method: str, args: list[Any],
                             message: str) -> None:
    root = services.paths.base
    before = snapshot(root)
    reply = await call(services, method, args)
    assert set(reply) == {"exception"}, reply
    text = reply["exception"]["message"]
    assert text.startswith(("Action Failed get_task: Task ", f"Action Failed {method}: ")), text
    assert message in text, text
    after = snapshot(root)
    # mount_disk re-reads the registry and rewrites the same settings cache; nothing else may differ
    assert after == before
    assert mounter.calls == [] and users.calls == []
    assert await call(services, "ping") == {"value": "pong"}


@pytest.mark.parametrize("method,args,value", [
    ("ping", ["extra", 1], "pong"),
    ("info", [{}], {"api_version": 1}),
    ("list_disk", [1, 2], []),
    ("prepare_network_change", ["x"], "ok"),
    ("get_task", ["nope", "extra"], None),
])
async def test_extra_arguments_are_ignored(services: Any, method: str, args: list[Any], value: Any) -> None:
    reply = await call(services, method, args)
    if value is None:
        assert reply == {"exception": {"message": "Action Failed get_task: Task with id nope could not be found"}}
    else:
        assert reply == {"value": value}

"""Persistent disk decisions (director/planner.py ``disk_change``, director/vms.py ``disk_settings``) and the CLI
verbs that reach a VM (cli/commands_agent.py)."""
from __future__ import annotations

import pytest

from cli.main import parser
from director.planner import disk_change
from director.store import DiskRow
from director.vms import disk_settings


def disk(size: int) -> DiskRow:
    return DiskRow("c1", "d", "i1", "g/i1", size, False, 1.0, None)


@pytest.mark.parametrize("have, want, change", [
    (None, 0, None), (None, 100, "create"), (100, 100, None), (100, 200, "resize"),
    (200, 100, "resize"), (100, 0, "orphan"),
])
def test_disk_change(have: int | None, want: int, change: str | None) -> None:
    assert disk_change(None if have is None else disk(have), want) == change


def test_disk_settings_name_the_mount_the_cpi_makes() -> None:
    assert disk_settings(["lab-disk-1"]) == {"lab-disk-1": {"path": "/var/vcap/store_disks/lab-disk-1"}}
    assert disk_settings([]) == {}


def test_cli_parses_the_new_verbs() -> None:
    a = parser().parse_args(["ssh", "-d", "x", "redis/0", "-c", "id"])
    assert (a.command, a.deployment, a.instance, a.command_) == ("ssh", "x", "redis/0", "id")
    a = parser().parse_args(["logs", "redis/1", "--agent", "--dir", "/tmp"])
    assert (a.agent, a.dir, a.follow) == (True, "/tmp", False)
    a = parser().parse_args(["agent-message", "redis/0", "mount_disk", "\"cid\""])
    assert (a.method, a.arguments) == ("mount_disk", ['"cid"'])
    assert parser().parse_args(["disks", "--orphaned"]).orphaned
    assert parser().parse_args(["delete-disk", "c1"]).cid == "c1"

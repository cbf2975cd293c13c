"""drain: argv and env per §7, the integer contract, unmonitor first, shutdown notice, cancel."""
import asyncio
import os
import time
from pathlib import Path
from typing import Any, cast

import pytest

from agent.action.base import ActionError
from agent.action.drain import Drain, drain_argv, drain_env, parse_drain_output
from agent.jobsupervisor import MonitService
from agent.paths import Paths
from agent.spec import ApplySpec

from .conftest import wait_for

# partial blob refs (name and sha1 are all drain looks at): cast, the agent takes what it is given
CURRENT = cast(ApplySpec, {
    "deployment": "d", "job": {"name": "redis", "templates": [{"name": "redis", "version": "1"}]},
    "configuration_hash": "aaa", "persistent_disk": 0,
    "packages": {"redis": {"name": "redis", "sha1": "s1"}, "common": {"name": "common", "sha1": "c1"}}})
NEW = cast(ApplySpec, {
    **CURRENT, "configuration_hash": "bbb", "persistent_disk": 100,
    "packages": {"redis": {"name": "redis", "sha1": "s2"}, "common": {"name": "common", "sha1": "c1"},
                 "added": {"name": "added", "sha1": "a1"}}})


def test_argv_update() -> None:
    assert drain_argv("update", CURRENT, NEW) == ["job_changed", "hash_changed", "added", "redis"]
    assert drain_argv("update", CURRENT, {**CURRENT}) == ["job_changed", "hash_unchanged"]
    assert drain_argv("update", {}, NEW) == ["job_new", "hash_new", "added", "common", "redis"]


def test_argv_shutdown_and_status() -> None:
    assert drain_argv("shutdown", CURRENT, NEW) == ["job_shutdown", "hash_unchanged"]
    assert drain_argv("status", CURRENT, None) == ["job_check_status", "hash_unchanged"]


def test_env() -> None:
    env = drain_env(CURRENT, NEW, base={"HOME": "/root", "PATH": "/x", "BOSH_JOB_NEXT_STATE": "stale"})
    assert env == {"HOME": "/root", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                   "BOSH_JOB_STATE": '{"persistent_disk":0}', "BOSH_JOB_NEXT_STATE": '{"persistent_disk":100}'}
    assert "BOSH_JOB_NEXT_STATE" not in drain_env(CURRENT, None, base={"BOSH_JOB_NEXT_STATE": "stale"})


@pytest.mark.parametrize("out,value", [("0\n", 0), (" 15 ", 15), ("-5", -5), ("+3", 3)])
def test_parse_signed_integer(out: str, value: int) -> None:
    assert parse_drain_output(out) == value


@pytest.mark.parametrize("out", ["", "abc", "1.5", "5 seconds", "١٢"])
def test_not_a_signed_integer(out: str) -> None:
    with pytest.raises(ActionError, match="Script did not return a signed integer"):
        parse_drain_output(out)


def install_drain(vcap: Paths, body: str) -> None:
    bin_dir = vcap.data / "jobs" / "redis" / "h" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "drain").write_text("#!/bin/bash\n" + body)
    (bin_dir / "drain").chmod(0o755)
    os.symlink(bin_dir.parent, vcap.job_link("redis"))


async def test_update_runs_the_script_after_unmonitoring(services: Any, vcap: Paths, tmp_path: Path) -> None:
    services.specs.save(CURRENT)
    services.supervisor.services = {"redis": MonitService("redis", monitor=1)}
    record = tmp_path / "record"
    install_drain(vcap, f'echo "$@|$BOSH_JOB_STATE|$BOSH_JOB_NEXT_STATE|$PATH" > {record}\necho -7\n')
    assert await Drain(services).run("update", NEW) == -7
    assert record.read_text().strip() == ('job_changed hash_changed added redis|{"persistent_disk":0}|'
                                          '{"persistent_disk":100}|/usr/sbin:/usr/bin:/sbin:/bin')
    assert services.supervisor.calls == ["unmonitor"]


async def test_status_does_not_unmonitor_and_has_no_next_state(services: Any, vcap: Paths, tmp_path: Path) -> None:
    services.specs.save(CURRENT)
    record = tmp_path / "record"
    install_drain(vcap, f'echo "$@|${{BOSH_JOB_NEXT_STATE-unset}}" > {record}\necho 0\n')
    assert await Drain(services).run("status") == 0
    assert record.read_text().strip() == "job_check_status hash_unchanged|unset"
    assert services.supervisor.calls == []


async def test_shutdown_tells_the_health_monitor_first(services: Any, vcap: Paths) -> None:
    services.specs.save(CURRENT)
    install_drain(vcap, "echo 3\n")
    assert await Drain(services).run("shutdown", None) == 3
    assert services.mbus.published == [("hm.agent.shutdown.agent-1", b"null")]


async def test_no_script_means_zero(services: Any) -> None:
    services.specs.save(CURRENT)
    assert await Drain(services).run("update", NEW) == 0


async def test_bad_output_and_bad_arguments(services: Any, vcap: Paths) -> None:
    services.specs.save(CURRENT)
    install_drain(vcap, "echo soon\n")
    with pytest.raises(ActionError, match="Script did not return a signed integer: 'soon'"):
        await Drain(services).run("shutdown")
    with pytest.raises(ActionError, match="needs the new apply spec"):
        await Drain(services).run("update")
    with pytest.raises(ActionError, match="Unknown drain type 'later'"):
        await Drain(services).run("later")


async def test_cancel_terminates_the_script(services: Any, vcap: Paths, tmp_path: Path) -> None:
    services.specs.save(CURRENT)
    pidfile = tmp_path / "pid"
    install_drain(vcap, f"echo $$ > {pidfile}\nexec sleep 30\n")
    task = services.tasks.submit("drain", lambda: Drain(services).run("shutdown"), cancelable=True)
    await wait_for(pidfile.exists)
    await wait_for(lambda: pidfile.read_text().strip())
    pid = int(pidfile.read_text())
    services.tasks.cancel(task.id)
    await wait_for(lambda: task.state != "running", timeout=15)
    assert (task.state, task.error) == ("failed", "task canceled")
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def install_drain_for(vcap: Paths, job: str, body: str) -> None:
    bin_dir = vcap.data / "jobs" / job / "h" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "drain").write_text("#!/bin/bash\n" + body)
    (bin_dir / "drain").chmod(0o755)
    os.symlink(bin_dir.parent, vcap.job_link(job))


TWO_JOBS = cast(ApplySpec, {**CURRENT, "job": {"name": "g", "templates": [{"name": "a", "version": "1"},
                                                                         {"name": "b", "version": "1"}]}})


async def test_jobs_drain_in_parallel(services: Any, vcap: Paths) -> None:
    services.specs.save(TWO_JOBS)
    install_drain_for(vcap, "a", "sleep 0.6; echo 0\n")
    install_drain_for(vcap, "b", "sleep 0.6; echo 0\n")
    t0 = time.monotonic()
    assert await Drain(services).run("shutdown") == 0
    assert time.monotonic() - t0 < 1.1


async def test_failed_jobs_are_named(services: Any, vcap: Paths) -> None:
    services.specs.save(TWO_JOBS)
    install_drain_for(vcap, "a", "echo 0\n")
    install_drain_for(vcap, "b", "echo later\n")
    with pytest.raises(ActionError, match=r"^1 of 2 drain scripts failed. Failed Jobs: b. Successful Jobs: a. "
                                          r"b: Script did not return a signed integer: 'later'$"):
        await Drain(services).run("shutdown")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_cancel_kills_the_whole_process_group_after_the_grace(services: Any, vcap: Paths, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A script that ignores SIGTERM and has a child: both are gone once the grace period is over."""
    monkeypatch.setattr("agent.action.drain.CANCEL_GRACE", 0.5)
    services.specs.save(CURRENT)
    pids = tmp_path / "pids"
    install_drain(vcap, f"trap '' TERM\nsleep 60 &\necho $$ $! > {pids}\nwait\n")
    task = services.tasks.submit("drain", lambda: Drain(services).run("shutdown"), cancelable=True)
    await wait_for(lambda: pids.exists() and len(pids.read_text().split()) == 2)
    script, child = map(int, pids.read_text().split())
    services.tasks.cancel(task.id)
    await wait_for(lambda: task.state != "running", timeout=10)
    assert (task.state, task.error) == ("failed", "task canceled")
    # gone, or a zombie waiting for whoever adopted it to reap it (not every sandbox's init reaps at once)
    await wait_for(lambda: not any(alive(pid) for pid in (script, child)), timeout=5)


# --- several jobs: the agent waits per script (today's bosh-agent); one job: the integer, unchanged ---------

def recording_drain(record: Path, answers: str) -> str:
    """A drain script that appends ``argv|BOSH_JOB_NEXT_STATE`` to ``record`` on each run and answers the
    next of ``answers`` (space-separated; the last one again once they are used up), counting in a file."""
    counter = record.with_suffix(".count")
    return (f'n=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter}\n'
            f'echo "$*|${{BOSH_JOB_NEXT_STATE-unset}}" >> {record}\n'
            f'answers=({answers}); i=$((n-1)); [ $i -lt ${{#answers[@]}} ] || i=$((${{#answers[@]}}-1))\n'
            f'echo ${{answers[$i]}}\n')


def runs(record: Path) -> list[str]:
    return record.read_text().splitlines() if record.exists() else []


async def test_several_jobs_each_script_waits_on_its_own(services: Any, vcap: Paths, tmp_path: Path) -> None:
    """a answers -2 then 0, b answers 5: a is re-run after 2 s with job_check_status, b is slept 5 s, both in
    parallel: ~5 s in all (not 7), and the action returns 0."""
    services.specs.save(TWO_JOBS)
    rec_a, rec_b = tmp_path / "a.rec", tmp_path / "b.rec"
    install_drain_for(vcap, "a", recording_drain(rec_a, "-2 0"))
    install_drain_for(vcap, "b", recording_drain(rec_b, "5"))
    t0 = time.monotonic()
    assert await Drain(services).run("update", NEW) == 0
    elapsed = time.monotonic() - t0
    assert 4.5 <= elapsed < 6.5, elapsed
    first = 'job_changed hash_changed added redis|{"persistent_disk":100}'
    assert runs(rec_a) == [first, "job_check_status hash_unchanged|unset"]
    assert runs(rec_b) == [first]


async def test_several_jobs_status_runs_each_with_check_status(services: Any, vcap: Paths, tmp_path: Path) -> None:
    services.specs.save(TWO_JOBS)
    rec_a, rec_b = tmp_path / "a.rec", tmp_path / "b.rec"
    install_drain_for(vcap, "a", recording_drain(rec_a, "-1 0"))
    install_drain_for(vcap, "b", recording_drain(rec_b, "0"))
    assert await Drain(services).run("status") == 0
    assert runs(rec_a) == ["job_check_status hash_unchanged|unset"] * 2
    assert runs(rec_b) == ["job_check_status hash_unchanged|unset"]
    assert services.supervisor.calls == []


async def test_one_job_negative_value_is_returned_unchanged(services: Any, vcap: Paths, tmp_path: Path) -> None:
    """One job: the 2013 contract, the director does the waiting; the agent runs the script once."""
    services.specs.save(CURRENT)
    rec = tmp_path / "redis.rec"
    install_drain(vcap, recording_drain(rec, "-3 0"))
    t0 = time.monotonic()
    assert await Drain(services).run("shutdown") == -3
    assert time.monotonic() - t0 < 2
    assert runs(rec) == ["job_shutdown hash_unchanged|unset"]


async def test_cancel_during_the_agents_sleep_ends_quickly(services: Any, vcap: Paths, tmp_path: Path) -> None:
    services.specs.save(TWO_JOBS)
    rec_a, rec_b = tmp_path / "a.rec", tmp_path / "b.rec"
    install_drain_for(vcap, "a", recording_drain(rec_a, "30"))
    install_drain_for(vcap, "b", recording_drain(rec_b, "-30 0"))
    task = services.tasks.submit("drain", lambda: Drain(services).run("shutdown"), cancelable=True)
    await wait_for(lambda: runs(rec_a) and runs(rec_b))
    await asyncio.sleep(0.3)   # both scripts have answered: the agent sleeps 30 s for each
    assert task.state == "running"
    t0 = time.monotonic()
    services.tasks.cancel(task.id)
    await wait_for(lambda: task.state != "running", timeout=5)
    assert time.monotonic() - t0 < 2
    assert (task.state, task.error) == ("failed", "task canceled")
    assert len(runs(rec_b)) == 1

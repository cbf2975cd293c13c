"""monit: the recorded 5.33 status XML, job_state rules (§6.4), the monit files, and the HTTP API
(CSRF token, 302, incarnation on reload) against a small fake of monit's httpd."""
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from agent.jobsupervisor import (
    JobSupervisorError,
    MonitClient,
    MonitJobSupervisor,
    MonitService,
    MonitStatus,
    add_onreboot_nostart,
    job_state,
    monit_pidfiles,
    parse_status,
    process_entry,
)
from agent.paths import Paths
from tests.unit.conftest import Handler

from .conftest import DATA

# Recorded from monit 5.33.0 in the stemcell: "dummy" started and monitored, "dummy2" loaded with
# "onreboot nostart" and not monitored, plus the host's system service (not in group vcap).
RECORDED = (DATA / "monit_status_5.33.xml").read_bytes()


def test_parse_recorded_status() -> None:
    st = parse_status(RECORDED)
    assert st.incarnation == "1795900631"
    assert st.groups == {"vcap": ["dummy2", "dummy"]}
    assert [s.name for s in st.group()] == ["dummy2", "dummy"]
    dummy, dummy2 = st.services["dummy"], st.services["dummy2"]
    assert (dummy.status, dummy.monitor, dummy.pending_action) == (0, 1, 0)
    assert dummy.uptime is not None and dummy.uptime >= 0 and dummy.mem_kb > 0
    assert (dummy2.monitor, dummy2.uptime) == (0, None)
    assert dummy.state == "running" and dummy2.state == "unknown"
    assert len(st.services) == 3  # the system service is parsed but is not a job


def test_job_state_rules() -> None:
    def status(*services: MonitService) -> MonitStatus:
        return MonitStatus("1", {s.name: s for s in services}, {"vcap": [s.name for s in services]})
    running = MonitService("a", status=0, monitor=1)
    assert job_state(None, stopped=False) == "unknown"
    assert job_state(None, stopped=True) == "unknown"
    assert job_state(status(running), stopped=True) == "stopped"
    assert job_state(status(), stopped=False) == "running"
    assert job_state(status(running), stopped=False) == "running"
    assert job_state(status(running, MonitService("b", monitor=2)), stopped=False) == "starting"
    assert job_state(status(running, MonitService("b", monitor=0)), stopped=False) == "failing"
    assert job_state(status(running, MonitService("b", status=512, monitor=1)), stopped=False) == "failing"
    assert job_state(parse_status(RECORDED), stopped=False) == "failing"  # dummy2 is not monitored


def test_process_entry_shape() -> None:
    entry = process_entry(parse_status(RECORDED).services["dummy"])
    assert entry["name"] == "dummy" and entry["state"] == "running"
    assert set(entry) == {"name", "state", "uptime", "mem", "cpu"}
    assert entry["mem"] == {"kb": 1316, "percent": 0.0} and entry["cpu"] == {"total": 0.0}
    assert entry["uptime"]["secs"] > 0


def test_onreboot_nostart_is_added_to_every_check_without_one() -> None:
    monit = ("check process redis\n  with pidfile /var/vcap/sys/run/redis/redis.pid\n"
             '  start program "/var/vcap/jobs/redis/bin/redis_ctl start"\n  group vcap\n\n'
             "check process other with pidfile /x.pid\n  onreboot laststate\n  group vcap\n"
             "check file cfg with path /etc/x\n  group vcap\n# trailing comment\n")
    out = add_onreboot_nostart(monit)
    assert out == ("check process redis\n  with pidfile /var/vcap/sys/run/redis/redis.pid\n"
                   '  start program "/var/vcap/jobs/redis/bin/redis_ctl start"\n  group vcap\n  onreboot nostart\n\n'
                   "check process other with pidfile /x.pid\n  onreboot laststate\n  group vcap\n"
                   "check file cfg with path /etc/x\n  group vcap\n  onreboot nostart\n# trailing comment\n")


def test_install_jobs_numbers_from_the_end(vcap: Paths) -> None:
    sup = MonitJobSupervisor(vcap)
    (vcap.monit_jobs / "0005_old.monitrc").write_text("x")
    sup.install_jobs([("a", "check process a\n"), ("b", "check process b\n")])
    files = sorted(p.name for p in vcap.monit_jobs.iterdir())
    assert files == ["0000_b.monitrc", "0001_a.monitrc"]
    assert (vcap.monit_jobs / "0001_a.monitrc").stat().st_mode & 0o777 == 0o600
    assert "onreboot nostart" in (vcap.monit_jobs / "0001_a.monitrc").read_text()


class FakeMonit:
    """monit 5.33's httpd as the agent uses it: basic auth, CSRF token (cookie == field) on POST, 302."""

    def __init__(self) -> None:
        self.incarnation = 100
        self.services = {"redis": {"status": 0, "monitor": 0, "pending": 0}}
        self.actions: list[tuple[str, str]] = []
        self.stop_polls = 2  # stop takes a couple of status polls to complete

    def xml(self) -> str:
        svc = "".join(f'<service name="{n}"><type>3</type><status>{s["status"]}</status><monitor>{s["monitor"]}'
                      f'</monitor><pendingaction>{s["pending"]}</pendingaction></service>'
                      for n, s in self.services.items())
        group = "".join(f"<service>{n}</service>" for n in self.services)
        return (f'<?xml version="1.0" encoding="ISO-8859-1"?><monit id="x" incarnation="{self.incarnation}" '
                f'version="5.33.0"><services>{svc}</services><servicegroups><servicegroup name="vcap">{group}'
                f"</servicegroup></servicegroups></monit>")

    async def handler(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Basic dmNhcDpzM2NyZXQ=":  # vcap:s3cret
            return web.Response(status=401)
        if request.method == "GET" and request.path == "/_status2":
            for s in self.services.values():
                if s["pending"] == 3:
                    self.stop_polls -= 1
                    if self.stop_polls <= 0:
                        s["pending"], s["monitor"] = 0, 0
            return web.Response(text=self.xml(), content_type="text/xml")
        if request.method == "POST":
            form = await request.post()
            if not form.get("securitytoken") or form.get("securitytoken") != request.cookies.get("securitytoken"):
                return web.Response(status=403, text="Invalid CSRF Token")
            name, action = request.path.lstrip("/"), str(form["action"])
            self.actions.append((name, action))
            svc = self.services[name]
            if action in ("start", "monitor"):
                svc["monitor"] = 1
            elif action == "stop" and svc["monitor"] != 0:  # 5.33 ignores stop for unmonitored services
                svc["pending"] = 3
            elif action == "unmonitor":
                svc["monitor"] = 0
            raise web.HTTPFound("/")
        return web.Response(status=404)


Monit = tuple[FakeMonit, MonitJobSupervisor]   # the fake monit HTTP API and a supervisor talking to it


@pytest.fixture
async def monit(vcap: Paths, http_server: Callable[[Handler], Awaitable[str]]) -> Monit:
    fake = FakeMonit()
    url = await http_server(fake.handler)
    vcap.monit_user.write_text("vcap:s3cret\n")
    return fake, MonitJobSupervisor(vcap, MonitClient(vcap, url), poll=0.01, reload_wait=2,
                                    reload_command=[sys.executable, "-c", "pass"])


async def test_start_stop_unmonitor_through_the_http_api(vcap: Paths, monit: Monit, agent_log: list[str]) -> None:
    fake, sup = monit
    vcap.stopped_marker.touch()
    assert sup.job_state(await sup.status()) == "stopped"
    await sup.start()
    assert fake.actions == [("redis", "start")]
    assert not vcap.stopped_marker.exists()
    assert sup.job_state(await sup.status()) == "running"
    await sup.stop_and_wait()
    assert fake.actions[-1] == ("redis", "stop") and fake.services["redis"]["monitor"] == 0
    assert vcap.stopped_marker.exists() and sup.job_state(await sup.status()) == "stopped"
    await sup.unmonitor()
    assert fake.actions[-1] == ("redis", "unmonitor")
    assert (vcap.instance / "health.json").read_text() == '{"state": "unmonitored"}'
    assert [m for m in agent_log if "Job state" in m] == [
        "INFO: Job state: (boot) -> stopped", "INFO: Job state: stopped -> running", "INFO: Job state: running -> stopped"]


async def test_stop_after_drain_monitors_live_services_again_first(vcap: Paths, monit: Monit, tmp_path: Path) -> None:
    fake, sup = monit
    fake.services["dead"] = {"status": 0, "monitor": 0, "pending": 0}
    fake.services["redis"]["monitor"] = 0  # drain unmonitored it; its process still runs
    (tmp_path / "redis.pid").write_text(f"{os.getpid()}\n")
    (tmp_path / "dead.pid").write_text("999999999\n")
    (vcap.monit_jobs / "0000_redis.monitrc").write_text(
        f"check process redis\n  with pidfile {tmp_path}/redis.pid\n  group vcap\n"
        f"check process dead with pidfile \"{tmp_path}/dead.pid\"\n  group vcap\n")
    assert monit_pidfiles(vcap.monit_jobs) == {"redis": tmp_path / "redis.pid", "dead": tmp_path / "dead.pid"}
    await sup.stop_and_wait()
    assert fake.actions == [("redis", "monitor"), ("redis", "stop"), ("dead", "stop")]
    assert fake.services["redis"] == {"status": 0, "monitor": 0, "pending": 0}
    assert fake.services["dead"]["monitor"] == 0


async def test_stop_times_out_with_a_clear_message(vcap: Paths, monit: Monit) -> None:
    fake, sup = monit
    fake.stop_polls = 10**9
    fake.services["redis"]["monitor"] = 1
    sup.stop_timeout = 0.1
    with pytest.raises(JobSupervisorError, match=r"Timed out waiting for services 'redis' to stop after 0.1 seconds"):
        await sup.stop_and_wait()


async def test_wrong_credentials_or_no_monit_is_unknown(vcap: Paths, monit: Monit) -> None:
    fake, sup = monit
    vcap.monit_user.write_text("vcap:wrong\n")
    assert await sup.status() is None
    assert sup.job_state(None) == "unknown"


async def test_reload_waits_for_a_new_incarnation(vcap: Paths, monit: Monit, tmp_path: Path) -> None:
    fake, sup = monit
    flag = tmp_path / "reloaded"
    sup.reload_command = [sys.executable, "-c", f"open({str(flag)!r}, 'w').close()"]

    async def bump() -> None:
        from .conftest import wait_for
        await wait_for(flag.exists)
        fake.incarnation += 1
    import asyncio
    bumper = asyncio.create_task(bump())
    await sup.reload()
    await bumper
    assert fake.incarnation == 101


async def test_reload_fails_when_the_incarnation_never_changes(vcap: Paths, monit: Monit) -> None:
    fake, sup = monit
    sup.reload_wait = 0.05
    with pytest.raises(JobSupervisorError, match="did not reload"):
        await sup.reload()


def test_waits_for_monit_start_at_50_ms_and_grow_to_the_poll_interval(vcap: Paths) -> None:
    """A stop or a reload usually ends within a few hundred ms: the first looks come soon, later ones at
    most every ``poll`` (monit's status is not asked for in a tight loop)."""
    import itertools
    sup = MonitJobSupervisor(vcap, poll=0.5)
    pauses = list(itertools.islice(sup._pauses(), 12))
    assert pauses[0] == 0.05
    assert all(b >= a for a, b in itertools.pairwise(pauses)) and max(pauses) == 0.5
    assert sum(pauses[:4]) < 0.5, "four looks within the old single poll"
    assert list(itertools.islice(MonitJobSupervisor(vcap, poll=0.01)._pauses(), 3)) == [0.01, 0.01, 0.01]

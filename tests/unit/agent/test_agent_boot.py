"""Boot helpers: monit credentials written once, jobs restored after a VM restart, no settings -> exit 1."""
import pytest

from agent.boot import restore_jobs, run, setup_monit_user
from agent.jobsupervisor import MonitService
from agent.paths import Paths
from agent.spec import SpecStore

from .conftest import FakeSupervisor


def test_monit_user_is_written_once_and_private(vcap: Paths) -> None:
    setup_monit_user(vcap)
    first = vcap.monit_user.read_text()
    assert first.startswith("vcap:") and len(first.strip()) == len("vcap:") + 16
    assert vcap.monit_user.stat().st_mode & 0o777 == 0o600
    setup_monit_user(vcap)
    assert vcap.monit_user.read_text() == first  # monit already runs with it
    vcap.monit_user.write_text("garbage")
    setup_monit_user(vcap)
    assert vcap.monit_user.read_text() != "garbage"


async def test_restore_starts_idle_jobs_unless_stopped(vcap: Paths) -> None:
    sup = FakeSupervisor(vcap, {"redis": MonitService("redis", monitor=0)})
    specs = SpecStore(vcap)
    await restore_jobs(vcap, specs, sup)
    assert sup.calls == []  # no job applied yet
    specs.save({"configuration_hash": "c", "job": {"name": "redis"}})
    vcap.stopped_marker.touch()
    await restore_jobs(vcap, specs, sup)
    assert sup.calls == []  # the director stopped it
    vcap.stopped_marker.unlink()
    await restore_jobs(vcap, specs, sup)
    assert sup.calls == ["start"]
    await restore_jobs(vcap, specs, sup)
    assert sup.calls == ["start"]  # all monitored now


async def test_no_settings_means_exit_1(vcap: Paths, agent_log: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from agent import settings as settings_module

    original = settings_module.SettingsService.__init__

    def quick(self: settings_module.SettingsService, paths: Paths,
              fetcher: settings_module.Fetcher = settings_module.fetch_from_registry,
              attempts: int = 1, retry_delay: float = 0.0) -> None:
        original(self, paths, fetcher, attempts, retry_delay)
    monkeypatch.setattr(settings_module.SettingsService, "__init__", quick)
    assert await run(vcap) == 1
    assert agent_log[-1].startswith("ERROR: Cannot configure the agent: could not fetch settings from the registry "
                                    "after 1 attempts: cannot read user data")

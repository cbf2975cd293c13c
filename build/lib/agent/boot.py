"""The boot sequence (deck slides 13-17; protocol.md §5.3):

    INFO: Starting agent bosh-lab <version>...
    INFO: Configuring agent...                      directories, monit credentials
    INFO: Configuring instance
    INFO: Docker user data: "<user_data.json>"
    INFO: loaded new infrastructure settings: {"networks"=>..., "disks"=>..., "blobstore"=>..., "mbus"=>...}
    then: mount the persistent disk of the last boot again (managed_disk_settings.json, agent/disks.py),
    connect to NATS, subscribe agent.<id>, heartbeat, wait for the director's ping.

Exits non-zero when no settings can be had (runit starts it again).
"""
from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
from dataclasses import dataclass

from . import __version__
from .action.base import Services, blobstore_client
from .applier import Applier
from .disks import LinuxMounter, Mounter, PersistentDisks
from .dispatcher import Dispatcher, build_registry
from .heartbeat import Heartbeater, collect_payload
from .jobsupervisor import JobSupervisor, JobSupervisorError, MonitJobSupervisor
from .log import log
from .mbus import MBus
from .paths import Paths
from .settings import SettingsError, SettingsService, heartbeat_interval
from .spec import SpecStore
from .tasks import TaskManager
from .users import LinuxUsers
from .vitals import Vitals


def setup_monit_user(paths: Paths) -> None:
    """``vcap:<random>`` in /var/vcap/monit/monit.user, written once (monit reads it when it starts)."""
    current = paths.monit_user.read_text().strip() if paths.monit_user.exists() else ""
    if current.startswith("vcap:") and len(current) > len("vcap:"):
        return
    paths.monit_user.parent.mkdir(parents=True, exist_ok=True)
    paths.monit_user.touch(mode=0o600)
    paths.monit_user.write_text(f"vcap:{secrets.token_hex(8)}\n")
    paths.monit_user.chmod(0o600)


async def restore_jobs(paths: Paths, specs: SpecStore, supervisor: JobSupervisor) -> None:
    """After a restart of the VM, jobs that were running (a full spec, no stopped marker) are started
    again: their monit checks say ``onreboot nostart``, so monit itself leaves them alone."""
    if not specs.load().get("configuration_hash") or paths.stopped_marker.exists():
        return
    for _ in range(60):
        status = await supervisor.status()
        if status is not None:
            idle = [s.name for s in status.group() if s.monitor == 0]
            if idle:
                log.info("Jobs were running before this boot: starting %s", ", ".join(idle))
                try:
                    await supervisor.start()
                except JobSupervisorError as e:
                    log.warning("Restoring jobs failed: %s", e)
            return
        await asyncio.sleep(1)
    log.warning("monit did not answer within 60 s: jobs not restored")


@dataclass
class Agent:
    paths: Paths
    settings: SettingsService
    mbus: MBus
    heartbeater: Heartbeater
    supervisor: JobSupervisor
    specs: SpecStore


async def configure(paths: Paths, supervisor: JobSupervisor | None = None, mounter: Mounter | None = None) -> Agent:
    """Boot up to "subscribed": settings, the persistent disk of the last boot, NATS, the dispatcher.
    ``supervisor`` replaces monit and ``mounter`` mount(8) in tests."""
    log.info("Starting agent bosh-lab %s...", __version__)
    log.info("Configuring agent...")
    paths.ensure_layout()
    setup_monit_user(paths)
    if paths.stemcell_version.exists():
        log.info("Running on stemcell version '%s'", paths.stemcell_version.read_text().strip())
    log.info("Configuring instance")
    settings_service = SettingsService(paths)
    settings = await settings_service.load()
    mounter = mounter or LinuxMounter()
    await PersistentDisks(paths, settings_service, mounter).remount_at_boot()
    supervisor = supervisor or MonitJobSupervisor(paths)
    specs = SpecStore(paths)
    tasks = TaskManager()
    mbus = MBus(settings["mbus"], settings["agent_id"])
    vitals = Vitals(paths)
    applier = Applier(paths, lambda: blobstore_client(settings_service), supervisor)
    services = Services(paths, settings_service, specs, supervisor, applier, tasks, mbus, vitals, mounter,
                        LinuxUsers())
    dispatcher = Dispatcher(build_registry(services), tasks, mbus.publish)
    await mbus.connect()
    await mbus.subscribe(dispatcher.handle)
    heartbeater = Heartbeater(mbus, settings["agent_id"], lambda: collect_payload(specs.load(), supervisor, vitals),
                              heartbeat_interval(settings))
    return Agent(paths, settings_service, mbus, heartbeater, supervisor, specs)


async def run(paths: Paths) -> int:
    try:
        agent = await configure(paths)
    except SettingsError as e:
        log.error("Cannot configure the agent: %s", e)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    background = [asyncio.create_task(agent.heartbeater.run())]
    background.append(asyncio.create_task(restore_jobs(paths, agent.specs, agent.supervisor)))
    log.info("Agent %s is ready, waiting for the director", agent.settings.settings["agent_id"])
    await stop.wait()
    log.info("Agent stopping")
    for task in background:
        task.cancel()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(agent.mbus.close(), 5)
    return 0


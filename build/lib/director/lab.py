"""The composition root: builds the director's parts from its configuration, starts and stops them in order.
The only place that knows every part; each part gets just what it needs from here."""
from __future__ import annotations

import logging
from pathlib import Path

from boshlab import wire
from boshlab.dav import DavClient, DavConfig

from . import cpi as cpi_port
from .config import Config
from .cpi import CPIError
from .faults import Faults
from .health import HealthMonitor, HealthSettings
from .nats_auth import NatsAuth, NatsAuthError
from .nats_rpc import Agents, Deadlines, NatsRpc
from .operations import Operations
from .store import Store
from .tasks import TaskRunner
from .vms import AgentEnv
from .watch.correlator import Correlator
from .watch.directory import Directory
from .watch.hub import Hub
from .watch.tap import Tap

log = logging.getLogger("director")
NATS_AT_START = 10.0      # seconds start-up waits for NATS before serving the API without it


class Lab:
    def __init__(self, config: Config, cpi: cpi_port.CPI | None = None) -> None:
        self.config = config
        self.store = Store(Path(config.data_dir) / "director.sqlite3")
        self.watch_hub = Hub()           # the watch timeline (docs/watch.md): anything may publish into it
        self.nats_auth = NatsAuth(config.nats_auth_dir, config.nats_monitor_url)
        self.rpc = NatsRpc(self.nats_auth.director_url(config.nats_url) if self.nats_auth.enabled else config.nats_url)
        self.cpi = cpi or cpi_port.load(config.cpi, cpi_port.CPISettings(
            config.stemcell_image, config.lab_name, config.network, config.max_threads))
        self.dav = DavClient(DavConfig(config.blobstore_endpoint, config.blobstore_director_user,
                                       config.blobstore_director_password))
        self.tasks = TaskRunner(self.store.tasks, config.data_dir, config.max_running_tasks)
        agents = Agents(self.rpc, timeout=config.rpc_timeout, poll_interval=config.poll_interval,
                        deadlines=Deadlines(config.agent_task_deadline, config.agent_long_task_deadline,
                                            config.agent_drain_deadline))
        self.health = HealthMonitor(
            self.store.instances,
            HealthSettings(config.agent_timeout, config.health_interval, config.meltdown_percent, config.meltdown_minimum),
            resurrection_enabled=lambda d: self.operations.resurrection_enabled(d),
            locked=lambda d: self.tasks.lock_holder(d) is not None,
            resurrect=lambda d, ids: self.operations.scan_and_fix_task(d, ids),
            nats_steady=lambda: self.rpc.steady_for(config.agent_timeout))
        env = AgentEnv(config.registry_url(), config.agent_mbus, config.agent_blobstore(),
                       config.heartbeat_interval, config.agent_wait_timeout)
        self.operations = Operations(config, self.store, self.cpi, agents, self.dav, self.tasks, self.health, env,
                                     self.nats_auth)
        self.watch_directory = Directory(self.store, config.lab_name)
        self.watch_tap = Tap(lambda: self.nats_auth.monitor_url(config.nats_url), self.watch_hub,
                             Correlator(self.watch_directory.names, timeout=config.rpc_timeout + 1.0),
                             self.watch_directory, config.blobstore_log,
                             dav_director_user=config.blobstore_director_user)
        self.faults = Faults(self.store.faults, self.store.instances, self.store.deployments, self.cpi, self.nats_auth,
                             recreate=lambda d, i: self.operations.scan_and_fix_task(d, [i]),
                             emit=self.watch_hub.publish)

    @property
    def process_uuid(self) -> str:
        return self.rpc.process_uuid

    async def start(self) -> None:
        await self.store.open()
        await self.faults.restore()                     # agents cut off NATS (a fault verb) stay cut off
        try:
            await self.operations.sync_nats_users()     # before anyone connects: the agents of the VMs that exist
        except NatsAuthError as e:
            log.error("NATS users: %s", e)
        failed = await self.tasks.recover()
        if failed:
            log.warning("task(s) %s were running when the director stopped: marked failed", ", ".join(map(str, failed)))
        self.rpc.subscribe(wire.HEARTBEAT_WILDCARD, self.health.on_heartbeat)
        self.watch_tap.start()                          # the timeline hears the director's first messages too
        self.rpc.start()
        if not await self.rpc.wait_connected(NATS_AT_START):
            log.warning("NATS is not reachable at %s yet: serving the API, still trying (see /info)",
                        self.rpc.redacted_url)
        try:
            await self.cpi.setup()
            await self.operations.reconcile()
        except (CPIError, NatsAuthError) as e:   # the API still answers; deploys will name the error
            log.error("could not reconcile the VMs at start-up: %s", e)
        self.health.start()

    async def stop(self) -> None:
        await self.watch_tap.stop()
        self.watch_hub.close_all()
        await self.health.stop()
        await self.tasks.cancel_all()
        if not self.config.keep_vms_on_stop:
            await self.operations.delete_all_vms()
        else:
            log.info("keeping the VMs: a restarted director finds them again (docker compose down deletes them)")
        await self.rpc.close()
        await self.dav.close()
        await self.cpi.close()
        await self.store.close()

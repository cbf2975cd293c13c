"""``python -m director.reaper``: the compose service that makes ``docker compose down`` leave no VM behind.

Agent VMs are containers the director makes, not compose services, so compose cannot remove them; they sit on
the lab's network, so ``down`` could not remove the network either. The director keeps its VMs when it stops
(a restarted director finds them again, as a BOSH director does), and this small service, which the director
depends on, deletes them instead, through the CPI:

* compose stops services in reverse dependency order, so on ``down`` and ``stop`` the director is stopped
  first, then the reaper gets SIGTERM: the director is not running, so the reaper deletes every VM of the lab
  (and the networks the director made for manual networks) before compose removes the lab's network;
* on ``docker compose restart director`` the reaper is not touched: VMs live on;
* when the reaper itself is stopped while the director runs (``restart`` of everything, the reaper being
  recreated by ``up``), it keeps the VMs: the director still owns them.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from .cpi import CPI, CPISettings, load
from .cpi.docker_cpi import compose_project, service_running

log = logging.getLogger("reaper")
REAP_IN_PARALLEL = 8


async def reap(cpi: CPI) -> tuple[int, int]:
    """Delete every VM of the lab (instances and compilation VMs), then the lab's own networks."""
    vms = await cpi.list_vms()
    sem = asyncio.Semaphore(REAP_IN_PARALLEL)

    async def remove(cid: str, name: str) -> None:
        async with sem:
            try:
                await cpi.delete_vm(cid)
            except Exception as e:  # noqa: BLE001 - one VM that cannot go must not keep the others
                log.warning("could not delete VM %s: %s", name, e)
    await asyncio.gather(*(remove(v.cid, v.name) for v in vms))
    nets = await cpi.remove_unused_networks()
    return len(vms), len(nets)


async def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    project = await asyncio.to_thread(compose_project, os.environ.get("COMPOSE_PROJECT_NAME", ""))
    lab = os.environ.get("BOSH_LAB_NAME") or project or "bosh-lab"
    service = os.environ.get("BOSH_LAB_DIRECTOR_SERVICE", "director")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("reaper for lab %r: on stop, deletes the lab's VMs unless the director (service %r) still runs", lab, service)
    await stop.wait()
    running = bool(project) and await asyncio.to_thread(service_running, project, service)
    if running:
        log.info("the director is running: it keeps its VMs")
        return 0
    cpi = load(os.environ.get("BOSH_LAB_CPI", "docker"),
               CPISettings(os.environ.get("BOSH_LAB_STEMCELL_IMAGE", ""), lab, network="-", threads=REAP_IN_PARALLEL))
    try:
        vms, nets = await reap(cpi)
    finally:
        await cpi.close()
    log.info("the lab is going down: deleted %d VM(s) and %d network(s) of lab %r", vms, nets, lab)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

"""``python -m director.reaper``: the compose service that makes ``docker compose down`` leave no VM behind.

Agent VMs are containers the director makes, not compose services, so compose cannot remove them; they sit on
the lab's network, so ``down`` could not remove the network either. The director keeps its VMs when it stops
(a restarted director finds them again, as a BOSH director does), and this small service, which the director
depends on, deletes them instead:

* compose stops services in reverse dependency order, so on ``down`` and ``stop`` the director is stopped
  first, then the reaper gets SIGTERM: the director is not running, so the reaper deletes every VM of the lab
  (and the Docker networks the director made for manual networks) before compose removes the lab's network;
* on ``docker compose restart director`` the reaper is not touched: VMs live on;
* when the reaper itself is stopped while the director runs (``restart`` of everything, the reaper being
  recreated by ``up``), it keeps the VMs: the director still owns them.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from concurrent.futures import ThreadPoolExecutor

import docker
import docker.errors
from docker.models.containers import Container

from .cpi import LABEL_LAB, LABEL_ROLE

log = logging.getLogger("reaper")
COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"


def lab_and_project(cli: docker.DockerClient) -> tuple[str, str]:
    try:
        me = cli.containers.get(socket.gethostname())
        project = str((me.labels or {}).get(COMPOSE_PROJECT, ""))
    except docker.errors.NotFound:
        project = os.environ.get("COMPOSE_PROJECT_NAME", "")
    lab = os.environ.get("BOSH_LAB_NAME") or project or "bosh-lab"
    return lab, project


def director_running(cli: docker.DockerClient, project: str, service: str) -> bool:
    found = cli.containers.list(all=True, filters={"label": [f"{COMPOSE_PROJECT}={project}", f"{COMPOSE_SERVICE}={service}"]})
    return any(c.status in ("running", "restarting") for c in found)


def reap(cli: docker.DockerClient, lab: str) -> tuple[int, int]:
    """Delete every VM of the lab (instances and compilation VMs), then the lab's own networks."""
    vms = [c for c in cli.containers.list(all=True, filters={"label": f"{LABEL_LAB}={lab}"})
           if (c.labels or {}).get(LABEL_ROLE) in ("instance", "compilation")]

    def remove(c: Container) -> None:
        try:
            c.remove(force=True, v=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as e:
            log.warning("could not delete VM %s: %s", c.name, e)
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(remove, vms))
    nets = 0
    for n in cli.networks.list(filters={"label": f"{LABEL_LAB}={lab}"}):
        try:
            n.remove()
            nets += 1
        except docker.errors.APIError as e:
            log.warning("could not delete network %s: %s", n.name, e)
    return len(vms), nets


async def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    cli = docker.from_env()
    lab, project = await asyncio.to_thread(lab_and_project, cli)
    service = os.environ.get("BOSH_LAB_DIRECTOR_SERVICE", "director")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("reaper for lab %r: on stop, deletes the lab's VMs unless the director (service %r) still runs", lab, service)
    await stop.wait()
    running = bool(project) and await asyncio.to_thread(director_running, cli, project, service)
    if running:
        log.info("the director is running: it keeps its VMs")
        return 0
    vms, nets = await asyncio.to_thread(reap, cli, lab)
    log.info("the lab is going down: deleted %d VM(s) and %d network(s) of lab %r", vms, nets, lab)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

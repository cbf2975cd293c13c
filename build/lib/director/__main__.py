"""``python -m director``: the bosh-lab director."""
from __future__ import annotations

import asyncio
import logging
import signal
import sys

from aiohttp import web

from .api import make_apps
from .config import Config
from .lab import Lab
from .nats_auth import NatsAuthError
from .workshop import after_start


async def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    cfg = Config.from_env()
    try:
        lab = Lab(cfg)
    except NatsAuthError as e:
        raise SystemExit(f"director: {e}") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    api, registry = make_apps(cfg, lab.operations, lab.process_uuid, lab.start, lab.stop, faults=lab.faults,
                              watch_hub=lab.watch_hub)
    runners = [web.AppRunner(api), web.AppRunner(registry)]
    for r in runners:
        await r.setup()   # the API app's cleanup_ctx starts the director
    await web.TCPSite(runners[0], "0.0.0.0", cfg.api_port).start()
    await web.TCPSite(runners[1], "0.0.0.0", cfg.registry_port).start()
    logging.getLogger("director").info("director %s ready: API on :%d, registry on :%d", cfg.name, cfg.api_port,
                                       cfg.registry_port)
    background = asyncio.create_task(after_start(lab.operations, cfg))
    await stop.wait()
    logging.getLogger("director").info("shutting down")
    background.cancel()
    await asyncio.gather(background, return_exceptions=True)
    for r in reversed(runners):
        await r.cleanup()   # the API app's cleanup_ctx stops the director (and deletes its VMs if configured)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

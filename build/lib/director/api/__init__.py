"""The director's two HTTP apps: the API (:25555) and the registry (:25889)."""
from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from ..config import Config
from ..faults import Faults
from ..operations import Operations
from ..watch.hub import Hub
from . import faults as fault_routes
from . import instances, registry, routes, watch_ui
from . import watch as watch_routes
from .http import FAULTS, IDENTITY, OPERATIONS, Identity, basic_auth, errors_as_json

VERSION = "0.1.0"
MAX_BODY = 1 << 20     # JSON and manifests; release uploads stream past it (they read request.content)


def make_apps(config: Config, operations: Operations, process_uuid: str,
              start: Callable[[], Awaitable[None]], stop: Callable[[], Awaitable[None]],
              faults: Faults | None = None, watch_hub: Hub | None = None) -> tuple[web.Application, web.Application]:
    """``start``/``stop`` open and close the director's resources with the API app (aiohttp's cleanup_ctx)."""
    api = web.Application(middlewares=[errors_as_json, basic_auth(config.api_user, config.api_password,
                                                                  "BOSH Director", open_paths=("/healthz", "/info"))],
                          client_max_size=MAX_BODY)
    api[OPERATIONS] = operations
    api[IDENTITY] = Identity(VERSION, process_uuid)
    api.add_routes(routes.routes)
    api.add_routes(instances.routes)
    api.add_routes(watch_ui.routes)      # the sequence-diagram page (static files)
    if faults is not None:
        api[FAULTS] = faults
        api.add_routes(fault_routes.routes)
    if watch_hub is not None:          # GET /watch (docs/watch.md)
        api[watch_routes.WATCH_HUB] = watch_hub
        api.add_routes(watch_routes.routes)

        async def end_readers(app: web.Application) -> None:
            watch_hub.close_all()
        api.on_shutdown.append(end_readers)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await start()
        yield
        await stop()
    api.cleanup_ctx.append(lifecycle)

    reg = web.Application(middlewares=[errors_as_json])   # each VM's own credentials: api/registry.py
    reg[OPERATIONS] = operations
    reg.add_routes(registry.routes)
    return api, reg

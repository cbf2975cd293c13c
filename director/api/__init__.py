"""The director's two HTTP apps: the API (:25555) and the registry (:25889)."""
from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from ..config import Config
from ..operations import Operations
from . import instances, registry, routes
from .http import IDENTITY, OPERATIONS, Identity, basic_auth, errors_as_json

VERSION = "0.1.0"
MAX_BODY = 1 << 20     # JSON and manifests; release uploads stream past it (they read request.content)


def make_apps(config: Config, operations: Operations, process_uuid: str,
              start: Callable[[], Awaitable[None]], stop: Callable[[], Awaitable[None]]
              ) -> tuple[web.Application, web.Application]:
    """``start``/``stop`` open and close the director's resources with the API app (aiohttp's cleanup_ctx)."""
    api = web.Application(middlewares=[errors_as_json, basic_auth(config.api_user, config.api_password,
                                                                  "BOSH Director", open_paths=("/healthz", "/info"))],
                          client_max_size=MAX_BODY)
    api[OPERATIONS] = operations
    api[IDENTITY] = Identity(VERSION, process_uuid)
    api.add_routes(routes.routes)
    api.add_routes(instances.routes)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await start()
        yield
        await stop()
    api.cleanup_ctx.append(lifecycle)

    reg = web.Application(middlewares=[errors_as_json])   # each VM's own credentials: api/registry.py
    reg[OPERATIONS] = operations
    reg.add_routes(registry.routes)
    return api, reg

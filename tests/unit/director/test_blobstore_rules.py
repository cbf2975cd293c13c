"""The blobstore's own rules, on the real nginx with the image's config (blobstore/nginx.conf and
overwrite.conf.in): agents read and create blobs, never replace or delete one; the director may do all."""
from __future__ import annotations

import uuid

import aiohttp

from boshlab.dav import blob_path
from boshlab.httpauth import basic_auth
from tests.support.dav_server import DavServer


async def put(dav: DavServer, blob: str, user: str, password: str, body: bytes) -> int:
    async with aiohttp.ClientSession() as s, s.put(dav.endpoint + blob_path(blob), data=body,
                                                   headers=basic_auth(user, password)) as r:
        return r.status


async def get(dav: DavServer, blob: str) -> bytes:
    async with aiohttp.ClientSession() as s, s.get(dav.endpoint + blob_path(blob),
                                                   headers=basic_auth(dav.director_user, dav.director_password)) as r:
        assert r.status == 200
        return await r.read()


async def test_an_agent_creates_blobs_but_cannot_replace_one(dav_server: DavServer) -> None:
    d = dav_server
    blob = str(uuid.uuid4())
    assert await put(d, blob, d.agent_user, d.agent_password, b"compiled") == 201
    assert await put(d, blob, d.agent_user, d.agent_password, b"evil") == 409
    assert await get(d, blob) == b"compiled", "the blob an agent may not replace is unchanged"
    assert await put(d, blob, d.director_user, d.director_password, b"again") in (201, 204)
    assert await get(d, blob) == b"again"
    async with aiohttp.ClientSession() as s, s.delete(d.endpoint + blob_path(blob),
                                                      headers=basic_auth(d.agent_user, d.agent_password)) as r:
        assert r.status in (401, 403)

"""The blobstore's own rules, on the real nginx with the image's config (blobstore/nginx.conf and
overwrite.conf.in): agents read and create blobs, never replace or delete one; the director may do all."""
from __future__ import annotations

import json
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


async def status_of(dav: DavServer, method: str, path: str, user: str | None, password: str = "") -> tuple[int, bytes]:
    headers = basic_auth(user, password) if user else {}
    async with aiohttp.ClientSession() as s, s.request(method, dav.endpoint + path, headers=headers) as r:
        return r.status, await r.read()


async def test_the_director_lists_blobs_as_json(dav_server: DavServer) -> None:
    d = dav_server
    blob = str(uuid.uuid4())
    assert await put(d, blob, d.agent_user, d.agent_password, b"listed") == 201
    xx = blob_path(blob).split("/")[1]
    status, body = await status_of(d, "GET", "/", d.director_user, d.director_password)
    assert status == 200
    assert {"name": xx, "type": "directory"}.items() <= next(e for e in json.loads(body) if e["name"] == xx).items()
    status, body = await status_of(d, "GET", f"/{xx}/", d.director_user, d.director_password)
    assert status == 200
    entry = next(e for e in json.loads(body) if e["name"] == blob)
    assert entry["type"] == "file" and entry["size"] == len(b"listed")


async def test_agents_and_anonymous_cannot_list(dav_server: DavServer) -> None:
    d = dav_server
    blob = str(uuid.uuid4())
    assert await put(d, blob, d.director_user, d.director_password, b"secret id") == 201
    xx = blob_path(blob).split("/")[1]
    for path in ("/", f"/{xx}/"):
        status, body = await status_of(d, "GET", path, d.agent_user, d.agent_password)
        assert status in (401, 403), path
        assert blob.encode() not in body
        assert (await status_of(d, "GET", path, None))[0] == 401, path
    # the blob itself stays readable by an agent; odd paths stay 404 for users, 401 for anonymous
    async with aiohttp.ClientSession() as s, s.get(d.endpoint + blob_path(blob), headers=basic_auth(d.agent_user, d.agent_password)) as r:
        assert r.status == 200
    assert (await status_of(d, "GET", "/nothing-here", d.director_user, d.director_password))[0] == 404
    assert (await status_of(d, "GET", "/nothing-here", None))[0] == 401
    # listing is read-only, even for the director
    assert (await status_of(d, "DELETE", f"/{xx}/", d.director_user, d.director_password))[0] in (403, 405)

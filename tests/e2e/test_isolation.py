"""Issue 8 end to end: no VM can read or command another. Each VM has NATS credentials of its own (it hears
only agent.<its id>, publishes only replies and its own heartbeats), registry credentials good for its own
settings only, and blobstore credentials that create blobs but never replace one; a deleted VM's NATS
credentials stop working."""
from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import nats
import pytest

from boshlab.dav import blob_path
from boshlab.httpauth import basic_auth

from .conftest import Lab
from .deployments_helpers import by_name, group, instances, manifest, vm_file

pytestmark = pytest.mark.e2e


def from_host(lab: Lab, url: str) -> str:
    """A URL the VM uses (nats://user:pw@nats:4222) as the host reaches it (the published port)."""
    u = urlsplit(url)
    userinfo = u.netloc.rsplit("@", 1)[0]
    return urlunsplit((u.scheme, f"{userinfo}@127.0.0.1:{lab.ports['nats']}", u.path, "", ""))


def settings_of(lab: Lab, cid: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(vm_file(lab, cid, "/var/vcap/bosh/settings.json"))
    return doc


async def test_no_vm_can_read_or_command_another(lab: Lab, dummy_release: str) -> None:
    name = "isolated"
    assert lab.deploy(manifest(name, [group("app", 2)]))["state"] == "done"
    try:
        rows = by_name(instances(lab, name))
        a, b = rows["app/0"], rows["app/1"]
        sa = settings_of(lab, a["vm_cid"])
        assert urlsplit(sa["mbus"]).username == a["agent_id"], "each agent has a NATS user of its own"
        assert "***" in lab.agent_log(a["vm_cid"]) and urlsplit(sa["mbus"]).password not in lab.agent_log(a["vm_cid"])

        # NATS: A cannot hear B's requests, cannot command B, cannot forge B's heartbeat; A's replies work.
        errors: list[str] = []

        async def on_error(e: Exception) -> None:
            errors.append(str(e))
        nc = await nats.connect(from_host(lab, sa["mbus"]), error_cb=on_error, allow_reconnect=False)
        try:
            await nc.subscribe(f"agent.{b['agent_id']}")
            await nc.publish(f"agent.{b['agent_id']}", json.dumps(
                {"protocol": 3, "method": "ping", "arguments": [], "reply_to": "director.x.y.z"}).encode())
            await nc.publish(f"hm.agent.heartbeat.{b['agent_id']}", b"{}")
            await nc.publish(f"hm.agent.heartbeat.{a['agent_id']}", b"{}")
            await nc.flush()
            await asyncio.sleep(0.5)
        finally:
            await nc.close()
        assert any(f'subscription to "agent.{b["agent_id"]}"' in e for e in errors), errors
        assert any(f'publish to "agent.{b["agent_id"]}"' in e for e in errors), errors
        assert any(f'publish to "hm.agent.heartbeat.{b["agent_id"]}"' in e for e in errors), errors
        assert not any(f'hm.agent.heartbeat.{a["agent_id"]}"' in e for e in errors), errors

        # Registry: A's credentials read A's settings, not B's.
        user_data = json.loads(vm_file(lab, a["vm_cid"], "/var/vcap/bosh/user_data.json"))
        endpoint = user_data["registry"]["endpoint"]
        assert "admin" not in urlsplit(endpoint).netloc, "the registry is not the API's admin account"

        def registry_status(cid: str) -> str:
            return lab.vm_exec(a["vm_cid"], "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                               f"{endpoint}/instances/{cid}/settings").strip()
        assert registry_status(a["vm_cid"]) == "200"
        assert registry_status(b["vm_cid"]) == "401"

        # Blobstore: an agent creates blobs but cannot replace one (e.g. its own job's blob).
        spec = json.loads(vm_file(lab, a["vm_cid"], "/var/vcap/bosh/spec.json"))
        job_blob = spec["job"]["templates"][0]["blobstore_id"]
        opts = sa["blobstore"]["options"]
        async with aiohttp.ClientSession() as s, s.put(
                f"http://127.0.0.1:{lab.ports['blobstore']}{blob_path(job_blob)}", data=b"broken",
                headers=basic_auth(opts["user"], opts["password"])) as r:
            assert r.status == 409, await r.text()
    finally:
        assert lab.request("DELETE", f"/deployments/{name}")[0] == 202
        lab.wait_task(next(t["id"] for t in lab.get("/tasks?limit=5") if t["deployment"] == name))

    # The deleted VMs' NATS credentials stop working.
    with pytest.raises(Exception, match="(?i)authorization"):
        await nats.connect(from_host(lab, sa["mbus"]), allow_reconnect=False, max_reconnect_attempts=0,
                           connect_timeout=3)

"""``GET /watch`` on a whole director (fake CPI, real agents in-process, real nats-server and nginx): a deploy
shows as paired requests and replies named by instance, ``get_task`` polls folded into the long-running
actions, blob requests from the access log; agent-like traffic published by hand shows up on the live
JSONL and SSE streams."""
from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import nats
import pytest

from boshlab import wire
from boshlab.httpauth import basic_auth
from tests.support.dav_server import DavServer
from tests.support.director_harness import Director, dummy_manifest, wait_until
from tests.unit.director.conftest import Directors

Event = dict[str, Any]


@pytest.fixture
async def watched(directors: Directors, dav_server: DavServer) -> Director:
    return await directors.make(upload=False, blobstore_log=str(dav_server.watch_log))


@pytest.fixture
async def http(watched: Director) -> AsyncIterator[aiohttp.ClientSession]:
    auth = basic_auth(watched.config.api_user, watched.config.api_password)
    async with aiohttp.ClientSession(f"http://127.0.0.1:{watched.config.api_port}", headers=auth,
                                     timeout=aiohttp.ClientTimeout(total=30)) as s:
        yield s


async def buffered(http: aiohttp.ClientSession, **params: str) -> list[Event]:
    async with http.get("/watch", params={"follow": "0", **params}) as r:
        assert r.status == 200, await r.text()
        assert r.content_type == "application/x-ndjson"
        return [json.loads(line) for line in (await r.text()).splitlines() if line.strip()]


async def test_a_deploy_shows_as_paired_calls_named_by_instance_with_polls_folded_and_blobs(
        watched: Director, http: aiohttp.ClientSession) -> None:
    await watched.upload_release()
    await watched.deploy(dummy_manifest("dep"))
    row, = await watched.instances("dep")

    async def settled() -> list[Event]:
        events = await buffered(http)
        replies = [e for e in events if e["kind"] == "reply" and e["instance"] == "app/0" and e["method"] == "apply"]
        return events if replies else []
    events = await wait_until(settled, 10, what="the apply reply on the timeline")
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    by_call: dict[str, list[Event]] = {}
    for e in events:
        if e.get("call"):
            by_call.setdefault(e["call"], []).append(e)

    apply, = [e for e in events if e["kind"] == "reply" and e["method"] == "apply" and e["instance"] == "app/0"]
    assert apply["state"] == "done" and apply["deployment"] == "dep" and apply["instance_id"] == row.id
    assert apply["agent_id"] == row.agent_id and apply["dst"] == "app/0" and apply["latency_ms"] > 0
    assert "polls" in apply and apply["agent_task_id"]
    kinds = [e["kind"] for e in by_call[apply["call"]]]
    assert kinds == ["request", "progress", "reply"], kinds       # one request, one progress, one reply
    request = by_call[apply["call"]][0]
    assert request["arguments"][0]["deployment"] == "dep" and request["state"] == "sent"
    # the get_task polls were folded: none of them is an event of its own for this task
    assert not [e for e in events if e.get("method") == "get_task" and e.get("arguments") == [apply["agent_task_id"]]]

    compiled = [e for e in events if e["kind"] == "reply" and e["method"] == "compile_package"]
    assert compiled and all(e["state"] == "done" for e in compiled)
    assert all(e["instance"].startswith("compilation/") and e["deployment"] is None for e in compiled)
    assert all([x["kind"] for x in by_call[e["call"]]] == ["request", "progress", "reply"] for e in compiled)

    pings = [e for e in events if e["kind"] == "reply" and e["method"] == "ping" and e["instance"] == "app/0"]
    assert pings and pings[-1]["value"] == "pong" and pings[-1]["state"] == "done"

    blobs = [e for e in events if e["kind"] == "blob"]
    puts = [e for e in blobs if e["blob"]["method"] == "PUT" and e["src"] == "director"]
    assert puts and all(e["blob"]["status"] in (201, 204) and e["dst"] == "blobstore" for e in puts)
    gets = [e for e in blobs if e["blob"]["method"] == "GET" and e["blob"].get("user") == "agent"]
    assert gets and all(e["blob"]["status"] == 200 and e["blob"]["bytes"] > 0 for e in gets)

    # filters
    only_apply = await buffered(http, method="apply")
    assert only_apply and {e["method"] for e in only_apply} == {"apply"}
    on_app = await buffered(http, instance="app/0", kind="reply")
    assert on_app and all(e["instance"] == "app/0" and e["kind"] == "reply" for e in on_app)
    assert await buffered(http, deployment="no-such", kind="reply") == []
    last = await buffered(http, history="3")
    assert len(last) == 3 and [e["seq"] for e in last] == list(range(last[0]["seq"], last[0]["seq"] + 3))
    after = await buffered(http, since=str(apply["seq"]))
    assert after and after[0]["seq"] == apply["seq"] + 1
    both = await buffered(http, since=str(apply["seq"]), history="2")
    assert len(both) == 2 and all(e["seq"] > apply["seq"] + 1 for e in both)


@pytest.mark.parametrize("query, name", [("since=x", "since"), ("history=-1", "history"), ("follow=maybe", "follow"),
                                         ("kind=bogus", "kind"), ("colour=red", "colour"), ("instance=" + "x" * 300, "instance")])
async def test_a_bad_parameter_is_a_400_naming_it(http: aiohttp.ClientSession, query: str, name: str) -> None:
    async with http.get(f"/watch?{query}") as r:
        assert r.status == 400
        body = await r.json()
        assert name in body["description"]


async def test_the_director_credentials_are_needed(watched: Director) -> None:
    async with aiohttp.ClientSession() as s, \
            s.get(f"http://127.0.0.1:{watched.config.api_port}/watch?follow=0") as r:
        assert r.status == 401


async def publish_agent_traffic(url: str, agent: str, request_id: str) -> None:
    nc = await nats.connect(url, connect_timeout=3, allow_reconnect=False)
    try:
        reply_to = wire.reply_subject("proc", agent, request_id)
        await nc.publish(f"agent.{agent}", wire.encode_request("get_state", ["full"], reply_to))
        await nc.flush(3)
        await asyncio.sleep(0.05)
        await nc.publish(reply_to, wire.encode_value({"job_state": "running"}))
        await nc.flush(3)
    finally:
        await nc.close()


async def test_the_jsonl_stream_shows_traffic_as_it_happens(watched: Director, http: aiohttp.ClientSession) -> None:
    async with http.get("/watch", params={"instance": "agent-x"}) as r:
        assert r.status == 200 and r.content_type == "application/x-ndjson"
        await wait_until(lambda: watched.lab.watch_hub.subscribers > 0, 5, what="the reader subscribed")
        await publish_agent_traffic(watched.config.nats_url, "agent-x", "req-1")
        first = json.loads(await asyncio.wait_for(r.content.readline(), 10))
        second = json.loads(await asyncio.wait_for(r.content.readline(), 10))
    assert (first["kind"], first["state"], first["call"], first["method"]) == ("request", "sent", "req-1", "get_state")
    assert (second["kind"], second["state"], second["call"]) == ("reply", "done", "req-1")
    assert second["value"] == {"job_state": "running"} and second["agent_id"] == "agent-x"
    assert second["latency_ms"] >= 40 and second["seq"] > first["seq"]
    await wait_until(lambda: watched.lab.watch_hub.subscribers == 0, 5, what="the reader gone")


async def read_sse(r: aiohttp.ClientResponse, count: int) -> list[tuple[str, Event]]:
    """``count`` SSE events: (id, data); comments (keepalives) are skipped."""
    out: list[tuple[str, Event]] = []
    block: dict[str, str] = {}
    while len(out) < count:
        line = (await asyncio.wait_for(r.content.readline(), 10)).decode().rstrip("\n")
        if line == "":
            if "data" in block:
                assert block.get("event") == "timeline"
                out.append((block.get("id", ""), json.loads(block["data"])))
            block = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(": ")
            block[key] = value
    return out


async def test_server_sent_events_with_ids_resume_after_last_event_id(watched: Director, http: aiohttp.ClientSession,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from director.api import watch as watch_api
    monkeypatch.setattr(watch_api, "KEEPALIVE", 0.2)
    hub = watched.lab.watch_hub
    sse = {"Accept": "text/event-stream"}
    async with http.get("/watch", params={"instance": "agent-y"}, headers=sse) as r:
        assert r.status == 200 and r.content_type == "text/event-stream"
        await wait_until(lambda: hub.subscribers > 0, 5, what="the reader subscribed")
        await asyncio.sleep(0.5)                     # a keepalive or two first: skipped by the reader
        await publish_agent_traffic(watched.config.nats_url, "agent-y", "req-2")
        (id1, e1), (id2, e2) = await read_sse(r, 2)
    assert (e1["kind"], e2["kind"]) == ("request", "reply") and e2["call"] == "req-2"
    assert (int(id1), int(id2)) == (e1["seq"], e2["seq"])
    # resuming from the first id gives the reply again, and nothing before it
    async with http.get("/watch", params={"instance": "agent-y", "follow": "0"},
                        headers={**sse, "Last-Event-ID": id1}) as r:
        text = await r.text()
    assert f"id: {id2}\n" in text and f"id: {id1}\n" not in text and "event: timeline" in text


async def test_a_keepalive_comment_while_nothing_happens(watched: Director, http: aiohttp.ClientSession,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from director.api import watch as watch_api
    monkeypatch.setattr(watch_api, "KEEPALIVE", 0.1)
    async with http.get("/watch", params={"instance": "nobody"}, headers={"Accept": "text/event-stream"}) as r:
        lines = [await asyncio.wait_for(r.content.readline(), 5) for _ in range(4)]
    assert b": keepalive\n" in lines


async def test_the_timeline_goes_on_and_the_director_serves_when_nats_is_unreachable(
        directors: Directors) -> None:
    d = await directors.make(upload=False, nats_url="nats://nats:nats@127.0.0.1:1")
    d.lab.watch_hub.publish({"kind": "note", "text": "still here"})
    async with aiohttp.ClientSession(headers=basic_auth(d.config.api_user, d.config.api_password)) as s, \
            s.get(f"http://127.0.0.1:{d.config.api_port}/watch?follow=0") as r:
        assert r.status == 200
        events = [json.loads(x) for x in (await r.text()).splitlines()]
    assert [e["text"] for e in events if e["kind"] == "note"] == ["still here"]
    assert not d.lab.watch_tap.connected and d.lab.watch_tap.last_error

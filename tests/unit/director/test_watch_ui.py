"""The sequence-diagram page (director/watch/ui/, served by director/api/watch_ui.py) in headless Chromium.

The real page and the real routes, behind the real basic-auth middleware, on a tiny aiohttp app whose
``GET /watch`` is a fake: server-sent events the test publishes (a scripted drain → stop → apply → start of
redis/0, with the apply's progress and a blob GET). The test checks the arrows appear in order, the apply's
activation bar, the JSON of a clicked arrow, pause/step, the filters, replay at speed "instant", and a bounded
DOM under a 50-VM deploy's worth of events. A screenshot is kept in .artifacts/watch-ui-unit.png."""
from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import ClientSession, web

from director.api import watch_ui
from director.api.http import basic_auth, errors_as_json
from tests.support.chromium import PageServer, browser_errors, chromium, rows, screenshot, wait_for
from tests.support.dav_server import DavServer
from tests.support.director_harness import dummy_manifest
from tests.unit.director.conftest import Directors

USER, PASSWORD = "admin", "s3cret"
AUTH = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
T0 = 1764547200.0


# ---- the scripted events ---------------------------------------------------------------------------------------

def call(seq: int, ts: float, method: str, instance: str, args: list[Any], value: Any, latency: float,
         polls: int | None = None, deployment: str = "redis-solo") -> list[dict[str, Any]]:
    """A request and its reply (and, when ``polls`` is given, the progress of a long-running action)."""
    agent = f"agent-{instance.replace('/', '-')}"
    cid = f"call-{seq}"
    base = {"deployment": deployment, "instance": instance, "instance_id": f"id-{instance}", "agent_id": agent,
            "subject": f"agent.{agent}", "method": method, "call": cid, "arguments": args}
    req = {"method": method, "arguments": args, "reply_to": f"director.d1.{agent}.{cid}"}
    out: list[dict[str, Any]] = [dict(base, seq=seq, ts=ts, kind="request", src="director", dst=instance, state="sent",
                                      message=req)]
    if polls is not None:
        task = f"task-{method}-{seq}"
        out.append(dict(base, seq=seq + 1, ts=ts + 0.01, kind="progress", src=instance, dst="director",
                        state="running", agent_task_id=task, message={"value": {"agent_task_id": task, "state": "running"}}))
        out.append(dict(base, seq=seq + 2, ts=ts + latency / 1000, kind="reply", src=instance, dst="director",
                        state="done", agent_task_id=task, latency_ms=latency, polls=polls, value=value,
                        message={"value": value}))
    else:
        out.append(dict(base, seq=seq + 1, ts=ts + latency / 1000, kind="reply", src=instance, dst="director",
                        state="done", latency_ms=latency, value=value, message={"value": value}))
    return out


APPLY_SPEC = {"deployment": "redis-solo", "job": {"name": "redis", "templates": [{"name": "redis", "version": "3f2a"}]},
              "index": 0, "properties": {"redis": {"port": 7000, "password": "supersecret"}},
              "configuration_hash": "9c1185a5c5e9fc54612808977ee8f548b2258d31"}


def redeploy_script(seq: int = 1, ts: float = T0, instance: str = "redis/0") -> list[dict[str, Any]]:
    """drain → stop → (blob GET) → apply (progress, 5 polls, 1.2 s) → start, as the correlator reports them."""
    evs: list[dict[str, Any]] = []
    evs += call(seq, ts, "drain", instance, ["update", {"deployment": "redis-solo"}], 0, 3.2)
    evs += call(seq + 2, ts + 0.1, "stop", instance, [], "stopped", 410.0, polls=2)
    evs.append({"seq": seq + 5, "ts": ts + 0.6, "kind": "blob", "src": instance, "dst": "blobstore",
                "deployment": "redis-solo", "instance": instance,
                "blob": {"method": "GET", "id": "5e1d6b0a-1c0e-4a55-9d5a-4f9d2e1f3a77", "path": "/3f/5e1d6b0a",
                         "status": 200, "bytes": 2_345_678, "duration_ms": 41.0, "user": "agent"}})
    evs += call(seq + 6, ts + 0.7, "apply", instance, [APPLY_SPEC], "applied", 1204.5, polls=5)
    evs += call(seq + 9, ts + 2.0, "start", instance, [], "started", 35.0)
    evs.append({"seq": seq + 11, "ts": ts + 3.0, "kind": "heartbeats", "src": "nats", "dst": "director",
                "deployment": "redis-solo",
                "heartbeats": {"count": 4, "window_s": 10, "instances": {instance: "running", "redis/1": "running"},
                               "changed": [instance]}})
    return evs


def other_instance(seq: int, ts: float = T0 + 5) -> list[dict[str, Any]]:
    return call(seq, ts, "get_state", "redis/1", [], {"job_state": "running"}, 12.0)


# ---- the fake director -----------------------------------------------------------------------------------------

class FakeDirector(PageServer):
    """The real watch_ui routes and basic auth; a fake GET /watch (SSE) fed by ``publish``; a recorded
    session at /replay.jsonl. Runs in a thread of its own so the test can block on the browser."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.streams: set[asyncio.Queue[dict[str, Any]]] = set()
        self.watch_requests: list[dict[str, Any]] = []
        self.replay = ""
        super().__init__()

    def app(self) -> web.Application:
        app = web.Application(middlewares=[errors_as_json, basic_auth(USER, PASSWORD, "BOSH Director")])
        app.router.add_get("/replay.jsonl", self.get_replay)
        return app

    def end_streams(self) -> None:
        for q in list(self.streams):
            q.put_nowait({})

    def publish(self, *events: dict[str, Any], delay: float = 0.0) -> None:
        for ev in events:
            async def _one(ev: dict[str, Any] = ev) -> None:
                self.events.append(ev)
                for q in self.streams:
                    q.put_nowait(ev)
            asyncio.run_coroutine_threadsafe(_one(), self.loop).result(5)
            if delay:
                time.sleep(delay)

    async def watch(self, request: web.Request) -> web.StreamResponse:
        self.watch_requests.append({"authorization": request.headers.get("Authorization"),
                                    "accept": request.headers.get("Accept"), "query": dict(request.query),
                                    "last_event_id": request.headers.get("Last-Event-ID")})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        history = int(request.query.get("history", "0"))
        since = int(request.query.get("since", "0"))
        backlog = [e for e in self.events if e["seq"] > since] if since else (self.events[-history:] if history else [])
        self.streams.add(q)
        try:
            for ev in backlog:
                await self._send(resp, ev)
            while True:
                ev = await q.get()
                if not ev:
                    break
                await self._send(resp, ev)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.streams.discard(q)
        return resp

    @staticmethod
    async def _send(resp: web.StreamResponse, ev: dict[str, Any]) -> None:
        await resp.write(f"id: {ev['seq']}\nevent: timeline\ndata: {json.dumps(ev)}\n\n".encode())

    async def get_replay(self, request: web.Request) -> web.Response:
        return web.Response(text=self.replay, content_type="application/x-ndjson")


@pytest.fixture
def director() -> Iterator[FakeDirector]:
    d = FakeDirector()
    d.start()
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium(auth=(USER, PASSWORD)) as drv:
        yield drv


def open_page(drv: Any, director: FakeDirector, query: str = "deployment=redis-solo") -> None:
    drv.get(f"{director.url}/watch/ui?{query}")
    wait_for("the page's script", lambda: drv.execute_script("return !!window.watchUI"), timeout=10)


def status(drv: Any) -> str:
    state: str = drv.execute_script("return document.getElementById('status').dataset.state")
    return state


def stats(drv: Any) -> dict[str, Any]:
    out: dict[str, Any] = drv.execute_script("return window.watchUI.stats()")
    return out


def methods_of(drv: Any, instance: str, kind: str) -> list[str]:
    return [r["method"] for r in rows(drv, instance=instance, kind=kind)]


# ---- the routes (no browser) ----------------------------------------------------------------------------------

async def test_routes_serve_only_the_pages_files_behind_basic_auth() -> None:
    app = web.Application(middlewares=[errors_as_json, basic_auth(USER, PASSWORD, "BOSH Director")])
    app.add_routes(watch_ui.routes)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = int(runner.addresses[0][1])
    base = f"http://127.0.0.1:{port}"
    try:
        async with ClientSession() as http:
            async with http.get(f"{base}/watch/ui") as r:
                assert r.status == 401
            auth = {"Authorization": AUTH}
            for path, ctype, needle in (("/watch/ui", "text/html", "id=\"diagram\""),
                                        ("/watch/ui/", "text/html", "app.js"),
                                        ("/watch/ui/index.html", "text/html", "app.css"),
                                        ("/watch/ui/app.js", "text/javascript", "EventSource"),
                                        ("/watch/ui/app.css", "text/css", "--ink")):
                async with http.get(base + path, headers=auth) as r:
                    assert r.status == 200, path
                    assert r.content_type == ctype and r.charset == "utf-8", (path, r.headers)
                    assert r.headers["Cache-Control"] == "no-cache"
                    assert "default-src 'self'" in r.headers["Content-Security-Policy"]
                    assert needle in await r.text(), path
            for path in ("/watch/ui/nope.js", "/watch/ui/..%2F..%2Fapi%2Fhttp.py", "/watch/ui/%2e%2e%2fwatch_ui.py",
                         "/watch/ui/../api/http.py", "/watch/ui/ui", "/watch/ui/app.js/x"):
                async with http.get(base + path, headers=auth) as r:
                    assert r.status == 404, (path, r.status)
                    assert "def " not in await r.text()
    finally:
        await runner.cleanup()


def test_the_page_loads_nothing_from_elsewhere() -> None:
    """No CDN, no web fonts, no absolute URLs in the page's files."""
    for name in watch_ui.FILES:
        text = (watch_ui.UI_DIR / name).read_text().replace("http://www.w3.org/2000/svg", "")   # a namespace, not a URL
        for needle in ("http://", "https://", "//cdn", "@import", "@font-face"):
            assert needle not in text, (name, needle)
        assert not re.search(r"url\((?!#)", text), name       # only url(#marker) references


# ---- the page in Chromium --------------------------------------------------------------------------------------

def test_arrows_appear_in_order_and_a_click_shows_the_json(browser: Any, director: FakeDirector) -> None:
    open_page(browser, director)
    wait_for("the stream to connect", lambda: status(browser) == "connected", timeout=10)
    director.publish(*redeploy_script(), delay=0.05)
    director.publish(*other_instance(20))
    got = wait_for("drain, stop, apply, start requests of redis/0",
                   lambda: (m := methods_of(browser, "redis/0", "request")) == ["drain", "stop", "apply", "start"] and m)
    assert got == ["drain", "stop", "apply", "start"]
    wait_for("all 14 events drawn", lambda: stats(browser)["drawn"] == 14)
    assert methods_of(browser, "redis/0", "reply") == ["drain", "stop", "apply", "start"]
    seqs = [int(r["seq"]) for r in rows(browser, instance="redis/0", kind="request")]
    assert seqs == sorted(seqs)

    # the lifelines: director, nats, blobstore, then the instances sorted by group/index
    heads = browser.execute_script("return Array.from(document.querySelectorAll('.lifehead')).map(e => e.dataset.lifeline)")
    assert heads == ["director", "nats", "blobstore", "redis/0", "redis/1"], heads

    # the long-running actions as activations, labelled with their time and polls
    acts = {r["method"]: r for r in rows(browser, instance="redis/0", kind="activation")}
    assert set(acts) == {"stop", "apply"}, acts
    assert acts["apply"]["text"] == "apply … 1.2 s (5 polls)", acts["apply"]
    assert "open" not in acts["apply"]["cls"]
    blob = rows(browser, instance="redis/0", kind="blob")
    assert len(blob) == 1 and blob[0]["method"] == "GET" and "5e1d6b0a-1c0…" in blob[0]["text"] and "2.2 MiB" in blob[0]["text"]
    assert rows(browser, kind="heartbeats")
    dots = browser.execute_script("return Array.from(document.querySelectorAll('#diagram .marks circle.hb')).map(c => c.getAttribute('class'))")
    assert dots == ["hb ok changed", "hb ok"], dots        # redis/0 (its state changed), redis/1: above the bars

    # click the apply reply: its full JSON in #detail
    browser.find_element("css selector", '#diagram g.row[data-kind="reply"][data-method="apply"][data-instance="redis/0"]').click()
    detail = wait_for("the apply's JSON", lambda: (t := browser.find_element("id", "detail").text) and '"method": "apply"' in t and t)
    for needle in ('"kind": "reply"', '"method": "apply"', '"latency_ms": 1204.5', '"polls": 5', '"value": "applied"',
                   '"message": {', '"arguments": [', '"password": "supersecret"'):
        assert needle in detail, (needle, detail)
    assert "reply · apply · redis/0 · #9" in detail
    assert browser.find_elements("css selector", '#diagram .sel[data-seq="9"]')

    # the same call's request is one click away
    browser.find_element("css selector", "#detail-call a").click()
    assert '"kind": "request"' in wait_for("the request's JSON", lambda: (t := browser.find_element("id", "detail-json").text)
                                           and '"kind": "request"' in t and t)

    # the event stream carried the API's credentials (given to Chromium by CDP) and asked for SSE
    assert director.watch_requests, "the page never opened GET /watch"
    first = director.watch_requests[0]
    assert first["authorization"] == AUTH and first["accept"] == "text/event-stream", first
    assert first["query"] == {"deployment": "redis-solo", "history": "500"}, first
    assert not browser_errors(browser), browser_errors(browser)
    browser.find_element("css selector", '#diagram g.row[data-kind="reply"][data-method="apply"][data-instance="redis/0"]').click()
    browser.execute_script("document.getElementById('scroller').scrollLeft = 0")   # the click scrolled the row into view
    shot = screenshot(browser, "watch-ui-unit.png")
    assert shot.stat().st_size > 10_000


def test_history_and_activation_while_running(browser: Any, director: FakeDirector) -> None:
    """What was buffered before the page opened is drawn (history); an action still running is an open bar."""
    script = redeploy_script()
    director.publish(*script[:8])               # up to apply's progress: apply is running
    open_page(browser, director)
    wait_for("the history", lambda: stats(browser)["drawn"] == 8)
    acts = rows(browser, instance="redis/0", kind="activation")
    apply = [a for a in acts if a["method"] == "apply"]
    assert apply and "open" in apply[0]["cls"] and apply[0]["text"] == "apply … running", acts
    director.publish(*script[8:])
    wait_for("apply's reply to close the bar",
             lambda: any(a["method"] == "apply" and "open" not in a["cls"] for a in rows(browser, kind="activation")))


def test_pause_buffers_and_step_draws_one(browser: Any, director: FakeDirector) -> None:
    open_page(browser, director)
    wait_for("the stream to connect", lambda: status(browser) == "connected", timeout=10)
    script = redeploy_script()
    director.publish(*script[:2])
    wait_for("the drain", lambda: stats(browser)["drawn"] == 2)
    browser.find_element("id", "pause").click()
    assert browser.find_element("id", "pause").text == "▶ Resume"
    director.publish(*script[2:5])
    wait_for("three buffered events", lambda: stats(browser)["pending"] == 3)
    assert stats(browser)["drawn"] == 2
    assert "3 buffered" in browser.find_element("id", "counts").text
    browser.find_element("id", "step").click()
    wait_for("one more drawn", lambda: stats(browser)["drawn"] == 3)
    assert methods_of(browser, "redis/0", "request") == ["drain", "stop"]
    assert stats(browser)["pending"] == 2
    browser.find_element("id", "pause").click()          # resume: the buffer is drawn
    wait_for("the rest drawn", lambda: stats(browser)["drawn"] == 5 and stats(browser)["pending"] == 0)
    assert not browser.find_element("id", "step").is_enabled()


def test_filters_by_instance_and_method(browser: Any, director: FakeDirector) -> None:
    from selenium.webdriver.support.ui import Select
    director.publish(*redeploy_script(), *other_instance(20))
    open_page(browser, director)
    wait_for("everything drawn", lambda: stats(browser)["drawn"] == 14)
    instance = Select(browser.find_element("id", "f-instance"))
    assert [o.get_attribute("value") for o in instance.options] == ["", "redis", "redis/0", "redis/1"]
    instance.select_by_value("redis/1")
    wait_for("only redis/1", lambda: {r["instance"] for r in rows(browser, kind="request")} == {"redis/1"})
    assert {r["instance"] for r in rows(browser, kind="reply")} == {"redis/1"}
    assert not rows(browser, kind="blob")
    heads = browser.execute_script("return Array.from(document.querySelectorAll('.lifehead')).map(e => e.dataset.lifeline)")
    assert heads == ["director", "nats", "blobstore", "redis/1"]
    instance.select_by_value("")
    method = Select(browser.find_element("id", "f-method"))
    method.select_by_value("apply")
    wait_for("only apply", lambda: {r["method"] for r in rows(browser)} == {"apply"})
    assert [r["kind"] for r in rows(browser)] == ["request", "progress", "reply", "activation"]
    method.select_by_value("")
    wait_for("everything again", lambda: stats(browser)["drawn"] == 14)


def test_replay_a_recorded_session_at_speed_instant(browser: Any, director: FakeDirector) -> None:
    director.replay = "\n".join(json.dumps(e) for e in redeploy_script(seq=101, instance="redis/2")) + "\nnot json\n\n"
    open_page(browser, director, "replay=/replay.jsonl&speed=instant")
    wait_for("the replay", lambda: status(browser) == "replay-done")
    wait_for("the replayed arrows drawn", lambda: methods_of(browser, "redis/2", "request") == ["drain", "stop", "apply", "start"])
    assert stats(browser)["drawn"] == 12 and stats(browser)["mode"] == "replay"
    assert not director.watch_requests, "a replay does not open the live stream"
    assert browser.find_element("id", "speed").get_attribute("value") == "0"
    # at 10×: the apply's 1.2 s takes about 0.12 s, the whole 3 s session about 0.3 s
    open_page(browser, director, "replay=/replay.jsonl&speed=10")
    wait_for("the replay at 10x", lambda: status(browser) == "replay-done", timeout=10)
    wait_for("the replayed arrows drawn", lambda: stats(browser)["drawn"] == 12)
    # back to live
    browser.find_element("id", "live").click()
    wait_for("the live stream", lambda: status(browser) == "connected", timeout=10)
    assert director.watch_requests


def test_fifty_vms_keep_the_dom_bounded(browser: Any, director: FakeDirector) -> None:
    """A 50-VM deploy's worth of events (3,000) at once: at most 2,000 rows drawn (plus the newest chunk's
    25), a note for the rest, every lifeline, and a filter still drawing from all kept events. How smooth the
    page stays is measured by bench/watch_page.py against an idle page, not timed here."""
    from selenium.webdriver.support.ui import Select
    open_page(browser, director)
    wait_for("the stream to connect", lambda: status(browser) == "connected", timeout=10)
    evs: list[dict[str, Any]] = []
    seq = 1
    for rnd in range(5):
        for i in range(50):
            script = redeploy_script(seq=seq, ts=T0 + rnd * 10 + i * 0.01, instance=f"redis/{i}")
            evs += script
            seq += len(script)
    director.publish(*evs)
    try:
        wait_for("all events received and drawn", lambda: (x := stats(browser))["total"] == len(evs)
                 and x["drawn"] + x["dropped"] == len(evs), timeout=60)
    except AssertionError as e:
        raise AssertionError(f"{e}: {stats(browser)}") from None
    s = stats(browser)
    assert 2000 <= s["drawn"] < 2025, s
    assert len(s["columns"]) == 53, s["columns"][:6]
    assert browser.find_element("id", "dropnote").is_displayed()
    drawn = browser.find_elements("css selector", "#diagram .rows > g")
    assert len(drawn) == s["drawn"]
    seqs = [int(g.get_attribute("data-seq")) for g in drawn]
    assert seqs == sorted(seqs) and seqs[-1] == evs[-1]["seq"], "the newest rows, in order"
    screenshot(browser, "watch-ui-50vms.png")
    Select(browser.find_element("id", "f-instance")).select_by_value("redis/7")
    wait_for("the filter", lambda: {r["instance"] for r in rows(browser, kind="request")} == {"redis/7"})
    assert len(rows(browser, kind="request")) == 5 * sum(1 for e in redeploy_script(seq=1, ts=T0, instance="redis/7")
                                                         if e["kind"] == "request")


def test_a_restarted_directors_events_are_drawn_with_a_note(browser: Any, director: FakeDirector) -> None:
    """After a director restart its seq starts again: the page draws the new events and says so."""
    open_page(browser, director)
    wait_for("the stream to connect", lambda: status(browser) == "connected", timeout=10)
    director.publish(*redeploy_script())
    wait_for("the first director's events", lambda: stats(browser)["drawn"] == 12)
    director.publish(*other_instance(1))
    wait_for("the restarted director's events", lambda: stats(browser)["drawn"] == 15)
    notes = rows(browser, kind="note")
    assert len(notes) == 1 and "numbered from #1 again" in notes[0]["text"], notes
    assert [r["instance"] for r in rows(browser, kind="request")][-1] == "redis/1"
    # two events of seq 1 now: a click shows the one clicked
    browser.find_element("css selector", '#diagram g.row[data-kind="request"][data-instance="redis/1"]').click()
    assert '"method": "get_state"' in wait_for("the JSON", lambda: browser.find_element("id", "detail-json").text)


# ---- the page on a whole director (real GET /watch, fake CPI, in-process agents) -------------------------------

async def test_the_page_on_a_real_director(browser: Any, directors: Directors, dav_server: DavServer) -> None:
    """The director's own routes and hub: a redeploy with a changed property draws app/0's drain → stop →
    apply → start. The browser is driven from a thread: the director runs on this test's event loop."""
    d = await directors.make(blobstore_log=str(dav_server.watch_log))
    await d.deploy(dummy_manifest("ui", properties={"dummy": {"message": "one"}}))
    url = f"http://127.0.0.1:{d.config.api_port}/watch/ui?deployment=ui&history=1000"
    token = base64.b64encode(f"{d.config.api_user}:{d.config.api_password}".encode()).decode()

    def open_it() -> int:
        browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}})
        browser.get(url)
        wait_for("the stream", lambda: status(browser) == "connected", timeout=15)
        wait_for("the first deploy's start of app/0", lambda: "start" in methods_of(browser, "app/0", "request"), timeout=15)
        return max(int(r["seq"]) for r in rows(browser))
    mark = await asyncio.to_thread(open_it)
    await d.deploy(dummy_manifest("ui", properties={"dummy": {"message": "two"}}))

    def redeploy() -> str:
        order = ["drain", "stop", "apply", "start"]
        wait_for("drain → stop → apply → start of app/0", lambda: [
            r["method"] for r in rows(browser, instance="app/0", kind="request")
            if int(r["seq"]) > mark and r["method"] in order] == order, timeout=15)
        replies = browser.find_elements("css selector", '#diagram g.row[data-kind="reply"][data-method="apply"][data-instance="app/0"]')
        replies[-1].click()
        text: str = wait_for("the apply's JSON", lambda: (t := browser.find_element("id", "detail-json").text)
                             and '"method": "apply"' in t and t)
        browser.execute_script("document.getElementById('scroller').scrollLeft = 0")
        screenshot(browser, "watch-ui-director.png")
        browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": AUTH}})   # the module's
        return text
    detail = json.loads(await asyncio.to_thread(redeploy))
    assert detail["kind"] == "reply" and detail["instance"] == "app/0" and detail["deployment"] == "ui", detail
    assert detail["state"] == "done" and detail["latency_ms"] > 0
    assert detail["message"] and "arguments" in detail

"""The sequence-diagram page with 50 VMs deploying: headless Chromium (tests/support/chromium.py) on the real
page (director/api/watch_ui.py's routes) fed by a ``GET /watch`` of server-sent events replaying a synthetic
50-VM deploy, measured in the page; the baseline is the same page in the same Chromium with a stream that
stays quiet for as long, measured by the same probe.

    python bench/watch_page.py [--vms 50] [--rounds 3] [--seconds 30] [--json]
    python bench/watch_page.py --quick                 # one round of 20 VMs in 4 s

Each VM, as the correlator reports it (director/watch/correlator.py): ping, drain, stop (progress, polls
folded), three blob GETs, apply (progress, polls folded), start, three get_state, each request with its
reply; a heartbeats summary of every VM every 10 simulated seconds. VMs go 10 at a time (max_in_flight),
``--rounds`` deploys one after the other; the whole is replayed over ``--seconds`` (3 rounds of 50 VMs:
3,300 events, about 110 a second over 30 s, in bursts as the batches start).

The probe (injected before the page's own script, CDP ``Page.addScriptToEvaluateOnNewDocument``):
a requestAnimationFrame loop recording frame gaps; the page's ``EventSource`` wrapped so each event's arrival
time is recorded (``performance.now()``) before the page's handler runs; a MutationObserver recording when
each ``data-seq`` row enters the DOM; ``longtask`` entries. At the end an instance filter is applied (the
``f-instance`` select's change event) and timed to the frame that drew it."""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
import uuid
from concurrent.futures import Future
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from aiohttp import web  # noqa: E402

from tests.support.chromium import PageServer, chromium  # noqa: E402

Event = dict[str, Any]
PAGE_DEADLINE = 20.0       # seconds for the page to load and connect
POLL = 0.5                 # seconds between looks at the page's counters (baseline and stream alike)

PROBE = r"""
(() => {
  const P = window.__probe = { on: false, frames: [], arrivals: {}, inserted: {}, longtasks: [] };
  let last = 0;
  const loop = (t) => {
    if (P.on) { if (last) P.frames.push(t - last); last = t; } else last = 0;
    requestAnimationFrame(loop);
  };
  requestAnimationFrame(loop);
  const ES = window.EventSource;
  function Probed(url, opts) {
    const es = new ES(url, opts);
    es.addEventListener("timeline", (e) => {
      if (P.on && !(e.lastEventId in P.arrivals)) P.arrivals[e.lastEventId] = performance.now();
    });
    return es;
  }
  Probed.prototype = ES.prototype;
  Probed.CONNECTING = ES.CONNECTING; Probed.OPEN = ES.OPEN; Probed.CLOSED = ES.CLOSED;
  window.EventSource = Probed;
  new MutationObserver((records) => {
    if (!P.on) return;
    const now = performance.now();
    for (const r of records) for (const n of r.addedNodes) {
      const seq = n.getAttribute && n.getAttribute("data-seq");
      if (seq !== null && seq !== undefined && !(seq in P.inserted)) P.inserted[seq] = now;
    }
  }).observe(document, { childList: true, subtree: true });
  try {
    new PerformanceObserver((list) => { if (P.on) for (const e of list.getEntries()) P.longtasks.push(e.duration); })
      .observe({ type: "longtask" });
  } catch (e) { /* no longtask entries in this browser */ }
})();
"""

FILTER = r"""
const [value, done] = arguments;
const sel = document.getElementById("f-instance");
const t0 = performance.now();
sel.value = value;
sel.dispatchEvent(new Event("change"));
const dispatched = performance.now() - t0;
requestAnimationFrame(() => {          // after the page's own frame (scheduled by the change, so earlier)
  const drawn = performance.now() - t0;
  setTimeout(() => done({ dispatched, drawn, settled: performance.now() - t0, value: sel.value,
                          rows: document.querySelectorAll("#diagram .rows > g").length }), 0);
});
"""


# ---- the synthetic deploy --------------------------------------------------------------------------------------

APPLY_SPEC = {"deployment": "bench", "job": {"name": "redis", "templates": [{"name": "redis", "version": "3f2a",
                                                                             "sha1": "9c11" * 10, "blobstore_id": ""}]},
              "packages": {"redis": {"name": "redis", "version": "2.8", "sha1": "b2d4" * 10, "blobstore_id": ""}},
              "properties": {"redis": {"port": 6379, "password": "secret", "maxmemory": "64mb"}},
              "networks": {"default": {"ip": "10.0.0.10", "netmask": "255.255.255.0", "default": ["dns", "gateway"]}},
              "configuration_hash": "9c1185a5c5e9fc54612808977ee8f548b2258d31"}


def vm_events(i: int, start: float) -> list[tuple[float, Event]]:
    """One VM's update, as (simulated time, event without seq/ts)."""
    inst, agent, iid = f"app/{i}", str(uuid.UUID(int=0xA6E7_0000 + i)), str(uuid.UUID(int=0x1D_0000 + i))
    base = {"deployment": "bench", "instance": inst, "instance_id": iid, "agent_id": agent, "subject": f"agent.{agent}",
            "src": "director", "dst": inst}
    out: list[tuple[float, Event]] = []

    def call(at: float, method: str, args: list[Any], value: Any, took: float, polls: int | None = None) -> None:
        cid = str(uuid.uuid4())
        c = dict(base, method=method, call=cid, arguments=args)
        msg = {"protocol": 3, "method": method, "arguments": args, "reply_to": f"director.p.{agent}.{cid}"}
        out.append((start + at, dict(c, kind="request", state="sent", message=msg)))
        reply = dict(c, kind="reply", state="done", latency_ms=round(took * 1000, 1), value=value,
                     message={"value": value})
        if polls is not None:
            task = str(uuid.uuid4())
            running = {"agent_task_id": task, "state": "running"}
            out.append((start + at + 0.01, dict(c, kind="progress", state="running", agent_task_id=task,
                                                latency_ms=10.0, value=running)))
            reply.update(agent_task_id=task, polls=polls)
        out.append((start + at + took, reply))

    def blob(at: float, size: int) -> None:
        bid = str(uuid.uuid4())
        out.append((start + at, {"kind": "blob", "src": inst, "dst": "blobstore", "deployment": "bench", "instance": inst,
                                 "instance_id": iid, "agent_id": agent,
                                 "blob": {"method": "GET", "id": bid, "path": f"/{bid[:2]}/{bid}", "status": 200,
                                          "bytes": size, "duration_ms": 12.0, "user": "agent"}}))

    call(0.0, "ping", [], "pong", 0.004)
    call(0.05, "drain", ["update", {}], 0, 0.05)
    call(0.12, "stop", [], "stopped", 0.5, polls=3)
    call(0.65, "apply", [dict(APPLY_SPEC, index=i)], "applied", 1.3, polls=6)
    for k, size in enumerate((1_803_529, 4_096, 12_288)):
        blob(0.7 + k * 0.1, size)
    call(2.0, "start", [], "started", 0.05)
    for k in range(3):
        call(2.1 + k, "get_state", [], {"job_state": "running", "index": i}, 0.012)
    return out


def deploy(vms: int, rounds: int, in_flight: int = 10, batch_s: float = 6.0) -> list[tuple[float, Event]]:
    timed: list[tuple[float, Event]] = []
    t = 0.0
    for _ in range(rounds):
        for i in range(vms):
            timed += vm_events(i, t + (i // in_flight) * batch_s + (i % in_flight) * 0.05)
        t += ((vms + in_flight - 1) // in_flight) * batch_s
    names = [f"app/{i}" for i in range(vms)]
    hb = 10.0
    while hb < t:
        timed.append((hb, {"kind": "heartbeats", "src": "nats", "dst": "director", "subject": "hm.agent.heartbeat.*",
                           "heartbeats": {"count": vms, "window_s": 10.0, "instances": {n: "running" for n in names}}}))
        hb += 10.0
    timed.sort(key=lambda x: x[0])
    return timed


# ---- the server (a thread of its own: selenium blocks) ---------------------------------------------------------

class Server(PageServer):
    """The real page; /watch replays the synthetic deploy to every open stream."""

    def __init__(self) -> None:
        super().__init__()
        self.streams: set[asyncio.Queue[bytes]] = set()
        self.connected = threading.Event()

    def end_streams(self) -> None:
        for q in list(self.streams):
            q.put_nowait(b"")

    async def watch(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        await resp.write(b": watching\n\n")
        q: asyncio.Queue[bytes] = asyncio.Queue()
        self.streams.add(q)
        self.connected.set()
        try:
            while True:
                chunk = await q.get()
                if not chunk:
                    break
                await asyncio.wait_for(resp.write(chunk), 30)
        except (ConnectionResetError, asyncio.CancelledError, TimeoutError):
            pass
        finally:
            self.streams.discard(q)
        return resp

    def play(self, timed: list[tuple[float, Event]], seconds: float) -> Future[float]:
        """Send the events to every stream at their time, scaled to ``seconds``; the future is the time taken."""
        return asyncio.run_coroutine_threadsafe(self._play(timed, seconds), self.loop)

    async def _play(self, timed: list[tuple[float, Event]], seconds: float) -> float:
        span = timed[-1][0] or 1.0
        scale = seconds / span
        t0 = time.monotonic()
        i = 0
        while i < len(timed):
            now = time.monotonic() - t0
            chunk = []
            while i < len(timed) and timed[i][0] * scale <= now:
                ev = dict(timed[i][1], seq=i + 1, ts=time.time())
                chunk.append(f"id: {i + 1}\nevent: timeline\ndata: {json.dumps(ev)}\n\n".encode())
                i += 1
            if chunk:
                data = b"".join(chunk)
                for q in self.streams:
                    q.put_nowait(data)
            if i < len(timed):
                await asyncio.sleep(max(0.0, min(0.01, timed[i][0] * scale - (time.monotonic() - t0))))
        return time.monotonic() - t0


# ---- measuring -------------------------------------------------------------------------------------------------

def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, int(len(s) * q))], 1)


def open_page(drv: Any, server: Server, query: str) -> None:
    server.connected.clear()
    drv.get(f"{server.url}/watch/ui?{query}")
    if not server.connected.wait(PAGE_DEADLINE):
        raise SystemExit("the page did not open GET /watch")
    deadline = time.monotonic() + PAGE_DEADLINE
    while drv.execute_script("return document.getElementById('status').dataset.state") != "connected":
        if time.monotonic() > deadline:
            raise SystemExit("the page did not say connected")
        time.sleep(0.05)


def collect(drv: Any) -> dict[str, Any]:
    out: dict[str, Any] = drv.execute_script(
        "const P = window.__probe; P.on = false; return {frames: P.frames, arrivals: P.arrivals, inserted: P.inserted, "
        "longtasks: P.longtasks, stats: window.watchUI.stats()}")
    return out


def summarise(probe: dict[str, Any], filt: dict[str, Any], wall: float) -> dict[str, Any]:
    frames: list[float] = probe["frames"]
    arrivals: dict[str, float] = probe["arrivals"]
    inserted: dict[str, float] = probe["inserted"]
    to_dom = [inserted[s] - t for s, t in arrivals.items() if s in inserted]
    stats = probe["stats"]
    return {
        "wall_s": round(wall, 2), "events_received": stats["total"], "rows_drawn": stats["drawn"],
        "events_to_dom": len(to_dom),
        "frames": len(frames), "fps": round(len(frames) / wall, 1) if wall else None,
        "frame_gap_p50_ms": pct(frames, 0.5), "frame_gap_p99_ms": pct(frames, 0.99),
        "frame_gap_max_ms": round(max(frames), 1) if frames else None,
        "frames_over_50ms": sum(1 for f in frames if f > 50),
        "longtasks": len(probe["longtasks"]), "longtask_ms_total": round(sum(probe["longtasks"]), 1),
        "arrival_to_dom_p50_ms": pct(to_dom, 0.5), "arrival_to_dom_p99_ms": pct(to_dom, 0.99),
        "arrival_to_dom_max_ms": round(max(to_dom), 1) if to_dom else None,
        "filter_dom_ms": round(filt["dispatched"], 1), "filter_frame_ms": round(filt["drawn"], 1),
        "filter_settled_ms": round(filt["settled"], 1), "filter_rows": filt["rows"],
    }


def top_functions(profile: dict[str, Any], n: int = 20) -> str:
    """The functions with the most self time in a CDP CPU profile (samples x interval)."""
    nodes = {node["id"]: node for node in profile["nodes"]}
    counts: dict[int, int] = {}
    for sample in profile.get("samples", []):
        counts[sample] = counts.get(sample, 0) + 1
    total = sum(counts.values()) or 1
    span_ms = (profile["endTime"] - profile["startTime"]) / 1000
    by_fn: dict[str, int] = {}
    for nid, c in counts.items():
        f = nodes[nid]["callFrame"]
        key = f"{f['functionName'] or '(anonymous)'} {Path(f['url']).name}:{f['lineNumber'] + 1}" if f["url"] \
            else f["functionName"]
        by_fn[key] = by_fn.get(key, 0) + c
    rows = sorted(by_fn.items(), key=lambda kv: -kv[1])[:n]
    return "\n".join(f"{c / total * span_ms:9.0f} ms  {c / total:6.1%}  {k}" for k, c in rows)


def watch_counts(drv: Any, until: float, done: Future[float] | None, expected: int) -> None:
    """Look at the page's counters every POLL seconds until ``until`` (baseline) or all events received."""
    while True:
        got = drv.execute_script("return window.watchUI.stats().total")
        if done is None and time.monotonic() >= until:
            return
        if done is not None and done.done() and got >= expected:
            return
        if time.monotonic() >= until:
            raise SystemExit(f"the page received {got} of {expected} events in time")
        time.sleep(POLL)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--vms", type=int, default=None, help="VMs (50; --quick 20)")
    p.add_argument("--rounds", type=int, default=None, help="deploys one after the other (3; --quick 1)")
    p.add_argument("--seconds", type=float, default=None, help="the replay's length (30; --quick 4)")
    p.add_argument("--filter", default="app/7", help="the instance filter applied at the end")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", action="store_true")
    p.add_argument("--profile", metavar="FILE", help="also record the page's JavaScript CPU profile during the replay "
                   "(Chrome DevTools .cpuprofile) and print the functions with the most self time")
    a = p.parse_args()
    vms = a.vms or (20 if a.quick else 50)
    rounds = a.rounds or (1 if a.quick else 3)
    seconds = a.seconds or (4.0 if a.quick else 30.0)
    timed = deploy(vms, rounds)
    server = Server()
    server.start()
    results: dict[str, Any] = {}
    try:
        with chromium() as drv:
            drv.set_script_timeout(60)
            drv.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": PROBE})
            # baseline: the same page, its stream quiet for as long as the replay
            open_page(drv, server, "deployment=bench")
            drv.execute_script("window.__probe.on = true")
            t0 = time.monotonic()
            watch_counts(drv, t0 + seconds, None, 0)
            wall = time.monotonic() - t0
            probe = collect(drv)
            results["baseline"] = summarise(probe, drv.execute_async_script(FILTER, a.filter), wall)
            # the replay
            open_page(drv, server, "deployment=bench")
            drv.execute_script("window.__probe.on = true")
            if a.profile:
                drv.execute_cdp_cmd("Profiler.enable", {})
                drv.execute_cdp_cmd("Profiler.start", {})
            t0 = time.monotonic()
            done = server.play(timed, seconds)
            watch_counts(drv, t0 + seconds + 60, done, len(timed))
            drv.execute_async_script("requestAnimationFrame(() => requestAnimationFrame(arguments[0]))")   # drawn
            wall = time.monotonic() - t0
            if a.profile:
                profile = drv.execute_cdp_cmd("Profiler.stop", {})["profile"]
                Path(a.profile).write_text(json.dumps(profile))
                print(top_functions(profile), file=sys.stderr)
            probe = collect(drv)
            results["stream"] = summarise(probe, drv.execute_async_script(FILTER, a.filter), wall)
            results["stream"]["events_sent"] = len(timed)
            results["stream"]["send_s"] = round(done.result(5), 2)
    finally:
        server.stop()
    s, b = results["stream"], results["baseline"]
    out = {"vms": vms, "rounds": rounds, "events": len(timed), "seconds": seconds, "cores": os.cpu_count(),
           "loadavg_at_end": round(os.getloadavg()[0], 2), **results}
    if a.json:
        print(json.dumps(out))
        return
    print(f"{len(timed)} events of {rounds} deploy(s) of {vms} VMs over {s['send_s']} s "
          f"({len(timed) / s['send_s']:.0f}/s); 2-core load {out['loadavg_at_end']}")
    print(f"{'':34}{'stream':>14}{'baseline':>14}{'ratio':>10}")
    for label, key in (("frames / s", "fps"), ("frame gap p50 ms", "frame_gap_p50_ms"),
                       ("frame gap p99 ms", "frame_gap_p99_ms"), ("frame gap max ms", "frame_gap_max_ms"),
                       ("frames over 50 ms", "frames_over_50ms"), ("long tasks (ms in all)", "longtask_ms_total"),
                       ("events received", "events_received"), ("arrival -> DOM p50 ms", "arrival_to_dom_p50_ms"),
                       ("arrival -> DOM p99 ms", "arrival_to_dom_p99_ms"), ("arrival -> DOM max ms", "arrival_to_dom_max_ms"),
                       ("filter: change handled ms", "filter_dom_ms"), ("filter: drawn (frame) ms", "filter_frame_ms"),
                       ("filter: settled ms", "filter_settled_ms"), ("rows after filter", "filter_rows")):
        sv, bv = s.get(key), b.get(key)
        ratio = f"{sv / bv:.1f}" if isinstance(sv, (int, float)) and isinstance(bv, (int, float)) and bv else "–"
        print(f"{label:<34}{sv!s:>14}{bv!s:>14}{ratio:>10}")


if __name__ == "__main__":
    main()

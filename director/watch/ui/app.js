// The live sequence diagram (docs/watch.md): GET /watch as server-sent events, drawn as SVG.
// Plain JS, no framework, nothing loaded from elsewhere. DOM work is batched once per animation frame and the
// SVG keeps at most MAX_DRAWN rows, so a deploy of 50 VMs stays responsive.
// The rows are drawn in chunks of CHUNK_ROWS, each chunk an <svg> of its own: a frame adds rows to the last
// chunk only, so the browser lays out and paints ~25 rows, not the 2,000 drawn (one SVG of 2,000 rows with 50
// lifelines took 0.2-0.5 s per frame to lay out and paint). Rows keep the y they were drawn at; the chunks sit in
// a slide moved up by CSS when old chunks are dropped (a whole chunk at a time); far down the page (REBASE px)
// everything is drawn again from y = 0.
"use strict";
(function () {
  const MAX_DRAWN = 2000;       // rows in the SVG; older ones are dropped from it (kept in memory for filters)
  const MAX_KEPT = 20000;       // events kept in memory
  const CHUNK_ROWS = 25;        // rows per <svg> chunk
  const SVGNS = "http://www.w3.org/2000/svg";
  const FULL_GAP = 500;         // ms: a new lifeline that does not sort last redraws everything, at most this often
  const REBASE = 4000000;       // px: below this, draw again from 0 (browsers lay out at most ~16-33 M px)
  const FIXED = ["director", "nats", "blobstore"];
  const GUTTER = 172;           // the time and seq column
  const COL_W = 180;            // one lifeline
  const H = { arrow: 44, progress: 32, heartbeats: 30, banner: 40 };
  const SPEEDS = { "0.5": 0.5, "1": 1, "2": 2, "5": 5, "10": 10, "0": 0 };

  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);

  const ui = {
    status: $("status"), pause: $("pause"), step: $("step"), follow: $("follow"),
    instance: $("f-instance"), method: $("f-method"), heartbeats: $("f-heartbeats"), blobs: $("f-blobs"),
    file: $("replay-file"), speed: $("speed"), live: $("live"), counts: $("counts"),
    scroller: $("scroller"), heads: $("lifeheads"), dropnote: $("dropnote"), svg: $("diagram"),
    diagram: $("diagram"), slide: $("slide"), empty: $("empty"),
    detail: $("detail"), detailTitle: $("detail-title"), detailCall: $("detail-call"), detailJson: $("detail-json"),
    detailClose: $("detail-close"),
  };

  // ---- state --------------------------------------------------------------------------------------------
  const st = {
    all: [],                 // kept events, arrival order
    byUid: new Map(),        // uid -> event (kept ones); a uid is the page's own number for an event
    uid: 0,
    pending: [],             // arrived while paused (live)
    queue: [],               // visible events to draw at the next frame
    full: true,              // the next frame redraws everything (columns or filters changed)
    scheduled: false,
    paused: false,
    mode: "live",            // "live" | "replay"
    lastSeq: 0,
    synthetic: 0,            // seq for replayed events that have none
    total: 0,                // events received (this session)
    // the drawing
    cols: [],                // column keys, in order
    colIdx: new Map(),       // key -> index
    colInfo: new Map(),      // key -> {name, deployment, fixed}
    rows: [],                // drawn rows: {seq, y, h, el}
    bottom: 0,               // y below the last drawn row
    top: 0,                  // y of the first drawn row (rows above were dropped)
    dropped: 0,              // rows dropped from the SVG since the last full redraw
    calls: new Map(),        // call -> {col, reqY, el (activation), depth, open, seq}
    openActs: new Set(),     // activation records still running
    selected: null,          // uid of the selected event
    instances: new Set(),    // for the filter select
    groups: new Set(),
    methods: new Set(),
    es: null,
    retry: null,
    replay: null,
    ownScroll: false,
    chunks: [],              // {div, svg, lifelines, rows, acts, marks, y0, y1, n}: the drawn rows, CHUNK_ROWS each
    width: 0,                // the width the chunks were drawn for
    newCols: new Map(),      // key -> {name, deployment}: lifelines that appeared since the last frame
    relayout: false,         // a new lifeline sorts among the others: redraw everything (at most every FULL_GAP ms)
    lastFull: 0,             // performance.now() of the last full redraw
    later: null,             // the timer of a delayed full redraw
    hbDrawn: [],             // {ev, top, ch}: heartbeat summaries drawn (their dots for lifelines added later)
  };
  window.watchUI = {   // for the browser tests and the curious: read-only views of the state
    stats: () => ({ total: st.total, kept: st.all.length, drawn: st.rows.length, pending: st.pending.length,
                    dropped: st.dropped, columns: st.cols.slice(), mode: st.mode, paused: st.paused }),
  };

  // ---- small helpers --------------------------------------------------------------------------------------
  const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));
  function short(value, limit) {
    let text;
    try { text = JSON.stringify(value); } catch (e) { text = String(value); }
    if (text === undefined) text = "";
    return text.length <= limit ? text : text.slice(0, limit - 1) + "…";
  }
  function duration(ms) {
    if (ms === undefined || ms === null) return "";
    return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
  }
  function size(n) {
    if (n === undefined || n === null) return "?";
    if (n < 1024) return `${n} B`;
    if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
    return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  }
  function clock(ts) {
    if (typeof ts !== "number") return "";
    const d = new Date(ts * 1000);
    const p = (n, w) => String(n).padStart(w, "0");
    return `${p(d.getHours(), 2)}:${p(d.getMinutes(), 2)}:${p(d.getSeconds(), 2)}.${p(d.getMilliseconds(), 3)}`;
  }
  function instanceKey(name) {   // sort by group, then index (numbers numerically), then the rest
    const [group, idx = ""] = String(name).split("/", 2);
    const n = idx === "" ? -1 : /^\d+$/.test(idx) ? Number(idx) : Infinity;   // a group before its instances
    return [group, n, idx];
  }
  const isCompilation = (name) => String(name).startsWith("compilation/");
  function compareCols(a, b) {      // instances by deployment, group, index; compilation VMs after them
    const A = st.colInfo.get(a), B = st.colInfo.get(b);
    if (isCompilation(A.name) !== isCompilation(B.name)) return isCompilation(A.name) ? 1 : -1;
    if ((A.deployment || "") !== (B.deployment || "")) return (A.deployment || "") < (B.deployment || "") ? -1 : 1;
    const ka = instanceKey(A.name), kb = instanceKey(B.name);
    for (let i = 0; i < 3; i++) if (ka[i] !== kb[i]) return ka[i] < kb[i] ? -1 : 1;
    return 0;
  }
  const isFixed = (name) => FIXED.includes(name);
  function colKey(deployment, name) { return isFixed(name) ? name : `${deployment || ""}|${name}`; }

  // The instance lifeline an event is about (null: none), and the columns it needs.
  function instanceCol(ev) {
    const k = ev.kind;
    if (k === "request" || k === "progress" || k === "reply") {
      const name = ev.instance || (ev.dst !== "director" ? ev.dst : ev.src) || ev.agent_id;
      return name ? { key: colKey(ev.deployment, name), name, deployment: ev.deployment } : null;
    }
    if (k === "blob") {
      const name = ev.instance || (ev.src !== "blobstore" ? ev.src : ev.dst);
      return name && !isFixed(name) ? { key: colKey(ev.deployment, name), name, deployment: ev.deployment } : null;
    }
    if (k === "alert" && (ev.instance || ev.agent_id)) {
      const name = ev.instance || ev.agent_id;
      return { key: colKey(ev.deployment, name), name, deployment: ev.deployment };
    }
    return null;
  }

  // ---- filters (as boshlab.timeline.matches) --------------------------------------------------------------
  function visible(ev) {
    const f = ui.instance.value, m = ui.method.value;
    if (ev.kind === "heartbeats" && !ui.heartbeats.checked) return false;
    if (ev.kind === "blob" && !ui.blobs.checked) return false;
    if (f) {
      const name = ev.instance || "";
      if (!(name === f || name.split("/")[0] === f || ev.instance_id === f || ev.agent_id === f)) {
        const hb = ev.heartbeats;
        const inHb = hb && hb.instances && Object.keys(hb.instances).some((i) => i === f || i.split("/")[0] === f);
        const named = ["fault", "note", "dropped"].includes(ev.kind) && (ev.text || "").includes(f);
        if (!inHb && !named) return false;
      }
    }
    if (m && ev.method !== m) return false;
    return true;
  }

  function addOption(select, value) {
    const opts = Array.from(select.options).slice(1).map((o) => o.value);
    if (opts.includes(value)) return;
    opts.push(value);
    opts.sort((a, b) => {
      const ka = instanceKey(a), kb = instanceKey(b);
      for (let i = 0; i < 3; i++) if (ka[i] !== kb[i]) return ka[i] < kb[i] ? -1 : 1;
      return 0;
    });
    const o = document.createElement("option");
    o.value = value;
    o.textContent = value.includes("/") || select !== ui.instance ? value : `${value} (group)`;
    const at = opts.indexOf(value) + 1;
    select.insertBefore(o, select.options[at] || null);
  }
  function learn(ev) {
    if (ev.instance && !st.instances.has(ev.instance)) {
      st.instances.add(ev.instance);
      const group = ev.instance.split("/")[0];
      if (!st.groups.has(group)) { st.groups.add(group); addOption(ui.instance, group); }
      addOption(ui.instance, ev.instance);
    }
    if (ev.method && !st.methods.has(ev.method)) { st.methods.add(ev.method); addOption(ui.method, ev.method); }
  }

  // ---- ingest ---------------------------------------------------------------------------------------------
  function receive(ev) {                       // from the live stream
    if (!ev || typeof ev !== "object") return;
    if (typeof ev.seq === "number") {
      // The stream resumes after the last seq (Last-Event-ID, since=): a lower seq means the director's
      // numbering started again. Say so, and go on.
      if (ev.seq <= st.lastSeq) {
        const note = { kind: "note", ts: ev.ts, text: `the director's events are numbered from #${ev.seq} again (did it restart?)` };
        if (st.paused) st.pending.push(note); else ingest(note);
      }
      st.lastSeq = ev.seq;
    }
    if (st.paused) { st.pending.push(ev); counts(); return; }
    ingest(ev);
  }
  function ingest(ev) {
    if (typeof ev.seq !== "number") ev.seq = --st.synthetic;   // negative: never collides with the director's
    st.total++;
    st.all.push(ev);
    uidOf.set(ev, ++st.uid);
    st.byUid.set(st.uid, ev);
    if (st.all.length > MAX_KEPT) {
      for (const old of st.all.splice(0, st.all.length - MAX_KEPT)) st.byUid.delete(uidOf.get(old));
    }
    learn(ev);
    if (visible(ev)) {
      const c = instanceCol(ev);
      if (c && !st.colIdx.has(c.key) && !st.newCols.has(c.key)) st.newCols.set(c.key, c);   // a new lifeline
      st.queue.push(ev);
    }
    schedule();
  }
  const uidOf = new WeakMap();   // event -> uid (not a property: the detail panel shows the event as it came)
  function schedule() {
    if (!st.scheduled) { st.scheduled = true; requestAnimationFrame(frame); }
  }

  // ---- drawing --------------------------------------------------------------------------------------------
  const colX = (key) => GUTTER + st.colIdx.get(key) * COL_W + COL_W / 2;
  function fixedX(name) { return colX(name); }

  function layoutColumns(events) {
    st.colInfo = new Map();
    for (const name of FIXED) st.colInfo.set(name, { name, deployment: null, fixed: true });
    for (const ev of events) {
      const c = instanceCol(ev);
      if (c && !st.colInfo.has(c.key)) st.colInfo.set(c.key, { name: c.name, deployment: c.deployment, fixed: false });
    }
    const inst = Array.from(st.colInfo.keys()).filter((k) => !isFixed(k)).sort(compareCols);
    st.cols = FIXED.concat(inst);
    st.colIdx = new Map(st.cols.map((k, i) => [k, i]));
    st.newCols.clear();
    drawHeads();
  }
  // New lifelines that all sort after the drawn ones are added on the right, leaving every drawn row where it
  // is. Returns false when one sorts among them: then everything is drawn again.
  function appendColumns() {
    const fresh = Array.from(st.newCols.values());
    st.newCols.clear();
    for (const c of fresh) st.colInfo.set(c.key, { name: c.name, deployment: c.deployment, fixed: false });
    const keys = fresh.map((c) => c.key).sort(compareCols);
    const last = st.cols[st.cols.length - 1];
    if (!isFixed(last) && compareCols(keys[0], last) < 0) return false;
    for (const k of keys) { st.colIdx.set(k, st.cols.length); st.cols.push(k); }
    // heartbeat summaries drawn before the lifeline existed get its dot now
    st.hbDrawn = st.hbDrawn.filter((r) => r.ch.div.isConnected);
    for (const r of st.hbDrawn) {
      const dots = heartbeatDots(r.ev, keys);
      if (dots) r.ch.marks.insertAdjacentHTML("beforeend",
        `<g class="marks" data-uid="${uidOf.get(r.ev)}" transform="translate(0,${r.top})">${dots}</g>`);
    }
    drawHeads();
    return true;
  }
  function drawHeads() {
    const inst = st.cols.filter((k) => !isFixed(k));
    const deployments = new Set(inst.map((k) => st.colInfo.get(k).deployment || ""));
    const frag = document.createDocumentFragment();
    for (const k of st.cols) {      // DOM, not markup: the page's CSP allows no style="" attributes
      const info = st.colInfo.get(k);
      const div = document.createElement("div");
      div.className = "lifehead" + (info.fixed ? (k === "director" ? " fixed" : " infra") : "");
      div.dataset.lifeline = info.name;
      div.title = info.deployment ? `${info.name} (${info.deployment})` : info.name;
      div.style.left = `${colX(k) - (COL_W - 24) / 2}px`;
      div.style.width = `${COL_W - 24}px`;
      const name = document.createElement("span");
      name.textContent = info.name;
      div.appendChild(name);
      const sub = info.fixed ? { director: "API · tasks", nats: "message bus", blobstore: "DAV" }[k]
        : (deployments.size > 1 || info.deployment ? info.deployment || "" : "");
      if (sub) {
        const small = document.createElement("small");
        small.textContent = sub;
        div.appendChild(small);
      }
      frag.appendChild(div);
    }
    ui.heads.textContent = "";
    ui.heads.appendChild(frag);
  }

  function rowHead(ev, h, kind, extraCls, instance) {
    const method = ev.method || (ev.blob && ev.blob.method) || "";
    const uid = uidOf.get(ev);
    return `<g class="row k-${kind}${extraCls ? " " + extraCls : ""}${st.selected === uid ? " sel" : ""}" ` +
      `data-uid="${uid}" data-seq="${ev.seq}" data-kind="${esc(kind)}" data-method="${esc(method)}" data-instance="${esc(instance || "")}" ` +
      `data-deployment="${esc(ev.deployment || "")}" transform="translate(0,${st.bottom})">` +
      `<rect class="hit" x="0" y="0" width="${width()}" height="${h}"/>` +
      `<text class="time" x="8" y="${h - 16}">${esc(clock(ev.ts))}</text>` +
      `<text class="seqno" x="${GUTTER - 10}" y="${h - 16}" text-anchor="end">${ev.seq > 0 ? "#" + ev.seq : ""}</text>`;
  }
  function width() { return GUTTER + (st.cols.length + 1) * COL_W; }   // room for the last bar's label

  function arrow(x1, x2, y, marker) {
    const dir = x2 > x1 ? 1 : -1;
    return `<line class="arrow" x1="${x1 + dir * 8}" y1="${y}" x2="${x2 - dir * 9}" y2="${y}" marker-end="url(#${marker})"/>`;
  }
  // A label above an arrow, ending just before the lifeline on the right (the instance's, usually). Arrows to
  // far lifelines (many VMs) are labelled where the screen starts, naming the instance.
  const FAR = 5;                // lifelines from the left beyond which a label is not drawn at the arrow's end
  function label(x1, x2, y, inner, instance) {
    const right = Math.max(x1, x2), limit = GUTTER + FAR * COL_W;
    if (right <= limit + COL_W / 2 || !instance) {
      return `<text class="label" x="${right - 16}" y="${y - 9}" text-anchor="end">${inner}</text>`;
    }
    return `<text class="label" x="${limit - 16}" y="${y - 9}" text-anchor="end">` +
      `<tspan class="far">${esc(instance)} ·</tspan> ${inner}</text>`;
  }

  // One row of SVG for an event (a string), and its height. Also records the calls for activations.
  function renderRow(ev) {
    const k = ev.kind;
    const c = instanceCol(ev);
    const inst = ev.instance || (c ? c.name : "");
    if (k === "request" || k === "progress" || k === "reply") {
      const xd = fixedX("director"), xi = c ? colX(c.key) : fixedX("nats"), xn = fixedX("nats");
      const h = k === "progress" ? H.progress : H.arrow;
      const y = h - 12;
      const method = esc(ev.method || "?");
      let body, cls = "", marker;
      if (k === "request") {
        marker = "ah-request";
        const args = ev.arguments && ev.arguments.length ? short(ev.arguments, 44) : "";
        body = arrow(xd, xi, y, marker) + `<circle class="via" cx="${xn}" cy="${y}" r="4"/>` +
          label(xd, xi, y, `<tspan class="m">${method}</tspan>${args ? ` <tspan class="dim">${esc(args)}</tspan>` : ""}`, inst);
        if (ev.call) st.calls.set(ev.call, { col: c ? c.key : null, reqY: st.bottom + y, seq: ev.seq, el: null, open: false });
      } else if (k === "progress") {
        marker = "ah-progress";
        const task = ev.agent_task_id ? ` (agent task ${esc(String(ev.agent_task_id).slice(0, 8))})` : "";
        body = arrow(xi, xd, y, marker) + label(xd, xi, y, `${method} … running${task}`, inst);
        startActivation(ev, c, st.bottom + y);
      } else {
        const bad = ev.state && ev.state !== "done";
        cls = bad ? "bad" : "";
        marker = bad ? "ah-failed" : "ah-reply";
        const lat = duration(ev.latency_ms);
        let what;
        if (ev.state === "timeout") what = `<tspan class="m">${method}</tspan> no reply`;
        else if (ev.state === "failed") what = `<tspan class="m">${method}</tspan> ✗ ${esc(short(ev.exception || ev.value, 50))}`;
        else if (ev.agent_task_id) what = `<tspan class="m">${method}</tspan> ✓ ${esc(short(ev.value, 36))}`;
        else what = `<tspan class="m">${method}</tspan> → ${esc(short(ev.value, 40))}`;
        body = arrow(xi, xd, y, marker) + `<circle class="via" cx="${xn}" cy="${y}" r="4"/>` +
          label(xd, xi, y, `${what}  <tspan class="lat">${esc(lat)}</tspan>`, inst);
        endActivation(ev, c, st.bottom + y);
      }
      return { html: rowHead(ev, h, k, cls, inst) + body + "</g>", h };
    }
    if (k === "blob") {
      const b = ev.blob || {};
      const h = H.arrow, y = h - 12;
      const xb = fixedX("blobstore");
      const xs = c ? colX(c.key) : fixedX(ev.src === "blobstore" ? "director" : (isFixed(ev.src) ? ev.src : "director"));
      const get = b.method === "GET" || b.method === "HEAD";
      const bad = Number(b.status || 0) >= 400;
      const id = String(b.id || b.path || "?");
      const sid = id.length > 14 ? id.slice(0, 12) + "…" : id;
      const body = (get ? arrow(xb, xs, y, bad ? "ah-failed" : "ah-blob") : arrow(xs, xb, y, bad ? "ah-failed" : "ah-blob")) +
        label(xs, xb, y, `<tspan class="m">${esc(b.method || "?")}</tspan> ${esc(sid)} <tspan class="dim">${esc(size(b.bytes))}` +
          `${bad ? " · " + esc(b.status) : ""}</tspan>  <tspan class="lat">${esc(duration(b.duration_ms))}</tspan>`, c ? inst : "");
      return { html: rowHead(ev, h, k, bad ? "bad" : "", inst) + body + "</g>", h };
    }
    if (k === "heartbeats") {
      const hb = ev.heartbeats || {};
      const h = H.heartbeats, y = h / 2 + 2;
      const changed = new Set(hb.changed || []);
      const dots = heartbeatDots(ev, st.cols);
      const text = `♥ ${hb.count || 0} heartbeats in ${Math.round(hb.window_s || 0)} s` +
        (changed.size ? ` · ${Array.from(changed).map((n) => `${n} now ${(hb.instances || {})[n] || "?"}`).join(", ")}` : "") +
        (hb.omitted ? ` · ${hb.omitted} more not named` : "");
      const body = `<text class="label" x="${fixedX("director") - COL_W / 2 + 8}" y="${y + 5}">${esc(text)}</text>`;
      // the dots go in a layer above the activation bars, or a running action would hide them
      const marks = dots ? `<g class="marks" data-uid="${uidOf.get(ev)}" transform="translate(0,${st.bottom})">${dots}</g>` : "";
      return { html: rowHead(ev, h, k, "", Array.from(changed).join(",")) + body + "</g>", h, marks, heartbeats: true };
    }
    // fault, alert, note, dropped: a banner across the diagram
    const h = H.banner;
    const x0 = GUTTER + 4, w = Math.max(width() - GUTTER - 30, 400);
    let text = ev.text || "";
    if (k === "fault") {
      const f = ev.fault || {};
      text = `⚡ fault ${f.action || ""}: ${text || short(f, 80)}`;
    } else if (k === "dropped") text = `… ${ev.dropped || 0} events dropped by the director (this reader was too slow)`;
    else if (k === "alert") text = `⚠ ${inst ? inst + ": " : ""}${text}`;
    const target = (ev.fault && (ev.fault.target || ev.fault.instance)) || inst;
    const body = `<rect class="banner" x="${x0}" y="5" width="${w}" height="${h - 10}" rx="5"/>` +
      `<text class="label" x="${x0 + 12}" y="${h / 2 + 6}">${esc(text)}</text>`;
    return { html: rowHead(ev, h, k, "", typeof target === "string" ? target : "") + body + "</g>", h };
  }

  // A heartbeat summary's dots on the lifelines ``keys`` of the instances it names.
  function heartbeatDots(ev, keys) {
    const hb = ev.heartbeats || {};
    const y = H.heartbeats / 2 + 2, changed = new Set(hb.changed || []);
    let dots = "";
    for (const key of keys) {
      const info = st.colInfo.get(key);
      if (info.fixed || !Object.prototype.hasOwnProperty.call(hb.instances || {}, info.name)) continue;
      if (ev.deployment && info.deployment && info.deployment !== ev.deployment) continue;
      const state = hb.instances[info.name];
      dots += `<circle class="hb ${state === "running" ? "ok" : "bad"}${changed.has(info.name) ? " changed" : ""}" ` +
        `cx="${colX(key)}" cy="${y}" r="8"><title>${esc(info.name)}: ${esc(state)}</title></circle>`;
    }
    return dots;
  }

  // Long-running actions: an activation bar on the instance's lifeline from the request to the final reply.
  function startActivation(ev, c, y) {
    if (!c || !ev.call) return;
    let rec = st.calls.get(ev.call);
    if (!rec) { rec = { col: c.key, reqY: y, seq: ev.seq, el: null, open: false }; st.calls.set(ev.call, rec); }
    if (rec.els) return;
    rec.col = c.key;
    rec.open = true;
    rec.method = ev.method;
    rec.instance = ev.instance || c.name;
    rec.depth = 0;
    for (const other of st.openActs) if (other.col === rec.col) rec.depth = Math.max(rec.depth, other.depth + 1);
    rec.els = [makeAct(rec, ev)];
    st.openActs.add(rec);
  }
  function endActivation(ev, c, y) {
    if (!c || !ev.call) return;
    const rec = st.calls.get(ev.call);
    if (!rec) return;
    if (!rec.els && ev.agent_task_id) {   // a long-running action whose progress we did not draw
      rec.depth = 0; rec.method = ev.method; rec.instance = ev.instance || c.name; rec.col = c.key;
      rec.els = [makeAct(rec, ev)];
    }
    if (!rec.els) { st.calls.delete(ev.call); return; }
    st.openActs.delete(rec);
    rec.open = false;
    rec.seq = ev.seq;
    const polls = typeof ev.polls === "number" ? ` (${ev.polls} poll${ev.polls === 1 ? "" : "s"})` : "";
    const bad = ev.state && ev.state !== "done";
    sizeAct(rec, y, `${rec.method || "?"} … ${duration(ev.latency_ms)}${polls}${bad ? " " + ev.state : ""}`);
    for (const el of rec.els) {
      el.setAttribute("class", `act${bad ? " bad" : ""}${st.selected === uidOf.get(ev) ? " sel" : ""}`);
      el.setAttribute("data-seq", String(ev.seq));
      el.setAttribute("data-uid", String(uidOf.get(ev)));
    }
    st.calls.delete(ev.call);
  }
  function makeAct(rec, ev) {
    const g = document.createElementNS(SVGNS, "g");
    g.setAttribute("class", "act open");
    g.setAttribute("data-kind", "activation");
    g.setAttribute("data-seq", String(ev.seq));
    g.setAttribute("data-uid", String(uidOf.get(ev)));
    g.setAttribute("data-method", ev.method || "");
    g.setAttribute("data-instance", rec.instance || "");
    g.setAttribute("data-deployment", ev.deployment || "");
    g.appendChild(document.createElementNS(SVGNS, "rect"));
    const t = document.createElementNS(SVGNS, "text");
    t.setAttribute("class", "label");
    g.appendChild(t);
    pendingActs.push(g);
    return g;
  }
  // The bar's copies: one per chunk it crosses, each chunk's <svg> showing its part. A running bar grows in the
  // newest chunk only (the older copies already reach past their chunk's end): one chunk is laid out again.
  function sizeAct(rec, yEnd, text, newestOnly) {
    const x = colX(rec.col) - 7 + rec.depth * 6;
    const top = rec.reqY, hgt = Math.max(6, yEnd - top);
    for (const el of newestOnly ? rec.els.slice(-1) : rec.els) {
      const r = el.firstChild, t = el.lastChild;
      r.setAttribute("x", String(x)); r.setAttribute("y", String(top));
      r.setAttribute("width", "14"); r.setAttribute("height", String(hgt)); r.setAttribute("rx", "3");
      t.setAttribute("x", String(x + 22)); t.setAttribute("y", String(yEnd - 22));
      t.textContent = text;
    }
  }

  function frame() {
    st.scheduled = false;
    if (!st.full && st.bottom > REBASE) st.full = true;   // far down: draw again from y = 0
    if (!st.full && st.newCols.size && !appendColumns()) st.relayout = true;
    if (st.relayout && !st.full) {
      const wait = st.lastFull + FULL_GAP - performance.now();
      if (wait > 0) {           // redrawn everything a moment ago: draw once more in a moment, not every frame
        if (!st.later) st.later = setTimeout(() => { st.later = null; schedule(); }, wait);
        return;
      }
      st.full = true;
    }
    if (st.full) fullRender(); else appendRows(st.queue);
    st.queue = [];
    for (const rec of st.openActs) sizeAct(rec, st.bottom - 4, `${rec.method || "?"} … running`, true);
    const trimmed = trim();
    const last = st.chunks[st.chunks.length - 1];
    if (last) sizeChunk(last);
    const w = width();
    if (w !== st.width) {     // lifelines were added on the right
      st.width = w;
      for (const ch of st.chunks) { sizeChunk(ch); drawLifelines(ch); }
      ui.heads.style.width = `${w}px`;
    }
    ui.slide.style.transform = `translateY(${-st.top + 10}px)`;
    ui.diagram.style.height = `${Math.max(st.bottom - st.top + 30, 200)}px`;
    ui.diagram.style.width = `${w}px`;
    ui.empty.hidden = st.rows.length > 0;
    ui.dropnote.hidden = st.dropped === 0;
    if (st.dropped) {
      ui.dropnote.textContent = `… ${st.dropped.toLocaleString("en")} earlier rows are no longer drawn ` +
        `(the page draws the last ${MAX_DRAWN.toLocaleString("en")}; filters still see the last ${MAX_KEPT.toLocaleString("en")} events)`;
    }
    if (ui.follow.checked) scrollToEnd();
    else if (trimmed > 0 && ui.scroller.scrollTop > 0) {
      st.ownScroll = true;      // keep what the trainer is looking at in place
      ui.scroller.scrollTop -= trimmed;
    }
    counts();
  }

  // A new chunk below the last: an <svg> (in a div the browser may skip while it is off screen) whose layers
  // are translated so rows keep their page y. Activations still running get a copy in it.
  function newChunk() {
    const y0 = st.bottom;
    const div = document.createElement("div");
    div.className = "chunk";
    div.style.top = `${y0}px`;
    const svg = document.createElementNS(SVGNS, "svg");
    const root = document.createElementNS(SVGNS, "g");
    root.setAttribute("transform", `translate(0,${-y0})`);
    const layer = (name) => { const g = document.createElementNS(SVGNS, "g"); g.setAttribute("class", name); root.appendChild(g); return g; };
    const ch = { div, svg, lifelines: layer("lifelines"), rows: layer("rows"), acts: layer("acts"), marks: layer("marks"),
                 y0, y1: y0, n: 0 };
    svg.appendChild(root);
    div.appendChild(svg);
    ui.slide.appendChild(div);
    st.chunks.push(ch);
    drawLifelines(ch);
    for (const rec of st.openActs) {
      if (!rec.els || !rec.els.length) continue;
      sizeAct(rec, y0 + 2 * H.arrow, `${rec.method || "?"} … running`, true);   // past the chunk's end
      const copy = rec.els[0].cloneNode(true);
      rec.els.push(copy);
      ch.acts.appendChild(copy);
    }
    return ch;
  }
  function sizeChunk(ch) {
    const h = Math.max(ch.y1 - ch.y0, 1), w = width();
    if (ch.h === h && ch.w === w) return;
    ch.h = h; ch.w = w;
    ch.svg.setAttribute("height", String(h));
    ch.svg.setAttribute("width", String(w));
    ch.div.style.height = `${h}px`;
    ch.div.style.width = `${w}px`;
  }
  function drawLifelines(ch) {      // down to far below the chunk: its <svg> clips them
    let html = "";
    for (const k of st.cols) {
      const x = colX(k);
      html += `<line class="lifeline${isFixed(k) ? " fixed" : ""}" x1="${x}" y1="${ch.y0}" x2="${x}" y2="${ch.y0 + 1e6}"/>`;
    }
    ch.lifelines.innerHTML = html;
  }

  function appendRows(events) {
    if (!events.length) return;
    if (events.length > MAX_DRAWN) {       // more than fits arrived in one frame: the oldest are never drawn
      st.dropped += events.length - MAX_DRAWN;
      events = events.slice(-MAX_DRAWN);
    }
    let ch = st.chunks[st.chunks.length - 1];
    let html = "", marks = "";
    const flush = () => {
      if (html) ch.rows.insertAdjacentHTML("beforeend", html);
      if (marks) ch.marks.insertAdjacentHTML("beforeend", marks);
      for (const g of pendingActs) ch.acts.appendChild(g);
      pendingActs.length = 0;
      html = ""; marks = "";
      sizeChunk(ch);
    };
    for (const ev of events) {
      if (!ch || ch.n >= CHUNK_ROWS) { if (ch) flush(); ch = newChunk(); }
      const r = renderRow(ev);
      if (r.heartbeats) st.hbDrawn.push({ ev, top: st.bottom, ch });
      st.rows.push({ seq: ev.seq, y: st.bottom, h: r.h });
      if (r.marks) marks += r.marks;
      html += r.html;
      st.bottom += r.h;
      ch.n++;
      ch.y1 = st.bottom;
    }
    flush();
  }
  const pendingActs = [];     // activations made while rendering rows, added to the chunk with them

  function fullRender() {
    st.full = false;
    st.relayout = false;
    st.lastFull = performance.now();
    const shown = [];
    let hidden = 0;             // visible events older than the last MAX_DRAWN: not drawn
    for (let i = st.all.length - 1; i >= 0; i--) {
      if (!visible(st.all[i])) continue;
      if (shown.length < MAX_DRAWN) shown.push(st.all[i]); else hidden++;
    }
    shown.reverse();
    st.dropped = hidden;
    layoutColumns(shown);
    ui.slide.textContent = "";
    st.chunks = [];
    st.hbDrawn = [];
    st.rows = [];
    st.calls = new Map();
    st.openActs = new Set();
    st.bottom = 0;
    st.top = 0;
    st.width = 0;             // the next frame sizes the heads and the diagram
    appendRows(shown);
  }

  // Keep the DOM bounded: drop the oldest rows (and finished activations above them) from the SVG. Returns
  // how many pixels of rows went.
  function trim() {
    const oldTop = st.top;
    while (st.chunks.length > 1 && st.rows.length - st.chunks[0].n >= MAX_DRAWN) {
      const ch = st.chunks.shift();
      ch.div.remove();
      st.rows.splice(0, ch.n);
      st.dropped += ch.n;
      for (const rec of st.openActs) if (rec.els) rec.els = rec.els.filter((el) => el.isConnected);
    }
    st.top = st.chunks.length ? st.chunks[0].y0 : st.bottom;
    return st.top - oldTop;     // pixels no longer drawn above
  }

  function scrollToEnd() {
    const target = ui.scroller.scrollHeight - ui.scroller.clientHeight;
    if (ui.scroller.scrollTop < target - 1) { st.ownScroll = true; ui.scroller.scrollTop = target; }
  }
  ui.scroller.addEventListener("scroll", () => {
    if (st.ownScroll) { st.ownScroll = false; return; }
    const atEnd = ui.scroller.scrollTop + ui.scroller.clientHeight >= ui.scroller.scrollHeight - 40;
    if (!atEnd && ui.follow.checked) ui.follow.checked = false;       // the trainer scrolled back: stop following
    else if (atEnd && !ui.follow.checked && !st.paused) ui.follow.checked = true;
  }, { passive: true });

  function counts() {
    const parts = [`${st.total.toLocaleString("en")} events`, `${st.rows.length.toLocaleString("en")} drawn`];
    if (st.pending.length) parts.push(`${st.pending.length.toLocaleString("en")} buffered`);
    if (st.replay) parts.push(`replay ${st.replay.i}/${st.replay.events.length}`);
    ui.counts.textContent = parts.join(" · ");
  }

  // ---- the detail panel -----------------------------------------------------------------------------------
  function highlight(json) {
    // escape <, > and & only: the quotes must stay for the string pattern (this is element text, not an attribute)
    return json.replace(/[&<>]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;" }[c])).replace(/("(?:\\u[a-fA-F0-9]{4}|\\[^u]|[^\\"])*"(\s*:)?|\b(?:true|false|null)\b|-?\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)/g,
      (m) => {
        let cls = "n";
        if (m.startsWith('"')) cls = /:$/.test(m) ? "k" : "s";
        else if (/true|false|null/.test(m)) cls = "b";
        return `<span class="${cls}">${m}</span>`;
      });
  }
  // The event with what a reader looks for first on top (the director's key order otherwise).
  const FIRST = ["seq", "kind", "method", "instance", "deployment", "state", "latency_ms", "polls", "value", "exception",
                 "blob", "heartbeats", "text", "fault", "arguments", "message"];
  function ordered(ev) {
    const out = {};
    for (const k of FIRST) if (k in ev) out[k] = ev[k];
    for (const k of Object.keys(ev)) if (!(k in out)) out[k] = ev[k];
    return out;
  }
  function select(uid) {
    const ev = st.byUid.get(uid);
    if (!ev) return;
    st.selected = uid;
    for (const el of ui.diagram.querySelectorAll(".sel")) el.classList.remove("sel");
    for (const el of ui.diagram.querySelectorAll(`[data-uid="${uid}"]`)) el.classList.add("sel");
    const who = ev.instance || (ev.blob ? ev.src : "") || "";
    ui.detailTitle.textContent = [ev.kind, ev.method || (ev.blob && ev.blob.method), who, ev.seq > 0 ? "#" + ev.seq : ""]
      .filter(Boolean).join(" · ");
    ui.detailJson.innerHTML = highlight(JSON.stringify(ordered(ev), null, 2));
    ui.detailJson.scrollTop = 0;
    // the call this event belongs to: its request, progress and reply
    ui.detailCall.textContent = "";
    if (ev.call) {
      const related = st.all.filter((e) => e.call === ev.call && e !== ev);
      if (related.length) {
        ui.detailCall.append("same call: ");
        for (const r of related) {
          const a = document.createElement("a");
          a.textContent = `${r.kind} #${r.seq}`;
          a.addEventListener("click", () => select(uidOf.get(r)));
          ui.detailCall.append(a);
        }
      }
    }
    ui.detail.classList.remove("closed");
  }
  function closeDetail() {
    st.selected = null;
    for (const el of ui.diagram.querySelectorAll(".sel")) el.classList.remove("sel");
    ui.detailTitle.textContent = "";
    ui.detailJson.textContent = "";
    ui.detailCall.textContent = "";
    ui.detail.classList.add("closed");
  }
  ui.diagram.addEventListener("click", (e) => {
    const el = e.target.closest("[data-uid]");
    if (el) select(Number(el.getAttribute("data-uid")));
  });
  ui.detailClose.addEventListener("click", closeDetail);

  // ---- controls -------------------------------------------------------------------------------------------
  function setPaused(p) {
    st.paused = p;
    ui.pause.textContent = p ? "▶ Resume" : "❚❚ Pause";
    ui.pause.classList.toggle("on", p);
    ui.step.disabled = !p;
    if (!p) {
      const buffered = st.pending.splice(0);
      for (const ev of buffered) ingest(ev);
      if (st.replay) replayTick();
    }
    counts();
  }
  function step() {
    if (!st.paused) return;
    if (st.pending.length) ingest(st.pending.shift());
    else if (st.replay && st.replay.i < st.replay.events.length) {
      const ev = st.replay.events[st.replay.i++];
      if (typeof ev.ts === "number") st.replay.vt = ev.ts;
      ingest(ev);
      if (st.replay.i >= st.replay.events.length) replayDone();
    }
    counts();
  }
  ui.pause.addEventListener("click", () => setPaused(!st.paused));
  ui.step.addEventListener("click", step);
  ui.follow.addEventListener("change", () => { if (ui.follow.checked) scrollToEnd(); });
  for (const el of [ui.instance, ui.method, ui.heartbeats, ui.blobs]) {
    el.addEventListener("change", () => { st.full = true; schedule(); });
  }
  document.addEventListener("keydown", (e) => {
    if (e.target instanceof HTMLSelectElement || e.target instanceof HTMLInputElement || e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.target instanceof HTMLButtonElement && (e.key === " " || e.key === "Enter")) return;   // the button's own click
    if (e.key === " ") { e.preventDefault(); setPaused(!st.paused); }
    else if (e.key === "s" || e.key === "ArrowRight") step();
    else if (e.key === "f") { ui.follow.checked = !ui.follow.checked; if (ui.follow.checked) scrollToEnd(); }
    else if (e.key === "Escape") closeDetail();
  });

  // ---- the live stream ------------------------------------------------------------------------------------
  function setStatus(state, text) {
    ui.status.dataset.state = state;
    ui.status.textContent = text;
  }
  function streamURL() {
    const q = new URLSearchParams();
    for (const name of ["deployment", "kind"]) if (params.get(name)) q.set(name, params.get(name));   // server-side filters
    if (st.lastSeq > 0) q.set("since", String(st.lastSeq));
    else q.set("history", params.get("history") || "500");
    return `/watch?${q}`;
  }
  function connect() {
    clearTimeout(st.retry);
    if (st.es) st.es.close();
    setStatus(st.lastSeq ? "reconnecting" : "connecting", st.lastSeq ? "reconnecting…" : "connecting…");
    const es = new EventSource(streamURL());
    st.es = es;
    es.onopen = () => setStatus("connected", "connected");
    es.onerror = () => {
      if (st.es !== es) return;
      if (es.readyState === EventSource.CLOSED) {   // refused (401, 404...): try again ourselves
        setStatus("disconnected", "disconnected · retrying");
        es.close();
        st.retry = setTimeout(connect, 3000);
      } else setStatus("reconnecting", "reconnecting…");
    };
    const onEvent = (e) => {
      let ev;
      try { ev = JSON.parse(e.data); } catch (err) { return; }
      receive(ev);
    };
    es.addEventListener("timeline", onEvent);
    es.addEventListener("message", onEvent);
  }
  function stopLive() {
    clearTimeout(st.retry);
    if (st.es) { st.es.close(); st.es = null; }
  }

  function reset() {
    st.all = []; st.byUid = new Map(); st.pending = []; st.queue = []; st.total = 0; st.lastSeq = 0; st.synthetic = 0;
    st.selected = null; st.full = true;
    schedule();
  }

  // ---- replay of a recorded session (bosh-lab watch --json > session.jsonl) -------------------------------
  function parseJSONL(text) {
    const out = [];
    for (const line of text.split(/\r?\n/)) {
      const s = line.trim();
      if (!s) continue;
      try {
        const ev = JSON.parse(s);
        if (ev && typeof ev === "object" && ev.kind) out.push(ev);
      } catch (e) { /* not an event: skipped */ }
    }
    return out;
  }
  function speed() { const v = SPEEDS[ui.speed.value]; return v === undefined ? 1 : v; }
  function startReplay(events, name) {
    stopLive();
    if (st.replay) clearTimeout(st.replay.timer);
    reset();
    st.mode = "replay";
    ui.live.hidden = false;
    const first = events.find((e) => typeof e.ts === "number");
    st.replay = { events, i: 0, vt: first ? first.ts : 0, last: performance.now(), timer: null, name };
    setStatus("replay", `replay · ${name}`);
    replayTick();
  }
  function replayTick() {
    const r = st.replay;
    if (!r) return;
    clearTimeout(r.timer);
    const now = performance.now();
    if (st.paused) { r.last = now; return; }
    const sp = speed();
    if (sp === 0) {
      while (r.i < r.events.length) ingest(r.events[r.i++]);
    } else {
      r.vt += ((now - r.last) / 1000) * sp;
      while (r.i < r.events.length && !(typeof r.events[r.i].ts === "number" && r.events[r.i].ts > r.vt)) ingest(r.events[r.i++]);
    }
    r.last = now;
    if (r.i >= r.events.length) { replayDone(); return; }
    const wait = ((r.events[r.i].ts - r.vt) / sp) * 1000;
    r.timer = setTimeout(replayTick, Math.max(0, Math.min(250, wait)));
    counts();
  }
  function replayDone() {
    setStatus("replay-done", `replay done · ${st.replay ? st.replay.name : ""}`);
    counts();
  }
  ui.speed.addEventListener("change", () => { if (st.replay) { st.replay.last = performance.now(); replayTick(); } });
  ui.file.addEventListener("change", () => {
    const f = ui.file.files && ui.file.files[0];
    if (!f) return;
    f.text().then((text) => startReplay(parseJSONL(text), f.name));
    ui.file.value = "";
  });
  ui.live.addEventListener("click", () => {
    if (st.replay) clearTimeout(st.replay.timer);
    st.replay = null;
    st.mode = "live";
    ui.live.hidden = true;
    reset();
    connect();
  });
  function replayFromURL(url) {
    setStatus("replay", `loading ${url}`);
    fetch(url, { credentials: "same-origin", cache: "no-cache" })
      .then((r) => { if (!r.ok) throw new Error(`${r.status} ${r.statusText}`); return r.text(); })
      .then((text) => startReplay(parseJSONL(text), url.split("/").pop() || url))
      .catch((err) => setStatus("disconnected", `replay failed: ${err.message}`));
  }

  // ---- start ----------------------------------------------------------------------------------------------
  function preset(select, value) {
    if (!value) return;
    addOption(select, value);
    select.value = value;
  }
  preset(ui.instance, params.get("instance"));
  preset(ui.method, params.get("method"));
  if (params.get("speed") !== null) {
    const s = params.get("speed") === "instant" ? "0" : params.get("speed");
    if (s in SPEEDS) ui.speed.value = s;
  }
  if (params.get("follow") === "0") ui.follow.checked = false;
  schedule();
  if (params.get("replay")) replayFromURL(params.get("replay"));
  else connect();
})();

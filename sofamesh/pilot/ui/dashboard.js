// The sofamesh dashboard: reads Pilot's /debug JSON every few seconds and draws it. No build step,
// no third-party code: it works offline, served from the Python package by Pilot itself.
"use strict";

const REFRESH_MS = 3000;
const SVG_NS = "http://www.w3.org/2000/svg";

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function fill(id, rows) {
  const body = document.querySelector(`#${id} tbody`);
  body.replaceChildren(...rows);
  if (!rows.length) {
    const cols = document.querySelectorAll(`#${id} thead th`).length;
    body.append(el("tr", {}, el("td", { colspan: cols, class: "muted" }, "none")));
  }
}

function counts(obj) {
  return Object.entries(obj || {}).map(([k, v]) => `${k} ${v}`).join(", ");
}

async function get(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}

function fmtRate(x) { return x >= 10 ? x.toFixed(0) : x.toFixed(2); }
function fmtPct(x) { return `${(100 * x).toFixed(1)} %`; }
function fmtMs(x) { return x === null || x === undefined ? "–" : `≤ ${x} ms`; }

function drawServices(doc) {
  fill("services", doc.services.map((s) => {
    const unhealthy = Object.entries(s.by_health).some(([h, n]) => h !== "healthy" && n > 0);
    const tr = el("tr", { "data-service": s.name, class: "clickable" },
      el("td", {}, s.name), el("td", {}, s.protocol), el("td", { class: "num" }, s.instances),
      el("td", {}, counts(s.by_registry)), el("td", { class: unhealthy ? "bad" : "" }, counts(s.by_health)));
    tr.addEventListener("click", () => showService(s.name));
    return tr;
  }));
}

async function showService(name) {
  const d = await get(`/debug/services/${encodeURIComponent(name)}`);
  const box = document.getElementById("service-detail");
  const inst = el("table", {}, el("tr", {}, ...["instance", "address", "registry", "health", "labels"].map((h) => el("th", {}, h))),
    ...d.instances.map((i) => el("tr", {}, el("td", {}, i.id), el("td", {}, `${i.address}:${i.port}`),
      el("td", {}, i.registry), el("td", {}, i.health), el("td", {}, counts(i.labels)))));
  const pol = d.policies.length ? d.policies.map((p) => `${p.kind} ${p.namespace}/${p.name}`).join(", ") : "none";
  const callers = d.callers.length
    ? d.callers.map((c) => `${c.source} (${fmtRate(c.rps)} req/s)`).join(", ") : "none seen";
  box.replaceChildren(el("h3", {}, `${name}`), inst, el("p", {}, `Policies: ${pol}`), el("p", {}, `Called by: ${callers}`));
}

function drawProxies(doc) {
  fill("proxies", doc.proxies.map((p) => el("tr", { "data-proxy": p.proxy },
    el("td", {}, p.proxy), el("td", {}, p.cluster), el("td", {}, p.mode),
    ...["cds", "lds", "eds", "rds"].map((t) => {
      const s = p.types[t];
      const title = s.error ? `${s.error}` : `sent ${s.sent_version || "-"} acked ${s.acked_version || "-"}`;
      return el("td", { class: `state-${s.state}`, title, "data-type": t },
        s.state, s.sent_version ? el("span", { class: "muted" }, ` ${s.sent_version.slice(0, 8)}`) : "");
    }),
    el("td", { class: "muted" }, p.admin || "–"))));
}

function drawGraph(doc) {
  const edges = doc.edges;
  document.getElementById("graph-note").textContent =
    `scraped every ${doc.interval_s} s from ${doc.proxies.length} sidecar(s), round ${doc.rounds}`;
  fill("edges", edges.map((e) => el("tr", { "data-source": e.source, "data-destination": e.destination, "data-rps": e.rps },
    el("td", {}, e.source), el("td", {}, e.destination), el("td", { class: "num" }, fmtRate(e.rps)),
    el("td", { class: e.error_rate > 0 ? "num bad" : "num" }, fmtPct(e.error_rate)),
    el("td", { class: "num" }, fmtMs(e.p99_ms)), el("td", { class: "num" }, e.requests_total))));
  const g = document.getElementById("graph");
  const sources = [...new Set(edges.map((e) => e.source))];
  const dests = [...new Set(edges.map((e) => e.destination))];
  const rows = Math.max(sources.length, dests.length, 1);
  const h = Math.max(120, rows * 46 + 20);
  const w = g.clientWidth || 900;
  g.setAttribute("viewBox", `0 0 ${w} ${h}`);
  g.style.height = `${h}px`;
  const defs = svg("defs");
  const marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto" });
  marker.append(svg("path", { d: "M0,0 L10,5 L0,10 z", fill: "#4a6ee0" }));
  defs.append(marker);
  const nodeW = 270;
  const pos = {};
  const place = (names, x, side) => names.forEach((n, i) => {
    const y = 20 + i * 46 + (rows - names.length) * 23;
    pos[`${side}:${n}`] = { x, y };
  });
  place(sources, 10, "s");
  place(dests, w - nodeW - 10, "d");
  const parts = [defs];
  for (const e of edges) {
    const a = pos[`s:${e.source}`], b = pos[`d:${e.destination}`];
    const grp = svg("g", { class: e.error_rate > 0 ? "edge errors" : "edge" });
    grp.append(svg("line", { x1: a.x + nodeW, y1: a.y + 14, x2: b.x, y2: b.y + 14 }));
    const label = `${fmtRate(e.rps)}/s  ${fmtPct(e.error_rate)}  ${fmtMs(e.p99_ms)}`;
    // the label sits three quarters of the way, where edges into one destination spread apart least
    const lx = a.x + nodeW + 0.72 * (b.x - a.x - nodeW), ly = a.y + 14 + 0.72 * (b.y - a.y);
    grp.append(svg("text", { x: lx - 150, y: ly - 4 }, label));
    parts.push(grp);
  }
  for (const [key, p] of Object.entries(pos)) {
    const grp = svg("g", { class: "node" });
    grp.append(svg("rect", { x: p.x, y: p.y, width: nodeW, height: 28 }));
    grp.append(svg("text", { x: p.x + 8, y: p.y + 18 }, key.slice(2)));
    parts.push(grp);
  }
  g.replaceChildren(...parts);
}

function drawPolicy(doc, analysis) {
  fill("policy", doc.resources.map((r) => el("tr", { "data-resource": r.key },
    el("td", {}, r.key), el("td", {}, r.origin), el("td", { class: "num" }, r.revision))));
  fill("rejected", doc.rejected.map((v) => el("tr", {},
    el("td", {}, v.ref), el("td", {}, v.source), el("td", { class: "bad" },
      v.issues.map((i) => `${i.path ? i.path + ": " : ""}${i.message}`).join("; ")))));
  const ul = document.getElementById("findings");
  ul.replaceChildren(...(analysis.findings.length ? analysis.findings.map((f) =>
    el("li", { class: f.level === "Error" ? "bad" : "" }, `${f.level} [${f.code}] (${f.resource}) ${f.message}`))
    : [el("li", { class: "muted" }, "no findings")]));
}

function drawRegistries(doc, sync) {
  fill("registries", doc.registries.map((r) => el("tr", { "data-registry": r.name },
    el("td", {}, r.name), el("td", {}, r.kind), el("td", {}, r.writable ? "yes" : "no"),
    el("td", { class: r.stale ? "bad" : "" }, r.stale ? "stale" : "in sync"),
    el("td", { class: "num" }, Object.keys(r.services).length))));
  document.getElementById("sync").textContent = sync.enabled
    ? `registry sync: ${JSON.stringify(sync)}` : "registry sync: not configured";
}

async function refresh() {
  const status = document.getElementById("status");
  try {
    const [services, proxies, graph, policy, analysis, registry, sync] = await Promise.all([
      get("/debug/services"), get("/debug/proxy_status"), get("/debug/graph"), get("/debug/policy"),
      get("/debug/policy/analyze"), get("/debug/registry"), get("/debug/sync")]);
    drawServices(services);
    drawProxies(proxies);
    drawGraph(graph);
    drawPolicy(policy, analysis);
    drawRegistries(registry, sync);
    status.textContent = `updated ${new Date().toLocaleTimeString()}`;
    status.dataset.loaded = "true";
  } catch (err) {
    status.textContent = `cannot read Pilot: ${err.message}`;
  }
}

refresh();
setInterval(refresh, REFRESH_MS);

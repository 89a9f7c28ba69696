// The sighthub console: a small script over the server's own JSON APIs. Every request is
// authenticated by the session cookie plus the CSRF token kept here, in memory. Data from the
// server (values, namespaces, tags, peer names: other organisations write them) is only ever
// put into the page as text, never as HTML.
"use strict";

let csrf = null;
let timer = null;
const $ = (id) => document.getElementById(id);

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function time(secs) {
  if (!secs) return "";
  return new Date(secs * 1000).toISOString().replace("T", " ").replace(".000Z", " UTC");
}

function rows(table, list, cells) {
  const body = $(table).querySelector("tbody");
  body.replaceChildren();
  for (const item of list) {
    const tr = el("tr");
    for (const c of cells(item)) {
      if (c instanceof Node) {
        const td = el("td");
        td.append(c);
        tr.append(td);
      } else {
        tr.append(el("td", c));
      }
    }
    body.append(tr);
  }
}

class Unauthorized extends Error {}

async function api(method, path, body) {
  const opts = { method, headers: { "X-CSRF-Token": csrf || "" }, credentials: "same-origin" };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  const text = await r.text();
  let data = null;
  try { data = JSON.parse(text); } catch (_) { data = text; }
  if (r.status === 401) {
    showLogin("Your session has ended; log in again.");
    throw new Unauthorized();
  }
  if (!r.ok && r.status !== 404) {
    throw new Error((data && data.message) || `HTTP ${r.status}`);
  }
  return { status: r.status, data };
}

function showError(e) {
  if (!(e instanceof Unauthorized)) $("error").textContent = e.message || String(e);
}

function showLogin(message) {
  csrf = null;
  if (timer) clearInterval(timer);
  document.querySelectorAll(".view").forEach((v) => (v.hidden = true));
  $("nav").hidden = true;
  $("login-view").hidden = false;
  $("login-error").textContent = message || "";
  $("login-key").value = "";
  $("login-key").focus();
}

function show(view) {
  $("error").textContent = "";
  $("login-view").hidden = true;
  $("nav").hidden = false;
  if (timer) { clearInterval(timer); timer = null; }
  document.querySelectorAll(".view").forEach((v) => (v.hidden = v.id !== `${view}-view`));
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.hash === `#${view}`));
  const load = { namespaces: loadNamespaces, exchange: loadExchange, peers: loadPeers, keys: loadKeys, config: loadConfig }[view];
  if (load) {
    load().catch(showError);
    if (view === "exchange" || view === "peers") {
      timer = setInterval(() => load().catch(showError), 2000);
    }
  }
  const first = $(`${view}-view`).querySelector("input, button");
  if (first && view !== "peers" && view !== "exchange") first.focus();
}

function route() {
  if (!csrf) return;
  const view = (location.hash || "#search").slice(1);
  show(["search", "namespaces", "add", "exchange", "peers", "keys", "config"].includes(view) ? view : "search");
}

// --- Search: who saw this value, and its hourly chart -------------------------------------
async function search(value) {
  const { status, data } = await api("GET", `/_api/who?val=${encodeURIComponent(value)}`);
  const list = status === 200 ? data.namespaces || [] : [];
  $("search-summary").textContent = list.length
    ? `Seen in ${list.length} namespace(s); consensus ${data.consensus}.`
    : "Nobody saw this value (in the namespaces you may read).";
  $("who-table").hidden = !list.length;
  rows("who-table", list, (n) => [n.namespace, n.count, time(n.first_seen), time(n.last_seen), n.tags]);
  $("chart").replaceChildren();
  $("chart-title").hidden = true;
  if (!list.length) return;
  const stats = {};
  for (const n of list.slice(0, 20)) {
    const r = await api("GET", `/rs/${n.namespace.split("/").map(encodeURIComponent).join("/")}?val=${encodeURIComponent(value)}&noshadow`);
    for (const [bucket, c] of Object.entries((r.data && r.data.stats) || {})) {
      stats[bucket] = (stats[bucket] || 0) + c;
    }
  }
  drawChart(stats);
}

function drawChart(stats) {
  const buckets = Object.keys(stats).map(Number).sort((a, b) => a - b).slice(-48);
  if (!buckets.length) return;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 600 180");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "sightings per hour");
  const max = Math.max(...buckets.map((b) => stats[b]));
  const w = Math.min(600 / buckets.length, 24);
  buckets.forEach((b, i) => {
    const h = Math.max(2, (stats[b] / max) * 150);
    const r = document.createElementNS(ns, "rect");
    r.setAttribute("class", "bar");
    r.setAttribute("x", String(i * w + 1));
    r.setAttribute("y", String(160 - h));
    r.setAttribute("width", String(Math.max(1, w - 2)));
    r.setAttribute("height", String(h));
    const t = document.createElementNS(ns, "title");
    t.textContent = `${time(b)}: ${stats[b]}`;
    r.append(t);
    svg.append(r);
  });
  const label = document.createElementNS(ns, "text");
  label.setAttribute("x", "0");
  label.setAttribute("y", "176");
  label.textContent = `${time(buckets[0])} … ${time(buckets[buckets.length - 1])}, max ${max}/h`;
  svg.append(label);
  $("chart").append(svg);
  $("chart-title").hidden = false;
}

// --- Namespaces: the tree with counts, a namespace's values page by page, delete -----------
function nsPath(ns) { return ns.split("/").map(encodeURIComponent).join("/"); }

async function loadNamespaces() {
  const { data } = await api("GET", "/_api/namespaces");
  const names = (data.namespaces || []).slice(0, 200);
  const counts = await Promise.all(names.map((n) => api("GET", `/r/${nsPath(n)}?count`).then((r) => r.data.values).catch(() => "?")));
  rows("ns-table", names.map((n, i) => [n, counts[i]]), ([n, c]) => {
    const open = el("button", "Open", "secondary");
    open.type = "button";
    open.addEventListener("click", () => openNamespace(n, null).catch(showError));
    const del = el("button", "Delete", "danger");
    del.type = "button";
    del.addEventListener("click", () => deleteNamespace(n).catch(showError));
    const span = el("span");
    span.append(open, " ", del);
    return [n, c, span];
  });
}

async function openNamespace(ns, after) {
  const q = after ? `&after=${encodeURIComponent(after)}` : "";
  const { data } = await api("GET", `/r/${nsPath(ns)}?limit=50${q}`);
  $("ns-values").hidden = false;
  $("ns-values-title").textContent = ns;
  rows("values-table", data.attributes || [], (a) => [a.value, a.count, time(a.last_seen), a.consensus]);
  const next = $("values-next");
  next.hidden = !data.next;
  next.onclick = () => openNamespace(ns, data.next).catch(showError);
}

async function deleteNamespace(ns) {
  if (!window.confirm(`Delete the namespace ${ns} and every value in it?`)) return;
  await api("POST", `/d/${nsPath(ns)}`);
  $("ns-values").hidden = true;
  await loadNamespaces();
}

// --- Exchange and peers: refreshed every 2 s while shown ------------------------------------
let lastHead = null;

async function loadExchange() {
  const { data } = await api("GET", "/_management/overview");
  const ex = data.exchange || {};
  const dl = $("exchange-facts");
  dl.replaceChildren();
  const now = Date.now();
  let rate = "";
  if (lastHead && ex.head_seq !== undefined) {
    rate = ((ex.head_seq - lastHead.seq) / ((now - lastHead.at) / 1000)).toFixed(1) + " messages/s";
  }
  if (ex.head_seq !== undefined) lastHead = { seq: ex.head_seq, at: now };
  const facts = [
    ["Organisation", ex.org], ["Instance", ex.instance], ["Identity", data.identity],
    ["Log head", ex.head_seq], ["Rate", rate], ["Log size", ex.log_bytes !== undefined ? `${ex.log_bytes} bytes` : ""],
    ["Accepted since start", ex.accepted], ["Duplicates since start", ex.duplicates], ["Refused since start", ex.refused],
    ["Bridge lag", data.bridge ? data.bridge.log_end - data.bridge.position : "off"],
  ];
  for (const [k, v] of facts) dl.append(el("dt", k), el("dd", v === undefined ? "" : v));
  rows("consumers-table", data.consumers || [], (c) => [c.org, c.name, c.acked, c.lag]);
  rows("transports-table", data.transports || [], (t) => [t.kind, t.name, t.received, t.stored, t.duplicates, t.rejected, t.delivered, t.failures]);
}

async function loadPeers() {
  const { data } = await api("GET", "/_management/overview");
  rows("links-table", data.links || [], (l) => {
    const s = l.state || {};
    return [l.name, l.kind, s.sent || 0, s.accepted || 0, s.duplicate || 0, s.refused || 0, s.errors || 0, l.last_error || "works"];
  });
}

// --- Keys -------------------------------------------------------------------------------------
async function loadKeys() {
  const { data } = await api("GET", "/_api/keys");
  rows("keys-table", data.keys || [], (k) => {
    const revoke = el("button", "Revoke", "danger");
    revoke.type = "button";
    revoke.addEventListener("click", async () => {
      if (!window.confirm(`Revoke the key ${k.name} (${k.id})?`)) return;
      await api("DELETE", `/_api/keys/${encodeURIComponent(k.id)}`).catch(showError);
      await loadKeys().catch(showError);
    });
    return [k.id, k.name, k.sightings || "", k.exchange ? JSON.stringify(k.exchange) : "", time(k.created), revoke];
  });
}

async function createKey() {
  const body = { name: $("key-name").value };
  if ($("key-sightings").value.trim()) body.sightings = $("key-sightings").value.trim();
  if ($("key-exchange").value.trim()) body.exchange = JSON.parse($("key-exchange").value);
  const r = await api("POST", "/_api/keys", body);
  const out = $("key-result");
  out.replaceChildren();
  if (r.status !== 201) { out.textContent = r.data.message; return; }
  out.append(el("span", `Key ${r.data.id} created. Copy it now; it is not shown again:`), el("output", r.data.key, "secret"));
  $("key-form").reset();
  await loadKeys();
}

// --- Configuration ----------------------------------------------------------------------------
async function loadConfig() {
  const { data } = await api("GET", "/_management/overview");
  const s = data.settings || {};
  const tls = s.tls || {};
  $("tls-expiry").textContent = tls.on
    ? `TLS certificate ${tls.cert || ""} expires ${tls.not_after ? time(tls.not_after) : "(unknown)"}.`
    : "Plain HTTP (no TLS).";
  $("config-json").textContent = JSON.stringify(s, null, 2);
}

// --- Wiring -----------------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", async () => {
  $("login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const r = await fetch("/_management/login", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ key: $("login-key").value }),
    });
    if (!r.ok) { showLogin("That is not the admin key."); return; }
    csrf = (await r.json()).csrf;
    $("login-key").value = "";
    if (!location.hash) location.hash = "#search"; else route();
  });
  $("logout").addEventListener("click", async () => {
    await api("POST", "/_management/logout").catch(() => {});
    showLogin("Logged out.");
  });
  $("search-form").addEventListener("submit", (e) => { e.preventDefault(); search($("search-value").value.trim()).catch(showError); });
  $("add-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const tags = $("add-tags").value.trim();
    const q = `val=${encodeURIComponent($("add-value").value)}` + (tags ? `&tags=${encodeURIComponent(tags)}` : "");
    try {
      const r = await api("GET", `/w/${nsPath($("add-ns").value.trim())}?${q}`);
      $("add-result").textContent = r.status === 200 ? `Recorded: count ${r.data.count}.` : r.data.message;
    } catch (err) { showError(err); }
  });
  $("key-form").addEventListener("submit", (e) => { e.preventDefault(); createKey().catch(showError); });
  window.addEventListener("hashchange", route);
  const r = await fetch("/_management/session", { credentials: "same-origin" });
  if (r.ok) { csrf = (await r.json()).csrf; route(); } else { showLogin(""); }
});

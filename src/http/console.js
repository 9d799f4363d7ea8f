"use strict";
const state = { apps: {}, origins: new Map(), status: null, after: 0, open: new Set(), query: "" };
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));

function age(ns) {
  if (!ns) return "-";
  const s = Math.max(0, Math.round((Date.now() * 1e6 - ns) / 1e9));
  if (s < 120) return s + "s";
  if (s < 7200) return Math.round(s / 60) + "m";
  return Math.round(s / 3600) + "h";
}
const statusName = (s) => (s === 1 ? "up" : s === 2 ? "waiting" : String(s));
// Where an instance comes from: this cluster ("here"), another zone, or an
// original discovery cluster it follows (`/admin/origins`).
const originKey = (appid, i) => JSON.stringify([i.env, appid, i.zone, i.hostname]);
const originOf = (appid, i) => state.origins.get(originKey(appid, i)) || "here";

function matches(appid, inst) {
  const q = state.query;
  if (!q) return true;
  const hay = [appid, inst.hostname, inst.zone, inst.env, inst.version, ...(inst.addrs || []),
    ...Object.entries(inst.metadata || {}).map(([k, v]) => k + "=" + v)].join(" ").toLowerCase();
  return hay.includes(q);
}

function renderApps() {
  const names = Object.keys(state.apps).sort();
  let shown = 0, instances = 0;
  const html = [];
  for (const appid of names) {
    const all = state.apps[appid] || [];
    const list = all.filter((i) => matches(appid, i));
    instances += all.length;
    if (!list.length) continue;
    shown++;
    // Zone names come from clients: a Map, so that "constructor" or
    // "__proto__" are names like any other.
    const zones = new Map();
    for (const i of list) {
      if (!zones.has(i.zone)) zones.set(i.zone, []);
      zones.get(i.zone).push(i);
    }
    const zoneNames = [...zones.keys()].sort();
    const up = list.filter((i) => i.status === 1).length;
    const elsewhere = list.filter((i) => originOf(appid, i) !== "here").length;
    const rows = zoneNames.map((z) => {
      const body = zones.get(z).sort((a, b) => a.hostname.localeCompare(b.hostname)).map((i) =>
        `<tr data-host="${esc(i.hostname)}"><td><code>${esc(i.hostname)}</code></td>` +
        `<td class="status-${i.status}">${statusName(i.status)}</td>` +
        `<td>${(i.addrs || []).map((a) => `<code>${esc(a)}</code>`).join("<br>")}</td>` +
        `<td>${esc(i.version) || "-"}</td>` +
        `<td>${Object.entries(i.metadata || {}).map(([k, v]) => `<span class="pill">${esc(k)}=${esc(v)}</span>`).join("")}</td>` +
        `<td>${age(i.renew_timestamp)}</td><td>${esc(i.env)}</td>` +
        `<td class="origin">${esc(originOf(appid, i))}</td></tr>`).join("");
      return `<div class="zone"><h3>${esc(z)} · ${zones.get(z).length}</h3><table><thead><tr>` +
        `<th>hostname</th><th>status</th><th>addrs</th><th>version</th><th>metadata</th><th>renewed</th><th>env</th><th>from</th>` +
        `</tr></thead><tbody>${body}</tbody></table></div>`;
    }).join("");
    const open = state.open.has(appid) || state.query ? " open" : "";
    html.push(`<details class="app" data-app="${esc(appid)}"${open}><summary><span class="name">${esc(appid)}</span>` +
      `<span class="meta">${list.length} instance${list.length === 1 ? "" : "s"} · ${up} up · ${zoneNames.map(esc).join(", ")}` +
      `${elsewhere ? ` · ${elsewhere} held for elsewhere` : ""}</span></summary>${rows}</details>`);
  }
  $("apps").innerHTML = html.join("") || `<p class="muted">No apps${state.query ? " match" : ""}.</p>`;
  $("counts").textContent = `${shown} of ${names.length} apps · ${instances} instances`;
  for (const d of document.querySelectorAll("details.app")) {
    d.addEventListener("toggle", () => d.open ? state.open.add(d.dataset.app) : state.open.delete(d.dataset.app));
  }
}

function renderStatus() {
  const s = state.status;
  if (!s) return;
  $("node").textContent = `node ${s.id} · ${s.state}`;
  $("raft").innerHTML = `term <b>${s.term}</b> · leader <b>${s.leader ?? "none"}</b> · log ${s.last_log_index ?? "-"} · ` +
    `committed ${s.committed_index ?? "-"} · applied ${s.applied_index ?? "-"} · held polls ${s.held_polls}` +
    (s.diverged ? ` · <span class="dead" title="${esc(s.diverged)}">diverged: serves no reads</span>` :
      s.protected ? ` · <span class="dead">catching up</span>` : "") +
    (s.no_quorum ? ` · <span class="dead" id="no-quorum" title="${esc(s.no_quorum)}">no quorum: takes no writes</span>` : "") +
    (s.removed ? ` · <span class="dead" id="removed" title="${esc(s.removed)}">removed from the cluster</span>` : "");
  $("upstreams").closest("section").hidden = !Object.keys(s.upstreams || {}).length;
  $("upstreams").innerHTML = Object.entries(s.upstreams || {}).map(([name, u]) => {
    const side = (what, v, n) => `${what} <b class="${v.state === "failing" ? "dead" : v.state === "following" ? "live" : ""}">${esc(v.state)}</b>` +
      ` · ${n} · lag ${v.lag_ms} ms` + (v.error ? ` · <span class="dead">${esc(v.error)}</span>` : "");
    return `<li>original <b>${esc(name)}</b>: ${side("import", u.import, `${u.imported} imported`)} — ${side("export", u.export, `${u.exported} exported`)}</li>`;
  }).join("");
  const liveNames = new Set((state.apps["infra.discovery"] || []).filter((i) => i.status === 1).map((i) => i.hostname));
  const rows = Object.entries(s.members || {}).map(([id, m]) => {
    const role = Number(id) === s.leader ? "leader" : m.voter ? "voter" : "learner";
    const live = liveNames.has(m.name);
    return `<tr><td>${esc(id)}</td><td>${esc(m.name)}<br><code class="muted">${esc(m.api_addr)}</code></td><td>${role}</td>` +
      `<td>${m.matched_index ?? "-"}</td><td>${m.lag ?? "-"}</td><td class="${live ? "live" : "dead"}">${live ? "live" : "not seen"}</td></tr>`;
  }).join("");
  document.querySelector("#members tbody").innerHTML = rows;
  const p = s.self_preservation;
  $("eviction").innerHTML = p
    ? `self-preservation <b class="${p.protecting ? "dead" : "live"}">${p.protecting ? "ON: nothing is evicted" : "off"}</b> · renews seen ${p.seen} of ${p.expected} expected in the window`
    : s.leader === s.id
      ? "no eviction round yet since this node took the lead"
      : "this node does not lead: the leader runs eviction (see its console)";
}

function renderFeed(changes) {
  const ul = $("feed");
  for (const c of changes) {
    const li = document.createElement("li");
    const when = new Date(c.at_ms).toLocaleTimeString();
    const who = c.kind === "snapshot" ? `whole registry replaced at index ${c.index}`
      : `${esc(c.appid)} ${esc(c.zone)} ${c.hostnames.map(esc).join(", ")}${c.count > c.hostnames.length ? ` (+${c.count - c.hostnames.length})` : ""}`;
    li.innerHTML = `<span class="muted">${when}</span> <span class="kind kind-${c.kind}">${c.kind}</span> ${who}`;
    ul.prepend(li);
  }
  while (ul.children.length > 200) ul.lastChild.remove();
}

async function json(path) {
  const r = await fetch(path, { cache: "no-store" });
  return r.json();
}

async function refresh() {
  const [all, status, origins] = await Promise.all([json("/discovery/fetch/all"), json("/admin/status"), json("/admin/origins")]);
  if (all.code === 0) state.apps = all.data || {};
  state.origins = new Map();
  for (const [appid, held] of Object.entries(origins || {})) {
    for (const h of held) state.origins.set(originKey(appid, h), h.from);
  }
  state.status = status;
  renderApps();
  renderStatus();
}

// Live: the node's own long poll of its change feed; each answer brings
// the changes, then the view is read again.
async function follow() {
  for (;;) {
    try {
      const feed = await json(`/admin/changes?after=${state.after}`);
      $("conn").textContent = "live";
      $("conn").className = "live";
      if (feed.changes && feed.changes.length) {
        renderFeed(feed.changes);
        await refresh();
      }
      state.after = feed.latest;
    } catch (e) {
      $("conn").textContent = "reconnecting…";
      $("conn").className = "dead";
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
}

$("search").addEventListener("input", (e) => { state.query = e.target.value.trim().toLowerCase(); renderApps(); });
refresh().then(follow);
setInterval(() => refresh().catch(() => {}), 5000);

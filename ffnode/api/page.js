// The status page: reads the node's API every REFRESH_MS and fills the page; changes nothing.
"use strict";
const REFRESH_MS = 2000;
const $ = (id) => document.getElementById(id);
const short = (s, n = 12) => (s ? String(s).slice(0, n) : "–");

function token() { return sessionStorage.getItem("ffnode-token"); }

async function get(path) {
  const headers = token() ? { Authorization: "Bearer " + token() } : {};
  const r = await fetch(path, { headers, cache: "no-store" });
  if (r.status === 401 || r.status === 403) { $("login").style.display = "block"; throw new Error("token needed"); }
  if (!r.ok) throw new Error(path + ": " + r.status + " " + (await r.text()));
  return r.json();
}

function rows(tbody, items, cells) {
  const body = $(tbody);
  body.replaceChildren(...items.map((item) => {
    const tr = document.createElement("tr");
    for (const [text, cls] of cells(item)) {
      const td = document.createElement("td");
      td.textContent = text;
      if (cls) td.className = cls;
      tr.append(td);
    }
    return tr;
  }));
}

function duration(s) {
  if (s == null) return "";
  if (s < 120) return Math.round(s) + " s";
  if (s < 7200) return Math.round(s / 60) + " min";
  return (s / 3600).toFixed(1) + " h";
}

async function refresh() {
  try {
    const s = await get("/v1/status");
    $("federation").textContent = "· " + s.federation;
    $("peer-id").textContent = s.peer_id;
    $("phase").textContent = s.phase;
    $("task").textContent = s.task || "";
    const [done, total] = s.progress;
    $("progress").style.width = total ? Math.min(100, (100 * done) / total) + "%" : "0";
    $("eta").textContent = s.eta_s != null ? "about " + duration(s.eta_s) + " left" : "";
    $("peers-count").textContent = s.connected_peers;
    $("relayed").textContent = s.relayed_peers ? s.relayed_peers + " relayed" : "";
    $("experts").textContent = s.answering_experts;
    $("uncovered").textContent = s.uncovered_classes.length ? "not covered: " + s.uncovered_classes.join(", ") : "";
    $("jobs").textContent = [s.jobs.ok, s.jobs.failed, s.jobs.killed].join(" / ");
    $("uptime").textContent = duration(s.uptime_s);
    $("fault").textContent = s.fault ? "fault: " + s.fault : "";
    $("fault").className = s.fault ? "bad" : "";
    const [peers, artifacts, audits, events] = await Promise.all(
      ["/v1/peers", "/v1/artifacts", "/v1/audit", "/v1/events?limit=20"].map(get));
    rows("peers", peers, (p) => [[short(p.peer_id, 20), "id"], [p.connected ? "yes" : "no", p.connected ? "good" : ""],
      [p.path || ""], [Object.entries(p.published).map(([k, n]) => n + " " + k).join(", ")], [p.accepted],
      [p.rejected, p.rejected ? "warn" : ""], [p.last_rejection || ""]]);
    rows("artifacts", artifacts, (a) => [[short(a.id), "id"], [a.kind], [(a.classes || []).join(", ")],
      [short(a.owner, 16), "id"], [a.state, a.state === "live" ? "good" : (a.state === "revoked" ? "bad" : "")]]);
    rows("audits", audits, (a) => [[short(a.factory), "id"], [a.class], [a.own ? "this node" : short(a.owner, 16)],
      [a.state], [a.verdict, {passes: "good", inconclusive: "warn"}[a.outcome] || "bad"]]);
    rows("events", events.slice().reverse(), (e) => [[e.time], [e.event], [short(e.actor, 16), "id"],
      [[e.kind, short(e.artifact || (e.ids || []).join(" ")), e.reason].filter(Boolean).join(" · ")]]);
    $("error").textContent = "";
    $("login").style.display = "none";
  } catch (err) {
    $("error").textContent = "could not read the node: " + err.message;
  }
}

$("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem("ffnode-token", $("token").value.trim());
  refresh();
});
refresh();
setInterval(refresh, REFRESH_MS);

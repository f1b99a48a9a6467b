// edge console: live view, status and plots. Plain JS, no build step; uPlot is vendored.
// Everything is read-only: GET /api/config, /api/status, /api/history, /api/<camera>/latest.jpg.
"use strict";

const STATUS_MS = 2000;
const HISTORY_MS = 5000;
const COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];
const cards = new Map();
const charts = {};
let config = null;
let kept = null;  // the plotted hour of samples

const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

async function getJSON(url) {
  const response = await fetch(url, { cache: "no-store" });
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

function fmt(value, digits = 1) {
  return typeof value === "number" && isFinite(value) ? value.toFixed(digits) : "–";
}

function age(seconds) {
  if (typeof seconds !== "number") return "–";
  return seconds < 1 ? `${Math.round(seconds * 1000)} ms ago` : `${seconds.toFixed(1)} s ago`;
}

// ---------------------------------------------------------------- live view

function makeCard(name) {
  const figure = el("figure", null, "camera");
  figure.dataset.camera = name;
  const img = el("img");
  img.alt = `camera ${name}: newest classified frame`;
  const caption = el("figcaption");
  const title = el("div", name, "name");
  const labels = el("ol", null, "labels");
  const meta = el("div", "waiting for the first classified frame", "meta");
  caption.append(title, labels, meta);
  figure.append(img, caption);
  $("live").append(figure);
  const card = { name, figure, img, labels, meta, etag: null, url: null, captured: null };
  cards.set(name, card);
  return card;
}

function showLabels(card, rows) {
  card.labels.replaceChildren();
  let top = null;
  for (const row of rows) {
    for (const entry of row.top || []) {
      const item = el("li");
      const prefix = row.roi ? `${row.roi}: ` : "";
      item.append(el("span", prefix + entry.label, "label"), el("span", fmt(entry.score, 2), "score"));
      card.labels.append(item);
      if (top === null && !row.roi) top = entry.label;
    }
  }
  if (top === null && rows.length && rows[0].top && rows[0].top.length) top = rows[0].top[0].label;
  card.figure.dataset.top = top || "";
}

async function refreshFrame(card) {
  const headers = card.etag ? { "If-None-Match": card.etag } : {};
  const response = await fetch(`/api/${encodeURIComponent(card.name)}/latest.jpg?annotated=1`,
                               { cache: "no-store", headers });
  if (response.status === 204) {
    card.meta.textContent = "waiting for the first classified frame";
    return;
  }
  if (response.status !== 304) {
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const blob = await response.blob();
    const url = URL.createObjectURL(blob);
    await new Promise((resolve, reject) => {
      card.img.onload = resolve;
      card.img.onerror = () => reject(new Error("the frame did not decode"));
      card.img.src = url;
    });
    if (card.url) URL.revokeObjectURL(card.url);
    card.url = url;
    card.etag = response.headers.get("ETag");
    const rows = JSON.parse(decodeURIComponent(response.headers.get("X-Edge-Labels") || "%5B%5D"));
    showLabels(card, rows);
    card.captured = Number(response.headers.get("X-Edge-Captured-At"));
    card.figure.dataset.frame = response.headers.get("X-Edge-Frame") || "";
  }
  const seconds = card.captured ? Date.now() / 1000 - card.captured : null;
  card.meta.textContent = `frame ${card.figure.dataset.frame} · captured ${age(seconds)}`;
}

async function liveLoop(card) {
  const period = 1000 / Math.max(0.1, config.live_fps);
  for (;;) {
    const started = performance.now();
    if (!document.hidden) {  // nobody looking: nothing is encoded
      try {
        await refreshFrame(card);
      } catch (err) {
        card.meta.textContent = `live view: ${err.message}`;
      }
    }
    await sleep(Math.max(50, period - (performance.now() - started)));
  }
}

// ---------------------------------------------------------------- status

function kvRows(tbody, rows) {
  tbody.replaceChildren(...rows.map(([key, value]) => {
    const tr = el("tr");
    tr.append(el("th", key), el("td", value));
    return tr;
  }));
}

function showStatus(doc) {
  const health = doc.health || {};
  $("device").textContent = health.device || config.device;
  document.title = `${health.device || config.device} · edge console`;
  const state = $("state");
  state.textContent = health.state || "unknown";
  state.className = `badge ${health.state || ""}`;
  $("problems").replaceChildren(...(health.problems || []).map((p) => el("li", p)));
  const inference = health.inference || {};
  const results = health.results || {};
  $("summary").textContent = `up ${fmt(health.uptime_s, 0)} s · ${inference.frames_classified ?? "–"} frames ` +
    `classified · inference p50 ${fmt((inference.inference_ms || {}).p50)} ms · capture→publish p99 ` +
    `${fmt((results.capture_to_publish_ms || {}).p99)} ms · RSS ${fmt((health.process || {}).rss_mb, 0)} MB`;
  const body = $("cameras").tBodies[0];
  body.replaceChildren(...(health.cameras || []).map((cam) => {
    const tr = el("tr");
    const res = cam.decoded_resolution || cam.resolution;
    tr.append(el("td", cam.name), el("td", cam.state, `state-${cam.state}`), el("td", fmt(cam.camera_fps)),
              el("td", fmt(cam.process_fps)), el("td", fmt(cam.skipped_fps)), el("td", cam.reconnects),
              el("td", res ? `${res[0]}×${res[1]}` : "–"), el("td", cam.decode_scale ? `1/${cam.decode_scale}` : "–"),
              el("td", age(cam.last_frame_age_s)));
    return tr;
  }));
  const model = health.model || {};
  const rollout = model.rollout || {};
  kvRows($("model").tBodies[0], [
    ["name", model.name ?? "–"], ["version", model.version ?? "–"], ["runtime", model.runtime ?? "–"],
    ["backend", (model.backend || {}).state ?? "–"], ["rollout", rollout.state ?? "no registry"],
    ["batch size (mean)", fmt(((inference.batch_size || {}).mean), 2)],
  ]);
  const mqtt = health.mqtt || {};
  const spool = health.spool || {};
  kvRows($("broker").tBodies[0], [
    ["broker", `${mqtt.broker ?? "–"} (${mqtt.state ?? "–"})`], ["reconnects", mqtt.reconnects ?? "–"],
    ["published / acked", `${mqtt.published ?? "–"} / ${mqtt.acked ?? "–"}`],
    ["spool depth", spool.depth ?? "–"], ["spool bytes", spool.bytes ?? "–"], ["spool dropped", spool.dropped ?? "–"],
  ]);
  $("events").replaceChildren(...(doc.events || []).slice().reverse().map((event) => {
    const item = el("li");
    const payload = JSON.stringify(event.payload);
    item.append(el("span", new Date(event.ts * 1000).toLocaleTimeString()), el("span", event.kind, "kind"),
                el("span", payload.length > 200 ? payload.slice(0, 200) + "…" : payload));
    return item;
  }));
}

async function statusLoop() {
  for (;;) {
    try {
      showStatus(await getJSON("/api/status"));
    } catch (err) {
      $("summary").textContent = `status: ${err.message}`;
    }
    await sleep(STATUS_MS);
  }
}

// ---------------------------------------------------------------- plots

function chart(id, series, data) {
  const target = $(id);
  const width = Math.max(300, target.clientWidth || 360);
  const opts = { width, height: 170, series: [{}, ...series], scales: { x: { time: true } },
                 axes: [{}, { size: 50 }], legend: { show: true } };
  target.dataset.points = String(data[0].length);
  target.dataset.values = String(data.slice(1).reduce(
    (n, column) => n + column.filter((v) => typeof v === "number" && isFinite(v)).length, 0));
  if (charts[id] && charts[id].series.length === series.length + 1) {
    charts[id].setData(data);
    return;
  }
  if (charts[id]) charts[id].destroy();
  charts[id] = new uPlot(opts, data, target);
}

function merge(history) {
  // the page keeps the hour it has and asks only for newer samples (?since=)
  if (!kept) {
    kept = history;
    return kept;
  }
  const cut = Math.max(0, kept.t.length + history.t.length - Math.ceil(history.span_s / history.interval_s));
  const join = (old, fresh) => old.concat(fresh).slice(cut);
  kept.t = join(kept.t, history.t);
  for (const name of Object.keys(kept.fps)) kept.fps[name] = join(kept.fps[name], history.fps[name] || []);
  kept.inference_ms = join(kept.inference_ms, history.inference_ms);
  kept.capture_to_publish_p99_ms = join(kept.capture_to_publish_p99_ms, history.capture_to_publish_p99_ms);
  return kept;
}

function showHistory(history) {
  const t = history.t;
  const names = Object.keys(history.fps);
  const line = (label, i) => ({ label, stroke: COLOURS[i % COLOURS.length], width: 2, spanGaps: true,
                                points: { show: false } });
  chart("plot-fps", names.map((name, i) => line(name, i)), [t, ...names.map((name) => history.fps[name])]);
  chart("plot-inference", [line("inference ms", 0)], [t, history.inference_ms]);
  chart("plot-latency", [line("p99 ms", 1)], [t, history.capture_to_publish_p99_ms]);
}

async function historyLoop() {
  for (;;) {
    try {
      const since = kept && kept.t.length ? `?since=${kept.t[kept.t.length - 1]}` : "";
      showHistory(merge(await getJSON(`/api/history${since}`)));
    } catch (err) {
      $("summary").textContent = `history: ${err.message}`;
    }
    await sleep(HISTORY_MS);
  }
}

// ---------------------------------------------------------------- start

async function main() {
  config = await getJSON("/api/config");
  $("device").textContent = config.device;
  for (const name of config.cameras) liveLoop(makeCard(name));
  statusLoop();
  historyLoop();
}

main().catch((err) => { $("summary").textContent = `console: ${err.message}`; });

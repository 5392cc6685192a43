// The rbees-workerd page: chat through the worker's own OpenAI endpoint
// (streamed), and a status view from /health and /metrics. No framework, no
// network but this worker. The bearer token, when the worker asks for one,
// is kept in sessionStorage and sent as a header; never in a URL.
"use strict";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "rbees-token";
const conversation = []; // the conversation, as OpenAI messages
let running = null; // the AbortController of the generation in flight

// ---- the token -------------------------------------------------------------

function askToken() {
  return new Promise((resolve) => {
    const dialog = $("token-dialog");
    $("token-form").onsubmit = () => {
      sessionStorage.setItem(TOKEN_KEY, $("token-input").value.trim());
      $("token-input").value = "";
      resolve();
    };
    if (!dialog.open) dialog.showModal();
  });
}

/** fetch() with the bearer token; asks for it on a 401 and tries again. */
async function api(path, options = {}) {
  for (;;) {
    const headers = Object.assign({}, options.headers || {});
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers["Authorization"] = "Bearer " + token;
    const response = await fetch(path, Object.assign({}, options, { headers }));
    if (response.status !== 401) return response;
    sessionStorage.removeItem(TOKEN_KEY);
    await askToken();
  }
}

// ---- views -------------------------------------------------------------------

for (const tab of document.querySelectorAll(".tab")) {
  tab.onclick = () => {
    for (const t of document.querySelectorAll(".tab")) t.classList.toggle("active", t === tab);
    $("view-chat").hidden = tab.dataset.view !== "chat";
    $("view-status").hidden = tab.dataset.view !== "status";
    if (tab.dataset.view === "status") refreshStatus();
  };
}

// ---- chat --------------------------------------------------------------------

function addMessage(role, text) {
  const el = document.createElement("div");
  el.className = "msg " + role;
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  el.appendChild(body);
  $("messages").appendChild(el);
  el.scrollIntoView({ block: "end" });
  return el;
}

function number(id) {
  const v = $(id).value.trim();
  return v === "" ? undefined : Number(v);
}

function requestBody() {
  const body = {
    messages: conversation,
    stream: true,
    temperature: number("temperature"),
    top_k: number("top_k"),
    top_p: number("top_p"),
    min_p: number("min_p"),
    repetition_penalty: number("repetition_penalty"),
    max_tokens: number("max_tokens"),
    seed: number("seed"),
  };
  const stops = $("stop_strings").value.split(",").map((s) => s.trim()).filter((s) => s);
  if (stops.length) body.stop = stops;
  return body;
}

function stats(el, text) {
  let s = el.querySelector(".stats");
  if (!s) {
    s = document.createElement("span");
    s.className = "stats";
    el.appendChild(s);
  }
  s.textContent = text;
}

/** Reads `data:` lines of a server-sent event stream, one JSON object each. */
async function* sseData(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, cut).replace(/\r$/, "");
      buffer = buffer.slice(cut + 1);
      if (!line.startsWith("data:")) continue;
      const data = line.slice(5).trim();
      if (data === "[DONE]") return;
      yield JSON.parse(data);
    }
  }
}

async function send(text) {
  conversation.push({ role: "user", content: text });
  addMessage("user", text);
  const el = addMessage("assistant", "");
  el.dataset.state = "waiting";
  const body = el.querySelector(".text");
  running = new AbortController();
  $("send").disabled = true;
  $("stop").disabled = false;
  const sent = performance.now();
  let answer = "";
  try {
    const response = await api("/v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(requestBody()),
      signal: running.signal,
    });
    if (!response.ok) {
      const err = await response.json().catch(() => ({}));
      const why = err.errors ? err.errors.map((e) => e.field + ": " + e.message).join("; ")
        : (err.error && err.error.message) || response.statusText;
      throw new Error(response.status + " " + why);
    }
    for await (const chunk of sseData(response)) {
      if (chunk.error) throw new Error(chunk.error.message);
      const choice = chunk.choices && chunk.choices[0];
      if (!choice) continue;
      if (choice.delta && choice.delta.content) {
        answer += choice.delta.content;
        body.textContent = answer;
        el.dataset.state = "streaming";
        el.scrollIntoView({ block: "end" });
      }
      if (choice.finish_reason) {
        const t = chunk.timings || {};
        const fmt = (x) => (x || 0).toFixed(1);
        stats(el, `prompt ${t.prompt_n ?? "?"} tokens, ${fmt(t.prompt_per_second)} tok/s · ` +
          `decode ${t.predicted_n ?? "?"} tokens, ${fmt(t.predicted_per_second)} tok/s · ` +
          `stop: ${choice.finish_reason}`);
        el.dataset.stop = choice.finish_reason;
      }
    }
    el.dataset.state = "done";
  } catch (e) {
    if (e.name === "AbortError") {
      const seconds = (performance.now() - sent) / 1000;
      stats(el, `stopped after ${seconds.toFixed(1)} s · stop: stopped by you`);
      el.dataset.stop = "stopped";
      el.dataset.state = "done";
    } else {
      el.classList.add("error");
      body.textContent = answer + (answer ? "\n" : "") + "error: " + e.message;
      el.dataset.state = "error";
    }
  } finally {
    if (answer) conversation.push({ role: "assistant", content: answer });
    running = null;
    $("send").disabled = false;
    $("stop").disabled = true;
  }
}

$("chat-form").onsubmit = (event) => {
  event.preventDefault();
  const text = $("prompt").value.trim();
  if (!text || running) return;
  $("prompt").value = "";
  send(text);
};
$("prompt").onkeydown = (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    $("chat-form").requestSubmit();
  }
};
$("stop").onclick = () => running && running.abort();
$("clear").onclick = () => {
  if (running) running.abort();
  conversation.length = 0;
  $("messages").textContent = "";
};

// ---- status ------------------------------------------------------------------

const tpsHistory = []; // [seconds since the page opened, tokens/s]
const opened = performance.now();
const WINDOW_S = 300;

function metric(text, name) {
  for (const line of text.split("\n")) {
    if (line.startsWith(name + " ")) return Number(line.slice(name.length + 1));
  }
  return NaN;
}

function bytes(n) {
  return n >= 1 << 30 ? (n / (1 << 30)).toFixed(2) + " GiB" : (n / (1 << 20)).toFixed(1) + " MiB";
}

async function refreshStatus() {
  const health = await (await fetch("/health")).json();
  $("model-name").textContent = `${health.model} · ${health.backend} on ${health.device}`;
  $("st-model").textContent = health.model;
  $("st-state").textContent = health.state;
  $("st-backend").textContent = health.backend;
  $("st-device").textContent = health.device;
  $("st-context").textContent = health.context_length ?? "–";
  $("st-slots").textContent = `${health.slots_busy} / ${health.slots_total ?? "–"}`;
  $("st-queue").textContent = health.queue_length;
  $("st-tps").textContent = health.tokens_per_second.toFixed(1);
  $("st-memory").textContent = health.vram_bytes > 0
    ? bytes(health.vram_bytes) + " device" : bytes(health.memory_bytes) + " resident";
  $("st-uptime").textContent = Math.round(health.uptime_s) + " s";
  tpsHistory.push([(performance.now() - opened) / 1000, health.tokens_per_second]);
  while (tpsHistory.length && tpsHistory[tpsHistory.length - 1][0] - tpsHistory[0][0] > WINDOW_S) {
    tpsHistory.shift();
  }
  drawChart();
  if (!$("view-status").hidden) {
    const m = await (await api("/metrics")).text();
    const req = (o) => metric(m, `rbees_requests_total{outcome="${o}"}`);
    $("st-requests").textContent = `${req("completed")} / ${req("cancelled")} / ${req("error")}`;
  }
}

function drawChart() {
  const canvas = $("tps-chart");
  const g = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 30;
  g.clearRect(0, 0, w, h);
  const now = tpsHistory.length ? tpsHistory[tpsHistory.length - 1][0] : 0;
  const top = Math.max(1, ...tpsHistory.map((p) => p[1])) * 1.1;
  g.strokeStyle = "#d9dde3";
  g.fillStyle = "#6b7280";
  g.font = "11px system-ui";
  for (let i = 0; i <= 4; i++) {
    const y = h - pad + (-(h - 2 * pad) * i) / 4;
    g.beginPath(); g.moveTo(pad, y); g.lineTo(w - 5, y); g.stroke();
    g.fillText(((top * i) / 4).toFixed(0), 2, y + 4);
  }
  g.fillText(`−${WINDOW_S / 60} min`, pad, h - 8);
  g.fillText("now", w - 30, h - 8);
  g.strokeStyle = "#b7791f";
  g.lineWidth = 2;
  g.beginPath();
  tpsHistory.forEach(([t, v], i) => {
    const x = w - 5 - ((now - t) / WINDOW_S) * (w - pad - 5);
    const y = h - pad - (v / top) * (h - 2 * pad);
    if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
  });
  g.stroke();
}

async function start() {
  // The model's name, and the token prompt at once if the worker needs one.
  const models = await (await api("/v1/models")).json();
  if (models.data && models.data[0]) $("model-name").textContent = models.data[0].id;
  await refreshStatus();
  setInterval(() => refreshStatus().catch(() => {}), 2000);
}
start().catch((e) => { $("model-name").textContent = "error: " + e.message; });

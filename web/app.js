// The Whisper Streaming page: microphone -> AudioWorklet (16 kHz PCM16) -> /v1/listen, live
// captions with interim text, automatic reconnect with resume, downloads, file transcription.
// Plain ES modules, no build step, nothing loaded from elsewhere. Protocol: docs/protocol.md.

import {
  FORMATS,
  backoffMs,
  fromListen,
  isSessionToken,
  languageOptions,
  listenUrl,
  probabilityClass,
  tokenUrl,
  transcriptionsUrl,
} from "./transcript.js";

const RATE = 16000;
const FRAME_MS = 40; // 20–100 ms frames; 40 ms = 1,280 bytes
const MAX_BUFFERED_S = 30; // audio kept while reconnecting (the server's RESUME_GRACE_S)
const MAX_RECONNECTS = 8;
// Closes that a retry cannot fix: unsupported data (1003), bad payload (1007), policy (1008: a bad
// key or token, an origin not allowed, the key's session limit), too big (1009).
const FATAL_CLOSES = [1003, 1007, 1008, 1009];

const $ = (id) => document.getElementById(id);
const ui = {
  start: $("start"), stop: $("stop"), status: $("status"), session: $("session"),
  level: $("level"), elapsed: $("elapsed"), endpoint: $("endpoint"), language: $("language"),
  token: $("token"), interim: $("interim"), translate: $("translate"), lang: $("lang"), latency: $("latency"),
  latencyMean: $("latency-mean"), count: $("count"), transcript: $("transcript"),
  drop: $("drop"), file: $("file"), fileStatus: $("file-status"), error: $("error"),
  announcer: $("announcer"),
};

const state = {
  ws: null,
  sessionId: null,
  lastSegment: -1,
  ready: false, // the server's `session` message arrived on the current socket
  stopping: false,
  closed: false, // the server's `closed` message arrived
  attempt: 0,
  reconnectTimer: null,
  audio: null, // {ctx, stream, node}
  samples: 0, // 16 kHz samples captured in this session (the session's audio clock)
  capturedAt: [], // [samples so far, performance.now()] per frame, for latencies
  pending: [], // frames captured while no socket is ready
  pendingBytes: 0,
  offset: 0, // seconds of earlier sessions and files, so downloads have one timeline
  finals: [], // {start, end, text} on that timeline
  latencies: [],
  elements: new Map(), // segment -> element, for the current session
  startedAt: 0,
  timer: null,
  lastError: "", // the server's error frame on the current socket (the reason of its close)
  session: null, // {key, token, expires}: the session token an API key was exchanged for
};

// -- settings -----------------------------------------------------------------------------------

function defaultEndpoint() {
  if (location.protocol === "http:" || location.protocol === "https:") {
    return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/listen`;
  }
  return "ws://127.0.0.1:8000/v1/listen";
}

function loadSettings() {
  let saved = {};
  try {
    saved = JSON.parse(localStorage.getItem("whisper-streaming") || "{}");
  } catch {
    saved = {};
  }
  ui.endpoint.value = saved.endpoint || defaultEndpoint();
  ui.language.dataset.saved = saved.language ?? "";
  ui.interim.checked = saved.interim ?? true;
  ui.translate.dataset.saved = saved.translate ? "true" : "";
}

/** The language list and the translate switch from what the live ASR workers serve. */
async function loadLanguages() {
  let served = [];
  let tasks = [];
  try {
    const resp = await fetch(transcriptionsUrl(ui.endpoint.value.trim(), "/readyz"));
    const body = await resp.json();
    served = body.asr_languages || [];
    tasks = body.asr_tasks || [];
  } catch {
    /* another origin or not reachable: detection only */
  }
  const names = new Intl.DisplayNames(["en"], { type: "language" });
  const name = (code) => {
    try {
      return names.of(code);
    } catch {
      return code;
    }
  };
  const wanted = ui.language.value || ui.language.dataset.saved || "";
  ui.language.replaceChildren(...languageOptions(served, name).map((o) => new Option(o.label, o.value)));
  ui.language.value = served.includes(wanted) ? wanted : "";
  ui.translate.disabled = !tasks.includes("translate");
  ui.translate.checked = !ui.translate.disabled && (ui.translate.checked || ui.translate.dataset.saved === "true");
  document.body.dataset.languages = String(served.length);
}

function saveSettings() {
  // never the key or token: it stays in this tab's memory (the field), not in storage
  const s = {
    endpoint: ui.endpoint.value.trim(), language: ui.language.value,
    interim: ui.interim.checked, translate: ui.translate.checked,
  };
  try {
    localStorage.setItem("whisper-streaming", JSON.stringify(s));
  } catch {
    /* private mode: settings just are not remembered */
  }
}

/** The credential for the URL and uploads: a session token, never the API key. A key is exchanged
 * at POST /v1/auth/token (the token lives AUTH_TOKEN_TTL_S) and again when that nears its end. */
async function credential() {
  const value = ui.token.value.trim();
  if (!value || isSessionToken(value)) return value;
  const s = state.session;
  if (s && s.key === value && s.expires - Date.now() > 30_000) return s.token;
  const resp = await fetch(tokenUrl(ui.endpoint.value.trim()), {
    method: "POST", headers: { Authorization: `Bearer ${value}` },
  });
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const err = new Error(body.error ? `${body.error.code}: ${body.error.message}` : `HTTP ${resp.status}`);
    err.fatal = resp.status === 401 || resp.status === 403;
    throw err;
  }
  state.session = { key: value, token: body.token, expires: Date.now() + body.expires_in * 1000 };
  return body.token;
}

// -- status -------------------------------------------------------------------------------------

function setState(name, text) {
  document.body.dataset.state = name;
  ui.status.textContent = text || name;
}

function showError(message) {
  ui.error.hidden = !message;
  ui.error.textContent = message || "";
}

function tick() {
  const s = Math.floor((performance.now() - state.startedAt) / 1000);
  ui.elapsed.textContent = `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

// -- capture ------------------------------------------------------------------------------------

async function startCapture() {
  const stream = await navigator.mediaDevices.getUserMedia({
    // raw audio: the page plays nothing back (no echo to cancel), and Whisper copes with noise and level
    audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
  });
  const ctx = new AudioContext({ latencyHint: "interactive" });
  await ctx.audioWorklet.addModule("/static/worklet.js");
  const source = ctx.createMediaStreamSource(stream);
  const node = new AudioWorkletNode(ctx, "pcm16-capture", {
    numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1],
    processorOptions: { targetRate: RATE, frameMs: FRAME_MS },
  });
  node.port.onmessage = (e) => onFrame(e.data.pcm, e.data.level);
  const mute = ctx.createGain(); // keeps the node pulled by the graph without any sound
  mute.gain.value = 0;
  source.connect(node).connect(mute).connect(ctx.destination);
  if (ctx.state === "suspended") await ctx.resume();
  state.audio = { ctx, stream, node };
  document.body.dataset.sampleRate = String(ctx.sampleRate);
}

function stopCapture() {
  const a = state.audio;
  state.audio = null;
  if (!a) return;
  a.node.port.postMessage("stop");
  a.node.port.onmessage = null;
  a.stream.getTracks().forEach((t) => t.stop());
  a.ctx.close().catch(() => {});
  ui.level.style.width = "0";
}

function onFrame(pcm, level) {
  ui.level.style.width = `${Math.min(100, Math.round(Math.sqrt(level) * 160))}%`;
  state.samples += pcm.byteLength / 2;
  state.capturedAt.push([state.samples, performance.now()]);
  if (state.capturedAt.length > 30000) state.capturedAt.splice(0, 15000);
  send(pcm);
}

function send(pcm) {
  const ws = state.ws;
  if (ws && state.ready && ws.readyState === WebSocket.OPEN && state.pending.length === 0) {
    ws.send(pcm);
    return;
  }
  state.pending.push(pcm);
  state.pendingBytes += pcm.byteLength;
  while (state.pendingBytes > MAX_BUFFERED_S * RATE * 2) {
    state.pendingBytes -= state.pending.shift().byteLength; // beyond the grace period: lost anyway
  }
}

function flushPending() {
  const ws = state.ws;
  while (state.pending.length && ws && ws.readyState === WebSocket.OPEN) {
    const pcm = state.pending.shift();
    state.pendingBytes -= pcm.byteLength;
    ws.send(pcm);
  }
  if (state.stopping && ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "CloseStream" }));
}

// -- the socket ---------------------------------------------------------------------------------

async function connect() {
  clearTimeout(state.reconnectTimer);
  state.reconnectTimer = null;
  state.ready = false;
  state.closed = false;
  state.lastError = "";
  let token;
  try {
    token = await credential();
  } catch (err) {
    if (err.fatal) fail(`API key: ${err.message}`);
    else retry(`API key exchange failed (${err.message})`);
    return;
  }
  const params = {
    sample_rate: RATE, encoding: "linear16", interim_results: ui.interim.checked,
    vad_events: true, language: ui.language.value, token, session_started: true,
    translate: ui.translate.checked ? "en" : "",
  };
  if (state.sessionId) Object.assign(params, { session_id: state.sessionId, last_segment: state.lastSegment });
  let ws;
  try {
    ws = new WebSocket(listenUrl(ui.endpoint.value.trim(), params));
  } catch (err) {
    fail(`bad endpoint: ${err.message}`);
    return;
  }
  ws.binaryType = "arraybuffer";
  state.ws = ws;
  setState(state.sessionId ? "reconnecting" : "connecting");
  ws.onmessage = (e) => onMessage(fromListen(JSON.parse(e.data)));
  ws.onclose = (e) => onClose(ws, e);
}

const received = {}; // message counts by type, shown as data-received (for tests and debugging)

function onMessage(msg) {
  received[msg.type] = (received[msg.type] || 0) + 1;
  document.body.dataset.received = JSON.stringify(received);
  switch (msg.type) {
    case "session":
      if (!msg.resumed) {
        state.sessionId = msg.session_id;
        state.lastSegment = -1;
        state.elements = new Map();
      }
      state.ready = true;
      state.attempt = 0;
      ui.session.textContent = msg.session_id.slice(0, 12);
      setState(state.stopping ? "finishing" : "live");
      showError("");
      flushPending();
      break;
    case "partial":
      if (msg.segment > state.lastSegment) renderPartial(msg);
      break;
    case "final":
      if (msg.segment > state.lastSegment) renderFinal(msg);
      state.lastSegment = Math.max(state.lastSegment, msg.segment);
      break;
    case "closed":
      state.closed = true;
      state.offset += msg.audio_seconds || state.samples / RATE;
      break;
    case "error":
      if (msg.code === "unknown_session") state.sessionId = null; // expired: start afresh
      else {
        state.lastError = `${msg.code}: ${msg.message}`;
        showError(state.lastError);
      }
      break;
    default:
      break; // speech_started, utterance_end
  }
}

function onClose(ws, event) {
  if (ws !== state.ws) return;
  state.ws = null;
  state.ready = false;
  if (state.closed || (state.stopping && event.code === 1000)) {
    finish();
    return;
  }
  if (FATAL_CLOSES.includes(event.code) || (event.reason || "").startsWith("DATA-0000")) {
    // the error frame before the close says why; keep it rather than a generic line
    const why = state.lastError || "the server closed the session";
    fail(`${why} (close ${event.code}${event.reason ? ": " + event.reason : ""})`);
    document.body.dataset.closeCode = String(event.code);
    return;
  }
  retry("the server cannot be reached");
}

function retry(why) {
  if (state.attempt >= MAX_RECONNECTS) {
    fail(`${why}; stopped`);
    return;
  }
  const delay = backoffMs(state.attempt++);
  setState("reconnecting", `reconnecting in ${(delay / 1000).toFixed(1)} s`);
  state.reconnectTimer = setTimeout(connect, delay);
}

// -- rendering ----------------------------------------------------------------------------------

/** Run `change` on the transcript; if the reader was at the bottom, keep the newest line in view
 * (someone who scrolled up to read stays where they are). */
function follow(change) {
  const box = ui.transcript;
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  change();
  if (atBottom) box.scrollTop = box.scrollHeight;
}

function utteranceElement(segment) {
  let el = state.elements.get(segment);
  if (!el) {
    el = document.createElement("p");
    el.className = "utt";
    el.dataset.segment = String(segment);
    state.elements.set(segment, el);
    const later = [...state.elements.entries()].filter(([s, e]) => s > segment && e.isConnected);
    if (later.length) ui.transcript.insertBefore(el, later.sort((a, b) => a[0] - b[0])[0][1]);
    else ui.transcript.appendChild(el);
  }
  return el;
}

function renderPartial(msg) {
  follow(() => {
    const el = utteranceElement(msg.segment);
    el.className = "utt interim";
    const stable = document.createElement("span");
    stable.className = "stable";
    stable.textContent = msg.stable_text;
    el.replaceChildren(stable, document.createTextNode(msg.text.slice(msg.stable_text.length)));
  });
}

function latencyOf(end) {
  const sample = Math.round(end * RATE);
  const hit = state.capturedAt.find(([n]) => n >= sample);
  return hit ? (performance.now() - hit[1]) / 1000 : null;
}

function wordsFragment(words, text) {
  const span = document.createElement("span");
  span.className = "words";
  if (!words || !words.length) {
    span.textContent = text;
    return span;
  }
  for (const w of words) {
    const word = document.createElement("span");
    word.className = probabilityClass(w.probability);
    word.title = `p = ${w.probability.toFixed(2)}  ${w.start.toFixed(2)}–${w.end.toFixed(2)} s`;
    word.textContent = w.word;
    span.appendChild(word);
  }
  return span;
}

function meta(start, detail) {
  const m = document.createElement("span");
  m.className = "meta";
  const s = Math.max(0, start);
  m.textContent = `${Math.floor(s / 60)}:${(s % 60).toFixed(1).padStart(4, "0")}${detail ? " · " + detail : ""}`;
  return m;
}

function renderFinal(msg) {
  const latency = latencyOf(msg.end);
  follow(() => {
    const el = utteranceElement(msg.segment);
    el.className = "utt final";
    el.replaceChildren(
      meta(state.offset + msg.start, latency === null ? "" : `${latency.toFixed(2)} s`),
      wordsFragment(msg.words, msg.text),
      ...translationLine(msg.translation),
    );
  });
  ui.announcer.textContent = msg.text.trim(); // the live region: finals only, never partials
  addFinal(state.offset + msg.start, state.offset + msg.end, msg.text);
  showLanguage(msg.language, msg.language_probability);
  if (latency !== null) {
    state.latencies.push(latency);
    ui.latency.textContent = `${latency.toFixed(2)} s`;
    const mean = state.latencies.reduce((a, b) => a + b, 0) / state.latencies.length;
    ui.latencyMean.textContent = `${mean.toFixed(2)} s`;
  }
}

/** The English line under a final of a translated session (none otherwise). */
function translationLine(translation) {
  if (!translation) return [];
  const line = document.createElement("span");
  line.className = "translation";
  line.lang = translation.language;
  line.textContent = translation.text;
  return [line];
}

function addFinal(start, end, text) {
  state.finals.push({ start, end, text });
  ui.count.textContent = String(state.finals.length);
}

function showLanguage(language, probability) {
  if (language) ui.lang.textContent = `${language} (${Number(probability).toFixed(2)})`;
}

// -- start / stop -------------------------------------------------------------------------------

async function start() {
  saveSettings();
  showError("");
  ui.start.disabled = true;
  Object.assign(state, {
    sessionId: null, lastSegment: -1, stopping: false, closed: false, attempt: 0,
    samples: 0, capturedAt: [], pending: [], pendingBytes: 0, elements: new Map(),
  });
  try {
    await startCapture();
  } catch (err) {
    fail(`microphone: ${err.message}`);
    return;
  }
  state.startedAt = performance.now();
  state.timer = setInterval(tick, 500);
  ui.stop.disabled = false;
  connect();
}

function stop() {
  if (state.stopping) return;
  state.stopping = true;
  ui.stop.disabled = true;
  stopCapture();
  clearInterval(state.timer);
  setState("finishing", "finishing…");
  if (state.ws && state.ready && state.ws.readyState === WebSocket.OPEN) flushPending();
  else if (!state.ws && !state.reconnectTimer) finish();
}

function finish() {
  clearTimeout(state.reconnectTimer);
  state.reconnectTimer = null;
  if (!state.closed) state.offset += state.samples / RATE;
  stopCapture();
  clearInterval(state.timer);
  state.stopping = false;
  ui.start.disabled = false;
  ui.stop.disabled = true;
  setState("idle", "done");
}

function fail(message) {
  showError(message);
  if (state.ws) state.ws.close();
  state.ws = null;
  stopCapture();
  clearInterval(state.timer);
  clearTimeout(state.reconnectTimer);
  state.reconnectTimer = null;
  state.stopping = false;
  ui.start.disabled = false;
  ui.stop.disabled = true;
  setState("error");
}

// -- downloads ----------------------------------------------------------------------------------

function download(fmt) {
  const body = FORMATS[fmt](state.finals);
  const type = fmt === "vtt" ? "text/vtt" : "text/plain";
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([body], { type: `${type};charset=utf-8` }));
  a.download = `transcript-${new Date().toISOString().slice(0, 19).replace(/[:T]/g, "-")}.${fmt}`;
  document.body.appendChild(a);
  a.click();
  setTimeout(() => {
    URL.revokeObjectURL(a.href);
    a.remove();
  }, 1000);
}

// -- file transcription -------------------------------------------------------------------------

async function transcribeFile(file) {
  saveSettings();
  showError("");
  ui.fileStatus.textContent = `Transcribing ${file.name} (${(file.size / 1e6).toFixed(1)} MB)…`;
  const form = new FormData();
  form.append("file", file, file.name);
  form.append("response_format", "verbose_json");
  const translate = ui.translate.checked; // /v1/audio/translations: English text only
  if (!translate) {
    form.append("timestamp_granularities[]", "segment");
    form.append("timestamp_granularities[]", "word");
    if (ui.language.value) form.append("language", ui.language.value);
  }
  const t0 = performance.now();
  let body;
  try {
    const token = await credential();
    const headers = token ? { Authorization: `Bearer ${token}` } : {};
    const path = translate ? "/v1/audio/translations" : "/v1/audio/transcriptions";
    const resp = await fetch(transcriptionsUrl(ui.endpoint.value.trim(), path), { method: "POST", body: form, headers });
    body = await resp.json();
    if (!resp.ok) throw new Error(body.error ? body.error.message : `HTTP ${resp.status}`);
  } catch (err) {
    ui.fileStatus.textContent = "";
    showError(`${file.name}: ${err.message}`);
    return;
  }
  const seconds = (performance.now() - t0) / 1000;
  ui.fileStatus.textContent = `${file.name}: ${body.duration.toFixed(1)} s of audio in ${seconds.toFixed(1)} s`;
  const heading = document.createElement("p");
  heading.className = "utt file-heading muted";
  heading.textContent = `File: ${file.name}`;
  const words = body.words || [];
  follow(() => {
    ui.transcript.appendChild(heading);
    for (const seg of body.segments || []) {
      const el = document.createElement("p");
      el.className = "utt final file";
      const own = words.filter((w) => w.start >= seg.start - 0.01 && w.start < seg.end);
      el.replaceChildren(
        meta(state.offset + seg.start, ""),
        wordsFragment(own.map((w) => ({ ...w, word: " " + w.word })), seg.text),
      );
      ui.transcript.appendChild(el);
      addFinal(state.offset + seg.start, state.offset + seg.end, seg.text);
      showLanguage(seg.language, seg.language_probability);
    }
  });
  ui.announcer.textContent = `${file.name} transcribed`;
  state.offset += body.duration;
}

function setupDrop() {
  const zone = ui.drop;
  const over = (on) => (e) => {
    e.preventDefault();
    zone.classList.toggle("over", on);
  };
  zone.addEventListener("dragenter", over(true));
  zone.addEventListener("dragover", over(true));
  zone.addEventListener("dragleave", over(false));
  // the zone is focusable: Enter or Space opens the file picker, as a click on its link does
  zone.addEventListener("keydown", (e) => {
    if (e.target !== zone || (e.key !== "Enter" && e.key !== " ")) return;
    e.preventDefault();
    ui.file.click();
  });
  zone.addEventListener("drop", (e) => {
    over(false)(e);
    const file = e.dataTransfer.files[0];
    if (file) transcribeFile(file);
  });
  ui.file.addEventListener("change", () => {
    if (ui.file.files[0]) transcribeFile(ui.file.files[0]);
    ui.file.value = "";
  });
  // a file dropped anywhere else must not navigate away from a live session
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());
}

// -- wiring -------------------------------------------------------------------------------------

loadSettings();
loadLanguages();
setupDrop();
ui.start.addEventListener("click", start);
ui.stop.addEventListener("click", stop);
ui.settingsForm = $("settings");
ui.settingsForm.addEventListener("change", saveSettings);
ui.endpoint.addEventListener("change", loadLanguages);
$("clear").addEventListener("click", () => {
  ui.transcript.replaceChildren();
  state.finals = [];
  state.latencies = [];
  state.elements = new Map();
  ui.count.textContent = "0";
  ui.latency.textContent = ui.latencyMean.textContent = ui.lang.textContent = "–";
});
for (const b of document.querySelectorAll("[data-download]")) {
  b.addEventListener("click", () => download(b.dataset.download));
}
window.addEventListener("beforeunload", () => {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify({ type: "CloseStream" }));
});
document.body.dataset.loaded = "true";

// Pure helpers of the page: word colours, transcript downloads (txt, srt, vtt), URLs.

/** The predecessor's colour bands for word probabilities: above 0.9, above 0.6, below. */
export function probabilityClass(p) {
  if (p > 0.9) return "p-high";
  if (p > 0.6) return "p-mid";
  return "p-low";
}

function clock(seconds, sep) {
  let ms = Math.max(0, Math.round(seconds * 1000));
  const h = Math.floor(ms / 3600000);
  ms -= h * 3600000;
  const m = Math.floor(ms / 60000);
  ms -= m * 60000;
  const s = Math.floor(ms / 1000);
  ms -= s * 1000;
  const p = (n, w = 2) => String(n).padStart(w, "0");
  return `${p(h)}:${p(m)}:${p(s)}${sep}${p(ms, 3)}`;
}

/** finals: [{start, end, text}] in order. Same output as shared/formats.py. */
export function toTxt(finals) {
  return finals.map((f) => f.text.trim()).filter(Boolean).join("\n") + "\n";
}

export function toSrt(finals) {
  return finals
    .filter((f) => f.text.trim())
    .map((f, i) => `${i + 1}\n${clock(f.start, ",")} --> ${clock(f.end, ",")}\n${f.text.trim()}\n`)
    .join("\n");
}

export function toVtt(finals) {
  const blocks = finals
    .filter((f) => f.text.trim())
    .map((f) => `${clock(f.start, ".")} --> ${clock(f.end, ".")}\n${f.text.trim()}\n`);
  return ["WEBVTT\n", ...blocks].join("\n");
}

export const FORMATS = { txt: toTxt, srt: toSrt, vtt: toVtt };

/** ws://host/v1/listen plus query parameters (resume adds session_id and last_segment). */
export function listenUrl(endpoint, params) {
  const url = new URL(endpoint);
  for (const [k, v] of Object.entries(params)) {
    if (v !== null && v !== undefined && v !== "") url.searchParams.set(k, String(v));
  }
  return url.toString();
}

/** An HTTP path (the transcription endpoint by default) on the same host as the WebSocket
 * endpoint. */
export function transcriptionsUrl(endpoint, path = "/v1/audio/transcriptions") {
  const url = new URL(endpoint);
  url.protocol = url.protocol === "wss:" ? "https:" : "http:";
  url.pathname = path;
  url.search = "";
  return url.toString();
}

/** The language select's options: "detect", then the served languages by name. codes: ISO
 * codes (/readyz asr_languages); name(code): a display name. */
export function languageOptions(codes, name) {
  const named = [...new Set(codes)].map((code) => ({ value: code, label: name(code) || code }));
  named.sort((a, b) => a.label.localeCompare(b.label));
  return [{ value: "", label: "detect" }, ...named];
}

/** Backoff for reconnect attempt n (0, 1, 2 …): 0.5 s doubling to 8 s. */
export function backoffMs(n) {
  return Math.min(8000, 500 * 2 ** n);
}

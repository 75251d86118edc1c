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

/**
 * A /v1/listen message (Deepgram's live protocol with our extensions, docs/protocol.md) as the
 * page reads it: Results -> {type: "final" | "partial", segment, start, end, text, stable_text,
 * words: [{word, start, end, probability}], language, language_probability}; Metadata ->
 * {type: "closed", audio_seconds}; Error -> {type: "error", code, message}; SessionStarted ->
 * {type: "session", session_id, resumed}; SpeechStarted / UtteranceEnd -> speech_started /
 * utterance_end. (whisper_streaming/listen.py reads it the same way for the Python clients.)
 */
export function fromListen(msg) {
  switch (msg.type) {
    case "Results": {
      const alt = msg.channel.alternatives[0];
      return {
        type: msg.is_final ? "final" : "partial",
        segment: msg.segment,
        start: msg.start,
        end: msg.end ?? msg.start + msg.duration,
        text: alt.transcript,
        stable_text: msg.stable_transcript ?? "",
        words: (alt.words || []).map((w) => ({
          word: " " + (w.punctuated_word ?? w.word), start: w.start, end: w.end, probability: w.confidence,
        })),
        language: msg.language,
        language_probability: msg.language_probability,
      };
    }
    case "Metadata":
      return { type: "closed", audio_seconds: msg.duration, segments: msg.segments };
    case "Error":
      return { type: "error", code: msg.code || msg.variant, message: msg.description };
    case "SessionStarted":
      return { ...msg, type: "session" };
    case "SpeechStarted":
      return { type: "speech_started", segment: msg.segment, timestamp: msg.timestamp };
    case "UtteranceEnd":
      return { type: "utterance_end", segment: msg.segment, timestamp: msg.last_word_end };
    default:
      return msg;
  }
}

/** ws://host/v1/listen plus query parameters (resume adds session_id and last_segment). */
export function listenUrl(endpoint, params) {
  const url = new URL(endpoint);
  for (const [k, v] of Object.entries(params)) {
    if (v !== null && v !== undefined && v !== "") url.searchParams.set(k, String(v));
  }
  return url.toString();
}

/** An HTTP endpoint (`path`) on the same host as the WebSocket endpoint. */
export function httpUrl(endpoint, path) {
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

/** The transcription endpoint (or another HTTP `path`) beside the WebSocket endpoint. */
export const transcriptionsUrl = (endpoint, path = "/v1/audio/transcriptions") => httpUrl(endpoint, path);
export const tokenUrl = (endpoint) => httpUrl(endpoint, "/v1/auth/token");

/** Session tokens start so; anything else in the key field is an API key to exchange. */
export const isSessionToken = (value) => value.startsWith("wst1.");

/** Backoff for reconnect attempt n (0, 1, 2 …): 0.5 s doubling to 8 s, each delay drawn between
 * half and all of that (jitter), so pages cut off by one gateway restart do not all return in
 * the same instant. */
export function backoffMs(n, random = Math.random) {
  const ceiling = Math.min(8000, 500 * 2 ** n);
  return ceiling / 2 + random() * (ceiling / 2);
}

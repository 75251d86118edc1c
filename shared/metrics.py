"""Prometheus metrics of every process, defined once. Names are mirrored by deploy/grafana."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)

# gateway
SESSIONS_ACTIVE = Gauge("whisper_sessions_active", "WebSocket sessions open on this gateway")
SESSIONS_TOTAL = Counter("whisper_sessions_total", "Sessions opened", ["endpoint"])
AUDIO_BYTES = Counter("whisper_audio_bytes_total", "PCM bytes received from clients")
FRAMES_REJECTED = Counter("whisper_frames_rejected_total", "Client frames refused", ["code"])
FRAMES_THROTTLED = Counter(
    "whisper_frames_throttled_total",
    "Times a session sent more than MAX_FRAMES_PER_SECOND binary frames and was held back",
)
SESSIONS_END_STUCK = Counter(
    "whisper_sessions_end_stuck_total",
    "Sessions whose end (last finals, closing message) missed its deadline: closed with 1011",
)
SESSIONS_REFUSED = Counter("whisper_sessions_refused_total", "Sessions refused", ["reason"])
SESSIONS_ROUTED = Counter(
    "whisper_sessions_routed_total", "Sessions routed to each model pool", ["pool"]
)
BACKPRESSURE_WAITS = Counter(
    "whisper_backpressure_waits_total", "Times a session waited for its VAD worker to catch up"
)
FINALS_SENT = Counter("whisper_finals_sent_total", "Final results sent to clients")
FINAL_LATENCY = Histogram(
    "whisper_final_latency_seconds",
    "From the arrival of a segment's last audio at the gateway to its final being sent",
    buckets=LATENCY_BUCKETS,
)

# VAD worker
VAD_SESSIONS = Gauge("whisper_vad_sessions_owned", "Sessions owned by this VAD worker")
VAD_SEGMENTS = Counter("whisper_vad_segments_total", "Segments cut", ["reason"])
VAD_PARTIALS = Counter("whisper_vad_partials_total", "Partial (interim) jobs cut")
VAD_SPECULATIVE = Counter(
    "whisper_vad_speculative_total",
    "Speculative finals: sent, skipped (a final was waiting), committed, void, early (the "
    "end-of-turn rule ended the utterance before the endpoint)",
    ["outcome"],
)
VAD_AUDIO_SECONDS = Counter("whisper_vad_audio_seconds_total", "Audio seconds run through VAD")
VAD_BAD_MESSAGES = Counter("whisper_vad_bad_messages_total", "Undecodable stream entries skipped")

# ASR worker
ASR_JOBS = Counter("whisper_asr_jobs_total", "Jobs finished", ["pool", "outcome"])
ASR_PROCESSING = Histogram(
    "whisper_asr_processing_seconds", "Transcription time per job", buckets=LATENCY_BUCKETS
)
ASR_QUEUE_WAIT = Histogram(
    "whisper_asr_queue_wait_seconds",
    "Time a job waited on its pool's asr:jobs:{pool}",
    ["pool"],
    buckets=LATENCY_BUCKETS,
)
ASR_RTF = Histogram(
    "whisper_asr_realtime_factor",
    "Processing seconds per audio second",
    buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0),
)
ASR_PARTIALS = Counter(
    "whisper_asr_partials_total",
    "Partial jobs read: ok (published), stale (superseded: dropped unread, or its final came "
    "out during the decode), error, shutdown (dropped when the worker stops)",
    ["pool", "outcome"],
)
ASR_SPECULATIVE = Counter(
    "whisper_asr_speculative_total",
    "Speculative finals: published, stored (commit to come), late (done), void, stale (skipped)",
    ["outcome"],
)
ASR_CONTINUATIONS = Counter(
    "whisper_asr_continuations_total",
    "Mid-turn segments decoded as continuations (workers/continuation.py): continued, or alone "
    "(the decode did not begin with the prefix or stopped short: decoded again by itself)",
    ["outcome"],
)
PARTIAL_LATENCY = Histogram(
    "whisper_partial_latency_seconds",
    "From the arrival of a partial's last audio at the gateway to the partial being sent",
    buckets=LATENCY_BUCKETS,
)
ASR_BATCH_SIZE = Histogram(
    "whisper_asr_batch_size", "Jobs decoded together", buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32)
)
ASR_DEAD_LETTERS = Counter(
    "whisper_asr_dead_letters_total", "Jobs moved to the dead-letter stream", ["pool"]
)

"""Configuration: one :class:`Settings` object per process, built in ``main()`` and passed down.

Every field is read from the environment variable of the same name in upper case (the README's
configuration table lists them all). Values are validated at start-up so that a bad deployment
fails at once with a readable message rather than at the first session.
"""

from __future__ import annotations

import difflib
import os
import re
import socket
from collections.abc import Mapping
from typing import Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.capabilities import parse_pools
from shared.keys import POOL_NAME_PATTERN
from shared.languages import LANGUAGES

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def _default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Settings(BaseSettings):
    """All knobs of the gateway and the workers."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    # --- connectivity --------------------------------------------------------------------------
    redis_url: str | None = Field(
        default=None,
        description="Redis to use (redis://, rediss:// for TLS, with password if any). Unset: "
        "`whisper-streaming up` starts an embedded redis-server; single processes use "
        f"{DEFAULT_REDIS_URL}.",
    )
    key_prefix: str = Field(default="", description="Namespace put before every Redis key.")
    host: str = Field(default="127.0.0.1", description="Gateway listen address.")
    port: int = Field(default=8000, ge=0, le=65535, description="Gateway listen port.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="DEBUG, INFO, WARNING or ERROR."
    )
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="`text` (one readable line) or `json` (one JSON object a line: time, level, "
        "logger, message, role, worker, and session_id, segment, stage, latency_ms where known).",
    )
    consumer_name: str = Field(
        default_factory=_default_consumer,
        description="Stable consumer name in the Redis groups (the pod name in Kubernetes).",
    )
    metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Prometheus port, unauthenticated, for inside the cluster (0 = none). The "
        "gateway also answers /metrics on its public port, but only with credentials when "
        "AUTH_ENABLED.",
    )
    otlp_traces_endpoint: str = Field(
        default="",
        description="OTLP/HTTP endpoint for traces (`http://otel-collector:4318/v1/traces`): one "
        "trace per utterance, VAD → ASR → gateway, a `traceparent` in the stream messages. "
        "Empty = off (nothing recorded or carried). Needs the `tracing` extra.",
    )

    # --- gateway -------------------------------------------------------------------------------
    max_frame_bytes: int = Field(
        default=960_000,
        ge=2,
        description="Largest binary frame accepted (bytes); larger gets an error frame and "
        "close code 1009. The default, 30 s of 16 kHz PCM16, takes the silence frames of both "
        "predecessor Locust tests (220,500 and 661,500 bytes).",
    )
    coalesce_ms: int = Field(
        default=100,
        ge=10,
        le=1000,
        description="Audio is gathered into entries of this much before XADD (tiny browser "
        "frames would otherwise cost one Redis write each).",
    )
    eof_timeout_s: float = Field(
        default=60.0, gt=0, description="How long a closing session waits for its last finals."
    )
    max_sessions: int = Field(
        default=500, ge=1, description="Sessions one gateway process serves; more get 1013."
    )
    max_job_backlog: int = Field(
        default=1000,
        ge=1,
        description="New sessions are refused (1013) while the job stream of the model pool "
        "they are routed to (asr:jobs:{pool}) holds more jobs than this.",
    )
    asr_pools: str = Field(
        default="",
        description="Gateway: the model pools this deployment runs, as `NAME=LANGUAGES` "
        "separated by spaces (`en=en multi=*`; `*` = every language, detection and "
        "translation). A session is routed to a live pool first; one no live pool serves goes "
        "to a pool named here even while it has no worker (its jobs wait, KEDA scales it from "
        "zero). Empty: live pools only, and while no ASR worker is live at all, English and "
        "detection go to `en`, other languages to `multi`.",
    )
    max_frames_per_second: int = Field(
        default=1000,
        ge=10,
        description="Binary frames a session may send per second; more are held back (the "
        "socket is not read meanwhile: back-pressure), never refused. The predecessor's "
        "AudioWorklet client sends ~375 a second.",
    )
    max_text_frames_per_second: int = Field(
        default=20,
        ge=1,
        description="Per session: control (text) frames a second; over it: rate_limited, 1008.",
    )
    min_finalize_ms: int = Field(
        default=1000,
        ge=0,
        description="A finalize less than this much audio after the previous cut cuts nothing.",
    )
    auth_max_failures: int = Field(
        default=10,
        ge=1,
        description="Wrong keys at POST /v1/auth/token per client address and window; then 429.",
    )
    auth_failure_window_s: float = Field(
        default=60.0, gt=0, description="The window of AUTH_MAX_FAILURES (seconds)."
    )
    max_session_s: float = Field(
        default=4 * 3600.0, gt=0, description="Longest session (seconds of audio)."
    )
    redis_outage_tolerance_s: float = Field(
        default=30.0,
        ge=0,
        description="How long a live session rides through a Redis outage (on top of the "
        "client's own ~9 s of reconnection attempts): it stops reading the socket and resumes "
        "when Redis is back; longer, `service_unavailable` and close 1013. VAD workers ride "
        "through as long with the write of an utterance's final job.",
    )
    first_audio_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="A live session that sends no audio this long after opening is closed "
        "(`no_audio`, 1008): idle sockets cannot hold session slots. Resumed sessions are exempt.",
    )
    resume_grace_s: float = Field(
        default=30.0, ge=0, description="Native sessions outlive a dropped socket this long."
    )
    endpointing_min_ms: int = Field(
        default=100, ge=10, description="Smallest per-session `endpointing` a client may ask for."
    )

    http_header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="A connection whose request headers are not complete this long after it "
        "opened (or after its previous response) is closed: slow-header clients cannot hold "
        "sockets.",
    )
    max_connections: int = Field(
        default=2000,
        ge=1,
        description="Connections and requests one gateway serves at once (uvicorn's "
        "limit_concurrency); requests beyond get 503. Live sessions are bounded by MAX_SESSIONS.",
    )

    transcription_max_bytes: int = Field(
        default=25 * 1024 * 1024,
        ge=1024,
        description="Largest upload `POST /v1/audio/transcriptions` accepts (bytes, the whole "
        "request); larger gets 413. 25 MiB, as OpenAI's API.",
    )
    transcription_max_uploads: int = Field(
        default=4,
        ge=1,
        description="Uploads one gateway receives and decodes at once; more get 503 "
        "`too_many_uploads`. Each is spooled to /tmp while it is read: size the gateway's /tmp "
        "to TRANSCRIPTION_MAX_UPLOADS × TRANSCRIPTION_MAX_BYTES (deploy/keda does).",
    )
    transcription_max_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="Longest audio an upload may hold (seconds; at most MAX_SESSION_S). A file "
        "declaring more is refused with 413 before decoding, and decoding stops once it passes "
        "this, so an upload's memory is bounded (16 kHz PCM16: 115 MB an hour).",
    )
    transcription_timeout_s: float = Field(
        default=600.0,
        gt=0,
        description="How long `POST /v1/audio/transcriptions` waits for the last segment of a "
        "file before it answers 504.",
    )
    listen_url_hosts: str = Field(
        default="",
        description="Hosts (comma-separated) whose audio `POST /v1/listen` with a JSON "
        '`{"url": …}` body may fetch (https or http, no redirects, at most '
        "`TRANSCRIPTION_MAX_BYTES`, 30 s); empty = no server-side fetches at all.",
    )

    # --- authentication ------------------------------------------------------------------------
    auth_enabled: bool = Field(
        default=True,
        description="Require an API key or session token on every endpoint but health and "
        "metrics. `whisper-streaming up` turns it off (development mode) unless set.",
    )
    api_keys: str = Field(
        default="",
        description="Comma-separated `name:key` or `name:sha256:<hex digest>` entries.",
    )
    api_keys_file: str = Field(
        default="", description="File with one `name:key` or `name:sha256:<hex>` a line."
    )
    auth_token_secret: str = Field(
        default="",
        description="HMAC secret of session tokens; empty = 32 random bytes created once in Redis "
        "and shared by every gateway.",
    )
    auth_token_ttl_s: int = Field(default=300, ge=10, description="Session token lifetime.")
    allowed_origins: str = Field(
        default="",
        description="Comma-separated Origins browsers may connect from; empty = any.",
    )
    api_key_max_sessions: int = Field(
        default=50, ge=1, description="Concurrent sessions per API key, across all gateways."
    )
    api_key_lease_s: float = Field(
        default=60.0,
        ge=3,
        description="A per-key session slot is a lease this long, renewed by its gateway while "
        "the session is open: a gateway that dies frees its slots within it.",
    )

    # --- streams and retention -----------------------------------------------------------------
    audio_backlog_max: int = Field(
        default=600,
        ge=10,
        description="Audio entries (≈ COALESCE_MS each) a session may have waiting for its VAD "
        "worker; beyond it the gateway stops reading the socket (back-pressure) instead of "
        "dropping audio. VAD workers trim what they have checkpointed.",
    )
    jobs_stream_max: int = Field(
        default=10_000,
        ge=1,
        description="Hard bound of each pool's asr:jobs:{pool}, never trimmed (a trim would drop "
        "undelivered utterances): while the stream of a session's pool holds this many jobs, "
        "the gateway stops reading its audio (back-pressure), and ends it with `overloaded` "
        "after 20 s. New sessions are refused earlier, at MAX_JOB_BACKLOG.",
    )
    sessions_stream_max: int = Field(
        default=10_000,
        ge=1,
        description="Hard bound of the sessions stream (live sessions and those waiting for a "
        "VAD worker), never trimmed: new sessions are refused (`overloaded`, 1013) at it.",
    )
    transcript_stream_maxlen: int = Field(
        default=10_000, ge=10, description="Finals kept per session on transcript:{session}."
    )
    session_ttl_s: int = Field(
        default=3600, ge=1, description="Per-session keys expire this long after last use."
    )
    ready_require_asr: bool = Field(
        default=True,
        description="/readyz needs a live ASR worker; set false when the ASR pool scales to "
        "zero (KEDA), or gateways would leave the load balancer and nothing could wake it.",
    )
    heartbeat_interval_s: float = Field(
        default=2.0, gt=0, description="Workers refresh their heartbeat this often."
    )
    heartbeat_ttl_s: float = Field(
        default=10.0, gt=0, description="A worker silent this long is counted as dead."
    )

    # --- VAD -----------------------------------------------------------------------------------
    vad_backend: Literal["silero", "pyannote"] = Field(
        default="silero",
        description="Voice activity detector: `silero` (ONNX, shipped with faster-whisper) or "
        "`pyannote` (pyannote.audio's segmentation model; needs the `pyannote` extra, see "
        "docs/vad.md).",
    )
    pyannote_model: str = Field(
        default="pyannote/segmentation-3.0",
        description="pyannote segmentation model: a Hugging Face name (gated: needs "
        "PYANNOTE_AUTH_TOKEN) or a local checkpoint file or directory (synced from S3 or a volume).",
    )
    pyannote_auth_token: str = Field(
        default="", description="Hugging Face token for gated pyannote models; empty = none."
    )
    pyannote_device: Literal["cpu", "cuda"] = Field(
        default="cpu", description="Where the pyannote models run."
    )
    pyannote_context_s: float = Field(
        default=2.0,
        ge=0,
        le=10,
        description="Seconds of a session's past audio that pyannote's segmentation model sees "
        "again with each new chunk (bounded left context; cost grows with it).",
    )
    pyannote_onset: float = Field(
        default=0.5, gt=0, lt=1, description="pyannote backend: speech starts above this."
    )
    pyannote_offset: float = Field(
        default=0.5, gt=0, lt=1, description="pyannote backend: speech ends below this."
    )
    pyannote_min_duration_on_ms: int = Field(
        default=0, ge=0, description="pyannote backend: shorter speech is dropped."
    )
    pyannote_min_duration_off_ms: int = Field(
        default=0,
        ge=0,
        description="pyannote backend: silence that ends an utterance; 0 = VAD_MIN_SILENCE_MS.",
    )
    vad_threshold: float = Field(default=0.5, gt=0, lt=1, description="Speech probability.")
    vad_min_silence_ms: int = Field(
        default=500, ge=50, description="Silence that ends an utterance (endpointing)."
    )
    vad_endpointing: Literal["smart", "fixed"] = Field(
        default="smart",
        description="How a pause ends an utterance: smart = also early, when the speculative "
        "final looks finished (workers/turns.py); fixed = only VAD_MIN_SILENCE_MS of silence. A "
        "session's own `endpointing` (smart or ms) overrides it.",
    )
    turn_complete_ms: int = Field(
        default=200,
        ge=0,
        description="Smart endpointing: a pause this long ends a turn whose speculative text "
        "ends a sentence (never later than VAD_MIN_SILENCE_MS).",
    )
    turn_short_ms: int = Field(
        default=450,
        ge=0,
        description="Smart endpointing: the same for an utterance shorter than TURN_SHORT_S.",
    )
    turn_short_s: float = Field(
        default=2.0, ge=0, description="Smart endpointing: what counts as a short utterance (s)."
    )
    vad_speech_pad_ms: int = Field(
        default=400, ge=0, description="Audio kept before and after detected speech."
    )
    vad_speech_pad_end_ms: int = Field(
        default=150,
        ge=-1,
        description="Audio kept after speech when a pause ends an utterance (speculative finals "
        "start this far into the pause); -1 = VAD_SPEECH_PAD_MS.",
    )
    vad_quiet_pad_end_ms: int = Field(
        default=64,
        ge=0,
        description="A pause that is quiet this far in (every window scored as silence, 30 dB "
        "under the utterance's speech) starts its speculative final here; if the rest of the end pad is "
        "quiet too, the utterance ends here, else at VAD_SPEECH_PAD_END_MS. 0 = off.",
    )
    speculative_finals: bool = Field(
        default=True,
        description="Transcribe an utterance as soon as a pause reaches VAD_SPEECH_PAD_END_MS, "
        "and publish it when the pause reaches the endpoint (only while no final job waits).",
    )
    vad_file_mode: bool = Field(
        default=True,
        description="Audio arriving 1.5x faster than real time or more (files, replays) is cut "
        "as offline faster-whisper cuts it: segments up to 29 s, joined across pauses under 2 s, "
        "no partials: fewer, fuller Whisper windows.",
    )
    vad_min_speech_ms: int = Field(
        default=250, ge=0, description="Shorter blips of 'speech' are dropped."
    )
    vad_max_segment_s: float = Field(
        default=15.0, ge=2, le=30, description="Longest segment; cut at the quietest point."
    )
    vad_max_sessions: int = Field(default=64, ge=1, description="Sessions one VAD worker owns.")
    vad_claim_idle_ms: int = Field(
        default=10_000,
        ge=1000,
        description="A session whose VAD worker has not touched it this long is taken over.",
    )
    vad_checkpoint_interval_s: float = Field(
        default=1.0, gt=0, description="VAD checkpoints between utterances at most this often."
    )
    shutdown_grace_s: float = Field(
        default=20.0,
        gt=0,
        description="On SIGTERM, workers finish or hand back their work, and gateways deliver "
        "their sessions' last finals, within this time "
        "(keep it below Kubernetes' terminationGracePeriodSeconds).",
    )
    partial_first_ms: int = Field(
        default=400, ge=100, description="Interim results: first partial this long after onset."
    )
    partial_interval_ms: int = Field(
        default=1000, ge=100, description="Interim results: a new partial per this much audio."
    )
    partials_stream_maxlen: int = Field(
        default=1000,
        ge=10,
        description="Bound of each pool's asr:partials:{pool} (stale partials are dropped).",
    )

    # --- ASR -----------------------------------------------------------------------------------
    asr_model: str = Field(
        default="",
        description="The worker's model: `tiny.en` (bundled, English; also the empty default) or "
        "`base` (bundled, multilingual), a local faster-whisper directory, or a faster-whisper / "
        "Hugging Face name (`large-v3-turbo`, `distil-large-v3`) fetched from the hub.",
    )
    asr_pool: str = Field(
        default="",
        pattern=f"({POOL_NAME_PATTERN})|^$",
        description="The model pool this ASR worker joins: it reads asr:jobs:{pool} "
        "(lowercase letters, digits, dashes). Empty = `en` for a model that serves only "
        "English, `multi` otherwise.",
    )
    asr_languages: str = Field(
        default="",
        description="Comma-separated ISO codes this ASR worker announces, a subset of what "
        "its model can do (`en` for distil-large-v3, multilingual in form but trained on "
        "English); empty = every language the model knows.",
    )
    model_cache_dir: str = Field(
        default="",
        description="Where the bundled multilingual model is assembled once from its two "
        "packages; empty = `$XDG_CACHE_HOME/whisper-streaming/models` (`~/.cache/...`).",
    )
    asr_device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="auto = CUDA when a GPU is visible, else CPU."
    )
    asr_compute_type: str = Field(
        default="auto", description="CTranslate2 compute type; auto = float16 on CUDA, int8 on CPU."
    )
    asr_cpu_threads: int = Field(default=0, ge=0, description="0 = as many as cores.")
    asr_context_pad_s: float | None = Field(
        default=None,
        ge=0,
        le=30,
        description="Whisper's encoder sees each utterance and this much of the zero padding "
        "after it, not a whole 30 s window (workers/context.py: decodes ~3x "
        "faster on CPU at the same WER, docs/benchmarks.md); 0 = the whole window. Unset: 5 "
        "for an English-only model, 0 for a multilingual one (other languages lost ~4.5 "
        "points in the fitted context on the bundled base model).",
    )
    asr_continuation: bool | None = Field(
        default=None,
        description="A segment that continues its turn (an early commit the speaker went on "
        "from, within 1 s) is decoded behind the previous segment's last 3 s of audio with "
        "their final words as Whisper's prefix (workers/continuation.py: the cuts of smart "
        "endpointing lost 1.5 points of WER decoded alone, 0.9 as continuations; on one CPU "
        "thread it cost ~0.1 s of p95 final latency, docs/benchmarks.md *Mid-turn splits*). "
        "Unset: on for CUDA, off on CPU (ASR workers); VAD workers put the context on a "
        "pool's jobs while a live worker of the pool announces that it decodes them.",
    )
    asr_beam_size: int = Field(
        default=0,
        ge=0,
        le=10,
        description="Beam width of finals; 0 = auto: 5 on CUDA, 1 (greedy) on CPU, where a "
        "beam of 5 made the finals of long utterances miss the latency targets for ~0.5 WER "
        "points (docs/benchmarks.md).",
    )
    asr_partial_beam_size: int = Field(
        default=1, ge=1, le=10, description="Beam width for interim results (speed over accuracy)."
    )
    asr_partial_share: float = Field(
        default=0.5,
        gt=0.0,
        le=1.0,
        description="The most of an ASR worker's time interim (partial) decodes may take: after "
        "a partial of d seconds the next starts no sooner than d × (1/share − 1) later. A decode "
        "is never interrupted, so a final that arrives during a partial waits for it; a smaller "
        "share makes that rarer (and partials sparser under load). 1 = no limit "
        "(docs/benchmarks.md).",
    )
    asr_batch_size: int = Field(
        default=0,
        ge=0,
        le=64,
        description="Final jobs of different sessions decoded together when they wait together "
        "(1 = off; 0 = auto: 8 on CUDA, 1 on CPU).",
    )
    asr_condition_on_previous: bool = Field(
        default=False,
        description="Prompt each segment with the session's previous final text. Off by "
        "default: with tiny.en it made text up and cost throughput (docs/benchmarks.md).",
    )
    asr_temperature_fallback: bool = Field(
        default=False,
        description="Decode again at temperatures 0.2 … 1.0 when the greedy/beam result looks "
        "unreliable (faster-whisper's default). Off: temperature 0 only, as batched decoding "
        "does: on short segments the fallback cost up to five more decodes and mostly sampled "
        "invented text (docs/benchmarks.md).",
    )
    asr_language_switch_probability: float = Field(
        default=0.7,
        ge=0.0,
        le=1.0,
        description="Language detection (a session without a language, multilingual model): an "
        "utterance keeps the session's language unless another is detected with at least this "
        "probability (short utterances flip otherwise; workers/detection.py).",
    )
    asr_no_speech_threshold: float = Field(
        default=0.6, description="Whisper no-speech probability above which text is distrusted."
    )
    asr_log_prob_threshold: float = Field(
        default=-1.0, description="Average log-probability below which decoding is retried."
    )
    asr_compression_ratio_threshold: float = Field(
        default=2.4, description="Text more repetitive than this is dropped as a hallucination."
    )
    asr_max_deliveries: int = Field(
        default=3, ge=1, description="A job delivered this often goes to the dead-letter stream."
    )
    asr_claim_idle_ms: int = Field(
        default=60_000,
        ge=1000,
        description="Pending jobs idle this long (a dead worker's) are reclaimed; keep it above "
        "the worst job time.",
    )

    # --- speaker labels (sessions with diarize=true) ------------------------------------------
    diarize_embedding_model: str = Field(
        default="pyannote/wespeaker-voxceleb-resnet34-LM",
        description="Speaker-embedding model for `diarize=true` sessions (ASR workers, `pyannote` "
        "extra): a Hugging Face name (token: PYANNOTE_AUTH_TOKEN) or a local checkpoint.",
    )
    diarize_threshold: float = Field(
        default=0.5,
        gt=-1,
        lt=1,
        description="Cosine similarity above which a segment joins a known speaker.",
    )
    diarize_max_speakers: int = Field(
        default=8, ge=1, le=64, description="Speakers per session at most."
    )
    diarize_min_duration_s: float = Field(
        default=1.0,
        ge=0,
        description="Shorter segments join the closest known speaker without changing it.",
    )

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _case(cls, value: object, info: ValidationInfo) -> object:
        if not isinstance(value, str):
            return value
        return value.upper() if info.field_name == "log_level" else value.lower()

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("REDIS_URL must start with redis://, rediss:// or unix://")
        return value

    @field_validator("asr_pools")
    @classmethod
    def _check_asr_pools(cls, value: str) -> str:
        parse_pools(value)  # raises ValueError with what is wrong
        return value

    @field_validator("asr_languages")
    @classmethod
    def _check_asr_languages(cls, value: str) -> str:
        unknown = [c for c in value.replace(" ", "").split(",") if c and c not in LANGUAGES]
        if unknown:
            raise ValueError(f"ASR_LANGUAGES: unknown language codes {unknown}")
        return value

    @property
    def asr_language_list(self) -> list[str]:
        """``ASR_LANGUAGES`` as a list (empty: what the model can do)."""
        return [c for c in self.asr_languages.replace(" ", "").split(",") if c]

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        if self.jobs_stream_max < self.max_job_backlog:
            raise ValueError("JOBS_STREAM_MAX must be at least MAX_JOB_BACKLOG")
        if self.heartbeat_ttl_s <= self.heartbeat_interval_s:
            raise ValueError("HEARTBEAT_TTL_S must be larger than HEARTBEAT_INTERVAL_S")
        return self

    @property
    def effective_redis_url(self) -> str:
        return self.redis_url or DEFAULT_REDIS_URL


# --- readable configuration errors ------------------------------------------------------------

SECRET_SETTINGS = frozenset({"api_keys", "auth_token_secret", "pyannote_auth_token"})
_URL_PASSWORD = re.compile(r"(://[^:@/]*:)[^@/]*@")


class SettingsError(Exception):
    """A bad configuration: one ``NAME=value: why`` line per problem (``str(exc)``)."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def _shown(name: str, value: object) -> str:
    """A value as the error line quotes it: secrets masked, URL passwords hidden, cut short."""
    if name.lower() in SECRET_SETTINGS:
        return "***"
    text = _URL_PASSWORD.sub(r"\1***@", str(value))
    return text if len(text) <= 80 else text[:80] + "…"


def describe_errors(exc: ValidationError, environ: Mapping[str, str]) -> list[str]:
    """``NAME=value: why`` for each error pydantic found (pure)."""
    env = {k.upper(): v for k, v in environ.items()}
    lines = []
    for err in exc.errors():
        why = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("loc"):
            name = str(err["loc"][0]).upper()
            why = why.removeprefix(f"{name} ")
            value = env.get(name, err.get("input"))
            lines.append(f"{name}={_shown(name, value)}: {why}")
        else:  # a check across settings: name those that are set
            names = [n for n in re.findall(r"\b[A-Z][A-Z0-9_]{2,}\b", why) if n in env]
            shown = ", ".join(f"{n}={_shown(n, env[n])}" for n in names)
            lines.append(f"{shown}: {why}" if shown else why)
    return lines


def setting_prefixes() -> frozenset[str]:
    """The project's variable prefixes: a first word that two settings or more share
    (``ASR_``, ``VAD_``, ``AUTH_``, ``LOG_`` …), and ``REDIS_``."""
    words = [name.split("_")[0] for name in Settings.model_fields if "_" in name]
    return frozenset(f"{w.upper()}_" for w in set(words) if words.count(w) > 1) | {"REDIS_"}


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """A warning for each variable with one of the project's prefixes that is no setting,
    with the closest setting's name when one is close (a misspelling is otherwise ignored)."""
    known = [n.upper() for n in Settings.model_fields]
    prefixes = setting_prefixes()
    warnings = []
    for name in sorted(environ):
        upper = name.upper()
        if upper in known or not upper.startswith(tuple(prefixes)):
            continue
        close = difflib.get_close_matches(upper, known, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else ""
        warnings.append(f"{name} is not a setting and is ignored{hint}")
    return warnings


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """:class:`Settings` from the environment; a bad value raises :class:`SettingsError`."""
    env = os.environ if environ is None else environ
    try:
        return Settings() if environ is None else _from_mapping(env)
    except ValidationError as exc:
        raise SettingsError(describe_errors(exc, env)) from None


def _from_mapping(environ: Mapping[str, str]) -> Settings:
    fields = {k.lower(): v for k, v in environ.items() if k.lower() in Settings.model_fields}
    return Settings.model_validate(fields)

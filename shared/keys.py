"""Every Redis stream, consumer group, channel and key name the service uses.

deploy/ manifests (KEDA ScaledObjects, Grafana queries) mirror these constants; a test compares
them. All names can be put under a namespace (``KEY_PREFIX``) so that several deployments, or
several test runs, can share one Redis without seeing each other.
"""

from __future__ import annotations

from dataclasses import dataclass

SESSIONS_STREAM = "sessions"
"""New sessions are announced here; VAD workers share it through ``VAD_GROUP``."""

ASR_JOBS_STREAM = "asr:jobs"
"""Speech segments cut by the VAD workers, one stream per model pool (``asr:jobs:{pool}``); the
pool's ASR workers share it through ``ASR_GROUP``."""

ASR_PARTIALS_STREAM = "asr:partials"
"""Snapshots of open utterances (interim results), per pool (``asr:partials:{pool}``); served
only when no final job waits, and dropped unread once stale."""

ASR_DEAD_LETTER_STREAM = "asr:dead"
"""Jobs that could not be decoded or failed too often, with their error, per pool
(``asr:dead:{pool}``)."""

POOL_NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$"
"""A model pool's name: part of Redis keys (``asr:jobs:{pool}``) and of Kubernetes names."""

EN_POOL = "en"
"""The pool an English-only (``.en``) model joins unless ``ASR_POOL`` says otherwise."""

MULTI_POOL = "multi"
"""The pool a multilingual model joins unless ``ASR_POOL`` says otherwise."""

VAD_DEAD_LETTER_STREAM = "vad:dead"
"""Undecodable entries found on the sessions or audio streams, with their error."""

VAD_GROUP = "vad"
ASR_GROUP = "asr"

AUDIO_STREAM_PREFIX = "audio:"
TRANSCRIPT_STREAM_PREFIX = "transcript:"
SESSION_HASH_PREFIX = "session:"
SPEAKERS_PREFIX = "speakers:"
SPECULATIVE_PREFIX = "spec:"
RESULTS_CHANNEL_PREFIX = "results:"
HEARTBEATS_PREFIX = "heartbeats:"
CAPABILITIES_PREFIX = "capabilities:"
API_KEY_SESSIONS_PREFIX = "apikey:sessions:"

STREAM_DATA_FIELD = b"d"
"""Each stream entry carries one field: the msgpack-encoded message."""


@dataclass(frozen=True)
class Keys:
    """Names under one namespace; ``Keys("")`` gives the bare names above."""

    prefix: str = ""

    @property
    def sessions(self) -> str:
        return self.prefix + SESSIONS_STREAM

    def asr_jobs(self, pool: str) -> str:
        """The final jobs of model pool ``pool`` (``asr:jobs:{pool}``, group ``asr``)."""
        return f"{self.prefix}{ASR_JOBS_STREAM}:{pool}"

    @property
    def vad_dead(self) -> str:
        return self.prefix + VAD_DEAD_LETTER_STREAM

    def asr_partials(self, pool: str) -> str:
        """The partial jobs of model pool ``pool`` (``asr:partials:{pool}``, group ``asr``)."""
        return f"{self.prefix}{ASR_PARTIALS_STREAM}:{pool}"

    def asr_dead(self, pool: str) -> str:
        """The dead-letter stream of model pool ``pool`` (``asr:dead:{pool}``)."""
        return f"{self.prefix}{ASR_DEAD_LETTER_STREAM}:{pool}"

    def audio(self, session_id: str) -> str:
        return f"{self.prefix}{AUDIO_STREAM_PREFIX}{session_id}"

    def transcript(self, session_id: str) -> str:
        return f"{self.prefix}{TRANSCRIPT_STREAM_PREFIX}{session_id}"

    def session(self, session_id: str) -> str:
        return f"{self.prefix}{SESSION_HASH_PREFIX}{session_id}"

    def speakers(self, session_id: str) -> str:
        """Online speaker clustering state of a ``diarize=true`` session (workers/diarize.py)."""
        return f"{self.prefix}{SPEAKERS_PREFIX}{session_id}"

    def speculative(self, session_id: str) -> str:
        """Hash of a session's speculative finals in flight (workers/speculation.py)."""
        return f"{self.prefix}{SPECULATIVE_PREFIX}{session_id}"

    def results(self, session_id: str) -> str:
        return f"{self.prefix}{RESULTS_CHANNEL_PREFIX}{session_id}"

    @property
    def results_pattern(self) -> str:
        return f"{self.prefix}{RESULTS_CHANNEL_PREFIX}*"

    def session_from_channel(self, channel: str) -> str:
        return channel[len(self.prefix) + len(RESULTS_CHANNEL_PREFIX) :]

    def api_key_sessions(self, name: str) -> str:
        """Sorted set of the open sessions of one API key -> the end of their lease (unix
        seconds, renewed by their gateway), shared by every gateway (``API_KEY_MAX_SESSIONS``)."""
        return f"{self.prefix}{API_KEY_SESSIONS_PREFIX}{name}"

    @property
    def token_secret(self) -> str:
        """String: the session tokens' HMAC secret when ``AUTH_TOKEN_SECRET`` is unset (random,
        created once by the first gateway, SET NX)."""
        return f"{self.prefix}auth:token-secret"

    def heartbeats(self, role: str) -> str:
        """Sorted set of worker name -> last heartbeat (unix seconds) for ``role``."""
        return f"{self.prefix}{HEARTBEATS_PREFIX}{role}"

    def capabilities(self, role: str, worker: str) -> str:
        """What one live worker of ``role`` serves (msgpack ``WorkerCapabilities``), refreshed
        with its heartbeat and expiring with it (``HEARTBEAT_TTL_S``)."""
        return f"{self.prefix}{CAPABILITIES_PREFIX}{role}:{worker}"

"""Every message that crosses Redis, in one place.

Messages are msgspec structs encoded as msgpack. Each carries the schema version ``v`` and a
``type`` tag, so a reader can refuse what it does not understand instead of guessing. Decoding
validates types; anything malformed raises :class:`SchemaError`.
"""

from __future__ import annotations

from typing import Final, TypeVar

import msgspec

SCHEMA_VERSION: Final = 1


class SchemaError(ValueError):
    """A message could not be decoded or failed validation (a terminal error: never retry)."""


class _Msg(msgspec.Struct, tag_field="type", kw_only=True, omit_defaults=False):
    v: int = SCHEMA_VERSION
    session_id: str


class SessionStart(_Msg, tag="session_start"):
    """Announces a session on the sessions stream; the VAD worker that reads it owns it."""

    sample_rate: int = 16000
    source_rate: int = 16000
    """The rate of the client's audio before the gateway resampled it (8000 for telephony): audio
    that came at less than 16 kHz has no band above half its rate (workers/context.py)."""
    language: str | None = None
    created_at: float = 0.0
    min_silence_ms: int | None = None
    """Per-session endpointing; ``None`` uses the worker's ``VAD_MIN_SILENCE_MS``."""
    interim_results: bool = False
    """Cut partial jobs of the open utterance (native endpoint)."""
    vad_events: bool = False
    """Publish ``speech_started`` / ``utterance_end`` events."""
    diarize: bool = False
    """Label finals with speakers (copied onto each job)."""
    pool: str = ""
    """The model pool the gateway routed the session to (shared/capabilities.py ``route``): its
    jobs go on ``asr:jobs:{pool}`` and ``asr:partials:{pool}``; empty (an older gateway) = ``en``."""
    task: str = "transcribe"
    """``transcribe``, or ``translate``: each final also carries its English translation (copied
    onto each job; shared/capabilities.py)."""
    keyterms: list[str] = []
    """Names and jargon to decode with (faster-whisper ``hotwords``; shared/keyterms.py bounds
    them), copied onto each job; a ``keyterms`` control entry replaces them mid-stream."""
    smart_endpointing: bool | None = None
    """End turns by the end-of-turn rule (workers/turns.py) as well as by ``min_silence_ms`` of
    silence; ``None`` uses the worker's ``VAD_ENDPOINTING``."""
    eager_eot: bool = False
    """Publish ``end_of_turn_eager`` / ``turn_resumed`` :class:`TurnEvent` s."""


class AudioChunk(_Msg, tag="audio"):
    """PCM16 little-endian mono at ``sample_rate`` on ``audio:{session}``."""

    seq: int
    pcm: bytes
    sample_rate: int = 16000
    received_at: float = 0.0


class AudioEnd(_Msg, tag="audio_end"):
    """Last entry on ``audio:{session}``: the client said eof or went away."""

    seq: int
    reason: str = "eof"


SPECULATED: Final = "speculated"
"""The :class:`AudioControl` kind an ASR worker writes (see there)."""


class AudioControl(_Msg, tag="audio_control"):
    """A client control on ``audio:{session}``, in order with the audio: ``finalize`` (close the
    open utterance now), ``keepalive`` (the client is there, just quiet) or ``keyterms`` (the
    session's key terms are ``keyterms`` from here on); or ``speculated`` (``seq`` 0), put there
    by an ASR worker: a speculative final is stored, decide the end of turn now
    (workers/speculation.py)."""

    seq: int
    kind: str
    keyterms: list[str] | None = None


class VadEvent(_Msg, tag="vad_event"):
    """``speech_started`` or ``utterance_end`` of ``segment`` at ``time`` (session seconds)."""

    kind: str
    segment: int
    time: float


class AsrJob(_Msg, tag="asr_job"):
    """A speech segment to transcribe, on ``asr:jobs:{pool}``. Times are seconds of session
    audio."""

    segment: int
    start: float
    end: float
    pcm: bytes
    sample_rate: int = 16000
    source_rate: int = 16000
    """The session's :attr:`SessionStart.source_rate`: below 16 kHz (narrowband), the encoder
    sees whole 30 s windows (workers/context.py)."""
    language: str | None = None
    final: bool = True
    """False for a partial job (a snapshot of the open utterance, on ``asr:partials:{pool}``)."""
    rev: int = 0
    """Partial (or speculative) revision within the segment (1, 2, …); newer revisions make older
    ones stale."""
    reason: str = "silence"
    """Why the segment closed: silence, max_length, finalize or flush (``speech_final`` unless
    max_length)."""
    enqueued_at: float = 0.0
    speech_ended_at: float = 0.0
    diarize: bool = False
    """The ASR worker labels the final with a speaker (workers/diarize.py)."""
    speculative: bool = False
    """A final transcribed before its endpoint is confirmed (``rev`` is then the tentative's
    revision): its result is stored, and published only once the VAD worker commits that
    revision (workers/speculation.py)."""
    task: str = "transcribe"
    """``transcribe``, or ``translate``: the worker also decodes the utterance into English,
    from the same encoder output (``Transcript.translation``)."""
    traceparent: str = ""
    """W3C trace context of the utterance (shared/tracing.py); empty when tracing is off."""
    keyterms: list[str] = []
    """The session's key terms (faster-whisper ``hotwords``)."""
    context_pcm: bytes = b""
    """A continuation (workers/continuation.py): the previous segment's audio from
    ``context_start`` to its end, decoded in front of ``pcm`` with ``context_words`` (its final's
    words there) as Whisper's prefix; empty: the segment alone."""
    context_start: float = 0.0
    context_words: list[Word] = []
    eager: bool = False
    """Speculative: publish an ``end_of_turn_eager`` :class:`TurnEvent` with the text once it is
    stored (the session opted in)."""
    turn: bool = False
    """Speculative, smart endpointing: once stored, put an :class:`AudioControl` ``speculated``
    on the session's audio stream, so that its VAD worker applies the end-of-turn rule at once
    rather than at the next audio."""


class Word(msgspec.Struct, kw_only=True):
    word: str
    start: float
    end: float
    probability: float
    speaker: str | None = None


class Translation(msgspec.Struct, kw_only=True):
    """A final's translation: Whisper translates only into English."""

    language: str = "en"
    text: str = ""


class Transcript(_Msg, tag="transcript"):
    """The result of one job: published on ``results:{session}`` and kept on
    ``transcript:{session}``. ``text`` is empty when the segment held no speech (or failed, with
    ``error`` set); such results keep the ordering going but are not sent to clients."""

    segment: int
    start: float
    end: float
    text: str
    words: list[Word] = []
    language: str | None = None
    language_probability: float = 0.0
    processing_time: float = 0.0
    queue_time: float = 0.0
    final: bool = True
    rev: int = 0
    speech_final: bool = True
    from_finalize: bool = False
    """The segment was closed by the client's ``Finalize`` (not by silence or length)."""
    error: str | None = None
    worker: str = ""
    speaker: str | None = None
    """``S0``, ``S1``, … within the session (``diarize=true`` finals only)."""
    task: str = "transcribe"
    """The job's task; a ``translate`` final carries :attr:`translation`."""
    translation: Translation | None = None
    """The English translation of ``text`` (``task`` translate finals only)."""
    traceparent: str = ""
    """The ASR span's trace context, for the gateway's span; empty when tracing is off."""


class TurnEvent(_Msg, tag="turn_event"):
    """On ``results:{session}`` for sessions with ``eager_eot``: ``end_of_turn_eager`` (the
    speculative final of ``segment`` exists: ``text``, ``start``..``end``; the turn is probably
    over) or ``turn_resumed`` (the speaker went on: that text will not be the final; the segment
    continues and its one final comes later). Published in the same Lua step as the speculative
    store or void (workers/speculation.py), so it is in order with the finals."""

    kind: str
    segment: int
    rev: int = 0
    start: float = 0.0
    end: float = 0.0
    text: str = ""


class SocketAttached(_Msg, tag="socket_attached"):
    """On ``results:{session}``, published by a gateway in the Lua step that attaches a resuming
    socket (gateway/attachment.py): every other socket of the session, on any gateway, stops
    delivering and closes with ``session_replaced``. In order with the results around it."""

    token: str


class SessionDone(_Msg, tag="session_done"):
    """Published by the VAD worker once the session's audio is consumed: ``segments`` jobs in all."""

    segments: int
    audio_seconds: float = 0.0


class VadCheckpoint(msgspec.Struct, kw_only=True):
    """Where a VAD worker is in a session, taken only between utterances, so that another worker
    can take the session over exactly there (``session:{id}`` field ``vad_ckpt``)."""

    v: int = SCHEMA_VERSION
    cursor: str
    """The last audio entry fully processed."""
    pos: int
    buf_start: int
    floor: int
    next_index: int
    buf: bytes
    """float32 samples from ``buf_start``: the pre-roll a starting utterance needs."""
    pending: bytes
    """float32 samples not yet a whole VAD window."""
    vad_state: bytes
    """The VAD's own state (Silero: LSTM h, c and context, float32)."""


def encode_checkpoint(ckpt: VadCheckpoint) -> bytes:
    return _encoder.encode(ckpt)


def decode_checkpoint(data: bytes) -> VadCheckpoint:
    return _decode_record(data, VadCheckpoint, "checkpoint")


S = TypeVar("S", "VadCheckpoint", "WorkerCapabilities")


def _decode_record(data: bytes, kind: type[S], what: str) -> S:
    """Decode and validate a record kept outside the streams (a checkpoint, an announcement);
    raise :class:`SchemaError` on anything malformed or of another version."""
    try:
        record = msgspec.msgpack.decode(data, type=kind)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise SchemaError(str(exc)) from exc
    if record.v != SCHEMA_VERSION:
        raise SchemaError(f"unsupported {what} version {record.v}")
    return record


StreamMessage = (
    SessionStart
    | AudioChunk
    | AudioEnd
    | AudioControl
    | VadEvent
    | AsrJob
    | Transcript
    | SessionDone
    | TurnEvent
    | SocketAttached
)

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[StreamMessage] = msgspec.msgpack.Decoder(StreamMessage)


def encode(msg: StreamMessage) -> bytes:
    return _encoder.encode(msg)


def decode(data: bytes) -> StreamMessage:
    """Decode and validate one message; raise :class:`SchemaError` on anything malformed."""
    try:
        msg = _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise SchemaError(str(exc)) from exc
    if msg.v != SCHEMA_VERSION:
        raise SchemaError(
            f"unsupported schema version {msg.v} (this build speaks {SCHEMA_VERSION})"
        )
    return msg


T = TypeVar("T")


def decode_as(data: bytes, kind: type[T]) -> T:
    """Decode a message that must be of ``kind``."""
    msg = decode(data)
    if not isinstance(msg, kind):
        raise SchemaError(f"expected {kind.__name__}, got {type(msg).__name__}")
    return msg


class WorkerCapabilities(msgspec.Struct, kw_only=True):
    """What one ASR worker serves, on ``capabilities:asr:{worker}`` beside its heartbeat (not a
    stream message: one small key per worker, expiring with the heartbeat)."""

    v: int = SCHEMA_VERSION
    worker: str
    model: str = ""
    pool: str = ""
    """The model pool the worker belongs to (``ASR_POOL``); it reads ``stream``."""
    stream: str = ""
    """The pool's job stream, ``asr:jobs:{pool}`` under the worker's ``KEY_PREFIX``."""
    languages: list[str]
    """ISO codes the model transcribes; ``["en"]`` for an English-only (``.en``) model."""
    detect: bool = False
    """The model can detect the language (a multilingual model)."""
    tasks: list[str] = msgspec.field(default_factory=lambda: ["transcribe"])
    """What the model can do: ``transcribe``, and ``translate`` (into English) if multilingual."""
    continuation: bool = False
    """The worker decodes a job's continuation context (``ASR_CONTINUATION`` as resolved on its
    device: on for CUDA): the VAD workers put that context on the pool's jobs only then."""


def encode_capabilities(caps: WorkerCapabilities) -> bytes:
    return _encoder.encode(caps)


def decode_capabilities(data: bytes) -> WorkerCapabilities:
    """Decode and validate; raise :class:`SchemaError` on anything malformed or of another
    version."""
    return _decode_record(data, WorkerCapabilities, "schema")

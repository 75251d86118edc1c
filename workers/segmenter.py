"""Streaming utterance segmentation: the pure core of the VAD worker.

A :class:`Segmenter` is fed audio as it arrives and returns the speech segments it has closed.
It never looks at audio twice: each 32 ms window goes through the VAD once (state carried by the
injected ``vad`` callable), so cost is linear in audio length.

An utterance ends when the probability of speech stays below ``neg_threshold`` for
``min_silence_ms`` (endpointing), or when it reaches ``max_segment_s``; then it is cut at the
quietest window of its second half, and the rest carries on as the next segment. This follows
faster-whisper's ``get_speech_timestamps`` (hysteresis thresholds, padding, minimum speech), made
incremental.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

VadFn = Callable[[np.ndarray], np.ndarray]
"""Maps windows of shape (n, window) float32 to n speech probabilities, keeping its own state."""


@dataclass
class SegmenterState:
    """Everything needed to continue exactly where a segmenter was, between utterances."""

    pos: int
    buf_start: int
    floor: int
    next_index: int
    buf: np.ndarray
    pending: np.ndarray


@dataclass(frozen=True)
class SegmenterConfig:
    sample_rate: int = 16_000
    window: int = 512
    threshold: float = 0.5
    neg_threshold: float | None = None
    """Below this, a window counts as silence; default ``threshold - 0.15``."""
    min_silence_ms: int = 500
    speech_pad_ms: int = 400
    min_speech_ms: int = 250
    max_segment_s: float = 15.0
    partial_first_ms: int = 0
    """Interim snapshots of the open utterance: the first this long after speech onset (0 = off)."""
    partial_interval_ms: int = 600
    """…then one per this much new audio (never during a pause: only new speech is worth it)."""
    speech_pad_end_ms: int | None = None
    """Audio kept after speech in a segment closed by silence; default ``speech_pad_ms``."""
    fast_min_silence_ms: int = 2000
    """Endpointing while :attr:`Segmenter.fast` (audio faster than real time): pauses shorter
    than this do not end a segment…"""
    fast_max_segment_s: float = 29.0
    """…and segments grow to nearly a whole Whisper window, as offline faster-whisper cuts."""
    min_finalize_ms: int = 0
    """A client's ``finalize`` less than this much audio after the previous cut is accepted but
    cuts nothing (the utterance goes on): a client cannot split speech into many tiny ASR jobs."""
    tentative: bool = False
    """Emit a :class:`Tentative` as soon as a silence is ``speech_pad_end_ms`` long: the segment's
    audio is then complete *if* the silence lasts until the endpoint (speculative finals)."""
    quiet_pad_end_ms: int = 0
    """A pause that is quiet (every window scored as silence, :attr:`quiet_db`) this far in gets
    its tentative here, not at ``speech_pad_end_ms``; when the pause reaches ``speech_pad_end_ms``
    and the audio in between is quiet too, the segment keeps this shorter end pad (its
    speculative final was under way that much sooner); if not, that tentative is void and the
    usual one is cut. 0: off."""
    quiet_db: float = -30.0
    """Quiet: every window's speech probability under :attr:`silence_off`, and the audio's RMS
    this many dB under that of the utterance's speech."""

    @property
    def silence_off(self) -> float:
        if self.neg_threshold is not None:
            return self.neg_threshold
        return max(self.threshold - 0.15, 0.01)

    def samples(self, ms: float) -> int:
        return int(self.sample_rate * ms / 1000)


@dataclass
class Segment:
    """A closed speech segment. ``start``/``end`` are sample offsets in the session's audio."""

    index: int
    start: int
    end: int
    audio: np.ndarray
    reason: str
    """``silence`` (endpointing), ``max_length`` (cut at the quietest point) or ``flush``."""
    tentative_rev: int | None = None
    """The :class:`Tentative` whose audio this segment is, exactly (closed by silence only)."""

    def seconds(self, sample_rate: int = 16_000) -> tuple[float, float]:
        return self.start / sample_rate, self.end / sample_rate


@dataclass
class Tentative:
    """The open utterance would close as ``start``..``end`` (``audio``) if the silence that just
    began lasts ``min_silence_ms``. Revision ``rev`` counts the tentatives of segment ``index``;
    the closing :class:`Segment` names the one it confirms, a :class:`TentativeVoid` the one that
    speech (or a cut) made void."""

    index: int
    start: int
    end: int
    audio: np.ndarray
    rev: int
    quiet: bool = False
    """Cut ``quiet_pad_end_ms`` into a quiet pause (its tail is checked when the pause reaches
    ``speech_pad_end_ms``)."""


@dataclass
class TentativeVoid:
    """Tentative ``rev`` of segment ``index`` will not be this segment's final."""

    index: int
    rev: int


@dataclass
class SpeechStart:
    """Speech began: segment ``index`` is open from ``start`` (the detected onset)."""

    index: int
    start: int


@dataclass
class Partial:
    """A snapshot of the open utterance (``audio`` from ``start`` to ``end``), revision ``rev``."""

    index: int
    start: int
    end: int
    audio: np.ndarray
    rev: int


Event = Segment | SpeechStart | Partial | Tentative | TentativeVoid


@dataclass
class _Open:
    start: int
    onset: int
    speech_windows: int = 0
    silence_start: int | None = None
    probs: list[tuple[int, float]] = field(default_factory=list)
    partial_rev: int = 0
    partial_end: int = 0
    tentative_rev: int = 0
    tentative_cut: int | None = None
    """The end of the live tentative (``None``: none, or it was made void)."""
    tentative_quiet: bool = False
    """The live tentative is the quiet pause's early one, its tail not yet checked."""
    quiet_looked: int | None = None
    """The silence whose start was looked at for an early tentative (once per pause)."""


class Segmenter:
    """Feeds audio to a VAD window by window and closes segments; see the module docstring."""

    def __init__(self, vad: VadFn, config: SegmenterConfig | None = None) -> None:
        self._vad = vad
        self.cfg = config or SegmenterConfig()
        self._pad = self.cfg.samples(self.cfg.speech_pad_ms)
        pad_end = self.cfg.speech_pad_end_ms
        self._pad_end = self._pad if pad_end is None else self.cfg.samples(pad_end)
        quiet = self.cfg.samples(self.cfg.quiet_pad_end_ms)
        self._quiet_pad = quiet if 0 < quiet < self._pad_end else 0
        self._min_silence = self.cfg.samples(self.cfg.min_silence_ms)
        self._min_speech_windows = max(
            1, int(np.ceil(self.cfg.samples(self.cfg.min_speech_ms) / self.cfg.window))
        )
        self._max_len = int(self.cfg.max_segment_s * self.cfg.sample_rate)
        self._fast_min_silence = max(
            self._min_silence, self.cfg.samples(self.cfg.fast_min_silence_ms)
        )
        self._fast_max_len = max(
            self._max_len, int(self.cfg.fast_max_segment_s * self.cfg.sample_rate)
        )
        self.fast = False
        """Audio is arriving faster than real time (workers/pace.py): nobody waits on each
        utterance, so cut long segments like offline transcription does, without partials or
        tentatives. May change between any two calls of :meth:`feed`."""
        self._pending = np.zeros(0, dtype=np.float32)
        self._buf = np.zeros(0, dtype=np.float32)
        self._buf_start = 0  # absolute sample offset of _buf[0]
        self._pos = 0  # absolute offset of the next window
        self._floor = 0  # no new segment may start before this (end of the last one)
        self._open: _Open | None = None
        self._next_index = 0
        self._partial_first = self.cfg.samples(self.cfg.partial_first_ms)
        self._partial_every = max(self.cfg.window, self.cfg.samples(self.cfg.partial_interval_ms))
        self._events: list[Event] = []

    @property
    def in_speech(self) -> bool:
        return self._open is not None

    def state(self) -> SegmenterState | None:
        """A snapshot to continue from, or ``None`` inside an utterance (not a safe point)."""
        if self._open is not None:
            return None
        return SegmenterState(
            pos=self._pos,
            buf_start=self._buf_start,
            floor=self._floor,
            next_index=self._next_index,
            buf=self._buf.copy(),
            pending=self._pending.copy(),
        )

    def restore(self, state: SegmenterState) -> None:
        """Continue from ``state`` (on a fresh segmenter whose VAD state was restored too)."""
        self._pos, self._buf_start, self._floor = state.pos, state.buf_start, state.floor
        self._next_index = state.next_index
        self._buf = state.buf.astype(np.float32)
        self._pending = state.pending.astype(np.float32)
        self._open = None

    @property
    def samples_seen(self) -> int:
        return self._pos + len(self._pending)

    @property
    def segments_emitted(self) -> int:
        return self._next_index

    def feed(self, audio: np.ndarray) -> list[Event]:
        """Add samples (float32 mono); return what this audio caused: closed segments, speech
        onsets and (when enabled) at most one partial snapshot of the open utterance."""
        data = np.concatenate([self._pending, audio.astype(np.float32, copy=False)])
        w = self.cfg.window
        n = len(data) // w
        self._pending = data[n * w :]
        if n == 0:
            return []
        windows = data[: n * w].reshape(n, w)
        self._buf = np.concatenate([self._buf, data[: n * w]])
        probs = np.asarray(self._vad(windows), dtype=np.float32).reshape(-1)
        if probs.shape[0] != n:
            raise ValueError(f"VAD returned {probs.shape[0]} probabilities for {n} windows")
        self._events = []
        for p in probs:
            seg = self._step(float(p))
            if seg is not None:
                self._events.append(seg)
        self._maybe_partial()
        self._trim()
        out, self._events = self._events, []
        return out

    def flush(self) -> list[Event]:
        """End of audio: close the open segment (with the trailing partial window)."""
        out = self.finalize(reason="flush")
        self._pos += len(self._pending)
        self._pending = np.zeros(0, dtype=np.float32)
        self._floor = self._pos
        self._trim()
        return out

    @property
    def live_tentative(self) -> tuple[int, int] | None:
        """``(segment, rev)`` of the open utterance's tentative while its pause goes on."""
        seg = self._open
        if seg is None or seg.tentative_cut is None:
            return None
        return self._next_index, seg.tentative_rev

    @property
    def pause_ms(self) -> float:
        """How long the open utterance's pause is so far (0: none, or speaking)."""
        seg = self._open
        if seg is None or seg.silence_start is None:
            return 0.0
        return (self._pos - seg.silence_start) * 1000 / self.cfg.sample_rate

    @property
    def speech_s(self) -> float:
        """How long the open utterance spoke, from its onset to its pause (or to now)."""
        seg = self._open
        if seg is None:
            return 0.0
        end = seg.silence_start if seg.silence_start is not None else self._pos
        return (end - seg.onset) / self.cfg.sample_rate

    def end_turn(self, reason: str = "silence") -> list[Event]:
        """Close the open utterance at its live tentative, as if the pause had reached the
        endpoint: the end-of-turn rule (workers/turns.py) said the turn is over, or a client's
        ``finalize`` came during the pause. The segment confirms the tentative (its audio is
        exactly the tentative's), so its speculative final is the final. Nothing without one."""
        seg = self._open
        if seg is None or seg.tentative_cut is None:
            return []
        cut = seg.tentative_cut
        self._open = None
        self._floor = cut
        out: list[Event] = [self._emit(seg.start, cut, reason, seg.tentative_rev)]
        self._trim()
        return out

    def finalize(self, reason: str = "finalize") -> list[Event]:
        """Close the open utterance now, with the audio received so far (a client's
        ``finalize``); the stream goes on. During a pause with a live tentative, the utterance
        ends at the tentative (:meth:`end_turn`: its speculative final is already under way);
        otherwise a live tentative is made void first."""
        self._events = []
        out: list[Event] = []
        end = self._pos + len(self._pending)
        if reason != "flush" and end - self._floor < self.cfg.samples(self.cfg.min_finalize_ms):
            return out
        if reason != "flush" and self.live_tentative is not None:
            return self.end_turn(reason)
        if self._open is not None:
            self._void(self._open)
            self._buf = np.concatenate([self._buf, self._pending])
            out.extend(self._events)
            self._events = []
            if self._open.speech_windows >= self._min_speech_windows:
                out.append(self._emit(self._open.start, end, reason))
            self._buf = self._buf[: len(self._buf) - len(self._pending)]
            self._open = None
            self._floor = end
            self._trim()
        return out

    # -- internals ---------------------------------------------------------------------------

    def _step(self, prob: float) -> Segment | None:
        cfg = self.cfg
        start = self._pos
        end = start + cfg.window
        self._pos = end
        seg = self._open
        if seg is None:
            if prob >= cfg.threshold:
                begin = max(start - self._pad, self._floor, self._buf_start)
                self._open = _Open(
                    start=begin, onset=start, speech_windows=1, probs=[(start, prob)]
                )
                self._events.append(SpeechStart(self._next_index, start))
            return None
        seg.probs.append((start, prob))
        if prob >= cfg.threshold:
            seg.speech_windows += 1
            seg.silence_start = None
            self._void(seg)
        elif prob < cfg.silence_off and seg.silence_start is None:
            seg.silence_start = start
        min_silence, max_len = (
            (self._fast_min_silence, self._fast_max_len)
            if self.fast
            else (self._min_silence, self._max_len)
        )
        if seg.silence_start is not None and end - seg.silence_start >= min_silence:
            # a live tentative is of this silence (speech voids it): the segment is its audio
            live = seg.tentative_cut
            cut = live if live is not None else min(seg.silence_start + self._pad_end, end)
            self._open = None
            self._floor = cut
            confirmed = seg.tentative_rev if live is not None else None
            if seg.speech_windows >= self._min_speech_windows:
                return self._emit(seg.start, cut, "silence", confirmed)
            return None
        if end - seg.start >= max_len:
            self._void(seg)
            return self._cut_at_quietest(seg, end, max_len)
        self._maybe_tentative(seg, end)
        return None

    def _maybe_tentative(self, seg: _Open, end: int) -> None:
        """A pause just reached ``speech_pad_end_ms`` (or, quiet, ``quiet_pad_end_ms``): the
        segment's final audio is known if the pause goes on to the endpoint, so it can be
        transcribed now (see :class:`Tentative`)."""
        if (
            not self.cfg.tentative
            or self.fast
            or seg.silence_start is None
            or self._pad_end >= self._min_silence
            or seg.speech_windows < self._min_speech_windows
        ):
            return
        silence = seg.silence_start
        pause = end - silence
        if seg.tentative_cut is None:
            if self._quiet_pad and seg.quiet_looked != silence and pause >= self._quiet_pad:
                seg.quiet_looked = silence
                if pause < self._pad_end and self._quiet(seg, silence, silence + self._quiet_pad):
                    self._tentative(seg, silence + self._quiet_pad, quiet=True)
                    return
            if pause >= self._pad_end:
                self._tentative(seg, silence + self._pad_end)
        elif seg.tentative_quiet and pause >= self._pad_end:
            seg.tentative_quiet = False
            if not self._quiet(seg, seg.tentative_cut, silence + self._pad_end):
                self._void(seg)  # the tail was not silence after all: keep the usual end pad
                self._tentative(seg, silence + self._pad_end)

    def _tentative(self, seg: _Open, cut: int, quiet: bool = False) -> None:
        seg.tentative_rev += 1
        seg.tentative_cut = cut
        seg.tentative_quiet = quiet
        audio = self._buf[seg.start - self._buf_start : cut - self._buf_start].copy()
        self._events.append(
            Tentative(self._next_index, seg.start, cut, audio, seg.tentative_rev, quiet)
        )

    def _quiet(self, seg: _Open, start: int, end: int) -> bool:
        """Whether ``start``..``end`` of the open utterance's pause (never empty) is quiet: every
        window touching it scored as silence, and its RMS ``quiet_db`` under that of the speech
        before the pause."""
        w, off = self.cfg.window, self.cfg.silence_off
        if any(p >= off for s, p in seg.probs if s < end and s + w > start):
            return False
        speech_end = start if seg.silence_start is None else seg.silence_start
        speech = self._buf[seg.onset - self._buf_start : speech_end - self._buf_start]
        tail = self._buf[start - self._buf_start : end - self._buf_start]
        # no speech before the pause: a max-length cut left only the pause in this segment
        loud = float(np.sqrt(np.mean(np.square(speech, dtype=np.float64)))) if len(speech) else 0.0
        rms = float(np.sqrt(np.mean(np.square(tail, dtype=np.float64))))
        return rms <= loud * 10 ** (self.cfg.quiet_db / 20)

    def _void(self, seg: _Open) -> None:
        if seg.tentative_cut is not None:
            seg.tentative_cut = None
            seg.tentative_quiet = False
            self._events.append(TentativeVoid(self._next_index, seg.tentative_rev))

    def _cut_at_quietest(self, seg: _Open, end: int, max_len: int) -> Segment:
        half = seg.start + max_len // 2
        candidates = [(p, s) for s, p in seg.probs if s >= half] or [(p, s) for s, p in seg.probs]
        _, quiet_start = min(candidates)
        cut = min(quiet_start + self.cfg.window // 2, end)
        out = self._emit(seg.start, cut, "max_length")
        rest = [(s, p) for s, p in seg.probs if s >= cut]
        self._open = _Open(
            start=cut,
            onset=cut,
            speech_windows=sum(1 for _, p in rest if p >= self.cfg.threshold),
            silence_start=seg.silence_start if (seg.silence_start or -1) >= cut else None,
            probs=rest,
        )
        return out

    def _maybe_partial(self) -> None:
        seg = self._open
        if seg is None or not self._partial_first or self.fast or seg.silence_start is not None:
            return
        end = self._pos
        if seg.partial_rev == 0:
            due = end - seg.onset >= self._partial_first
        else:
            due = end - seg.partial_end >= self._partial_every
        if not due or seg.speech_windows < self._min_speech_windows:
            return
        audio = self._buf[seg.start - self._buf_start : end - self._buf_start].copy()
        seg.partial_rev += 1
        seg.partial_end = end
        self._events.append(Partial(self._next_index, seg.start, end, audio, seg.partial_rev))

    def _emit(self, start: int, end: int, reason: str, tentative_rev: int | None = None) -> Segment:
        audio = self._buf[start - self._buf_start : end - self._buf_start].copy()
        seg = Segment(self._next_index, start, end, audio, reason, tentative_rev)
        self._next_index += 1
        return seg

    def _trim(self) -> None:
        """Keep only what a segment may still need: the open one, or the pre-roll padding."""
        keep_from = (
            self._open.start if self._open is not None else max(self._pos - self._pad, self._floor)
        )
        keep_from = min(max(keep_from, self._buf_start), self._pos)
        drop = keep_from - self._buf_start
        if drop > 0:
            self._buf = self._buf[drop:]
            self._buf_start = keep_from

"""Client audio encodings, decoded as the audio arrives, to the pipeline's 16 kHz PCM16 mono.

An :class:`AudioDecoder` takes the bytes of a live stream in whatever frames the client sends
and returns the 16 kHz PCM16 they hold so far:

- ``linear16``: PCM16 little-endian mono at the client's rate (odd bytes wait for the next
  frame, :class:`~shared.audio.PcmCarry`);
- ``mulaw`` / ``alaw``: G.711 at 8 kHz as telephony sends it (Twilio Media Streams, SIP),
  one byte a sample, expanded with the ITU-T tables (pure numpy);
- ``opus``: an Ogg or WebM (Matroska) stream of Opus packets, as a browser's MediaRecorder
  produces it (``audio/ogg;codecs=opus``, ``audio/webm;codecs=opus``): the container is split
  into packets here (pure Python, incrementally, from a growing buffer bounded by
  ``MAX_PENDING_BYTES``), the packets are decoded by libopus through PyAV.

Everything is then resampled to 16 kHz by libswresample (:class:`~shared.audio.StreamResampler`).
Bad bytes are an :class:`EncodingError` (the caller turns it into its protocol's error).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import av
import numpy as np

from shared.audio import SAMPLE_RATE, PcmCarry, StreamResampler

ENCODINGS = ("linear16", "mulaw", "alaw", "opus")
"""What the live endpoints accept (``encoding=``; the OpenAI formats map onto these)."""

G711_RATE = 8000
"""G.711's rate; a client may say another (``sample_rate``), it is then taken as said."""

OPUS_RATE = 48_000
"""libopus decodes to 48 kHz whatever the encoder's input rate was."""

MAX_PENDING_BYTES = 1 << 20
"""Container bytes waiting for the rest of their page or element: a stream that never completes
one within this much is refused (``invalid_audio``) instead of buffering without end."""


class EncodingError(ValueError):
    """The bytes are not what the session's encoding says."""


# -- G.711 (pure) -----------------------------------------------------------------------------


def _mulaw_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(u & 0x80, -magnitude, magnitude).astype("<i2")


def _alaw_table() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    exponent = (a >> 4) & 0x07
    mantissa = a & 0x0F
    magnitude = np.where(
        exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0)
    )
    return np.where(a & 0x80, magnitude, -magnitude).astype("<i2")


MULAW_TO_PCM16 = _mulaw_table()
ALAW_TO_PCM16 = _alaw_table()
"""ITU-T G.711 expansion: byte value -> linear sample (the tables of the reference decoder)."""


def g711_decode(data: bytes, law: str) -> bytes:
    table = MULAW_TO_PCM16 if law == "mulaw" else ALAW_TO_PCM16
    return bytes(table[np.frombuffer(data, dtype=np.uint8)].tobytes())


# -- containers (pure) ------------------------------------------------------------------------


class OggPackets:
    """Opus packets of an Ogg stream fed in pieces (RFC 3533 pages, RFC 7845 Opus mapping):
    the first packet is the ``OpusHead`` (the decoder's extradata), ``OpusTags`` is skipped."""

    def __init__(self) -> None:
        self.head: bytes | None = None
        self._buf = bytearray()
        self._partial = bytearray()
        self._packets = 0

    def push(self, data: bytes) -> Iterator[bytes]:
        self._buf += data
        while len(self._buf) >= 27:
            if self._buf[:4] != b"OggS":
                raise EncodingError("not an Ogg stream (no 'OggS' page)")
            nsegs = self._buf[26]
            if len(self._buf) < 27 + nsegs:
                break
            lacing = self._buf[27 : 27 + nsegs]
            body = 27 + nsegs
            if len(self._buf) < body + sum(lacing):
                break
            pos = body
            for size in lacing:
                self._partial += self._buf[pos : pos + size]
                pos += size
                if size < 255:  # the packet ends in this page
                    yield from self._packet(bytes(self._partial))
                    self._partial.clear()
            del self._buf[:pos]
        if len(self._buf) + len(self._partial) > MAX_PENDING_BYTES:
            raise EncodingError(f"an Ogg page or packet exceeds {MAX_PENDING_BYTES} bytes")

    def _packet(self, packet: bytes) -> Iterator[bytes]:
        self._packets += 1
        if self._packets == 1:
            if not packet.startswith(b"OpusHead"):
                raise EncodingError("the Ogg stream is not Opus (no OpusHead)")
            self.head = packet
        elif self._packets == 2 and packet.startswith(b"OpusTags"):
            return
        else:
            yield packet


_EBML_MASTERS = {
    0x18538067,  # Segment
    0x1F43B675,  # Cluster
    0x1654AE6B,  # Tracks
    0xAE,  # TrackEntry
    0xA0,  # BlockGroup
}
_SIMPLE_BLOCK, _BLOCK, _CODEC_ID, _CODEC_PRIVATE = 0xA3, 0xA1, 0x86, 0x63A2
_UNKNOWN = -1


def _vint(buf: bytearray, pos: int, *, keep_marker: bool) -> tuple[int, int] | None:
    """An EBML variable-length integer at ``pos``: (value, length), or None if incomplete."""
    if pos >= len(buf):
        return None
    first = buf[pos]
    length = 1
    while length <= 8 and not first & (0x80 >> (length - 1)):
        length += 1
    if length > 8:
        raise EncodingError("not a WebM stream (bad EBML length)")
    if pos + length > len(buf):
        return None
    value = first if keep_marker else first & (0xFF >> length)
    for b in buf[pos + 1 : pos + length]:
        value = (value << 8) | b
    if not keep_marker and value == (1 << (7 * length)) - 1:
        value = _UNKNOWN  # an unknown size: MediaRecorder's live Segment and Cluster
    return value, length


class WebmPackets:
    """Opus frames of a WebM (Matroska) stream fed in pieces: master elements are entered (their
    size may be unknown, as MediaRecorder writes them), ``SimpleBlock`` and ``Block`` frames of
    the audio track are yielded, ``CodecPrivate`` (the ``OpusHead``) is kept, the rest skipped."""

    def __init__(self) -> None:
        self.head: bytes | None = None
        self._buf = bytearray()
        self._skip = 0
        self._checked = False

    def push(self, data: bytes) -> Iterator[bytes]:
        self._buf += data
        if not self._checked and len(self._buf) >= 4:
            if self._buf[:4] != b"\x1a\x45\xdf\xa3":
                raise EncodingError("not a WebM stream (no EBML header)")
            self._checked = True
        while self._skipped():
            header = self._header()
            if header is None:
                break
            element, length, size = header
            if element in _EBML_MASTERS:
                del self._buf[:size]  # go inside
                continue
            if length == _UNKNOWN:
                raise EncodingError("WebM element of unknown size that is not a container")
            if element not in (_SIMPLE_BLOCK, _BLOCK, _CODEC_ID, _CODEC_PRIVATE):
                del self._buf[:size]
                self._skip = length
                continue
            if length > MAX_PENDING_BYTES:
                raise EncodingError(f"a WebM block exceeds {MAX_PENDING_BYTES} bytes")
            if len(self._buf) < size + length:
                break
            body = bytes(self._buf[size : size + length])
            del self._buf[: size + length]
            yield from self._element(element, body)

    def _skipped(self) -> bool:
        """Drop what is left of a skipped element; False while some of it is still to come."""
        n = min(self._skip, len(self._buf))
        del self._buf[:n]
        self._skip -= n
        return not self._skip

    def _header(self) -> tuple[int, int, int] | None:
        """(element id, content length, header length) at the buffer's start, if complete."""
        ident = _vint(self._buf, 0, keep_marker=True)
        if ident is None:
            return None
        size = _vint(self._buf, ident[1], keep_marker=False)
        if size is None:
            return None
        return ident[0], size[0], ident[1] + size[1]

    def _element(self, element: int, body: bytes) -> Iterator[bytes]:
        if element == _CODEC_ID and body.rstrip(b"\0") != b"A_OPUS":
            raise EncodingError(f"the WebM track is {body.decode(errors='replace')}, not Opus")
        if element == _CODEC_PRIVATE:
            self.head = body
        elif element in (_SIMPLE_BLOCK, _BLOCK):
            yield from self._frames(body)

    @staticmethod
    def _frames(block: bytes) -> Iterator[bytes]:
        track = _vint(bytearray(block), 0, keep_marker=False)
        if track is None or len(block) < track[1] + 3:
            raise EncodingError("a truncated WebM block")
        flags = block[track[1] + 2]
        if flags & 0x06:
            raise EncodingError("laced WebM blocks are not supported")
        yield block[track[1] + 3 :]


# -- the decoders -----------------------------------------------------------------------------


class AudioDecoder:
    """``push(bytes) -> 16 kHz PCM16`` for one live stream (see the module docstring)."""

    def push(self, data: bytes) -> bytes:
        raise NotImplementedError


class PcmDecoder(AudioDecoder):
    def __init__(self, rate: int) -> None:
        self._carry = PcmCarry()
        self._resampler = StreamResampler(rate, SAMPLE_RATE)

    def push(self, data: bytes) -> bytes:
        return self._resampler.push(self._carry.push(data))


class G711Decoder(AudioDecoder):
    def __init__(self, law: str, rate: int = G711_RATE) -> None:
        self._law = law
        self._resampler = StreamResampler(rate, SAMPLE_RATE)

    def push(self, data: bytes) -> bytes:
        return self._resampler.push(g711_decode(data, self._law))


class OpusStreamDecoder(AudioDecoder):
    """Ogg or WebM (told apart by their first bytes) Opus, decoded packet by packet."""

    def __init__(self) -> None:
        self._demuxer: OggPackets | WebmPackets | None = None
        self._codec: av.AudioCodecContext | None = None
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        self._sniff = b""

    def push(self, data: bytes) -> bytes:
        if self._demuxer is None:
            self._sniff += data
            if len(self._sniff) < 4:
                return b""
            if self._sniff.startswith(b"OggS"):
                self._demuxer = OggPackets()
            elif self._sniff.startswith(b"\x1a\x45\xdf\xa3"):
                self._demuxer = WebmPackets()
            else:
                raise EncodingError("opus audio must come in an Ogg or WebM stream")
            data, self._sniff = self._sniff, b""
        out = bytearray()
        for packet in self._demuxer.push(data):
            out += self._decode(packet)
        return bytes(out)

    def _decode(self, packet: bytes) -> bytes:
        if self._codec is None:
            codec = av.CodecContext.create("libopus", "r")
            assert isinstance(codec, av.AudioCodecContext)
            codec.sample_rate = OPUS_RATE
            head = self._demuxer.head if self._demuxer else None
            channels = head[9] if head and len(head) >= 19 else 1
            codec.layout = "stereo" if channels == 2 else "mono"
            if head:
                codec.extradata = head
            self._codec = codec
        try:
            frames = self._codec.decode(av.Packet(packet))
        except av.FFmpegError as exc:
            raise EncodingError(f"an Opus packet could not be decoded: {exc}") from exc
        pcm = bytearray()
        for frame in frames:
            frame.pts = None
            for out in self._resampler.resample(frame):
                pcm += out.to_ndarray().astype("<i2").tobytes()
        return bytes(pcm)


@dataclass(frozen=True)
class InputFormat:
    """What a live session's audio is: an encoding of :data:`ENCODINGS` and its rate."""

    encoding: str = "linear16"
    sample_rate: int = SAMPLE_RATE

    def decoder(self) -> AudioDecoder:
        if self.encoding == "linear16":
            return PcmDecoder(self.sample_rate)
        if self.encoding in ("mulaw", "alaw"):
            return G711Decoder(self.encoding, self.sample_rate)
        if self.encoding == "opus":
            return OpusStreamDecoder()
        raise EncodingError(f"unknown encoding {self.encoding!r}")


def parse_input_format(encoding: str | None, sample_rate: int | None) -> InputFormat:
    """A client's ``encoding`` and ``sample_rate`` (either may be absent): linear16 defaults
    to 16 kHz, mulaw/alaw to 8 kHz; opus carries its own rate (``sample_rate`` is ignored)."""
    name = (encoding or "linear16").lower()
    if name not in ENCODINGS:
        raise EncodingError(
            f"encoding {encoding!r} is not supported (use one of {', '.join(ENCODINGS)})"
        )
    if name == "opus":
        return InputFormat("opus", OPUS_RATE)
    default = G711_RATE if name in ("mulaw", "alaw") else SAMPLE_RATE
    rate = sample_rate or default
    if not 8000 <= rate <= 192_000:
        raise EncodingError("sample_rate must be between 8000 and 192000")
    return InputFormat(name, rate)

"""The pyannote VAD backend and speaker embeddings, run for real on corpus audio."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shared.audio import decode_file
from shared.settings import Settings
from tests.conftest import REPO
from workers.pyannote_embedding import PyannoteEmbedding
from workers.pyannote_vad import PyannoteVad, load_model
from workers.segmenter import Segment, Segmenter, SegmenterConfig
from workers.speakers import ClusterConfig, ClusterState, OnlineClustering
from workers.vad_backends import make_vad

W = 512
SR = 16_000


def windows_of(audio: np.ndarray) -> np.ndarray:
    n = audio.size // W
    return audio[: n * W].reshape(n, W)


@pytest.fixture(scope="module")
def dev00(corpus: Path) -> np.ndarray:
    return decode_file(corpus / "vad" / "dev00.wav")


def test_loads_from_a_file_a_directory_and_through_the_factory(
    segmentation_checkpoint: Path,
) -> None:
    by_file = load_model(str(segmentation_checkpoint))
    by_dir = load_model(str(segmentation_checkpoint.parent))
    assert type(by_file).__name__ == type(by_dir).__name__ == "PyanNet"
    vad = make_vad(
        Settings(vad_backend="pyannote", pyannote_model=str(segmentation_checkpoint.parent))
    )
    assert isinstance(vad, PyannoteVad) and vad.kind == "powerset"


def test_loads_a_hugging_face_name_from_the_hub_cache(
    segmentation_checkpoint: Path, tmp_path: Path
) -> None:
    """The Hugging Face branch of the loading code (hf_hub_download with a token), offline: the
    checkpoint is put where the hub's cache keeps a downloaded model."""
    repo = tmp_path / "hub" / "models--acme--tiny-segmentation"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    shutil.copy(segmentation_checkpoint, snapshot / "pytorch_model.bin")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    code = (
        "from workers.pyannote_vad import PyannoteVad, load_model\n"
        "m = load_model('acme/tiny-segmentation', token='hf_dummy')\n"
        "print(type(m).__name__, PyannoteVad(m).kind)\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "hub"))
    env["PYTHONWARNINGS"] = "ignore"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["PyanNet", "powerset"]


def test_stream_gives_well_formed_probabilities_with_bounded_context(
    segmentation_checkpoint: Path, dev00: np.ndarray
) -> None:
    vad = PyannoteVad(load_model(str(segmentation_checkpoint)), context_s=2.0)
    seen: list[int] = []
    infer = vad.frame_probabilities

    def recording(audio: np.ndarray) -> np.ndarray:
        seen.append(audio.size)
        return infer(audio)

    vad.frame_probabilities = recording  # type: ignore[method-assign]
    stream = vad.stream()
    windows = windows_of(dev00[: 6 * SR])
    probs = np.concatenate([stream(windows[i : i + 8]) for i in range(0, len(windows), 8)])
    assert probs.shape == (len(windows),) and probs.dtype == np.float32
    assert np.all(np.isfinite(probs)) and np.all((probs >= 0) & (probs <= 1))
    assert max(seen) <= 2 * SR + 8 * W, "the model must only see the bounded context"
    # a checkpoint continues exactly where the stream was
    again = vad.stream()
    again.set_state(stream.state())
    rest = windows_of(dev00[6 * SR : 8 * SR])
    np.testing.assert_allclose(stream(rest), again(rest), atol=1e-4)


def test_segmenter_cuts_well_formed_segments_on_corpus_audio(
    segmentation_checkpoint: Path, dev00: np.ndarray
) -> None:
    """With random weights the probabilities mean nothing, so the threshold is put at their
    median: the point is that the whole path yields sane segments."""
    vad = PyannoteVad(load_model(str(segmentation_checkpoint)), context_s=2.0)
    audio = dev00[: 15 * SR]
    probs = vad.stream()(windows_of(audio))
    cut = float(np.median(probs))
    seg = Segmenter(
        vad.stream(),
        SegmenterConfig(threshold=cut, neg_threshold=cut, min_silence_ms=300, speech_pad_ms=100),
    )
    events = [e for i in range(0, audio.size, 4800) for e in seg.feed(audio[i : i + 4800])]
    segments = [e for e in events + seg.flush() if isinstance(e, Segment)]
    assert segments
    prev_end = 0
    for s in segments:
        assert prev_end <= s.start < s.end <= audio.size
        assert s.audio.size == s.end - s.start
        prev_end = s.end


def test_embeddings_and_online_clustering_on_corpus_audio(
    embedding_checkpoint: Path, corpus: Path
) -> None:
    embed = PyannoteEmbedding.from_settings(
        Settings(diarize_embedding_model=str(embedding_checkpoint))
    )
    audio = decode_file(corpus / "vad" / "sample.wav")
    pieces = [
        audio[int(a * SR) : int(b * SR)] for a, b in [(6.69, 7.12), (8.32, 10.02), (10.57, 14.7)]
    ]
    vectors = [embed(p) for p in pieces]
    assert all(v.shape == (256,) and np.all(np.isfinite(v)) for v in vectors)
    clustering = OnlineClustering(ClusterConfig(threshold=0.5, min_duration_s=1.0))
    state = ClusterState()
    labels = [
        clustering.assign(state, v, p.size / SR) for v, p in zip(vectors, pieces, strict=True)
    ]
    assert labels[0] is None  # too short to open a speaker
    assert all(label is not None and label.startswith("S") for label in labels[1:])

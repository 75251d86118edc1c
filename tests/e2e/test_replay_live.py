"""`whisper-streaming replay` prints each final as it arrives, writes documents when a file is
done, and draws a progress bar when stderr is a terminal (real CLI process, real service)."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import threading
import time
from argparse import Namespace
from pathlib import Path

import pytest

from tests.conftest import REPO, Service, librispeech
from whisper_streaming.evaluation import wer
from whisper_streaming.replay import auth_headers, progress_line

pytestmark = pytest.mark.e2e


def run_with_a_terminal(cmd: list[str]) -> tuple[str, float, str, float, str]:
    """Run ``cmd`` with stderr on a pseudo-terminal: its first stdout line and when it came,
    the rest of stdout, when it exited, and everything it drew on the terminal."""
    master, slave = pty.openpty()  # stderr is a terminal: the progress line is drawn
    err = bytearray()

    def drain() -> None:
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                return
            if not chunk:
                return
            err.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    with subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=slave, text=True) as proc:
        os.close(slave)
        assert proc.stdout is not None
        first_line = proc.stdout.readline()
        first_at = time.monotonic()
        rest = proc.stdout.read()
        assert proc.wait(timeout=300) == 0, err.decode(errors="replace")
    exited_at = time.monotonic()
    reader.join(timeout=10)
    os.close(master)
    return first_line, first_at, rest, exited_at, err.decode(errors="replace")


def test_interim_results_are_shown_in_place_on_a_terminal(service: Service, corpus: Path) -> None:
    """On /v1/listen (the default) replay asks for interim results and draws the utterance in
    progress on the terminal's line, in grey after the progress bar; stdout gets only finals."""
    jfk = corpus / "long" / "jfk.flac"
    cmd = [sys.executable, "-m", "whisper_streaming.cli", "replay", "--url",
           service.ws + "/v1/listen", "--speed", "1", str(jfk)]  # fmt: skip
    first_line, _, rest, _, shown = run_with_a_terminal(cmd)
    reference = (corpus / "long" / "jfk.txt").read_text()
    assert wer([(reference, (first_line + rest).replace("\n", " "))]).wer <= 0.3
    interims = [
        part.split("\x1b[0m")[0] for part in shown.split("\x1b[2m")[1:]
    ]  # what was drawn in grey
    assert interims, shown
    words = {w.strip(".,;").lower() for w in reference.split()}
    drawn = {w.strip(".,;…").lower() for text in interims for w in text.split()}
    # the speech, while it was being spoken: several interims, each clipped to the line's tail
    # (on a slow CPU, finals first: 4 interims over the 11 s of speech on a 2-core AVX2 machine)
    assert len(set(interims)) >= 2, interims
    assert len(drawn & words) >= 3, (sorted(set(interims)), sorted(drawn & words))
    assert "\x1b[2m" not in first_line + rest  # the terminal line only, never stdout


def test_finals_are_printed_while_later_audio_still_streams(
    service: Service, corpus: Path, tmp_path: Path
) -> None:
    # a short utterance first (fewest words), then jfk
    first = min(librispeech(held_out_only=True), key=lambda u: len(u.reference.split()))
    jfk = corpus / "long" / "jfk.flac"
    out_dir = tmp_path / "srt"
    cmd = [sys.executable, "-m", "whisper_streaming.cli", "replay", "--url", service.ws + "/",
           "--speed", "1", "--format", "srt", "-o", str(out_dir), str(first.path), str(jfk)]  # fmt: skip
    first_line, first_at, rest, exited_at, shown = run_with_a_terminal(cmd)
    # The first file's final was on stdout before the second file (11 s of audio sent at real-time
    # pace, a floor set by the client's own pacing) had been streamed: not all at the end.
    assert exited_at - first_at >= 5.0, (first_line, rest)
    assert first_line.strip()
    printed = (first_line + rest).strip().replace("\n", " ")
    reference = first.reference + " " + (corpus / "long" / "jfk.txt").read_text()
    assert wer([(reference, printed)]).wer <= 0.3, printed
    # the documents, once each file was done
    srt = (out_dir / "jfk.srt").read_text()
    assert srt.startswith("1\n00:00:") and "-->" in srt
    assert (out_dir / f"{first.path.stem}.srt").read_text().strip()
    assert "\r" in shown and "jfk.flac [" in shown and "100%" in shown
    assert "jfk.flac: 11." in shown  # the summary line after the bar


def test_progress_line_and_credentials() -> None:
    assert (
        progress_line("a.wav", 3, 12, 1, width=8) == "a.wav [##......]  25%    3.0/12.0 s  1 finals"
    )
    assert progress_line("a.wav", 20, 12, 2, width=4).startswith("a.wav [####] 100%")
    assert auth_headers(Namespace(api_key="k", token=None)) == {"Authorization": "Bearer k"}
    assert auth_headers(Namespace(api_key=None, token="wst1.x")) == {
        "Authorization": "Bearer wst1.x"
    }
    assert auth_headers(Namespace(api_key=None, token=None)) is None

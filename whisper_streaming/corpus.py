"""The shared speech corpus (LibriSpeech utterances with references), for tests, benchmarks and
the soak run. It is read from ``$WHISPER_CORPUS`` or ``../shared/corpus`` beside the checkout and
never copied into the repository."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class CorpusMissing(RuntimeError):
    """The corpus is not where it should be."""


def corpus_dir() -> Path:
    path = Path(os.environ.get("WHISPER_CORPUS", REPO.parent / "shared" / "corpus"))
    if not (path / "librispeech" / "transcripts.tsv").is_file():
        raise CorpusMissing(
            f"speech corpus not found at {path}: set WHISPER_CORPUS to the folder that holds "
            "librispeech/, long/, vad/ (../shared/corpus in this project's checkouts)"
        )
    return path


@dataclass(frozen=True)
class Utterance:
    utt_id: str
    path: Path
    reference: str
    subset: str


def librispeech(held_out_only: bool = False) -> list[Utterance]:
    """LibriSpeech utterances; held out = every subset but train-clean-5 (training data)."""
    base = corpus_dir() / "librispeech"
    refs = dict(
        line.rstrip("\n").split("\t", 1)
        for line in (base / "transcripts.tsv").read_text().splitlines()
    )
    out = []
    with (base / "splits.tsv").open() as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            if held_out_only and row["subset"] == "train-clean-5":
                continue
            out.append(
                Utterance(row["utt_id"], base / row["file"], refs[row["utt_id"]], row["subset"])
            )
    return out


@dataclass(frozen=True)
class Recording:
    """A recording of ``other-languages/``: its language, reference text and English reference
    translation (``translations.tsv``; None where there is none)."""

    name: str
    path: Path
    language: str
    reference: str
    english: str | None


def other_languages() -> list[Recording]:
    """The recordings in languages other than English, in ``transcripts.tsv`` order."""
    base = corpus_dir() / "other-languages"

    def table(name: str, column: str) -> dict[str, tuple[str, str]]:
        with (base / name).open() as fh:
            return {r["file"]: (r["lang"], r[column]) for r in csv.DictReader(fh, delimiter="\t")}

    english = table("translations.tsv", "english")
    return [
        Recording(name, base / name, lang, text, english.get(name, (lang, None))[1])
        for name, (lang, text) in table("transcripts.tsv", "text").items()
    ]

"""``python -m bench.keyterms``: what key terms (faster-whisper ``hotwords``) buy and cost.

On the corpus's LibriSpeech utterances, each decoded as one ASR job by the ASR worker's own
:class:`~workers.asr.Transcriber` (the options the pipeline uses), twice:

- utterances that hold proper nouns (``PROPER_NOUNS``, picked by hand from the corpus
  transcripts: LibriSpeech references are upper case, so no rule can tell a name from a word):
  without key terms, and with that utterance's names as key terms (what a client that knows the
  names in its domain sends). Reported: **term recall** (name occurrences found in the
  transcript) without and with, also over the utterances where the model missed a name without
  them, and WER of those utterances without and with;
- the other utterances: without key terms, and with the whole names list as key terms (a
  session's terms that this utterance does not contain). Reported: their **WER cost**.

Results go to ``bench-results/keyterms.json`` and docs/benchmarks.md (``--no-docs`` to skip).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from bench import report
from bench.corpus import audio, to_pcm16
from shared.keyterms import check_keyterms
from shared.schemas import AsrJob
from shared.settings import Settings
from whisper_streaming.corpus import librispeech
from whisper_streaming.evaluation import normalize, wer
from workers.asr import DecodeOptions, Transcriber, load_model, resolve_auto

PROPER_NOUNS = (
    "Albert", "Alexandria", "Amelia", "Armenia", "Asia", "Becky", "Billy", "Bobby", "Brindisi",
    "Cairo", "Charing Cross", "Comstock", "Corinthe", "David", "Franz", "Hudson", "Jane",
    "Jefferson", "Jesus", "Kara", "Manderson", "Mariposa", "Marius", "Meredith", "Mondetour",
    "Paredes", "Pulchinellos", "Quillan", "Quilter", "Rachel", "Remington", "Rollin", "Ronicky",
    "Rosville", "Surrey", "Thorpe",
)  # fmt: skip


def _words(text: str) -> list[str]:
    return [w.removesuffix("'s") for w in normalize(text).split()]


def names_in(reference: str) -> list[str]:
    """The proper nouns of ``PROPER_NOUNS`` that the reference holds (each occurrence)."""
    words = _words(reference)
    found = []
    for name in PROPER_NOUNS:
        key = _words(name)
        found += [name] * sum(1 for i in range(len(words)) if words[i : i + len(key)] == key)
    return found


def recall(names: list[str], hypothesis: str) -> int:
    """How many of the name occurrences the hypothesis holds."""
    words = _words(hypothesis)
    hits = 0
    for name in set(names):
        key = _words(name)
        present = sum(1 for i in range(len(words)) if words[i : i + len(key)] == key)
        hits += min(present, names.count(name))
    return hits


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.keyterms", description=__doc__)
    p.add_argument("--limit", type=int, default=0, help="at most this many utterances of each kind")
    p.add_argument("--model", default="", help="ASR_MODEL (default: the bundled tiny.en)")
    p.add_argument("--name", default="keyterms")
    p.add_argument("--no-docs", action="store_true")
    args = p.parse_args(argv)
    settings = resolve_auto(Settings(asr_model=args.model))
    transcriber = Transcriber(load_model(settings), DecodeOptions.from_settings(settings))
    every = check_keyterms(list(PROPER_NOUNS))  # within the bounds a session has

    def decode(u: Any, terms: list[str]) -> str:
        pcm = to_pcm16(audio(u.path))
        job = AsrJob(session_id="bench", segment=0, start=0.0, end=len(pcm) / 32000, pcm=pcm,
                     language="en", keyterms=terms)  # fmt: skip
        return transcriber.transcribe(job).text

    utts = librispeech()
    named = [(u, names_in(u.reference)) for u in utts]
    with_names = [(u, n) for u, n in named if n]
    without = [u for u, n in named if not n]
    if args.limit:
        with_names, without = with_names[: args.limit], without[: args.limit]
    started = time.monotonic()
    rows = []
    for u, names in with_names:
        base, hot = decode(u, []), decode(u, sorted(set(names)))
        rows.append({"utt_id": u.utt_id, "names": names, "reference": u.reference,
                     "without": base, "with": hot, "recall_without": recall(names, base),
                     "recall_with": recall(names, hot)})  # fmt: skip
    rest = []
    for u in without:
        rest.append({"utt_id": u.utt_id, "reference": u.reference, "without": decode(u, []),
                     "with": decode(u, every)})  # fmt: skip
    out = summarize(rows, rest) | {
        "model": settings.asr_model or "bundled tiny.en",
        "device": settings.asr_device,
        "beam_size": settings.asr_beam_size,
        "seconds": round(time.monotonic() - started, 1),
        "command": "python -m bench.keyterms" + (f" --limit {args.limit}" if args.limit else ""),
        "date": time.strftime("%Y-%m-%d"),
        "utterances": rows,
        "rest": rest,
    }
    print(render(out))
    print(f"wrote {report.save_json(args.name, out)}")
    if not args.no_docs and args.name == "keyterms":
        report.replace_section("keyterms", render(out))
        print(f"updated {report.DOC}")
    return 0


def summarize(rows: list[dict[str, Any]], rest: list[dict[str, Any]]) -> dict[str, Any]:
    missed = [r for r in rows if r["recall_without"] < len(r["names"])]

    def pct(hits: int, total: int) -> float | None:
        return round(100 * hits / total, 1) if total else None

    def w(items: list[dict[str, Any]], key: str) -> float:
        return round(wer((r["reference"], r[key]) for r in items).wer * 100, 2) if items else 0.0

    occurrences = sum(len(r["names"]) for r in rows)
    missed_occ = sum(len(r["names"]) for r in missed)
    return {
        "named_utterances": len(rows),
        "name_occurrences": occurrences,
        "recall_without_pct": pct(sum(r["recall_without"] for r in rows), occurrences),
        "recall_with_pct": pct(sum(r["recall_with"] for r in rows), occurrences),
        "missed_utterances": len(missed),
        "missed_recall_without_pct": pct(sum(r["recall_without"] for r in missed), missed_occ),
        "missed_recall_with_pct": pct(sum(r["recall_with"] for r in missed), missed_occ),
        "named_wer_without": w(rows, "without"),
        "named_wer_with": w(rows, "with"),
        "rest_utterances": len(rest),
        "rest_wer_without": w(rest, "without"),
        "rest_wer_with_all_names": w(rest, "with"),
    }


def render(out: dict[str, Any]) -> str:
    header = ["", "utterances", "term recall without (%)", "with (%)", "WER without (%)",
              "WER with (%)"]  # fmt: skip
    rows = [
        ["with proper nouns (their names as key terms)", out["named_utterances"],
         out["recall_without_pct"], out["recall_with_pct"], out["named_wer_without"],
         out["named_wer_with"]],
        ["… of which the model misses a name without", out["missed_utterances"],
         out["missed_recall_without_pct"], out["missed_recall_with_pct"], None, None],
        ["the rest (all names as key terms)", out["rest_utterances"], None, None,
         out["rest_wer_without"], out["rest_wer_with_all_names"]],
    ]  # fmt: skip
    return "\n".join(
        [
            f"### Key terms (`{out['command']}`)",
            "",
            f"{out['date']} · {out['model']} on {out['device']}, beam {out['beam_size']}, "
            f"{out['name_occurrences']} name occurrences, {out['seconds']} s",
            "",
            report.table(header, rows),
        ]
    )


if __name__ == "__main__":
    sys.exit(main())

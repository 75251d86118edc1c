"""Output: JSON under bench-results/, Markdown sections in docs/benchmarks.md (between marker
comments, so a rerun replaces its own section and nothing else), and the latency plot."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.machine import REPO, describe

RESULTS = REPO / "bench-results"
DOC = REPO / "docs" / "benchmarks.md"


def save_json(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


def replace_section(name: str, body: str, doc: Path = DOC) -> None:
    """Put ``body`` between ``<!-- bench:NAME begin -->`` and ``<!-- bench:NAME end -->``."""
    begin, end = f"<!-- bench:{name} begin -->", f"<!-- bench:{name} end -->"
    block = f"{begin}\n{body.strip()}\n{end}"
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _m: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    doc.write_text(text)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if v is None:
            return "—"
        if isinstance(v, float):
            return f"{v:.2f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def provenance(meta: dict[str, Any]) -> str:
    return (
        f"Command: `{meta['command']}` · {meta['date']} · commit {meta['commit']} · "
        f"{describe(meta['machine'])} · 1-min load average {meta['load_start']} at start, "
        f"{meta['load_end']} at end · service: {meta['stack']}" + busy_note(meta)
    )


def busy_note(meta: dict[str, Any]) -> str:
    # judged at the start only: the load at the end is mostly the benchmark's own processes
    cores = meta["machine"]["cores"] or 1
    before = meta.get("load_start", 0)
    if before < 0.6 * cores:
        return ""
    return (
        f" · **other work was running on the machine (load {before} on {cores} cores when it "
        "started): timings are pessimistic**"
    )


def met(value: float | None, limit: float) -> str:
    if value is None:
        return "not measured"
    return (
        f"**met** ({value:.2f} ≤ {limit})"
        if value <= limit
        else f"**not met** ({value:.2f} > {limit})"
    )


def plot_latency(levels: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [lv["streams"] for lv in levels]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for key, label, color in (
        ("final_s", "final", "tab:blue"),
        ("first_partial_s", "first partial", "tab:orange"),
    ):
        for q, style in (("p50", "-o"), ("p95", "--s")):
            ys = [lv[key][q] for lv in levels]
            ax.plot(xs, ys, style, color=color, label=f"{label} {q}")
    ax.axhline(1.5, color="grey", lw=0.8, ls=":")
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_xlabel("concurrent real-time streams")
    ax.set_ylabel("latency (s)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def latency_rows(levels: list[dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for lv in levels:
        r = lv["resources"]
        rows.append(
            [
                lv["streams"],
                "on" if lv["interim"] else "off",
                lv["first_partial_s"]["p50"],
                lv["first_partial_s"]["p95"],
                lv["final_s"]["p50"],
                lv["final_s"]["p95"],
                f"{lv['regions'] - lv['regions_without_final']}/{lv['regions']}",
                lv["wer"],
                r["cores_busy"],
                r["peak_rss_mib_total"],
                r["peak_redis_used_mib"],
            ]
        )
    return rows


LATENCY_HEADER = [
    "streams", "partials", "first partial p50 (s)", "first partial p95 (s)", "final p50 (s)",
    "final p95 (s)", "utterances finalised", "WER %", "service CPU (cores)", "service RSS (MiB)",
    "Redis used (MiB)",
]  # fmt: skip


def describe_short(meta: dict[str, Any]) -> str:
    m = meta["machine"]
    return f"{m['cpu']} ×{m['cores']}"

"""Where and when a figure was taken: CPU model, cores, RAM, load, date, commit."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def ram_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return float("nan")


def load1() -> float:
    return round(os.getloadavg()[0], 2)


def git_rev() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "gateway", "workers", "shared"],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"


def machine() -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": ram_gib(),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def describe(m: dict[str, Any]) -> str:
    return f"{m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM"


def offline_meta(module: str, **extra: Any) -> dict[str, Any]:
    """The provenance of a benchmark that runs no service (``python -m <module>`` and its
    arguments, date, commit, machine, load at the start) and ``extra``."""
    command = " ".join(["python -m", module, *sys.argv[1:]])
    return {"command": command, "date": now(), "commit": git_rev(), "machine": machine(),
            "load_start": load1(), **extra}  # fmt: skip

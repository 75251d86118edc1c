"""Tests of the ``pyannote`` extra: they run pyannote.audio and torch for real.

They run whenever pyannote.audio is installed (a broken install fails them, it is never hidden),
and are left out, with a message saying how to run them, when it is not (the default install has
no torch). Run them with the extra installed:

    poetry install -E pyannote && poetry run pytest -m pyannote tests/pyannote

Gated weights cannot be downloaded here, so the fixtures build small models of pyannote's own
architectures (PyanNet segmentation, WeSpeaker ResNet34 embedding), randomly initialised, saved
as pyannote checkpoints, and load them through the same code a Hugging Face name goes through.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

HAVE_PYANNOTE = (
    importlib.util.find_spec("pyannote") is not None
    and importlib.util.find_spec("pyannote.audio") is not None
)
HOW = "poetry install -E pyannote && poetry run pytest -m pyannote tests/pyannote (docs/vad.md)"

if not HAVE_PYANNOTE:
    collect_ignore_glob = ["test_*.py"]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not HAVE_PYANNOTE:
        terminalreporter.write_line(
            f"tests/pyannote not run: pyannote.audio is not installed. To run them: {HOW}",
            yellow=True,
        )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.pyannote)


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> None:
    """As the worker runs it (and the machine is shared)."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def segmentation_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.pyannote.tiny_models import save_segmentation

    return save_segmentation(tmp_path_factory.mktemp("seg") / "pytorch_model.bin")


@pytest.fixture(scope="session")
def embedding_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.pyannote.tiny_models import save_embedding

    return save_embedding(tmp_path_factory.mktemp("emb") / "pytorch_model.bin")

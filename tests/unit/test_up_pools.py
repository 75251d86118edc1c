"""``whisper-streaming up``'s model pools: the defaults, ``--pool NAME=MODEL[:N]``, ASR_MODEL."""

from __future__ import annotations

import pytest

from whisper_streaming.cli import main
from whisper_streaming.up import AUTO, PoolSpec, parse_pool, pools_to_start


def test_by_default_english_on_tiny_en_and_every_other_language_on_base() -> None:
    # the English workers: what the machine affords (AUTO, resolved when `up` starts)
    assert pools_to_start([], None, "") == [
        PoolSpec("en", "tiny.en", AUTO),
        PoolSpec("multi", "base"),
    ]
    # --asr-workers keeps its meaning: the English (tiny.en) workers
    assert pools_to_start([], 3, "")[0] == PoolSpec("en", "tiny.en", 3)


def test_asr_model_in_the_environment_is_one_pool_of_that_model() -> None:
    """How a model was chosen before pools; the worker names the pool from what it serves."""
    assert pools_to_start([], 2, "large-v3") == [PoolSpec("", "large-v3", 2)]


def test_pool_options_replace_the_defaults() -> None:
    got = pools_to_start(["multi=base:2", "gpu=/models/large-v3-turbo", "en=tiny.en"], None, "x")
    assert got == [
        PoolSpec("multi", "base", 2),
        PoolSpec("gpu", "/models/large-v3-turbo", 1),
        PoolSpec("en", "tiny.en", 1),
    ]
    assert parse_pool("hub=Systran/faster-whisper-small:4") == PoolSpec(
        "hub", "Systran/faster-whisper-small", 4
    )


@pytest.mark.parametrize(
    "specs", [["base"], ["=base"], ["Multi=base"], ["m=base:0"], ["m="], ["a=x", "a=y"]]
)
def test_bad_pool_options_are_refused(specs: list[str]) -> None:
    with pytest.raises(ValueError):
        pools_to_start(specs, None, "")


def test_pool_options_and_asr_workers_do_not_mix(capsys) -> None:
    with pytest.raises(ValueError, match="--pool"):
        pools_to_start(["en=tiny.en"], 2, "")
    assert main(["up", "--pool", "en=tiny.en", "--asr-workers", "2"]) == 2
    assert "--pool NAME=MODEL:N" in capsys.readouterr().err

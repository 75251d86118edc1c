"""A bad setting is one readable line and exit status 2; a misspelled variable is warned about."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from shared.settings import SettingsError, load_settings, setting_prefixes, unknown_variables
from tests.deploy.conftest import REPO


def errors(env: dict[str, str]) -> list[str]:
    with pytest.raises(SettingsError) as exc:
        load_settings(env)
    return exc.value.lines


def test_each_bad_value_is_one_name_value_why_line() -> None:
    lines = errors({"PORT": "99999", "asr_beam_size": "x", "AUTH_ENABLED": "perhaps"})
    assert sorted(line.split("=")[0] for line in lines) == ["ASR_BEAM_SIZE", "AUTH_ENABLED", "PORT"]
    assert "PORT=99999: Input should be less than or equal to 65535" in lines
    assert any(line.startswith("ASR_BEAM_SIZE=x: ") and "integer" in line for line in lines)


def test_validator_messages_do_not_repeat_the_name_and_hide_secrets() -> None:
    (line,) = errors({"REDIS_URL": "http://user:hunter2@redis:6379"})
    assert (
        line
        == "REDIS_URL=http://user:***@redis:6379: must start with redis://, rediss:// or unix://"
    )
    (line,) = errors({"HEARTBEAT_TTL_S": "1", "HEARTBEAT_INTERVAL_S": "2"})
    assert line.startswith("HEARTBEAT_TTL_S=1, HEARTBEAT_INTERVAL_S=2: ")
    (line,) = errors({"API_KEYS": "a:secret", "AUTH_TOKEN_TTL_S": "1"})
    assert "secret" not in line and line.startswith("AUTH_TOKEN_TTL_S=1: ")


def test_log_level_and_format_are_case_insensitive() -> None:
    s = load_settings({"LOG_LEVEL": "debug", "LOG_FORMAT": "JSON"})
    assert (s.log_level, s.log_format) == ("DEBUG", "json")
    assert errors({"LOG_FORMAT": "xml"})[0].startswith("LOG_FORMAT=xml: ")


def test_misspelled_variables_with_the_projects_prefixes_are_warned_about() -> None:
    assert {"ASR_", "VAD_", "AUTH_", "REDIS_", "LOG_"} <= setting_prefixes()
    env = {"ASR_MODLE": "base", "VAD_THRESHOLD": "0.4", "HOSTNAME": "x", "PATH": "/bin"}
    assert unknown_variables(env) == [
        "ASR_MODLE is not a setting and is ignored (did you mean ASR_MODEL?)"
    ]
    assert unknown_variables({"VAD_FOO_BAR_BAZ": "1"}) == [
        "VAD_FOO_BAR_BAZ is not a setting and is ignored"
    ]


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    base["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "whisper_streaming.cli", *args],
        env=base | env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def test_the_command_exits_2_with_the_readable_message_and_no_traceback() -> None:
    proc = cli("gateway", PORT="eighty", VAD_MIN_SILENCE_MS="10", ASR_DEVISE="cuda")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "pydantic" not in proc.stderr
    assert "PORT=eighty: Input should be a valid integer" in proc.stderr
    assert "VAD_MIN_SILENCE_MS=10: Input should be greater than or equal to 50" in proc.stderr
    assert "ASR_DEVISE is not a setting and is ignored (did you mean ASR_DEVICE?)" in proc.stderr


def test_version() -> None:
    proc = cli("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("whisper-streaming ")
    assert len(proc.stdout.split()) == 2

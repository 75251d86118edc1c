"""The manifests' arithmetic, offline: what KEDA's formula asks for with the rendered triggers,
the gateway's /tmp against the uploads it spools, pinned images, no password on a command line."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import KUSTOMIZATIONS, REPO, find, one
from tests.deploy.test_manifests import config, pools, redis_triggers
from tests.deploy.test_scaling import demo


def policy_of(so: dict[str, Any]) -> Any:
    triggers = redis_triggers(so)
    lag = next(t for t in triggers if "lagCount" in t)
    pending = next(t for t in triggers if "pendingEntriesCount" in t)
    return demo.ScalePolicy(
        lag_count=int(lag["lagCount"]),
        activation_lag_count=int(lag.get("activationLagCount", "0")),
        pending_entries_count=int(pending["pendingEntriesCount"]),
        min_replicas=so["spec"].get("minReplicaCount", 0),
        max_replicas=so["spec"]["maxReplicaCount"],
    )


def asked(policy: Any, lag: int, pending: int, current: int) -> int:
    view = demo.ScalerView(lag=lag, pending=pending, length=lag + pending)
    return int(demo.KedaFormula(policy).desired(view, current, now=0.0))


def gpu_batch(docs: list[dict[str, Any]], pool: str) -> int:
    pod = one(docs, "Deployment", f"asr-worker-{pool}")["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0].get("env", [])}
    return int(env["ASR_BATCH_SIZE"])


@pytest.mark.parametrize("pool", ["en", "multi"])
def test_one_busy_gpu_worker_asks_for_one_replica(rendered, pool: str) -> None:
    docs = rendered["eks-gpu"]
    assert pool in pools(docs)
    batch = gpu_batch(docs, pool)
    policy = policy_of(one(docs, "ScaledObject", f"asr-worker-{pool}"))
    assert batch == 8 and policy.pending_entries_count == batch == policy.lag_count
    assert asked(policy, lag=0, pending=batch, current=1) == 1  # one GPU busy with one batch
    assert asked(policy, lag=1, pending=0, current=0) == 1  # the first job wakes the pool
    # HPA takes the larger trigger, not the sum: one batch queued behind a busy GPU waits one
    # decode (seconds) rather than a new GPU node (minutes); two queued batches ask for two
    assert asked(policy, lag=batch, pending=batch, current=1) == 1
    assert asked(policy, lag=2 * batch, pending=batch, current=1) == 2
    assert asked(policy, lag=0, pending=2 * batch, current=2) == 2  # two busy: stay at two
    burst = asked(policy, lag=10 * batch, pending=batch, current=1)
    assert burst == 10 < policy.max_replicas
    # the check can fail: the old trigger (pendingEntriesCount "1") asked for one replica per job
    old = demo.ScalePolicy(**{**policy.__dict__, "pending_entries_count": 1})
    assert asked(old, lag=0, pending=batch, current=1) == batch


def test_cpu_workers_take_one_job_at_a_time(rendered) -> None:
    """The base (CPU, ASR_BATCH_SIZE auto = 1) keeps one replica per job in flight, per pool."""
    for pool in pools(rendered["base"]):
        policy = policy_of(one(rendered["base"], "ScaledObject", f"asr-worker-{pool}"))
        assert policy.pending_entries_count == 1
        assert asked(policy, lag=0, pending=1, current=1) == 1


def quantity_bytes(q: str) -> int:
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi)?", q)
    assert m, q
    return int(m.group(1)) * {None: 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}[m.group(2)]


@pytest.mark.parametrize("name", list(KUSTOMIZATIONS))
def test_gateway_tmp_holds_the_uploads_it_may_spool(rendered, name: str) -> None:
    docs = rendered[name]
    cfg = config(docs)
    spooled = int(cfg["TRANSCRIPTION_MAX_UPLOADS"]) * int(cfg["TRANSCRIPTION_MAX_BYTES"])
    pod = one(docs, "Deployment", "gateway")["spec"]["template"]["spec"]
    tmp = next(v for v in pod["volumes"] if v["name"] == "tmp")
    assert quantity_bytes(tmp["emptyDir"]["sizeLimit"]) >= spooled + 16 * 2**20


def images(docs: list[dict[str, Any]]) -> list[str]:
    out = []
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet"):
            spec = d["spec"]["template"]["spec"]
            out += [c["image"] for c in spec.get("initContainers", []) + spec["containers"]]
    return out


@pytest.mark.parametrize("name", list(KUSTOMIZATIONS))
def test_images_are_pinned(rendered, name: str) -> None:
    for image in images(rendered[name]):
        assert "@sha256:" in image or re.search(r":[\w][\w.-]*$", image.rsplit("/", 1)[-1]), image
        assert not image.endswith(":latest"), image
    compose = (REPO / "docker-compose.yml").read_text()
    assert ":-latest}" not in compose and not re.search(r"image: \S+:latest\b", compose)


def test_redis_password_is_never_on_a_command_line(rendered) -> None:
    redis = one(rendered["local"], "StatefulSet", "redis")["spec"]["template"]["spec"]
    c = redis["containers"][0]
    argv = " ".join(c.get("command", []) + c.get("args", []))
    probe = " ".join(c["readinessProbe"]["exec"]["command"])
    for text in (argv, probe):
        assert "requirepass" not in text and "PASSWORD" not in text and " -a " not in text, text
    conf = next(a for a in c["args"] if a.endswith(".conf"))
    mount = next(m for m in c["volumeMounts"] if conf.startswith(m["mountPath"] + "/"))
    volume = next(v for v in redis["volumes"] if v["name"] == mount["name"])
    secret = one(rendered["local"], "Secret", volume["secret"]["secretName"])
    assert "redis-auth.conf" in secret["data"]
    env = {e["name"]: e for e in c["env"]}
    assert env["REDISCLI_AUTH"]["valueFrom"]["secretKeyRef"]["key"] == "password"
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["redis"]
    assert "requirepass" not in " ".join(compose["command"])
    assert "requirepass" in (REPO / "docker-compose.yml").read_text().split("\nconfigs:")[-1]
    assert not find(rendered["eks-gpu"], "StatefulSet")  # ElastiCache there: no Redis pod

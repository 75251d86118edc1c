"""deploy/keda: every overlay builds, validates strictly, and agrees with the code it deploys."""

from __future__ import annotations

import copy
import json
from functools import cache
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from shared import keys as K
from shared.capabilities import parse_pools
from shared.settings import Settings
from tests.deploy.conftest import DEPLOY, KUSTOMIZATIONS, OVERLAYS, find, one, schemas_dir

K8S_VERSION = "1.35.0"  # deploy/terraform's default kubernetes_version
CRD_KINDS = {
    "ScaledObject", "TriggerAuthentication", "ServiceMonitor", "PrometheusRule", "Gateway",
    "HTTPRoute",
}  # fmt: skip
KEDA_CRDS = {
    "ScaledObject": "keda.sh_scaledobjects.yaml",
    "TriggerAuthentication": "keda.sh_triggerauthentications.yaml",
}


def test_every_kustomization_builds(rendered) -> None:
    kinds = {name: {d["kind"] for d in docs} for name, docs in rendered.items()}
    for name in KUSTOMIZATIONS:
        assert {"Deployment", "Service", "ScaledObject", "TriggerAuthentication"} <= kinds[name]
        assert {"PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor"} <= kinds[name]
        # the way in: Gateway API (ingress-nginx is retired), or the ALB Ingress on EKS
        way_in = {"Ingress"} if name == "eks-gpu" else {"Gateway", "HTTPRoute"}
        assert way_in <= kinds[name] and not ({"Ingress", "HTTPRoute"} - way_in) & kinds[name]


@pytest.mark.parametrize("name", list(KUSTOMIZATIONS))
def test_builtin_kinds_pass_kubernetes_validate_strict(rendered, name: str) -> None:
    errors = []
    for doc in rendered[name]:
        if doc["kind"] in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = "/".join(str(p) for p in exc.absolute_path)
            errors.append(f"{doc['kind']}/{doc['metadata']['name']} at {where}: {exc.message}")
    assert not errors, "\n".join(errors)


def test_kubernetes_validate_is_strict() -> None:
    """The check above would catch a misspelt field (it is what --strict adds)."""
    bad = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"ports": [{"port": 80}], "selectr": {"a": "b"}},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def _closed(schema: Any) -> Any:
    """An OpenAPI schema in which objects with declared properties reject unknown ones, as the API
    server's structural-schema pruning plus `kubectl --validate=strict` do."""
    if isinstance(schema, dict):
        out = {k: _closed(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_closed(v) for v in schema]
    return schema


@cache
def keda_validator(kind: str) -> jsonschema.protocols.Validator:
    crd = yaml.safe_load((schemas_dir() / "keda" / KEDA_CRDS[kind]).read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")
    schema = _closed(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
    return jsonschema.Draft202012Validator(schema)


def keda_errors(doc: dict[str, Any]) -> list[str]:
    assert doc["apiVersion"] == "keda.sh/v1alpha1", doc["apiVersion"]
    return [
        f"{doc['kind']}/{doc['metadata']['name']} at {'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in keda_validator(doc["kind"]).iter_errors(doc)
    ]


@pytest.mark.parametrize("name", list(KUSTOMIZATIONS))
def test_keda_kinds_match_the_crd_schemas(rendered, name: str) -> None:
    docs = [d for d in rendered[name] if d["kind"] in KEDA_CRDS]
    assert len(docs) == 5  # one TriggerAuthentication, ScaledObjects: gateway, VAD, two pools
    errors = [e for d in docs for e in keda_errors(d)]
    assert not errors, "\n".join(errors)


def test_keda_schema_check_rejects_unknown_fields(rendered) -> None:
    so = copy.deepcopy(one(rendered["base"], "ScaledObject", "asr-worker-en"))
    so["spec"]["minReplicas"] = 0  # the HPA's spelling, not KEDA's
    assert any("minReplicas" in e for e in keda_errors(so))
    so = copy.deepcopy(one(rendered["base"], "ScaledObject", "asr-worker-en"))
    so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behaviour"] = {}
    assert any("behaviour" in e for e in keda_errors(so))
    ta = copy.deepcopy(one(rendered["base"], "TriggerAuthentication", "redis-auth"))
    del ta["spec"]["secretTargetRef"][0]["key"]
    assert keda_errors(ta)


def config(docs: list[dict[str, Any]]) -> dict[str, str]:
    cms = [
        d
        for d in find(docs, "ConfigMap")
        if d["metadata"]["name"].startswith("whisper-streaming-config")
    ]
    assert len(cms) == 1
    return cms[0]["data"]


def redis_triggers(so: dict[str, Any]) -> list[dict[str, str]]:
    return [t["metadata"] for t in so["spec"]["triggers"] if t["type"] == "redis-streams"]


POOL_LABEL = "whisper-streaming/pool"


def pools(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The ASR model pools deployed: pool name -> its Deployment."""
    return {
        d["metadata"]["labels"][POOL_LABEL]: d
        for d in find(docs, "Deployment")
        if POOL_LABEL in d["metadata"].get("labels", {})
    }


def test_two_model_pools_each_its_own_deployment_and_scaledobject(rendered) -> None:
    for name in KUSTOMIZATIONS:
        assert set(pools(rendered[name])) == {K.EN_POOL, K.MULTI_POOL}, name
        for pool, dep in pools(rendered[name]).items():
            assert dep["metadata"]["name"] == f"asr-worker-{pool}"
            selector = dep["spec"]["selector"]["matchLabels"]
            assert selector[POOL_LABEL] == pool  # the pools' pods never mix
            so = one(rendered[name], "ScaledObject", f"asr-worker-{pool}")
            assert so["spec"]["scaleTargetRef"]["name"] == f"asr-worker-{pool}"
    base = {
        p: _env(d["spec"]["template"]["spec"]["containers"][0])
        for p, d in pools(rendered["base"]).items()
    }
    assert base[K.EN_POOL]["ASR_MODEL"]["value"] == ""  # bundled tiny.en
    assert base[K.MULTI_POOL]["ASR_MODEL"]["value"] == "base"  # bundled multilingual base
    gpu = {
        p: _env(d["spec"]["template"]["spec"]["containers"][0])
        for p, d in pools(rendered["eks-gpu"]).items()
    }
    assert gpu[K.EN_POOL]["ASR_LANGUAGES"]["value"] == "en"  # distil-large-v3: English only
    refs = {p: e["ASR_MODEL"]["valueFrom"]["configMapKeyRef"]["name"] for p, e in gpu.items()}
    assert refs[K.EN_POOL] != refs[K.MULTI_POOL]  # a model per pool


@pytest.mark.parametrize("name", list(KUSTOMIZATIONS))
def test_stream_and_group_names_are_the_code_constants(rendered, name: str) -> None:
    docs = rendered[name]
    keys = K.Keys(config(docs).get("KEY_PREFIX", "") or "")
    Settings(**{k.lower(): v for k, v in config(docs).items()})  # the settings validate
    expected = {f"asr-worker-{p}": (keys.asr_jobs(p), K.ASR_GROUP) for p in pools(docs)}
    expected["vad-worker"] = (keys.sessions, K.VAD_GROUP)
    for so_name, (stream, group) in expected.items():
        triggers = redis_triggers(one(docs, "ScaledObject", so_name))
        assert triggers, so_name
        for t in triggers:
            assert (t["stream"], t["consumerGroup"]) == (stream, group), so_name
    assert keys.asr_jobs("en") == "asr:jobs:en" and keys.sessions == "sessions"  # no prefix
    # each pool's workers join it (ASR_POOL), and the gateways know every pool (ASR_POOLS)
    for pool, dep in pools(docs).items():
        assert _env(dep["spec"]["template"]["spec"]["containers"][0])["ASR_POOL"]["value"] == pool
    assert {p.name for p in parse_pools(config(docs)["ASR_POOLS"])} == set(pools(docs))


def test_asr_scales_on_lag_to_zero_and_vad_on_sessions(rendered) -> None:
    for pool in pools(rendered["eks-gpu"]):  # each pool on its own stream's lag, to zero
        asr = one(rendered["eks-gpu"], "ScaledObject", f"asr-worker-{pool}")
        lag = [t for t in redis_triggers(asr) if "lagCount" in t]
        assert lag and lag[0]["activationLagCount"] == "0"
        assert asr["spec"]["minReplicaCount"] == 0
        assert any("pendingEntriesCount" in t for t in redis_triggers(asr))
    vad = one(rendered["eks-gpu"], "ScaledObject", "vad-worker")
    owned = next(t for t in redis_triggers(vad) if "pendingEntriesCount" in t)
    assert int(owned["pendingEntriesCount"]) <= Settings().vad_max_sessions
    gateway = one(rendered["eks-gpu"], "ScaledObject", "gateway")
    prom = next(t for t in gateway["spec"]["triggers"] if t["type"] == "prometheus")
    assert "whisper_sessions_active" in prom["metadata"]["query"]
    for so in find(rendered["eks-gpu"], "ScaledObject"):
        down = so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
        assert down["stabilizationWindowSeconds"] >= 300, so["metadata"]["name"]


@pytest.mark.parametrize("name", list(KUSTOMIZATIONS))
def test_readiness_cannot_deadlock_scale_from_zero(rendered, name: str) -> None:
    """/readyz wants a live ASR worker: with an ASR pool that may be at zero, gateways gated on it
    would leave the load balancer and no traffic could ever wake the pool."""
    docs = rendered[name]
    asr_min = min(
        one(docs, "ScaledObject", f"asr-worker-{p}")["spec"].get("minReplicaCount", 0)
        for p in pools(docs)
    )
    gw = one(docs, "Deployment", "gateway")["spec"]["template"]["spec"]["containers"][0]
    # always /readyz: a gateway that lost Redis must leave the load balancer
    assert gw["readinessProbe"]["httpGet"]["path"] == "/readyz"
    require_asr = config(docs).get("READY_REQUIRE_ASR", "true").lower() in ("true", "1", "yes")
    if asr_min == 0:
        assert not require_asr, "an ASR pool at zero needs READY_REQUIRE_ASR=false"
    for ing in find(docs, "Ingress"):
        assert (
            ing["metadata"]["annotations"]["alb.ingress.kubernetes.io/healthcheck-path"]
            == "/readyz"
        )


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in container.get("env", [])}


@pytest.mark.parametrize("name", list(KUSTOMIZATIONS))
def test_pods_are_wired_as_the_processes_expect(rendered, name: str) -> None:
    docs = rendered[name]
    cfg = config(docs)
    shutdown_grace = float(cfg["SHUTDOWN_GRACE_S"])
    eof = float(cfg["EOF_TIMEOUT_S"])
    configmaps = {d["metadata"]["name"] for d in find(docs, "ConfigMap")}
    secrets = {d["metadata"]["name"] for d in find(docs, "Secret")} | {"whisper-redis"}
    roles = {"gateway": "gateway", "vad-worker": "vad-worker"}
    roles |= {f"asr-worker-{p}": "asr-worker" for p in pools(docs)}
    for name, role in roles.items():
        dep = one(docs, "Deployment", name)
        pod = dep["spec"]["template"]["spec"]
        assert "replicas" not in dep["spec"], "KEDA owns the replica count"
        c = pod["containers"][0]
        assert c["args"] == [role]  # whisper-streaming <role> (ENTRYPOINT of the image)
        env = _env(c)
        assert env["CONSUMER_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        assert env["REDIS_URL"]["valueFrom"]["secretKeyRef"]["name"] in secrets
        for ref in c.get("envFrom", []):
            assert ref["configMapRef"]["name"] in configmaps
        for e in env.values():
            assert not ("value" in e and "valueFrom" in e), e
            ref = e.get("valueFrom", {}).get("configMapKeyRef")
            assert ref is None or ref["name"] in configmaps, ref
        for v in pod.get("volumes", []):
            assert "configMap" not in v or v["configMap"]["name"] in configmaps
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
        if role == "gateway":
            mounted = {v["name"]: v for v in pod["volumes"]}
            assert mounted["api-keys"]["secret"]["secretName"] == "whisper-api-keys"
            mount = next(m for m in c["volumeMounts"] if m["name"] == "api-keys")
            assert env["API_KEYS_FILE"]["value"].startswith(mount["mountPath"] + "/")
            assert (
                pod["terminationGracePeriodSeconds"]
                > eof + c["lifecycle"]["preStop"]["sleep"]["seconds"]
            )
            assert c["ports"][0]["containerPort"] == 8000 and env["PORT"]["value"] == "8000"
            assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        else:
            assert pod["terminationGracePeriodSeconds"] > shutdown_grace
            port = int(env["METRICS_PORT"]["value"])
            assert port and c["ports"][0]["containerPort"] == port
            probe = c["readinessProbe"]["exec"]["command"]
            assert probe[-2:] == ["/app/deploy/docker/heartbeat_probe.py", role.split("-")[0]]


@pytest.mark.parametrize("name", list(KUSTOMIZATIONS))
def test_selectors_and_references_resolve(rendered, name: str) -> None:
    docs = rendered[name]
    pods = {
        d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet")
    }

    def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
        ok = all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())
        for expr in selector.get("matchExpressions", []):
            assert expr["operator"] == "In"
            ok = ok and labels.get(expr["key"]) in expr["values"]
        return ok

    services = find(docs, "Service")
    for svc in services:
        assert any(matches({"matchLabels": svc["spec"]["selector"]}, p) for p in pods.values()), svc
    for pdb in find(docs, "PodDisruptionBudget"):
        assert any(matches(pdb["spec"]["selector"], p) for p in pods.values()), pdb["metadata"][
            "name"
        ]
    for sm in find(docs, "ServiceMonitor"):
        targets = [s for s in services if matches(sm["spec"]["selector"], s["metadata"]["labels"])]
        assert targets, sm["metadata"]["name"]
        ports = {p["name"] for s in targets for p in s["spec"]["ports"]}
        assert {e["port"] for e in sm["spec"]["endpoints"]} <= ports
    auths = {d["metadata"]["name"] for d in find(docs, "TriggerAuthentication")}
    for so in find(docs, "ScaledObject"):
        assert so["spec"]["scaleTargetRef"]["name"] in pods
        for t in so["spec"]["triggers"]:
            assert "authenticationRef" not in t or t["authenticationRef"]["name"] in auths
    gateway_svc = one(docs, "Service", "gateway")
    svc_ports = {p["port"] for p in gateway_svc["spec"]["ports"]}
    for ing in find(docs, "Ingress"):
        backend = ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
        assert backend["name"] == "gateway"
    for route in find(docs, "HTTPRoute"):
        parents = {g["metadata"]["name"]: g for g in find(docs, "Gateway")}
        for ref in route["spec"]["parentRefs"]:
            listeners = {ln["name"] for ln in parents[ref["name"]]["spec"]["listeners"]}
            assert ref.get("sectionName", next(iter(listeners))) in listeners
        for rule in route["spec"]["rules"]:
            assert rule["timeouts"]["request"] == "0s"  # hour-long WebSockets
            for b in rule["backendRefs"]:
                assert b["name"] == "gateway" and b["port"] in svc_ports


@pytest.mark.parametrize("name", list(KUSTOMIZATIONS))
def test_only_the_gateway_is_reachable(rendered, name: str) -> None:
    docs = rendered[name]
    policies = find(docs, "NetworkPolicy")
    deny = one(docs, "NetworkPolicy", "default-deny-ingress")
    assert deny["spec"]["podSelector"] == {} and "ingress" not in deny["spec"]
    open_to_all = [
        p for p in policies if any("from" not in rule for rule in p["spec"].get("ingress", []))
    ]
    assert [p["metadata"]["name"] for p in open_to_all] == ["gateway-ingress"]
    rule = open_to_all[0]["spec"]["ingress"][0]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8000}]


def test_gpu_placement_matches_the_karpenter_gpu_pool(rendered) -> None:
    for pool, dep in pools(rendered["eks-gpu"]).items():  # every model pool on GPU nodes
        pod = dep["spec"]["template"]["spec"]
        c = pod["containers"][0]
        assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert c["image"].endswith("/asr-worker-cuda:0.1.0")
        assert pod["nodeSelector"] == {"karpenter.sh/nodepool": "gpu"}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
            "tolerations"
        ]
        init = pod["initContainers"][0]
        assert init["command"][1] == "/scripts/sync-model.sh"
        assert init["envFrom"][0]["configMapRef"]["name"].startswith(f"model-config-{pool}-")
    for dep in pools(rendered["local"]).values():
        assert "nvidia.com/gpu" not in json.dumps(dep["spec"]["template"]["spec"])


def test_grafana_dashboard_configmap(rendered) -> None:
    """One dashboard per cluster: the GPU overlay's has the DCGM row, the others the plain one."""
    for name in KUSTOMIZATIONS:
        gpu = name == "eks-gpu"
        cm_name = "whisper-streaming-gpu-dashboard" if gpu else "whisper-streaming-dashboard"
        file = "gpu/whisper-streaming-gpu.json" if gpu else "whisper-streaming.json"
        dashboards = [
            d for d in find(rendered[name], "ConfigMap") if "dashboard" in d["metadata"]["name"]
        ]
        assert [d["metadata"]["name"] for d in dashboards] == [cm_name], name
        cm = dashboards[0]
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        shipped = cm["data"][file.rsplit("/", 1)[-1]]
        assert shipped == (DEPLOY / "grafana" / file).read_text()


def test_overlays_set_namespace(rendered) -> None:
    for name in OVERLAYS:
        for doc in rendered[name]:
            if doc["kind"] != "Namespace":
                assert doc["metadata"].get("namespace") == "whisper-streaming", doc["metadata"]

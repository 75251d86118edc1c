"""deploy/terraform offline: formatting, and a structural check with python-hcl2 (no provider
registry is reachable here, so `terraform init/validate` cannot run)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml

from tests.deploy.conftest import DEPLOY, REPO, schemas_dir

TF = DEPLOY / "terraform"


def formatter() -> list[str]:
    """`terraform fmt -check` where terraform is installed, else hclfmt (HashiCorp's HCL
    formatter that terraform fmt is built on) built by scripts/install-deploy-tools.sh."""
    terraform = shutil.which("terraform")
    if terraform:
        return [terraform, "fmt", "-check", "-recursive", "-diff"]
    hclfmt = REPO / ".tools" / "bin" / "hclfmt"
    if hclfmt.is_file():
        return [str(hclfmt), "-require-no-change"]
    pytest.fail(
        "neither terraform nor hclfmt found: run `make install` (scripts/install-deploy-tools.sh)"
    )


def test_terraform_fmt() -> None:
    cmd = formatter()
    if cmd[1] == "fmt":
        proc = subprocess.run([*cmd, str(TF)], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, (
            f"run `terraform fmt -recursive deploy/terraform`:\n{proc.stdout}"
        )
    else:
        for f in sorted(TF.glob("*.tf")):
            proc = subprocess.run([*cmd, str(f)], capture_output=True, text=True, timeout=60)
            assert proc.returncode == 0, f"{f.name} is not formatted:\n{proc.stderr}"


def test_formatter_rejects_misaligned_code(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tf"
    bad.write_text("locals {\n  a = 1\n  bb    = 2\n}\n")
    cmd = formatter()
    target = tmp_path if cmd[1] == "fmt" else bad
    assert subprocess.run([*cmd, str(target)], capture_output=True, timeout=60).returncode != 0


@cache
def config() -> dict[str, list[Any]]:
    merged: dict[str, list[Any]] = {}
    for f in sorted(TF.glob("*.tf")):
        with f.open() as fh:
            for key, blocks in hcl2.load(fh).items():
                if not key.startswith("__"):
                    merged.setdefault(key, []).extend(blocks)
    return merged


def blocks(kind: str) -> dict[str, Any]:
    """{name: body} for `module`/`variable`/`output`, {type.name: body} for resources/data."""
    out: dict[str, Any] = {}
    for block in config().get(kind, []):
        for name, body in block.items():
            name = name.strip('"')
            if kind in ("resource", "data"):
                for inner, b in body.items():
                    out[f"{name}.{inner.strip(chr(34))}"] = b
            else:
                out[name] = body
    return out


def s(value: Any) -> str:
    return str(value).strip('"')


def test_modules_are_the_community_modules_on_current_majors() -> None:
    modules = blocks("module")
    want = {
        "vpc": ("terraform-aws-modules/vpc/aws", "~> 6.0"),
        "eks": ("terraform-aws-modules/eks/aws", "~> 21.0"),
        "karpenter": ("terraform-aws-modules/eks/aws//modules/karpenter", "~> 21.0"),
    }
    for name, (source, version) in want.items():
        assert (s(modules[name]["source"]), s(modules[name]["version"])) == (source, version)
    for name, body in modules.items():
        assert re.fullmatch(r"~> \d+\.\d+", s(body.get("version", ""))), f"module {name} unpinned"
    eks = modules["eks"]
    # v21 names (v20's cluster_name / cluster_version / cluster_addons are gone)
    assert {"name", "kubernetes_version", "addons"} <= set(eks)
    assert not {"cluster_name", "cluster_version", "cluster_addons"} & set(eks)
    providers = config()["terraform"][0]["required_providers"][0]
    assert s(providers["aws"]["version"]) == "~> 6.0"  # what vpc 6 / eks 21 require


def manifest(resource: str) -> dict[str, Any]:
    body = blocks("resource")[f"kubectl_manifest.{resource}"]
    text = s(body["yaml_body"])
    m = re.fullmatch(r"\$\{yamlencode\((.*)\)\}", text, re.S)
    assert m, f"{resource}: yaml_body should be yamlencode({{...}})"
    return {"raw": re.sub(r"\s+", "", m.group(1))}


def test_karpenter_pools_and_gpu_taint() -> None:
    res = blocks("resource")
    for name in ("nodeclass_default", "nodeclass_gpu", "nodepool_general", "nodepool_gpu"):
        assert f"kubectl_manifest.{name}" in res
    gpu = manifest("nodepool_gpu")["raw"]
    assert 'kind="NodePool"' in gpu and 'metadata={name="gpu"}' in gpu
    assert '{key="nvidia.com/gpu",value="true",effect="NoSchedule"}' in gpu
    assert '"nvidia.com/gpu"=tostring(var.gpu_limit)' in gpu
    assert (
        '"karpenter.k8s.aws/instance-family",operator="In",values=var.gpu_instance_families' in gpu
    )
    assert 'nodeClassRef={group="karpenter.k8s.aws",kind="EC2NodeClass",name="gpu"}' in gpu
    assert 'kind="EC2NodeClass"' in manifest("nodeclass_gpu")["raw"]
    general = manifest("nodepool_general")["raw"]
    assert 'metadata={name="general"}' in general and "limits={cpu=" in general
    variables = blocks("variable")
    assert [s(f) for f in variables["gpu_instance_families"]["default"]] == ["g6", "g5"]
    # the overlay's GPU placement names this pool and its taint
    patch = yaml.safe_load(
        (DEPLOY / "keda" / "overlays" / "eks-gpu" / "asr-worker-gpu.yaml").read_text()
    )
    pod = patch["spec"]["template"]["spec"]
    assert pod["nodeSelector"]["karpenter.sh/nodepool"] == "gpu"
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_required_resources() -> None:
    res = blocks("resource")
    redis = res["aws_elasticache_replication_group.redis"]
    assert (
        redis["transit_encryption_enabled"] is True and redis["at_rest_encryption_enabled"] is True
    )
    assert "random_password.redis_auth" in s(redis["auth_token"])
    assert redis["automatic_failover_enabled"] is True
    assert s(redis["engine"]) == "${var.redis_engine}"
    releases = {s(b["chart"]): b for k, b in res.items() if k.startswith("helm_release.")}
    assert {
        "karpenter",
        "keda",
        "kube-prometheus-stack",
        "prometheus-redis-exporter",
        "nvidia-device-plugin",
        "aws-load-balancer-controller",
    } <= set(releases)
    exporter = json.dumps(releases["prometheus-redis-exporter"]["values"])
    assert "check-streams" in exporter and "sessions" in exporter and "asr:*" in exporter
    kps = json.dumps(releases["kube-prometheus-stack"]["values"])
    assert "grafana_dashboard" in kps
    for chart, body in releases.items():
        assert "var.chart_versions" in s(body["version"]), (
            f"{chart}: version must come from chart_versions"
        )
    secret = res["kubernetes_secret_v1.whisper_redis"]
    assert {s(k) for k in secret["data"]} == {
        "address",
        "password",
        "redis-url",
    }  # overlays read these
    assert "kubernetes_secret_v1.api_keys" in res  # the gateway's API_KEYS_FILE
    local_vals = {k: v for block in config()["locals"] for k, v in block.items()}
    assert s(local_vals["redis_url"]).startswith("rediss://")  # TLS for the pods too
    assert "aws_eks_pod_identity_association.app" in res and "aws_s3_bucket.models" in res


def test_keda_chart_matches_the_crd_schemas_we_validate_against() -> None:
    default = blocks("variable")["chart_versions"]["default"]
    sources = schemas_dir() / "keda" / "SOURCES.md"
    assert f"v{s(default['keda'])}" in sources.read_text()
    assert re.fullmatch(r"\d+\.\d+\.\d+", s(default["keda"]))


def test_variables_validated_and_outputs_described() -> None:
    variables = blocks("variable")
    for name, body in variables.items():
        assert body.get("description"), name
        if name != "tags":
            assert body.get("validation"), f"variable {name} has no validation"
    outputs = blocks("output")
    for name in (
        "cluster_name",
        "configure_kubectl",
        "redis_primary_endpoint",
        "ecr_repositories",
        "model_bucket_uri",
    ):
        assert outputs[name].get("description"), name
    readme = (TF / "README.md").read_text()
    for step in ("terraform init", "terraform apply", "kubectl apply -k"):
        assert step in readme


# End of EKS standard support (docs.aws.amazon.com/eks/latest/userguide/kubernetes-versions.html:
# 14 months from the EKS release); after it a cluster pays extended-support fees per hour.
EKS_STANDARD_SUPPORT_ENDS = {
    "1.33": "2026-07-29",
    "1.34": "2026-12-02",
    "1.35": "2027-03-27",
}
# Newest Kubernetes minor each Karpenter minor supports (karpenter.sh compatibility matrix).
KARPENTER_SUPPORTS = {(1, 6): "1.34", (1, 8): "1.34", (1, 9): "1.35", (1, 11): "1.35"}


def test_versions_are_current_and_pinned() -> None:
    """The default cluster is in standard support today (past it, EKS bills extended support:
    moving on is due well before; docs/deployment.md), Karpenter supports it, and node AMIs are
    a pinned release (never al2023@latest)."""
    from datetime import date

    variables = blocks("variable")
    version = s(variables["kubernetes_version"]["default"])
    ends = EKS_STANDARD_SUPPORT_ENDS.get(version)
    assert ends, f"add {version}'s end of standard support to EKS_STANDARD_SUPPORT_ENDS"
    assert date.fromisoformat(ends) > date.today(), (
        f"EKS {version} leaves standard support on {ends}: move kubernetes_version on"
    )
    karpenter = tuple(
        int(x) for x in s(variables["chart_versions"]["default"]["karpenter"]).split(".")[:2]
    )
    newest = KARPENTER_SUPPORTS[max(k for k in KARPENTER_SUPPORTS if k <= karpenter)]
    as_tuple = lambda v: tuple(int(x) for x in v.split("."))  # noqa: E731
    assert as_tuple(newest) >= as_tuple(version), f"Karpenter {karpenter} predates EKS {version}"
    ami = s(variables["node_ami_version"]["default"])
    assert re.fullmatch(r"v\d{8}", ami)
    text = (TF / "karpenter.tf").read_text()
    assert "@latest" not in text and text.count("al2023@${var.node_ami_version}") == 2

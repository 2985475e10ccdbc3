"""The Helm chart, rendered by the real helm (from hack/build-tools.sh; skipped when the tools are not built):
least-privilege RBAC, namespace-scoped mode, values schema, CRDs in step with crds/."""
from __future__ import annotations

import pathlib
import subprocess
from typing import Any

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[3]
CHART = ROOT / "charts" / "textgen-operator"


def helm_binary() -> pathlib.Path:
    proc = subprocess.run([str(ROOT / "hack" / "build-tools.sh"), "--print-bin-dir"], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip("helm is not built yet: run hack/build-tools.sh")
    return pathlib.Path(proc.stdout.strip()) / "helm"


def render(*sets: str) -> list[dict[str, Any]]:
    args = [str(helm_binary()), "template", "t", str(CHART), "-n", "textgen-system", "--include-crds",
            "--kube-version", "1.36.3"]   # helm template's default version is older than Chart.yaml kubeVersion
    for s in sets:
        args += ["--set", s]
    proc = subprocess.run(args, capture_output=True, text=True, check=True)
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def test_cluster_wide_install_has_least_privilege_rbac() -> None:
    docs = render()
    rules = [r for role in by_kind(docs, "ClusterRole") for r in role["rules"]]
    # Children go away through GC; only an autoscaler whose spec.autoscaling was removed is deleted, and old pods
    # by the rollout (the StatefulSet's updateStrategy is OnDelete).
    deletable = [r["resources"] for r in rules if "delete" in r["verbs"]]
    assert deletable == [["horizontalpodautoscalers"], ["pods"]] and not any("*" in r["verbs"] for r in rules)
    secrets = [r for r in rules if "secrets" in r["resources"]]
    assert secrets == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
    assert {b["roleRef"]["name"] for b in by_kind(docs, "ClusterRoleBinding")} == {
        "t-textgen-operator-cluster", "t-textgen-operator-workloads"}
    assert [p["metadata"]["name"] for p in by_kind(docs, "ClusterKopfPeering")] == ["textgen-operator"]
    names = {c["metadata"]["name"] for c in by_kind(docs, "CustomResourceDefinition")}
    assert {"textgenerationservices.textgen.dev", "clusterkopfpeerings.kopf.dev"} <= names
    [deployment] = by_kind(docs, "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert "--peering-name=textgen-operator" in container["args"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_namespaced_install_binds_only_the_watched_namespaces() -> None:
    docs = render("watchNamespaces={team-a,team-b}", "crds.enabled=false")
    assert sorted(b["metadata"]["namespace"] for b in by_kind(docs, "RoleBinding")) == ["team-a", "team-b"]
    assert [b["roleRef"]["name"] for b in by_kind(docs, "ClusterRoleBinding")] == ["t-textgen-operator-cluster"]
    assert sorted(p["metadata"]["namespace"] for p in by_kind(docs, "KopfPeering")) == ["team-a", "team-b"]
    assert "textgenerationservices.textgen.dev" not in {
        c["metadata"]["name"] for c in by_kind(docs, "CustomResourceDefinition")}
    args = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args


def test_values_schema_rejects_unknown_keys() -> None:
    with pytest.raises(subprocess.CalledProcessError) as error:
        render("replicaCont=2")
    assert "replicaCont" in error.value.stderr


def test_chart_crds_are_in_step_with_crds_folder() -> None:
    proc = subprocess.run([str(ROOT / "hack" / "sync-crds.sh"), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr

"""The operator scoped to namespaces: a second chart release with `watchNamespaces` (RoleBindings in just those
namespaces, a KopfPeering per namespace) and the operator run with that release's ServiceAccount token and
`--namespace`. It must serve its namespace, leave every other one alone, and never be denied anything.

Fake accelerator nodes come from kwok; their pods run nothing. Nothing here dials a pod or Service IP.
"""
from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass

import kubernetes.client
import pytest

from e2e.harness import Cluster, apply_yaml, wait_for
from e2e.operator_run import (Operator, get_tgs, helm, install_chart, permission_errors, run_operator, tiny,
                              token_kubeconfig, wait_ready)

RELEASE, SYSTEM_NS = "textgen-team", "textgen-team-system"
SERVICE_ACCOUNT = f"{RELEASE}-textgen-operator"      # the chart's fullname for a release not named after it
# The cluster-wide release owns the CRDs (the lifecycle tests install the same one); this one adds none.
CRD_RELEASE, CRD_NS = "textgen-operator", "textgen-system"


@dataclass
class Scoped:
    operator: Operator
    watched: str
    other: str


@pytest.fixture(scope="module")
def scoped(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scoped]:
    core = kubernetes.client.CoreV1Api(cluster.api_client())
    suffix = secrets.token_hex(3)
    watched, other = f"team-a-{suffix}", f"team-b-{suffix}"
    for name in (watched, other):
        core.create_namespace({"metadata": {"name": name, "labels": {"e2e.textgen.dev/test": "true"}}})
    try:
        install_chart(cluster, CRD_RELEASE, CRD_NS)
        install_chart(cluster, RELEASE, SYSTEM_NS, "crds.enabled=false", f"watchNamespaces={{{watched}}}")
        tmp = tmp_path_factory.mktemp("operator-namespaced")
        kubeconfig = token_kubeconfig(cluster, tmp / "kubeconfig", SERVICE_ACCOUNT, SYSTEM_NS)
        with run_operator(kubeconfig, tmp, "--namespace", watched, "--peering-name", "textgen-operator") as handle:
            yield Scoped(handle, watched, other)
    finally:
        for name in (watched, other):
            core.delete_namespace(name)
        helm(cluster, "uninstall", RELEASE, "--namespace", SYSTEM_NS, "--ignore-not-found")


def statefulsets(cluster: Cluster, namespace: str) -> list[str]:
    out = cluster.kubectl("get", "statefulsets", "-n", namespace, "-o", "json").stdout
    return [o["metadata"]["name"] for o in json.loads(out)["items"]]


def test_the_release_grants_nothing_outside_its_namespaces(cluster: Cluster, scoped: Scoped) -> None:
    """The chart's RBAC for a namespaced release: workload verbs in the watched namespace only."""
    who = f"system:serviceaccount:{SYSTEM_NS}:{SERVICE_ACCOUNT}"

    def can(verb: str, resource: str, namespace: str) -> bool:
        answer = cluster.kubectl("auth", "can-i", verb, resource, "-n", namespace, "--as", who, check=False)
        return answer.stdout.strip() == "yes"

    assert can("patch", "statefulsets.apps", scoped.watched)
    assert can("watch", "textgenerationservices.textgen.dev", scoped.watched)
    assert not can("patch", "statefulsets.apps", scoped.other)
    assert not can("list", "textgenerationservices.textgen.dev", scoped.other)
    assert not can("patch", "clusterkopfpeerings.kopf.dev", "default")


def test_serves_its_namespace_and_leaves_the_others_alone(cluster: Cluster, scoped: Scoped) -> None:
    apply_yaml(cluster, tiny("outside"), scoped.other)
    apply_yaml(cluster, tiny("inside"), scoped.watched)
    tgs = wait_ready(cluster, scoped.watched, "inside", 1)
    assert tgs["status"]["endpoint"].startswith(f"http://inside.{scoped.watched}.svc")
    assert statefulsets(cluster, scoped.watched) == ["inside"]
    # The watched TGS converged; the other one, created before it, must still be untouched.
    time.sleep(3)
    assert statefulsets(cluster, scoped.other) == []
    assert "status" not in get_tgs(cluster, scoped.other, "outside")
    reconciled = scoped.operator.metric("textgen_operator_reconciles_total")
    assert reconciled >= 1


def test_peering_uses_the_namespaced_object(cluster: Cluster, scoped: Scoped) -> None:
    """kopf's heartbeat goes to the release's KopfPeering in the watched namespace, not a cluster-wide one."""
    def peers() -> dict[str, object] | None:
        out = cluster.kubectl("get", "kopfpeering", "textgen-operator", "-n", scoped.watched, "-o", "json").stdout
        status = json.loads(out).get("status") or {}
        return status or None

    assert wait_for(peers, 30, "a peer recorded in the namespaced KopfPeering")


def test_the_log_has_no_permission_errors(scoped: Scoped) -> None:
    """Scoped RBAC is all the operator (and kopf inside it) needs: no 403 / Forbidden in its log."""
    assert permission_errors(scoped.operator.log_path) == []

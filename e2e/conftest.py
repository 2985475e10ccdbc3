"""Fixtures of the end-to-end suite: a session-wide local cluster, a namespace per test, failure dumps.

`cluster` reuses a cluster that is already up (`hack/cluster up` is idempotent) and starts one otherwise; it
leaves the cluster running for the next session (fast reruns; other suites may share it) unless
TEXTGEN_E2E_CLUSTER_DOWN=1 and this session started it. When a test that uses `namespace` fails, its report
gets the events and objects of that namespace.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Generator, Iterator
from pathlib import Path

import kubernetes.client
import pytest
from kubernetes.client.rest import ApiException

from e2e.harness import (
    HACK_CLUSTER, Cluster, dump_namespace, find_bin_dir, new_namespace_name, run_hack_cluster, wait_for,
)

NAMESPACE_LABEL = "e2e.textgen.dev/test"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: runs against the local control plane of hack/cluster")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """The local cluster (reused when up, started when not)."""
    bin_dir = find_bin_dir()
    was_up = subprocess.run([str(HACK_CLUSTER), "status"], capture_output=True).returncode == 0
    kubeconfig = Path(run_hack_cluster("up").strip().splitlines()[-1])
    yield Cluster(kubeconfig=kubeconfig, bin_dir=bin_dir, state_dir=kubeconfig.parent)
    if not was_up and os.environ.get("TEXTGEN_E2E_CLUSTER_DOWN") == "1":
        run_hack_cluster("down")


def _default_service_account_exists(core: kubernetes.client.CoreV1Api, namespace: str) -> bool:
    try:
        core.read_namespaced_service_account("default", namespace)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards (without waiting for its finalization)."""
    name = new_namespace_name(request.node.name)
    core = kubernetes.client.CoreV1Api(cluster.api_client())
    core.create_namespace({"metadata": {"name": name, "labels": {NAMESPACE_LABEL: "true"}}})
    # Pods are refused until the controller-manager has made the namespace's default ServiceAccount.
    wait_for(lambda: _default_service_account_exists(core, name), 30, f"ServiceAccount default in {name}")
    yield name
    core.delete_namespace(name)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report: pytest.TestReport = yield
    funcargs = getattr(item, "funcargs", {})
    if report.when == "call" and report.failed and "namespace" in funcargs and "cluster" in funcargs:
        ns = funcargs["namespace"]
        report.sections.append((f"cluster state of namespace {ns}", dump_namespace(funcargs["cluster"], ns)))
    return report

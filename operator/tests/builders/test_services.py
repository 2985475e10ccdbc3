"""The small children: Services, PodDisruptionBudget, ServiceAccount."""
from __future__ import annotations

from typing import Any

import pytest

from textgen_operator.builders import build_desired
from textgen_operator.builders.services import (
    build_client_service,
    build_headless_service,
    build_pod_disruption_budget,
    build_service_account,
)
from textgen_operator.config import OperatorConfig


def test_services_select_the_pods_on_port_http(make_tgs: Any) -> None:
    tgs = make_tgs()
    headless, client = build_headless_service(tgs), build_client_service(tgs)
    assert headless["spec"]["clusterIP"] == "None" and headless["metadata"]["name"] == "demo-headless"
    assert client["spec"]["type"] == "ClusterIP" and client["metadata"]["name"] == "demo"
    for svc in (headless, client):
        assert svc["spec"]["ports"][0]["name"] == "http" and svc["spec"]["ports"][0]["targetPort"] == "http"
        assert svc["spec"]["selector"] == {"app.kubernetes.io/name": "textgen", "app.kubernetes.io/instance": "demo"}


@pytest.mark.parametrize("max_unavailable, expected", [(0, 1), (1, 1), (3, 3)])
def test_pdb_never_blocks_drains_forever(make_tgs: Any, max_unavailable: int, expected: int) -> None:
    pdb = build_pod_disruption_budget(make_tgs(rollout={"maxUnavailable": max_unavailable}))
    assert pdb["spec"]["maxUnavailable"] == expected


def test_service_account_mounts_no_token(make_tgs: Any) -> None:
    assert build_service_account(make_tgs())["automountServiceAccountToken"] is False


def test_every_child_is_owned_labelled_and_namespaced(make_tgs: Any) -> None:
    children = build_desired(make_tgs(), OperatorConfig())
    assert [c["kind"] for c in children] == ["ServiceAccount", "Service", "Service", "PodDisruptionBudget",
                                             "StatefulSet"]
    for child in children:
        meta = child["metadata"]
        assert meta["namespace"] == "ns" and meta["ownerReferences"][0]["uid"] == "uid-1"
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "textgen-operator"
        assert meta["labels"]["textgen.dev/service"] == "demo"

"""The small children: ServiceAccount, headless and client Services, PodDisruptionBudget."""
from __future__ import annotations

from textgen_operator.names import Body, child_metadata, headless_service_name, selector_labels, tgs_name
from textgen_operator.spec import tgs_spec

HTTP_PORT = 80


def build_service_account(tgs: Body) -> Body:
    """The pods' identity. The server never calls the Kubernetes API, so no token is mounted."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": child_metadata(tgs, tgs_name(tgs)),
        "automountServiceAccountToken": False,
    }


def build_headless_service(tgs: Body) -> Body:
    """The StatefulSet's governing Service: stable per-pod DNS names (name-0.name-headless...)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(tgs, headless_service_name(tgs)),
        "spec": {
            "clusterIP": "None",
            "selector": selector_labels(tgs),
            # Per-pod names must resolve while a pod warms up (debugging, metrics scrapes).
            "publishNotReadyAddresses": True,
            "ports": [{"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def build_client_service(tgs: Body) -> Body:
    """The ClusterIP Service clients call; only ready (warmed-up) pods receive traffic."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(tgs, tgs_name(tgs)),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(tgs),
            "ports": [{"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def build_pod_disruption_budget(tgs: Body) -> Body:
    """Voluntary disruptions (node drains) take at most max(1, rollout.maxUnavailable) pods at a time.

    Never 0: a budget of zero would block every node drain forever.
    """
    max_unavailable = max(1, tgs_spec(tgs).rollout.max_unavailable)
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": child_metadata(tgs, tgs_name(tgs)),
        "spec": {"maxUnavailable": max_unavailable, "selector": {"matchLabels": selector_labels(tgs)}},
    }

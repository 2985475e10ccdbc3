"""Pure builders: a TextGenerationService body (as the API server returns it) in, manifests out."""
from __future__ import annotations

from textgen_operator.builders.autoscaling import build_autoscaler
from textgen_operator.builders.services import (
    build_client_service,
    build_headless_service,
    build_pod_disruption_budget,
    build_service_account,
)
from textgen_operator.builders.statefulset import build_statefulset
from textgen_operator.config import OperatorConfig
from textgen_operator.names import Body

__all__ = ["build_desired", "build_statefulset", "build_client_service", "build_headless_service",
           "build_pod_disruption_budget", "build_service_account"]


def build_desired(tgs: Body, config: OperatorConfig) -> list[Body]:
    """Every child object of one TGS, in apply order (the StatefulSet last: its pods need the rest; the
    autoscaler, when spec.autoscaling asks for one, after it)."""
    autoscaler = build_autoscaler(tgs, config)
    return [
        build_service_account(tgs),
        build_headless_service(tgs),
        build_client_service(tgs),
        build_pod_disruption_budget(tgs),
        build_statefulset(tgs, config),
    ] + ([autoscaler] if autoscaler is not None else [])

"""`textgen-operator`: parse the config once, set up logs and metrics, run kopf."""
from __future__ import annotations

import sys
from collections.abc import Sequence

import kopf
from prometheus_client import start_http_server

from textgen_operator.config import OperatorConfig, parse_config
from textgen_operator.handlers import Runtime, register
from textgen_operator.logs import configure_logging
from textgen_operator.reconciler import NodeCapacity


def run(config: OperatorConfig, stop_flag: object | None = None) -> None:
    """Runs the operator until stopped (a signal, or stop_flag in tests)."""
    registry = kopf.OperatorRegistry()
    register(registry, keda=config.autoscaling_provider == "keda")
    if config.metrics_port:
        start_http_server(config.metrics_port, addr=config.bind_host)
    liveness = f"http://{config.bind_host}:{config.liveness_port}/healthz" if config.liveness_port else None
    kopf.run(
        registry=registry,
        standalone=config.peering_name is None,
        peering_name=config.peering_name,
        priority=config.peering_priority,
        clusterwide=config.clusterwide,
        namespaces=list(config.namespaces),
        liveness_endpoint=liveness,
        memo=kopf.Memo(runtime=Runtime(config=config, nodes=NodeCapacity())),
        stop_flag=stop_flag,  # type: ignore[arg-type]
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Console script entry point."""
    config = parse_config(sys.argv[1:] if argv is None else argv)
    configure_logging(config.log_format, config.log_level)
    run(config)


if __name__ == "__main__":
    main()

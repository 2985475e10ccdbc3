"""The operator's one configuration object, built once at the entry point from flags and environment."""
from __future__ import annotations

import argparse
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

LogFormat = Literal["json", "text"]
AutoscalingProvider = Literal["hpa", "keda"]

DEFAULT_IMAGES = {
    "nvidia": "ghcr.io/textgen-dev/textgen-server-cuda:0.1.0",
    "gaudi": "ghcr.io/textgen-dev/textgen-server-gaudi:0.1.0",
    "cpu": "ghcr.io/textgen-dev/textgen-server-cpu:0.1.0",
}


@dataclass(frozen=True)
class OperatorConfig:
    """Everything the operator process needs to know; no module reads the environment itself."""

    image_nvidia: str = DEFAULT_IMAGES["nvidia"]
    image_gaudi: str = DEFAULT_IMAGES["gaudi"]
    image_cpu: str = DEFAULT_IMAGES["cpu"]
    namespaces: tuple[str, ...] = ()          # empty: watch the whole cluster
    peering_name: str | None = "textgen-operator"   # None: standalone (no peering; dev only)
    # kopf pauses every peer of equal priority, so each replica draws its own: the highest one works, the rest
    # stand by and take over when its heartbeat stops.
    peering_priority: int = 0
    liveness_port: int | None = 8080
    metrics_port: int | None = 9090
    bind_host: str = "0.0.0.0"                # where liveness and metrics listen (127.0.0.1 in tests)
    log_format: LogFormat = "json"
    log_level: str = "INFO"
    max_concurrent_reconciles: int = 256
    max_requests_in_flight: int = 128         # API writes at once; an eighth for all but bringing new TGSs up
    blocked_retry_seconds: float = 30.0       # re-check a spec blocked on a missing dependency (e.g. a Secret)
    # spec.autoscaling becomes an HPA (metrics from prometheus-adapter) or a KEDA ScaledObject querying Prometheus.
    autoscaling_provider: AutoscalingProvider = "hpa"
    keda_prometheus_address: str | None = None     # the Prometheus KEDA's trigger queries (keda provider only)
    # prometheus.io/scrape|port|path annotations on server pods (Prometheus configs that discover pods by them).
    pod_scrape_annotations: bool = True

    @property
    def clusterwide(self) -> bool:
        """True when no namespace list was given."""
        return not self.namespaces

    def image_for(self, accelerator_type: str) -> str:
        """Default server image for an accelerator type (nvidia, gaudi or cpu)."""
        images = {"nvidia": self.image_nvidia, "gaudi": self.image_gaudi, "cpu": self.image_cpu}
        if accelerator_type not in images:
            raise ValueError(f"unknown accelerator type {accelerator_type!r}; expected one of {sorted(images)}")
        return images[accelerator_type]


def _env_int(environ: Mapping[str, str], name: str, default: int | None) -> int | None:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("off", "none", "0"):
        return None
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{name}={raw!r} is not a port number; give an integer or 'off'") from None


def _parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="textgen-operator", description="Reconciles TextGenerationServices.")
    e = environ.get
    p.add_argument("--namespace", action="append", default=None,
                   help="namespace to watch (repeatable); default: the whole cluster [TEXTGEN_NAMESPACES, comma-separated]")
    p.add_argument("--standalone", action="store_true", default=e("TEXTGEN_STANDALONE", "") == "true",
                   help="run without peering (two replicas would fight; dev only) [TEXTGEN_STANDALONE=true]")
    p.add_argument("--peering-name", default=e("TEXTGEN_PEERING_NAME", "textgen-operator"),
                   help="name of the KopfPeering / ClusterKopfPeering object [TEXTGEN_PEERING_NAME]")
    p.add_argument("--peering-priority", type=int, default=None,
                   help="this replica's peering priority; default: a random one, so replicas never tie")
    p.add_argument("--image-nvidia", default=e("TEXTGEN_IMAGE_NVIDIA", DEFAULT_IMAGES["nvidia"]))
    p.add_argument("--image-gaudi", default=e("TEXTGEN_IMAGE_GAUDI", DEFAULT_IMAGES["gaudi"]))
    p.add_argument("--image-cpu", default=e("TEXTGEN_IMAGE_CPU", DEFAULT_IMAGES["cpu"]))
    p.add_argument("--liveness-port", type=int, default=_env_int(environ, "TEXTGEN_LIVENESS_PORT", 8080),
                   help="port of /healthz; 0 turns it off [TEXTGEN_LIVENESS_PORT]")
    p.add_argument("--metrics-port", type=int, default=_env_int(environ, "TEXTGEN_METRICS_PORT", 9090),
                   help="port of /metrics; 0 turns it off [TEXTGEN_METRICS_PORT]")
    p.add_argument("--bind-host", default=e("TEXTGEN_BIND_HOST", "0.0.0.0"))
    p.add_argument("--log-format", choices=["json", "text"], default=e("TEXTGEN_LOG_FORMAT", "json"))
    p.add_argument("--log-level", default=e("TEXTGEN_LOG_LEVEL", "INFO"))
    p.add_argument("--blocked-retry-seconds", type=float,
                   default=float(e("TEXTGEN_BLOCKED_RETRY_SECONDS", "30")),
                   help="how often a spec blocked on a missing dependency (e.g. a Secret) is re-checked")
    p.add_argument("--max-concurrent-reconciles", type=int,
                   default=int(e("TEXTGEN_MAX_CONCURRENT_RECONCILES", "256")),
                   help="TextGenerationServices reconciled at once; new ones go first "
                        "[TEXTGEN_MAX_CONCURRENT_RECONCILES]")
    p.add_argument("--max-requests-in-flight", type=int,
                   default=int(e("TEXTGEN_MAX_REQUESTS_IN_FLIGHT", "128")),
                   help="API writes in flight at once (HTTP connections), most urgent first. The StatefulSets and "
                        "ServiceAccounts of new TextGenerationServices may use all of them; every other write "
                        "(Services, repairs, status, Events) an eighth, and waits while those are in flight "
                        "[TEXTGEN_MAX_REQUESTS_IN_FLIGHT]")
    p.add_argument("--autoscaling-provider", choices=["hpa", "keda"],
                   default=e("TEXTGEN_AUTOSCALING_PROVIDER", "hpa"),
                   help="what spec.autoscaling becomes: hpa (an autoscaling/v2 HorizontalPodAutoscaler on external "
                        "metrics from prometheus-adapter) or keda (a KEDA ScaledObject with a Prometheus trigger) "
                        "[TEXTGEN_AUTOSCALING_PROVIDER]")
    p.add_argument("--keda-prometheus-address", default=e("TEXTGEN_KEDA_PROMETHEUS_ADDRESS") or None,
                   help="Prometheus URL the KEDA trigger queries, e.g. http://prometheus.monitoring.svc:9090; "
                        "required with --autoscaling-provider keda [TEXTGEN_KEDA_PROMETHEUS_ADDRESS]")
    p.add_argument("--pod-scrape-annotations", action=argparse.BooleanOptionalAction,
                   default=e("TEXTGEN_POD_SCRAPE_ANNOTATIONS", "true") != "false",
                   help="put prometheus.io/scrape, /port and /path annotations on server pods "
                        "[TEXTGEN_POD_SCRAPE_ANNOTATIONS=true|false]")
    return p


def parse_config(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> OperatorConfig:
    """Builds the config from command-line flags, falling back to TEXTGEN_* environment variables."""
    env = os.environ if environ is None else environ
    args = _parser(env).parse_args(list(argv))
    namespaces = args.namespace or [n for n in env.get("TEXTGEN_NAMESPACES", "").split(",") if n.strip()]
    for flag, value in (("--max-concurrent-reconciles", args.max_concurrent_reconciles),
                        ("--max-requests-in-flight", args.max_requests_in_flight)):
        if value < 1:
            raise SystemExit(f"{flag}={value}: must be at least 1")
    if args.autoscaling_provider == "keda" and not args.keda_prometheus_address:
        raise SystemExit("--autoscaling-provider keda needs --keda-prometheus-address (the Prometheus URL KEDA's "
                         "trigger queries, e.g. http://prometheus.monitoring.svc:9090)")
    return OperatorConfig(
        image_nvidia=args.image_nvidia,
        image_gaudi=args.image_gaudi,
        image_cpu=args.image_cpu,
        namespaces=tuple(n.strip() for n in namespaces),
        peering_name=None if args.standalone else args.peering_name,
        peering_priority=(secrets.randbelow(1_000_000) if args.peering_priority is None
                          else args.peering_priority),
        liveness_port=args.liveness_port or None,
        metrics_port=args.metrics_port or None,
        bind_host=args.bind_host,
        log_format=args.log_format,
        log_level=args.log_level.upper(),
        max_concurrent_reconciles=args.max_concurrent_reconciles,
        max_requests_in_flight=args.max_requests_in_flight,
        blocked_retry_seconds=args.blocked_retry_seconds,
        autoscaling_provider=args.autoscaling_provider,
        keda_prometheus_address=args.keda_prometheus_address,
        pod_scrape_annotations=args.pod_scrape_annotations,
    )

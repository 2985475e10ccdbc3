"""A timeline of one autoscaled TGS, sampled while an e2e test or hack/bench-autoscale.py drives load: the TGS's
replicas (spec and status), its HorizontalPodAutoscaler's view, and the external metric the HPA reads, read the
way the HPA controller reads it (through the API server's aggregation layer)."""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from e2e.harness import Cluster
from e2e.metrics_pipeline import external_metric


@dataclass(frozen=True)
class Sample:
    t: float                  # time.monotonic()
    spec_replicas: int
    ready: int                # status.readyReplicas
    pods: int                 # status.replicas (pods that exist, warming ones too)
    hpa_desired: int | None
    hpa_current: int | None
    metric: float | None      # the external metric's value (sum over Ready pods), None when unreadable


def tgs_and_hpa(cluster: Cluster, namespace: str, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The TGS and its HPA (same name) in one kubectl call; {} for an HPA that does not exist."""
    out = cluster.kubectl("get", f"tgs/{name}", f"hpa/{name}", "-n", namespace, "-o", "json",
                          "--ignore-not-found", check=False).stdout
    items = json.loads(out)["items"] if out.strip() else []
    tgs: dict[str, Any] = next((i for i in items if i["kind"] == "TextGenerationService"), {})
    hpa: dict[str, Any] = next((i for i in items if i["kind"] == "HorizontalPodAutoscaler"), {})
    return tgs, hpa


class Timeline:
    """Samples every `interval` seconds in a thread until stopped."""

    def __init__(self, cluster: Cluster, namespace: str, name: str, metric: str, interval: float = 1.0) -> None:
        self.cluster, self.namespace, self.name, self.metric = cluster, namespace, name, metric
        self.interval = interval
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="autoscaling-timeline", daemon=True)

    def __enter__(self) -> Timeline:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def sample(self) -> Sample:
        tgs, hpa = tgs_and_hpa(self.cluster, self.namespace, self.name)
        status, hpa_status = tgs.get("status", {}), hpa.get("status", {})
        selector = f"textgen_dev_service={self.name}"
        return Sample(t=time.monotonic(), spec_replicas=int(tgs.get("spec", {}).get("replicas", 0)),
                      ready=int(status.get("readyReplicas", 0)), pods=int(status.get("replicas", 0)),
                      hpa_desired=hpa_status.get("desiredReplicas"), hpa_current=hpa_status.get("currentReplicas"),
                      metric=external_metric(self.cluster, self.namespace, self.metric, selector))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(self.sample())
            except Exception:  # noqa: BLE001 - a failed read is a gap in the timeline, not a failed run
                pass
            self._stop.wait(self.interval)

    def between(self, start: float, end: float | None = None) -> list[Sample]:
        return [s for s in self.samples if s.t >= start and (end is None or s.t <= end)]

    def first(self, predicate: Any, since: float = 0.0) -> Sample | None:
        return next((s for s in self.samples if s.t >= since and predicate(s)), None)


def replica_changes(samples: list[Sample]) -> list[int]:
    """spec.replicas each time it changed (the first sample's value first)."""
    out: list[int] = []
    for s in samples:
        if not out or out[-1] != s.spec_replicas:
            out.append(s.spec_replicas)
    return out

"""The TGS spec as one typed, frozen view, with the CRD's defaults applied here and nowhere else.

`parse_spec(body)` turns the `spec` of a TextGenerationService (a plain dict, as the API server returns it) into
`TGSSpec`. The API server already applies the CRD's `default:` values on write, but the operator must not depend on
that (bodies from tests, `render` without --crd, objects stored before a default was added): every default the
CRD declares is repeated once below, and `operator/tests/crd/test_spec_defaults.py` checks each one against the
CRD's YAML so that the two cannot drift. Builders read fields from the view; `dict[str, Any]` stays at the edges
(pass-through Kubernetes shapes such as tolerations, affinity and env entries).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from textgen_operator.names import Body

@dataclass(frozen=True)
class TokenSecretRef:
    name: str
    key: str = "token"


@dataclass(frozen=True)
class ModelSpec:
    id: str
    revision: str | None = None
    token_secret_ref: TokenSecretRef | None = None
    dtype: str | None = None
    quantize: str | None = None
    trust_remote_code: bool = False


@dataclass(frozen=True)
class AcceleratorSpec:
    type: str
    count: int = 1


@dataclass(frozen=True)
class LimitsSpec:
    """Token and batching limits; None keeps the server's default."""

    max_input_tokens: int | None = None
    max_total_tokens: int | None = None
    max_batch_prefill_tokens: int | None = None
    max_batch_total_tokens: int | None = None
    max_batch_size: int | None = None
    max_concurrent_requests: int | None = None
    max_waiting_tokens: int | None = None
    waiting_served_ratio: float | None = None


@dataclass(frozen=True)
class CacheSpec:
    mode: str = "None"
    size: str = "100Gi"
    storage_class_name: str | None = None
    existing_claim: str | None = None


@dataclass(frozen=True)
class ResourcesSpec:
    requests: Mapping[str, str] = field(default_factory=dict)
    limits: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SchedulingSpec:
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Body, ...] = ()
    affinity: Body | None = None
    priority_class_name: str | None = None
    runtime_class_name: str | None = None


# Targets per pod of the built-in metric types when spec.autoscaling.metric.averageValue is unset, measured on
# the benchmark model (operator/README.md, Autoscaling: what queue depth per pod keeps TTFT acceptable): TTFT
# holds while a pod's batch is full and its queue short, and grows by a whole request time per batch queued.
# QueueAndBatchSize: a full batch, spec.limits.maxBatchSize when set; QueueSize: a quarter of the measured batch.
DEFAULT_AVERAGE_VALUES: Mapping[str, str] = {"QueueSize": "2", "QueueAndBatchSize": "8"}


@dataclass(frozen=True)
class MetricSpec:
    type: str = "QueueAndBatchSize"
    name: str | None = None                       # Pods / External only
    match_labels: Mapping[str, str] = field(default_factory=dict)   # External only
    average_value: str = DEFAULT_AVERAGE_VALUES["QueueAndBatchSize"]


@dataclass(frozen=True)
class AutoscalingSpec:
    min_replicas: int
    max_replicas: int
    metric: MetricSpec = MetricSpec()
    # HorizontalPodAutoscalerBehavior directions the user gave ("scaleUp" / "scaleDown"); others are derived.
    behavior: Mapping[str, Body] = field(default_factory=dict)


@dataclass(frozen=True)
class RolloutSpec:
    max_unavailable: int = 0
    max_surge: int = 1
    warmup_timeout_seconds: int = 1800
    auto_rollback: bool = True
    paused: bool = False


@dataclass(frozen=True)
class DrainSpec:
    grace_period_seconds: int = 60


@dataclass(frozen=True)
class TGSSpec:
    """Everything a TextGenerationService asks for, defaults applied. Field names mirror the CRD in snake_case."""

    model: ModelSpec
    accelerator: AcceleratorSpec
    replicas: int = 1
    image: str | None = None
    image_pull_policy: str | None = None
    limits: LimitsSpec = LimitsSpec()
    kv_cache_memory: str | None = None
    speculate: int = 0
    # spec.gaudi as given (CRD field name -> value); only the fields the user set, in the CRD's order.
    gaudi: Mapping[str, Any] = field(default_factory=dict)
    cache: CacheSpec = CacheSpec()
    resources: ResourcesSpec = ResourcesSpec()
    shared_memory_size: str | None = None
    scheduling: SchedulingSpec = SchedulingSpec()
    pod_annotations: Mapping[str, str] = field(default_factory=dict)
    pod_labels: Mapping[str, str] = field(default_factory=dict)
    autoscaling: AutoscalingSpec | None = None
    rollout: RolloutSpec = RolloutSpec()
    drain: DrainSpec = DrainSpec()
    args: tuple[str, ...] = ()
    env: tuple[Body, ...] = ()


def _opt_str(value: Any) -> str | None:
    # The CRD's optional strings: absent and empty both mean "unset" (e.g. revision: "" = the default branch).
    return str(value) if value not in (None, "") else None


def _opt_int(value: Any) -> int | None:
    return int(value) if value is not None else None


def _parse_model(model: Body) -> ModelSpec:
    ref = model.get("tokenSecretRef")
    secret = TokenSecretRef(str(ref["name"]), str(ref.get("key", TokenSecretRef.key))) if ref else None
    return ModelSpec(id=str(model["id"]), revision=_opt_str(model.get("revision")), token_secret_ref=secret,
                     dtype=_opt_str(model.get("dtype")), quantize=_opt_str(model.get("quantize")),
                     trust_remote_code=bool(model.get("trustRemoteCode", ModelSpec.trust_remote_code)))


def _parse_limits(limits: Body) -> LimitsSpec:
    ratio = limits.get("waitingServedRatio")
    return LimitsSpec(
        max_input_tokens=_opt_int(limits.get("maxInputTokens")),
        max_total_tokens=_opt_int(limits.get("maxTotalTokens")),
        max_batch_prefill_tokens=_opt_int(limits.get("maxBatchPrefillTokens")),
        max_batch_total_tokens=_opt_int(limits.get("maxBatchTotalTokens")),
        max_batch_size=_opt_int(limits.get("maxBatchSize")),
        max_concurrent_requests=_opt_int(limits.get("maxConcurrentRequests")),
        max_waiting_tokens=_opt_int(limits.get("maxWaitingTokens")),
        waiting_served_ratio=float(ratio) if ratio is not None else None,
    )


def _parse_cache(cache: Body) -> CacheSpec:
    return CacheSpec(mode=str(cache.get("mode", CacheSpec.mode)), size=str(cache.get("size", CacheSpec.size)),
                     storage_class_name=_opt_str(cache.get("storageClassName")),
                     existing_claim=_opt_str(cache.get("existingClaim")))


def _parse_scheduling(scheduling: Body) -> SchedulingSpec:
    return SchedulingSpec(node_selector=dict(scheduling.get("nodeSelector") or {}),
                          tolerations=tuple(dict(t) for t in scheduling.get("tolerations", [])),
                          affinity=scheduling.get("affinity") or None,
                          priority_class_name=_opt_str(scheduling.get("priorityClassName")),
                          runtime_class_name=_opt_str(scheduling.get("runtimeClassName")))


def _default_average_value(kind: str, limits: LimitsSpec) -> str:
    # Pods / External have no default target (the CRD requires one); the built-in types have a measured one.
    if kind == "QueueAndBatchSize" and limits.max_batch_size is not None:
        return str(limits.max_batch_size)
    return DEFAULT_AVERAGE_VALUES.get(kind, "")


def _parse_autoscaling(autoscaling: Body | None, limits: LimitsSpec) -> AutoscalingSpec | None:
    if autoscaling is None:
        return None
    metric = autoscaling.get("metric") or {}
    kind = str(metric.get("type", MetricSpec.type))
    average_value = metric.get("averageValue") or _default_average_value(kind, limits)
    behavior = {k: dict(v) for k, v in (autoscaling.get("behavior") or {}).items() if v is not None}
    return AutoscalingSpec(min_replicas=int(autoscaling["minReplicas"]), max_replicas=int(autoscaling["maxReplicas"]),
                           metric=MetricSpec(type=kind, name=_opt_str(metric.get("name")),
                                             match_labels=dict((metric.get("selector") or {}).get("matchLabels") or {}),
                                             average_value=str(average_value)),
                           behavior=behavior)


def _parse_rollout(rollout: Body) -> RolloutSpec:
    return RolloutSpec(
        max_unavailable=int(rollout.get("maxUnavailable", RolloutSpec.max_unavailable)),
        max_surge=int(rollout.get("maxSurge", RolloutSpec.max_surge)),
        warmup_timeout_seconds=int(rollout.get("warmupTimeoutSeconds", RolloutSpec.warmup_timeout_seconds)),
        auto_rollback=bool(rollout.get("autoRollback", RolloutSpec.auto_rollback)),
        paused=bool(rollout.get("paused", RolloutSpec.paused)))


def _quantities(values: Mapping[str, Any] | None) -> dict[str, str]:
    return {k: str(v) for k, v in (values or {}).items()}


def parse_spec(spec: Body) -> TGSSpec:
    """The typed view of a TGS's `spec` (the dict under the body's "spec" key), defaults applied."""
    accelerator = spec["accelerator"]
    limits = _parse_limits(spec.get("limits", {}))
    resources = spec.get("resources", {})
    drain = spec.get("drain", {})
    return TGSSpec(
        model=_parse_model(spec["model"]),
        accelerator=AcceleratorSpec(str(accelerator["type"]), int(accelerator.get("count", AcceleratorSpec.count))),
        replicas=int(spec.get("replicas", TGSSpec.replicas)),
        image=_opt_str(spec.get("image")),
        image_pull_policy=_opt_str(spec.get("imagePullPolicy")),
        limits=limits,
        kv_cache_memory=_opt_str(spec.get("kvCacheMemory")),
        speculate=int(spec.get("speculate", TGSSpec.speculate)),
        gaudi=dict(spec.get("gaudi") or {}),
        cache=_parse_cache(spec.get("cache", {})),
        resources=ResourcesSpec(_quantities(resources.get("requests")), _quantities(resources.get("limits"))),
        shared_memory_size=_opt_str(spec.get("sharedMemorySize")),
        scheduling=_parse_scheduling(spec.get("scheduling", {})),
        pod_annotations=dict(spec.get("podAnnotations") or {}),
        pod_labels=dict(spec.get("podLabels") or {}),
        autoscaling=_parse_autoscaling(spec.get("autoscaling"), limits),
        rollout=_parse_rollout(spec.get("rollout", {})),
        drain=DrainSpec(int(drain.get("gracePeriodSeconds", DrainSpec.grace_period_seconds))),
        args=tuple(str(a) for a in spec.get("args", [])),
        env=tuple(dict(e) for e in spec.get("env", [])),
    )


def tgs_spec(tgs: Body) -> TGSSpec:
    """The typed view of a whole TGS body's spec."""
    return parse_spec(tgs["spec"])

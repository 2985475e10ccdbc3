"""The StatefulSet: one pod per replica, accelerator.count devices (= shards) per pod."""
from __future__ import annotations

from typing import Any

from textgen_operator.builders.accelerators import profile_for
from textgen_operator.builders.container import build_container, termination_grace_period_seconds
from textgen_operator.builders.services import HTTP_PORT
from textgen_operator.config import OperatorConfig
from textgen_operator.names import (
    ANNOTATION_TEMPLATE_HASH,
    Body,
    child_metadata,
    common_labels,
    headless_service_name,
    selector_labels,
    stable_hash,
    tgs_name,
)
from textgen_operator.spec import TGSSpec, tgs_spec

SERVER_UID = 1000


def build_shm_size(spec: TGSSpec) -> str:
    """/dev/shm for collectives between shards: the spec's size, else 1Gi per shard."""
    return spec.shared_memory_size or f"{spec.accelerator.count}Gi"


def build_volumes(spec: TGSSpec) -> list[dict[str, Any]]:
    """shm (memory-backed), tmp (the root filesystem is read-only), and the model cache unless PerReplica."""
    volumes: list[dict[str, Any]] = [
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": build_shm_size(spec)}},
        {"name": "tmp", "emptyDir": {}},
    ]
    cache = spec.cache
    if cache.mode == "Shared":
        volumes.append({"name": "model-cache", "persistentVolumeClaim": {"claimName": cache.existing_claim}})
    elif cache.mode == "None":
        volumes.append({"name": "model-cache", "emptyDir": {"sizeLimit": cache.size}})
    return volumes


def build_volume_claim_templates(spec: TGSSpec) -> list[dict[str, Any]]:
    """One claim per replica with cache.mode PerReplica (weights survive pod restarts); none otherwise."""
    cache = spec.cache
    if cache.mode != "PerReplica":
        return []
    claim_spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"],
                                  "resources": {"requests": {"storage": cache.size}}}
    if cache.storage_class_name is not None:
        claim_spec["storageClassName"] = cache.storage_class_name
    return [{"apiVersion": "v1", "kind": "PersistentVolumeClaim",
             "metadata": {"name": "model-cache"}, "spec": claim_spec}]


def build_tolerations(spec: TGSSpec) -> list[dict[str, Any]]:
    """The accelerator nodes' taint is tolerated automatically; the user's tolerations follow."""
    profile = profile_for(spec)
    own = [{"key": profile.taint_key, "operator": "Exists", "effect": "NoSchedule"}] if profile.taint_key else []
    return own + [dict(t) for t in spec.scheduling.tolerations]


def _scheduling_fields(spec: TGSSpec) -> dict[str, Any]:
    scheduling = spec.scheduling
    fields = {"nodeSelector": dict(scheduling.node_selector) or None, "affinity": scheduling.affinity,
              "priorityClassName": scheduling.priority_class_name,
              "runtimeClassName": scheduling.runtime_class_name}
    return {k: v for k, v in fields.items() if v}


def build_pod_spec(tgs: Body, spec: TGSSpec, config: OperatorConfig) -> dict[str, Any]:
    """The pod spec: container, volumes, identity, security and scheduling."""
    pod: dict[str, Any] = {
        "serviceAccountName": tgs_name(tgs),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,     # hundreds of Services would otherwise become env variables
        "terminationGracePeriodSeconds": termination_grace_period_seconds(spec),
        "securityContext": {
            "runAsNonRoot": True, "runAsUser": SERVER_UID, "runAsGroup": SERVER_UID, "fsGroup": SERVER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
            # Port 80 without CAP_NET_BIND_SERVICE (a namespaced, "safe" sysctl).
            "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}],
        },
        "containers": [build_container(spec, config)],
        "volumes": build_volumes(spec),
    }
    tolerations = build_tolerations(spec)
    if tolerations:
        pod["tolerations"] = tolerations
    pod.update(_scheduling_fields(spec))
    return pod


def scrape_annotations(config: OperatorConfig) -> dict[str, str]:
    """What annotation-based Prometheus pod discovery reads (the server's /metrics on its HTTP port)."""
    if not config.pod_scrape_annotations:
        return {}
    return {"prometheus.io/scrape": "true", "prometheus.io/port": str(HTTP_PORT), "prometheus.io/path": "/metrics"}


def build_pod_template(tgs: Body, spec: TGSSpec, config: OperatorConfig) -> dict[str, Any]:
    """Pod template with labels (ours win over spec.podLabels) and a hash of itself as an annotation."""
    template: dict[str, Any] = {
        "metadata": {"labels": {**spec.pod_labels, **common_labels(tgs)}},
        "spec": build_pod_spec(tgs, spec, config),
    }
    # spec.podAnnotations may override the scrape annotations (e.g. prometheus.io/scrape: "false").
    annotations = {**scrape_annotations(config), **spec.pod_annotations}
    template["metadata"]["annotations"] = annotations
    # Over the whole template, annotations included: the hash names the revision a rollout moves pods to, so
    # any template change must change it.
    annotations[ANNOTATION_TEMPLATE_HASH] = stable_hash(template)
    return template


def build_statefulset(tgs: Body, config: OperatorConfig) -> Body:
    """The StatefulSet of one TGS.

    Spec changes reach pods through the operator's rollout (textgen_operator/rollout): OnDelete, so the
    controller never stops a pod by itself; the rollout raises replicas for the surge and deletes old pods once
    new ones are warm. Pods are independent replicas, so they start and stop in parallel.
    """
    spec = tgs_spec(tgs)
    sts_spec: dict[str, Any] = {
        "replicas": spec.replicas,
        "serviceName": headless_service_name(tgs),
        "selector": {"matchLabels": selector_labels(tgs)},
        "podManagementPolicy": "Parallel",
        "updateStrategy": {"type": "OnDelete"},
        "revisionHistoryLimit": 5,
        "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Retain"},
        "template": build_pod_template(tgs, spec, config),
    }
    claims = build_volume_claim_templates(spec)
    if claims:
        sts_spec["volumeClaimTemplates"] = claims
    return {"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": child_metadata(tgs, tgs_name(tgs)), "spec": sts_spec}

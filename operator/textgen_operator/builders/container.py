"""The server container: launcher arguments (TGI flag names), environment, probes, resources, security."""
from __future__ import annotations

import math
from typing import Any

from textgen_operator.builders.accelerators import profile_for
from textgen_operator.builders.services import HTTP_PORT
from textgen_operator.config import OperatorConfig
from textgen_operator.names import Body

MODEL_CACHE_PATH = "/data"
PRESTOP_SLEEP_SECONDS = 5          # endpoints controllers drop a stopping pod before SIGTERM starts the drain
STARTUP_PROBE_PERIOD_SECONDS = 10

# spec.limits field -> launcher flag (TGI's names).
LIMIT_FLAGS = {
    "maxInputTokens": "--max-input-tokens",
    "maxTotalTokens": "--max-total-tokens",
    "maxBatchPrefillTokens": "--max-batch-prefill-tokens",
    "maxBatchTotalTokens": "--max-batch-total-tokens",
    "maxBatchSize": "--max-batch-size",
    "maxConcurrentRequests": "--max-concurrent-requests",
    "maxWaitingTokens": "--max-waiting-tokens",
    "waitingServedRatio": "--waiting-served-ratio",
}


def build_launcher_args(spec: Body) -> list[str]:
    """Arguments of textgen-launcher: model, shards, port, limits, then the user's extra args."""
    model = spec["model"]
    args = ["--model-id", str(model["id"]), "--num-shard", str(spec["accelerator"].get("count", 1)),
            "--port", str(HTTP_PORT), "--hostname", "0.0.0.0", "--huggingface-hub-cache", MODEL_CACHE_PATH]
    for field, flag in (("revision", "--revision"), ("dtype", "--dtype"), ("quantize", "--quantize")):
        if model.get(field):
            args += [flag, str(model[field])]
    if model.get("trustRemoteCode"):
        args.append("--trust-remote-code")
    if spec.get("speculate"):
        args += ["--speculate", str(spec["speculate"])]
    limits = spec.get("limits", {})
    for field, flag in LIMIT_FLAGS.items():
        if field in limits:
            args += [flag, str(limits[field])]
    return args + [str(a) for a in spec.get("args", [])]


def build_env(spec: Body) -> list[dict[str, Any]]:
    """Container environment: hub token by reference, accelerator settings, then the user's extra env."""
    env: list[dict[str, Any]] = []
    ref = spec["model"].get("tokenSecretRef")
    if ref:
        env.append({"name": "HF_TOKEN",
                    "valueFrom": {"secretKeyRef": {"name": ref["name"], "key": ref.get("key", "token")}}})
    env += profile_for(spec).env(spec)
    return env + [dict(e) for e in spec.get("env", [])]


def _http_probe(period: int, failures: int, timeout: int) -> dict[str, Any]:
    return {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": period,
            "failureThreshold": failures, "timeoutSeconds": timeout}


def build_probes(spec: Body) -> dict[str, Any]:
    """Startup probe covers download + load + warmup; /health answers 503 until then (and while draining)."""
    warmup = int(spec.get("rollout", {}).get("warmupTimeoutSeconds", 1800))
    return {
        "startupProbe": _http_probe(STARTUP_PROBE_PERIOD_SECONDS,
                                    math.ceil(warmup / STARTUP_PROBE_PERIOD_SECONDS), 5),
        "readinessProbe": _http_probe(5, 2, 5),
        # Generous: a long prefill can delay /health; a restart costs a full reload.
        "livenessProbe": _http_probe(10, 6, 10),
    }


def _quantities(values: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in values.items()}


def build_resources(spec: Body) -> dict[str, Any]:
    """Requests and limits: the user's cpu/memory plus devices (and hugepages on Gaudi) in both."""
    profile = profile_for(spec)
    count = int(spec["accelerator"].get("count", 1))
    user = spec.get("resources", {})
    requests = _quantities(user.get("requests", {}))
    limits = _quantities(user.get("limits", {}))
    if profile.resource:
        requests[profile.resource] = limits[profile.resource] = str(count)
    if profile.hugepages_gib_per_device:
        # Hugepages must be requested and limited equally.
        requests["hugepages-2Mi"] = limits["hugepages-2Mi"] = f"{count * profile.hugepages_gib_per_device}Gi"
    return {k: v for k, v in (("requests", requests), ("limits", limits)) if v}


def build_security_context(spec: Body) -> dict[str, Any]:
    """Non-root, no privilege escalation, read-only root, ALL capabilities dropped (SYS_NICE back on Gaudi)."""
    capabilities: dict[str, Any] = {"drop": ["ALL"]}
    if profile_for(spec).capabilities:
        capabilities["add"] = list(profile_for(spec).capabilities)
    return {"runAsNonRoot": True, "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "capabilities": capabilities}


def build_container(spec: Body, config: OperatorConfig) -> dict[str, Any]:
    """The one container of a server pod."""
    container: dict[str, Any] = {
        "name": "server",
        "image": spec.get("image") or config.image_for(spec["accelerator"]["type"]),
        "command": ["textgen-launcher"],
        "args": build_launcher_args(spec),
        "ports": [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}],
        **build_probes(spec),
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_SLEEP_SECONDS)]}}},
        "securityContext": build_security_context(spec),
        "volumeMounts": [{"name": "shm", "mountPath": "/dev/shm"}, {"name": "tmp", "mountPath": "/tmp"},
                         {"name": "model-cache", "mountPath": MODEL_CACHE_PATH}],
    }
    env = build_env(spec)
    if env:
        container["env"] = env
    if spec.get("imagePullPolicy"):
        container["imagePullPolicy"] = spec["imagePullPolicy"]
    resources = build_resources(spec)
    if resources:
        container["resources"] = resources
    return container

"""The server container: launcher arguments (TGI flag names), environment, probes, resources, security."""
from __future__ import annotations

import math
from typing import Any

from textgen_operator.builders.accelerators import profile_for
from textgen_operator.builders.services import HTTP_PORT
from textgen_operator.config import OperatorConfig
from textgen_operator.spec import TGSSpec

MODEL_CACHE_PATH = "/data"
PRESTOP_SLEEP_SECONDS = 5          # endpoints controllers drop a stopping pod before SIGTERM starts the drain
# After the drain the launcher flushes the last bytes (0.2 s), then stops its shards (SIGTERM, SIGKILL after 10 s)
# while uvicorn closes its connections (at most 5 s); the kubelet's SIGKILL must not cut that short.
SHUTDOWN_MARGIN_SECONDS = 15
STARTUP_PROBE_PERIOD_SECONDS = 10

# spec.limits field -> launcher flag (TGI's names).
LIMIT_FLAGS = {
    "max_input_tokens": "--max-input-tokens",
    "max_total_tokens": "--max-total-tokens",
    "max_batch_prefill_tokens": "--max-batch-prefill-tokens",
    "max_batch_total_tokens": "--max-batch-total-tokens",
    "max_batch_size": "--max-batch-size",
    "max_concurrent_requests": "--max-concurrent-requests",
    "max_waiting_tokens": "--max-waiting-tokens",
    "waiting_served_ratio": "--waiting-served-ratio",
}


# Every flag the operator may generate -> the launcher's environment variable for it (TGI's names). A spec.env entry
# with one of these names would lose silently to the flag, so problems.py refuses it. Checked against the
# launcher's own parser by operator/tests/contract.
GENERATED_FLAG_ENV = {
    "--model-id": "MODEL_ID", "--num-shard": "NUM_SHARD", "--device": "DEVICE", "--port": "PORT",
    "--hostname": "HOSTNAME", "--huggingface-hub-cache": "HUGGINGFACE_HUB_CACHE",
    "--graceful-termination-timeout": "GRACEFUL_TERMINATION_TIMEOUT", "--revision": "REVISION", "--dtype": "DTYPE",
    "--quantize": "QUANTIZE", "--trust-remote-code": "TRUST_REMOTE_CODE", "--speculate": "SPECULATE",
    "--kv-cache-memory": "KV_CACHE_MEMORY", "--max-input-tokens": "MAX_INPUT_TOKENS",
    "--max-total-tokens": "MAX_TOTAL_TOKENS", "--max-batch-prefill-tokens": "MAX_BATCH_PREFILL_TOKENS",
    "--max-batch-total-tokens": "MAX_BATCH_TOTAL_TOKENS", "--max-batch-size": "MAX_BATCH_SIZE",
    "--max-concurrent-requests": "MAX_CONCURRENT_REQUESTS", "--max-waiting-tokens": "MAX_WAITING_TOKENS",
    "--waiting-served-ratio": "WAITING_SERVED_RATIO",
}


def termination_grace_period_seconds(spec: TGSSpec) -> int:
    """The pod's grace period: preStop sleep, then the drain (--graceful-termination-timeout), then the margin.

    Kubernetes counts the preStop hook inside terminationGracePeriodSeconds, so the drain only gets its full
    drain.gracePeriodSeconds if the grace period covers all three.
    """
    return PRESTOP_SLEEP_SECONDS + spec.drain.grace_period_seconds + SHUTDOWN_MARGIN_SECONDS


def _model_args(spec: TGSSpec) -> list[str]:
    model = spec.model
    args: list[str] = []
    for flag, value in (("--revision", model.revision), ("--dtype", model.dtype), ("--quantize", model.quantize)):
        if value is not None:
            args += [flag, value]
    if model.trust_remote_code:
        args.append("--trust-remote-code")
    if spec.speculate:
        args += ["--speculate", str(spec.speculate)]
    if spec.kv_cache_memory is not None:
        args += ["--kv-cache-memory", spec.kv_cache_memory]
    return args


def build_generated_args(spec: TGSSpec) -> list[str]:
    """The launcher arguments the operator sets itself (without spec.args)."""
    args = ["--model-id", spec.model.id, "--num-shard", str(spec.accelerator.count),
            "--device", profile_for(spec).device, "--port", str(HTTP_PORT), "--hostname", "0.0.0.0",
            "--huggingface-hub-cache", MODEL_CACHE_PATH,
            "--graceful-termination-timeout", str(spec.drain.grace_period_seconds)]
    args += _model_args(spec)
    for name, flag in LIMIT_FLAGS.items():
        value = getattr(spec.limits, name)
        if value is not None:
            args += [flag, str(value)]
    return args


def build_launcher_args(spec: TGSSpec) -> list[str]:
    """Arguments of textgen-launcher: the generated ones, then the user's extra args (spec.args)."""
    return build_generated_args(spec) + list(spec.args)


def build_env(spec: TGSSpec) -> list[dict[str, Any]]:
    """Container environment: hub token by reference, accelerator settings, then the user's extra env."""
    env: list[dict[str, Any]] = []
    ref = spec.model.token_secret_ref
    if ref is not None:
        env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}})
    env += profile_for(spec).env(spec)
    return env + [dict(e) for e in spec.env]


def _http_probe(period: int, failures: int, timeout: int) -> dict[str, Any]:
    return {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": period,
            "failureThreshold": failures, "timeoutSeconds": timeout}


def build_probes(spec: TGSSpec) -> dict[str, Any]:
    """Startup probe covers download + load + warmup; /health answers 503 until then (and while draining)."""
    warmup = spec.rollout.warmup_timeout_seconds
    return {
        "startupProbe": _http_probe(STARTUP_PROBE_PERIOD_SECONDS,
                                    math.ceil(warmup / STARTUP_PROBE_PERIOD_SECONDS), 5),
        "readinessProbe": _http_probe(5, 2, 5),
        # Generous: a long prefill can delay /health; a restart costs a full reload.
        "livenessProbe": _http_probe(10, 6, 10),
    }


def build_resources(spec: TGSSpec) -> dict[str, Any]:
    """Requests and limits: the user's cpu/memory plus devices (and hugepages on Gaudi) in both."""
    profile = profile_for(spec)
    count = spec.accelerator.count
    requests = dict(spec.resources.requests)
    limits = dict(spec.resources.limits)
    if profile.resource:
        requests[profile.resource] = limits[profile.resource] = str(count)
    if profile.hugepages_gib_per_device:
        # Hugepages must be requested and limited equally.
        requests["hugepages-2Mi"] = limits["hugepages-2Mi"] = f"{count * profile.hugepages_gib_per_device}Gi"
    return {k: v for k, v in (("requests", requests), ("limits", limits)) if v}


def build_security_context(spec: TGSSpec) -> dict[str, Any]:
    """Non-root, no privilege escalation, read-only root, ALL capabilities dropped: Pod Security `restricted`."""
    capabilities: dict[str, Any] = {"drop": ["ALL"]}
    if profile_for(spec).capabilities:
        capabilities["add"] = list(profile_for(spec).capabilities)
    return {"runAsNonRoot": True, "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "capabilities": capabilities}


def build_container(spec: TGSSpec, config: OperatorConfig) -> dict[str, Any]:
    """The one container of a server pod."""
    container: dict[str, Any] = {
        "name": "server",
        "image": spec.image or config.image_for(spec.accelerator.type),
        "command": ["textgen-launcher"],
        "args": build_launcher_args(spec),
        "ports": [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}],
        **build_probes(spec),
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_SLEEP_SECONDS)]}}},
        # A launcher that refuses its config exits before writing /dev/termination-log: the kubelet then puts the
        # log's tail in lastState.terminated.message, which the TGS's Degraded condition shows.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": build_security_context(spec),
        "volumeMounts": [{"name": "shm", "mountPath": "/dev/shm"}, {"name": "tmp", "mountPath": "/tmp"},
                         {"name": "model-cache", "mountPath": MODEL_CACHE_PATH}],
    }
    env = build_env(spec)
    if env:
        container["env"] = env
    if spec.image_pull_policy is not None:
        container["imagePullPolicy"] = spec.image_pull_policy
    resources = build_resources(spec)
    if resources:
        container["resources"] = resources
    return container

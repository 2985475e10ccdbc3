"""The operator's pods against the launcher's OWN parser and config validation (torch-free): the contract cannot drift.

Every example in crds/examples/ and a table of spec variants is rendered by the real builders; the server
container's args and env (resolved as the kubelet would: values as given, Secret/ConfigMap/downward-API references
replaced by placeholder values, HOSTNAME set to the pod name, `$(VAR)` expanded) go through
`textgen_server.launcher.config.parse_args` and `build_config` with a config.json of the model's shape. A test
fails when the launcher refuses what the operator emits, when the operator emits a flag or variable the launcher
neither reads nor refuses, or when a flag does not land where its CRD field says.

Two kinds of node: a real accelerator node (the device is what spec.accelerator.type says), and a node of the
local node agent, which sets TEXTGEN_DEVICE_OVERRIDE=cpu so that simulated GPU/Gaudi pods compute on the CPU.
"""
from __future__ import annotations

import copy
import pathlib
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from textgen_operator.builders import build_statefulset
from textgen_operator.builders.container import GENERATED_FLAG_ENV
from textgen_operator.config import OperatorConfig
from textgen_operator.problems import find_problems
from textgen_operator.render import as_live
from textgen_operator.spec import tgs_spec
from textgen_server.launcher.config import ConfigError, LauncherConfig, build_config, build_parser, parse_args
from textgen_server.launcher.tgi_env import (DEVICE_ENV, HONOURED_WITHOUT_FLAG, REFUSED, TGI_QUANTIZE_METHODS,
                                          honoured_environment)

ROOT = pathlib.Path(__file__).resolve().parents[3]
CRD = yaml.safe_load((ROOT / "crds" / "textgen.dev_textgenerationservices.yaml").read_text())
EXAMPLES = sorted((ROOT / "crds" / "examples").glob("*.yaml"))
AGENT_NODE_ENV = {"TEXTGEN_DEVICE_OVERRIDE": "cpu"}

# config.json shapes of the examples' models (the fields the launcher reads: context length, heads, MLP width).
LLAMA_8B = {"model_type": "llama", "max_position_embeddings": 131072, "num_attention_heads": 32,
            "num_key_value_heads": 8, "intermediate_size": 14336}
MODEL_CONFIGS: dict[str, dict[str, Any]] = {
    "meta-llama/Llama-3.1-8B-Instruct": LLAMA_8B,
    "meta-llama/Llama-3.1-70B-Instruct": {"model_type": "llama", "max_position_embeddings": 131072,
                                          "num_attention_heads": 64, "num_key_value_heads": 8,
                                          "intermediate_size": 28672},
    "mistralai/Mistral-7B-Instruct-v0.3": {"model_type": "mistral", "max_position_embeddings": 32768,
                                           "num_attention_heads": 32, "num_key_value_heads": 8,
                                           "intermediate_size": 14336},
    "HuggingFaceTB/SmolLM2-135M-Instruct": {"model_type": "llama", "max_position_embeddings": 8192,
                                            "num_attention_heads": 9, "num_key_value_heads": 3,
                                            "intermediate_size": 1536},
}


def _example(path: pathlib.Path) -> dict[str, Any]:
    return dict(yaml.safe_load(path.read_text()))


def _tgs(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"model": {"id": "org/model"}, "accelerator": {"type": "cpu", "count": 1}}
    base.update(copy.deepcopy(spec))
    return {"apiVersion": "textgen.dev/v1alpha1", "kind": "TextGenerationService",
            "metadata": {"name": "variant"}, "spec": base}


def _container(tgs: dict[str, Any]) -> tuple[dict[str, Any], str]:
    sts = build_statefulset(tgs, OperatorConfig())
    return dict(sts["spec"]["template"]["spec"]["containers"][0]), f"{sts['metadata']['name']}-0"


def resolve_env(container: dict[str, Any], pod_name: str) -> dict[str, str]:
    """The process environment the kubelet would give this container (references -> placeholder values)."""
    env = {"HOSTNAME": pod_name, "KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), entry["value"])
        else:
            assert "valueFrom" in entry, f"env entry {entry} has neither value nor valueFrom"
            env[entry["name"]] = f"placeholder-{entry['name'].lower()}"
    return env


def expand_args(container: dict[str, Any], env: dict[str, str]) -> list[str]:
    """Kubernetes' $(VAR) expansion of args ($$ escapes; unknown references stay as written)."""
    def one(arg: str) -> str:
        return re.sub(r"\$\$|\$\((\w+)\)",
                      lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), arg)
    return [one(str(a)) for a in container["args"]]


def launch(tgs: dict[str, Any], node_env: dict[str, str]) -> tuple[LauncherConfig, dict[str, str], list[str]]:
    """The launcher's config for this TGS's pod, built exactly as `textgen-launcher` builds it."""
    container, pod_name = _container(as_live(tgs, CRD))
    assert container["command"] == ["textgen-launcher"]
    env = {**resolve_env(container, pod_name), **node_env}
    argv = expand_args(container, env)
    model_config = MODEL_CONFIGS.get(tgs["spec"]["model"]["id"], LLAMA_8B)
    return build_config(parse_args(argv, env), Path("/data/model"), model_config), env, argv


def assert_nothing_ignored(config: LauncherConfig, env: dict[str, str], argv: list[str]) -> None:
    """Every flag lands in a LauncherArgs field; every emitted variable is read by the launcher or its device."""
    fields = vars(config.args)
    for arg in argv:
        if arg.startswith("--"):
            assert arg.lstrip("-").replace("-", "_") in fields, f"{arg} lands in no launcher setting"
    honoured = honoured_environment(build_parser({})) | HONOURED_WITHOUT_FLAG | set(DEVICE_ENV)
    # A TGI setting set to what this server does anyway (e.g. USAGE_STATS=off) is honoured too.
    honoured |= {name for name, (_, inert) in REFUSED.items() if env.get(name, "").lower() in inert}
    kubelet = {"HOSTNAME", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", *AGENT_NODE_ENV}
    ignored = sorted(set(env) - honoured - kubelet)
    assert ignored == [], f"the operator emits {ignored}, which the launcher neither reads nor refuses"


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_starts_on_its_accelerator_node(example: pathlib.Path) -> None:
    body = _example(example)
    config, env, argv = launch(body, {})
    spec = tgs_spec(as_live(body, CRD))
    assert_nothing_ignored(config, env, argv)
    assert config.warnings == ()
    assert config.parallel.device.actual == {"nvidia": "cuda", "gaudi": "hpu", "cpu": "cpu"}[spec.accelerator.type]
    assert config.parallel.num_shard == spec.accelerator.count
    assert config.args.graceful_termination_timeout == spec.drain.grace_period_seconds
    assert config.args.hostname == "0.0.0.0", "--hostname wins over the HOSTNAME (pod name) Kubernetes sets"
    for field in ("max_input_tokens", "max_total_tokens", "max_batch_prefill_tokens"):
        if getattr(spec.limits, field) is not None:       # resolved by build_config (model-dependent defaults)
            assert getattr(config, field) == getattr(spec.limits, field)
    for field in ("max_batch_total_tokens", "max_batch_size", "max_concurrent_requests", "max_waiting_tokens",
                  "waiting_served_ratio"):
        if getattr(spec.limits, field) is not None:
            assert getattr(config.args, field) == getattr(spec.limits, field)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_starts_on_a_node_agent_node(example: pathlib.Path) -> None:
    """TEXTGEN_DEVICE_OVERRIDE=cpu: accelerator-only variables are accepted and named in a warning, not dropped."""
    body = _example(example)
    config, env, argv = launch(body, AGENT_NODE_ENV)
    assert_nothing_ignored(config, env, argv)
    assert config.parallel.device.actual == "cpu"
    assert config.parallel.num_shard == tgs_spec(as_live(body, CRD)).accelerator.count
    device_only = sorted(name for name in env if name in DEVICE_ENV)
    if device_only:
        [warning] = config.warnings
        assert all(name in warning for name in device_only) and "not applied" in warning
    else:
        assert config.warnings == ()


# (spec overrides, what the launcher must make of them)
VARIANTS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("trust-remote-code", {"model": {"id": "org/model", "trustRemoteCode": True}}, {"trust_remote_code": True}),
    ("revision-and-dtype", {"model": {"id": "org/model", "revision": "refs/pr/2", "dtype": "bfloat16"}},
     {"revision": "refs/pr/2", "dtype": "bfloat16"}),
    ("kv-cache-memory", {"kvCacheMemory": "512Mi"}, {"kv_cache_memory": 512 * 2**20}),
    ("kv-cache-memory-fraction", {"kvCacheMemory": "1.5Gi"}, {"kv_cache_memory": int(1.5 * 2**30)}),
    ("max-waiting-tokens-zero", {"limits": {"maxWaitingTokens": 0}}, {"max_waiting_tokens": 0}),
    ("waiting-served-ratio-zero", {"limits": {"waitingServedRatio": 0}}, {"waiting_served_ratio": 0.0}),
    ("every-limit", {"limits": {"maxInputTokens": 100, "maxTotalTokens": 200, "maxBatchPrefillTokens": 300,
                                "maxBatchTotalTokens": 4000, "maxBatchSize": 8, "maxConcurrentRequests": 9}},
     {"max_input_tokens": 100, "max_total_tokens": 200, "max_batch_prefill_tokens": 300,
      "max_batch_total_tokens": 4000, "max_batch_size": 8, "max_concurrent_requests": 9}),
    ("drain-zero", {"drain": {"gracePeriodSeconds": 0}}, {"graceful_termination_timeout": 0.0}),
    ("drain-long", {"drain": {"gracePeriodSeconds": 3600}}, {"graceful_termination_timeout": 3600.0}),
    ("token-secret", {"model": {"id": "org/model", "tokenSecretRef": {"name": "hf"}}},
     {"hf_token": "placeholder-hf_token"}),
    ("extra-args", {"args": ["--max-best-of", "3", "--json-output"]}, {"max_best_of": 3, "json_output": True}),
    ("extra-env", {"env": [{"name": "MAX_STOP_SEQUENCES", "value": "6"}, {"name": "USAGE_STATS", "value": "off"}]},
     {"max_stop_sequences": 6}),
    ("speculate-zero", {"speculate": 0}, {"speculate": None}),   # the server's default: off, or every Medusa head
    ("speculate", {"speculate": 4}, {"speculate": 4}),
    ("speculate-env", {"env": [{"name": "SPECULATE", "value": "2"}]}, {"speculate": 2}),  # TGI's variable, honoured
    ("nvidia-4", {"accelerator": {"type": "nvidia", "count": 4}}, {"device": "cuda", "num_shard": 4}),
    ("shared-cache", {"cache": {"mode": "Shared", "existingClaim": "weights"}}, {"huggingface_hub_cache": "/data"}),
]


@pytest.mark.parametrize("spec, expected", [pytest.param(s, e, id=i) for i, s, e in VARIANTS])
def test_spec_variants_land_where_the_crd_says(spec: dict[str, Any], expected: dict[str, Any]) -> None:
    tgs = _tgs(**spec)
    assert find_problems(as_live(tgs, CRD), None, None) == []
    config, env, argv = launch(tgs, {})
    assert_nothing_ignored(config, env, argv)
    assert {name: getattr(config.args, name) for name in expected} == expected
    assert config.warnings == ()


# Specs the CEL rules refuse on write (an object stored before them still reaches the operator): the operator
# blocks them, and had it not, the launcher refuses them by name too.
REFUSED_SPECS: list[tuple[str, dict[str, Any], str, str]] = [
    ("quantize", {"model": {"id": "org/model", "quantize": "gptq"}}, "QuantizationNotImplemented",
     "--quantize gptq is not implemented"),
    ("args-repeat-a-generated-flag", {"args": ["--num-shard", "2"]}, "DuplicateLauncherArgument",
     "--num-shard is given more than once"),
]


@pytest.mark.parametrize("spec, reason, launcher_error", [pytest.param(s, r, m, id=i) for i, s, r, m in REFUSED_SPECS])
def test_fields_the_server_cannot_honour_are_refused_on_both_sides(spec: dict[str, Any], reason: str,
                                                                   launcher_error: str) -> None:
    tgs = _tgs(**spec)
    assert [p.reason for p in find_problems(as_live(tgs, CRD), None, None)] == [reason]
    with pytest.raises(ConfigError, match=re.escape(launcher_error)):
        launch(tgs, {})


@pytest.mark.parametrize("env, name", [
    ({"name": "QUANTIZE", "value": "awq"}, "QUANTIZE"),
    ({"name": "OTLP_ENDPOINT", "value": "http://127.0.0.1:4317"}, "OTLP_ENDPOINT"),
    ({"name": "ROPE_SCALING", "value": "linear"}, "ROPE_SCALING"),
    ({"name": "MAX_INPUT_LENGTH", "value": "100"}, "MAX_INPUT_LENGTH"),
])
def test_tgi_variables_in_spec_env_are_refused_by_name_never_ignored(env: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        launch(_tgs(env=[env]), {})


def test_every_flag_the_operator_may_set_has_the_launchers_env_twin() -> None:
    """problems.py refuses a spec.env entry that a generated flag would shadow; its table must be the launcher's."""
    parser = build_parser({})
    helps = {flag: action.help or "" for action in parser._actions for flag in action.option_strings}
    wrong = {flag: env for flag, env in GENERATED_FLAG_ENV.items()
             if flag not in helps or f"[env: {env}]" not in helps[flag]}
    assert wrong == {}, "GENERATED_FLAG_ENV disagrees with the launcher's flags and variables"


def test_the_crds_quantize_values_are_the_methods_the_launcher_names() -> None:
    """The CRD keeps TGI's method names (each refused by CEL); the launcher refuses the same names."""
    schema = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert tuple(schema["properties"]["model"]["properties"]["quantize"]["enum"]) == TGI_QUANTIZE_METHODS

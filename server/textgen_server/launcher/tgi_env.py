"""TGI's launcher settings this launcher does not honour: each is refused by name, none is silently ignored.

TGI's `text-generation-launcher` reads every flag also from an environment variable (launcher/src/main.rs,
`#[clap(long, env)]`), plus a few variables read directly (PREFIX_CACHING, ATTENTION, HF_API_TOKEN). A user moving
from TGI may set any of them, e.g. `SPECULATE=2` in a pod's env. The ones this launcher honours are the ones its
parser reads (config.py's flag table, each help text ending in `[env: NAME]`); every other TGI name is listed in
`REFUSED` with the reason, and `refused_environment` turns each one that is set into an error naming it.
`server/tests/launcher/test_tgi_env.py` checks that every TGI name is either honoured or refused, never both.

Unknown TGI *flags* need no table: argparse refuses them by name ("unrecognized arguments").

The accelerator runtime variables the operator emits (TGI-on-Gaudi's knobs, Habana/Open MPI and NCCL settings)
are read by the device backend, not by the launcher: `device_env_warnings` names those set for a device
other than the one the shards run on (e.g. the Gaudi knobs on a Gaudi-like node whose device is overridden to the
CPU), and the launcher logs them as a WARNING.
"""
from __future__ import annotations

import argparse
import re
from collections.abc import Iterable, Mapping, Sequence

from textgen_server.gaudi.config import ENV_NAMES as GAUDI_ENV_NAMES

# TGI's --quantize values (launcher/src/main.rs `enum Quantization`). None is implemented here.
TGI_QUANTIZE_METHODS = ("awq", "eetq", "exl2", "gptq", "marlin", "bitsandbytes", "bitsandbytes-nf4",
                        "bitsandbytes-fp4", "fp8")

# Every environment variable TGI's launcher reads (v3: its clap Args with `env`, and the ones main.rs reads itself).
TGI_LAUNCHER_ENV = (
    "MODEL_ID", "REVISION", "VALIDATION_WORKERS", "SHARDED", "NUM_SHARD", "QUANTIZE", "SPECULATE", "DTYPE",
    "KV_CACHE_DTYPE", "TRUST_REMOTE_CODE", "MAX_CONCURRENT_REQUESTS", "MAX_BEST_OF", "MAX_STOP_SEQUENCES",
    "MAX_TOP_N_TOKENS", "MAX_INPUT_TOKENS", "MAX_INPUT_LENGTH", "MAX_TOTAL_TOKENS", "WAITING_SERVED_RATIO",
    "MAX_BATCH_PREFILL_TOKENS", "MAX_BATCH_TOTAL_TOKENS", "MAX_WAITING_TOKENS", "MAX_BATCH_SIZE", "CUDA_GRAPHS",
    "HOSTNAME", "PORT", "PROMETHEUS_PORT", "SHARD_UDS_PATH", "MASTER_ADDR", "MASTER_PORT", "HUGGINGFACE_HUB_CACHE",
    "WEIGHTS_CACHE_OVERRIDE", "DISABLE_CUSTOM_KERNELS", "CUDA_MEMORY_FRACTION", "ROPE_SCALING", "ROPE_FACTOR",
    "JSON_OUTPUT", "OTLP_ENDPOINT", "OTLP_SERVICE_NAME", "CORS_ALLOW_ORIGIN", "API_KEY", "WATERMARK_GAMMA",
    "WATERMARK_DELTA", "NGROK", "NGROK_AUTHTOKEN", "NGROK_EDGE", "TOKENIZER_CONFIG_PATH", "DISABLE_GRAMMAR_SUPPORT",
    "MAX_CLIENT_BATCH_SIZE", "LORA_ADAPTERS", "USAGE_STATS", "PAYLOAD_LIMIT", "ENABLE_PREFILL_LOGPROBS",
    "GRACEFUL_TERMINATION_TIMEOUT", "PREFIX_CACHING", "ATTENTION", "HF_TOKEN", "HF_API_TOKEN", "LOG_LEVEL",
)

# Honoured without a flag of their own: the hub token (never a flag, so it stays out of `ps`) and the log level.
HONOURED_WITHOUT_FLAG = frozenset({"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "LOG_LEVEL"})

# name -> (why it is refused and what to do instead, values that ask for what this server does anyway).
REFUSED: dict[str, tuple[str, frozenset[str]]] = {
    "VALIDATION_WORKERS": ("requests are tokenized in the router's thread pool, whose size is not configurable",
                           frozenset()),
    "KV_CACHE_DTYPE": ("the KV cache is kept in the model's dtype; fp8 KV caches are not implemented", frozenset()),
    "MAX_INPUT_LENGTH": ("it is TGI's legacy name; set MAX_INPUT_TOKENS (--max-input-tokens)", frozenset()),
    "PROMETHEUS_PORT": ("metrics are served at /metrics on the HTTP port (--port)", frozenset()),
    "WEIGHTS_CACHE_OVERRIDE": ("set HUGGINGFACE_HUB_CACHE (--huggingface-hub-cache) instead", frozenset()),
    "DISABLE_CUSTOM_KERNELS": ("there are no custom kernels to disable (only 'true' is accepted)",
                               frozenset({"true", "1"})),
    "ROPE_SCALING": ("RoPE scaling comes from the model's config.json only", frozenset()),
    "ROPE_FACTOR": ("RoPE scaling comes from the model's config.json only", frozenset()),
    "OTLP_ENDPOINT": ("OpenTelemetry export is not implemented; scrape /metrics and read the logs", frozenset()),
    "OTLP_SERVICE_NAME": ("OpenTelemetry export is not implemented", frozenset()),
    "NGROK": ("ngrok tunnels are not implemented (only 'false' is accepted)", frozenset({"false", "0"})),
    "NGROK_AUTHTOKEN": ("ngrok tunnels are not implemented", frozenset()),
    "NGROK_EDGE": ("ngrok tunnels are not implemented", frozenset()),
    "TOKENIZER_CONFIG_PATH": ("the tokenizer and its chat template come from the model directory", frozenset()),
    "LORA_ADAPTERS": ("LoRA adapters are not implemented", frozenset()),
    "USAGE_STATS": ("this server sends no usage statistics (only 'off' is accepted)", frozenset({"off"})),
    "ENABLE_PREFILL_LOGPROBS": ("prompt logprobs (decoder_input_details) are always available (only 'true' is "
                                "accepted)", frozenset({"true", "1"})),
    "PREFIX_CACHING": ("set DISABLE_PREFIX_CACHING=true (--disable-prefix-caching) to turn the prefix cache off",
                       frozenset()),
    "ATTENTION": ("the attention kernel is chosen per device (models/attention.py) and is not selectable",
                  frozenset()),
    "HF_API_TOKEN": ("set HF_TOKEN instead", frozenset()),
}

# Accelerator runtime variables (what the operator emits per accelerator type) -> the device that reads them.
DEVICE_ENV: dict[str, str] = {
    # TGI on Gaudi's variables (gaudi/config.py: spec.gaudi's knobs, PROF_*, Habana's lazy-mode switches; the
    # launcher checks their values on every node), and the Open MPI setting of Habana's multi-card examples.
    **{name: "hpu" for name in (*GAUDI_ENV_NAMES, "OMPI_MCA_btl_vader_single_copy_mechanism")},
    "NCCL_IB_DISABLE": "cuda",
}


def refused_environment(environ: Mapping[str, str], honoured: Iterable[str]) -> list[str]:
    """One error per TGI variable that is set, not honoured, and not set to a value this server does anyway."""
    honoured_names = set(honoured) | HONOURED_WITHOUT_FLAG
    errors = []
    for name, (reason, inert_values) in REFUSED.items():
        value = environ.get(name)
        if value is None or name in honoured_names or value.strip().lower() in inert_values:
            continue
        errors.append(f"{name}={value!r} is a TGI setting this server does not honour: {reason}; unset {name}")
    return errors


def device_env_warnings(names: Iterable[str], device: str) -> tuple[str, ...]:
    """A warning naming the accelerator runtime variables set (`names`) for a device other than `device`: nothing
    reads them in this process, and saying so is what keeps them from being silently ignored."""
    unapplied = sorted(name for name in set(names) if name in DEVICE_ENV and DEVICE_ENV[name] != device)
    if not unapplied:
        return ()
    return (f"{', '.join(unapplied)} set but not applied: they configure another device's runtime, and the "
            f"shards run on {device}",)


def model_flag_problems(quantize: str | None) -> list[str]:
    """TGI's --quantize: accepted by the parser so that each value is refused by name here (--speculate is
    honoured: speculation/config.py checks it against the model)."""
    problems = []
    if quantize is not None:
        unknown = "" if quantize in TGI_QUANTIZE_METHODS else " (nor is it one of TGI's methods)"
        problems.append(f"--quantize {quantize} is not implemented: this server has no quantization method "
                        f"yet{unknown}; remove --quantize (QUANTIZE) and serve the model unquantized in --dtype")
    return problems


def honoured_environment(parser: argparse.ArgumentParser) -> frozenset[str]:
    """The environment variables the launcher's parser reads: every help text ends in `[env: NAME ...]`."""
    return frozenset(match.group(1) for action in parser._actions
                     for match in re.finditer(r"\[env: ([A-Z0-9_]+)", action.help or ""))


def repeated_flags(argv: Sequence[str], repeatable: Iterable[str]) -> list[str]:
    """Flags given more than once (argparse would keep the last one and silently drop the others)."""
    allowed = set(repeatable)
    seen: set[str] = set()
    repeated: list[str] = []
    for arg in argv:
        if not arg.startswith("--") or arg == "--":
            continue
        name = arg.split("=", 1)[0]
        if name in seen and name not in allowed and name not in repeated:
            repeated.append(name)
        seen.add(name)
    return repeated

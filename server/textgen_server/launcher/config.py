"""The launcher's one configuration object: TGI's flag names, each also read from TGI's environment variable.

Built once in `main` in two pure steps: `parse_args(argv, environ)` reads flags and environment into `LauncherArgs`
(model-independent), then `build_config(args, model_config)` fills the model-dependent defaults exactly as TGI
does (max input/total tokens from `max_position_embeddings`, prefill budget = max input + 50) and validates the
whole thing with errors a user can act on. Nothing else in the server reads the environment.
"""
from __future__ import annotations

import argparse
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from textgen_server import devices
from textgen_server.devices import DEVICE_CHOICES, OVERRIDE_ENV
from textgen_server.gaudi.config import ENV_NAMES as GAUDI_ENV_NAMES
from textgen_server.gaudi.config import GaudiConfig, GaudiConfigError, check_bucket_limits, parse_gaudi_env
from textgen_server.engine.buckets import BucketConfig, BucketError
from textgen_server.launcher import static_shapes, tgi_env
from textgen_server.speculation.config import SpeculationPlan
from textgen_server.launcher.parallel import (SINGLE_CPU, ParallelConfig, ParallelConfigError,
                                              build_parallel_config, visible_cpus)

# TGI's defaults (launcher/src/main.rs): 4096 / 4095 caps on the model's context when the user sets no limit.
DEFAULT_MAX_TOTAL_TOKENS_CAP = 4096
PREFILL_HEADROOM_TOKENS = 50
DEFAULT_DTYPES = ("float32", "float16", "bfloat16")
# --speculation-costs: how the adaptive rule prices verify steps (shard/verify_cost.py measures them).
SPECULATION_COSTS = ("measured", "flat")
# The environment textgen_server.devices reads: the development override and the visible accelerators.
DEVICE_ENV_VARS = (OVERRIDE_ENV, "CUDA_VISIBLE_DEVICES", "HABANA_VISIBLE_MODULES")


class ConfigError(ValueError):
    """A flag or environment value that cannot work; the message says which and what to do."""


@dataclass(frozen=True)
class LauncherArgs:
    """Flags and environment as given by the user, before model-dependent defaults are filled in."""

    model_id: str
    revision: str | None
    dtype: str | None
    num_shard: int | None          # None: TGI's default (1, or every visible device with --sharded true)
    max_concurrent_requests: int
    max_stop_sequences: int
    max_top_n_tokens: int
    max_input_tokens: int | None
    max_total_tokens: int | None
    waiting_served_ratio: float
    max_batch_prefill_tokens: int | None
    max_batch_total_tokens: int | None
    max_waiting_tokens: int
    max_batch_size: int | None
    hostname: str
    port: int
    shard_uds_path: str
    huggingface_hub_cache: str | None
    hf_token: str | None
    kv_cache_memory: int | None
    cuda_memory_fraction: float
    cuda_graphs: tuple[int, ...]
    graceful_termination_timeout: float
    shard_startup_timeout: float
    disable_prefix_caching: bool
    disable_grammar_support: bool = False  # TGI's flag: `grammar`, response_format and tools get a 422
    # TGI request limits (router/validation.py, router/routes_tgi_payload.py)
    max_best_of: int = 2
    max_client_batch_size: int = 4
    payload_limit: int = 2_000_000
    # TGI's watermark settings for requests with `watermark: true` (sampling/watermark.py)
    watermark_gamma: float = 0.5
    watermark_delta: float = 2.0
    # Operations (router/ops.py)
    json_output: bool = False
    api_key: str | None = None
    cors_allow_origin: tuple[str, ...] = ()
    # Tensor parallelism and the device (launcher/parallel.py, textgen_server/devices.py)
    sharded: bool | None = None
    device: str = "auto"
    master_addr: str = "localhost"
    master_port: int = 29500
    device_environ: tuple[tuple[str, str], ...] = ()   # the environment devices.py reads (override, visibility)
    # TGI's model flags: honoured (trust_remote_code, speculate: speculation/config.py) or refused by name (quantize)
    quantize: str | None = None
    speculate: int | None = None
    speculation_costs: str = "measured"   # measured | flat (SPECULATION_COSTS)
    trust_remote_code: bool = False
    device_env_names: tuple[str, ...] = ()   # accelerator runtime variables set (tgi_env.DEVICE_ENV)
    gaudi_environ: tuple[tuple[str, str], ...] = ()   # TGI on Gaudi's variables as set (gaudi/config.py)
    static_shapes: bool = False                        # launcher/static_shapes.py


@dataclass(frozen=True)
class LauncherConfig:
    """Everything the launcher, router and shards need, with every default resolved and validated."""

    args: LauncherArgs
    model_path: Path
    max_input_tokens: int
    max_total_tokens: int
    max_batch_prefill_tokens: int
    parallel: ParallelConfig = SINGLE_CPU  # shard count, device, rendezvous; set by build_config
    warnings: tuple[str, ...] = ()         # accepted but not applied here; the launcher logs each as a WARNING
    gaudi: GaudiConfig | None = None       # TGI on Gaudi's settings: parsed when one is set or the device is hpu
    buckets: BucketConfig | None = None    # --static-shapes: the bucket rules (block_size set after warmup)
    # --speculate against the model (speculation/config.py); with Medusa, model_path is the base model's directory
    speculation: SpeculationPlan = SpeculationPlan("off", 0)


def parse_bytes(text: str) -> int:
    """'2GiB' -> 2147483648, '512MB' -> 512000000, '1000' -> 1000; raises ConfigError on anything else."""
    units = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
             "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "ki": 2**10, "mi": 2**20, "gi": 2**30}
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if match is None or match.group(2).lower() not in units:
        raise ConfigError(f"--kv-cache-memory: cannot read {text!r} as a size; write bytes (1073741824) or a "
                          "number with a unit (512MiB, 2GiB, 1.5GB)")
    return int(float(match.group(1)) * units[match.group(2).lower()])


def _parse_bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise ValueError(f"{text!r} is not a boolean; write true or false")


def _optional(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    return lambda text: None if text == "" else kind(text)


# (flag, environment variable, type, default, help). The environment variable is TGI's where TGI has one.
_FLAGS: tuple[tuple[str, str, Callable[[str], Any], Any, str], ...] = (
    ("--model-id", "MODEL_ID", str, "bigscience/bloom-560m", "hub repo id or local model directory"),
    ("--revision", "REVISION", _optional(str), None, "hub revision (commit, branch or tag)"),
    ("--dtype", "DTYPE", _optional(str), None, "float32 | float16 | bfloat16 (default: float32 on CPU)"),
    ("--num-shard", "NUM_SHARD", _optional(int), None,
     "shard processes (tensor parallelism, one per device); must divide the model's heads (default: 1, or every "
     "visible device with --sharded true)"),
    ("--sharded", "SHARDED", _optional(_parse_bool), None,
     "true: shard the model (without --num-shard: over every visible device); false: refuse --num-shard > 1"),
    ("--device", "DEVICE", str, "auto",
     f"{' | '.join(DEVICE_CHOICES)}: auto = cuda if visible, else hpu, else cpu "
     f"({OVERRIDE_ENV}=cpu makes any device compute on the CPU, for development nodes)"),
    ("--master-addr", "MASTER_ADDR", str, "localhost", "torch.distributed rendezvous address of the shards"),
    ("--master-port", "MASTER_PORT", int, 29500, "torch.distributed rendezvous port of the shards"),
    ("--quantize", "QUANTIZE", _optional(str), None,
     f"TGI's quantization methods ({', '.join(tgi_env.TGI_QUANTIZE_METHODS)}): none is implemented yet, each is "
     "refused by name"),
    ("--speculate", "SPECULATE", _optional(int), None,
     "most speculative candidate tokens per request and step, verified in one forward pass (0 = off; fewer at low "
     "acceptance or large batches: speculation/adaptive.py): n-gram prompt lookup on any "
     "model; Medusa heads when --model-id is a Medusa repository (default and maximum: its medusa_num_heads)"),
    ("--speculation-costs", "SPECULATION_COSTS", str, "measured",
     "how --speculate prices a verify step: measured (the shards time steps of 1..K+1 query tokens at warmup, and "
     "candidates are proposed only where they pay on this hardware); flat (every step priced alike, as on a device "
     "bound by reading its weights: every candidate with any estimated chance is proposed, independent of "
     "timings, so runs are reproducible, e.g. for tests and benchmarks)"),
    ("--max-concurrent-requests", "MAX_CONCURRENT_REQUESTS", int, 128, "requests in flight before 429"),
    ("--max-stop-sequences", "MAX_STOP_SEQUENCES", int, 4, "most stop sequences a request may give"),
    ("--max-top-n-tokens", "MAX_TOP_N_TOKENS", int, 5, "largest top_n_tokens a request may ask"),
    # TGI request limits: best_of candidates, prompts per request, request body bytes (413 beyond).
    ("--max-best-of", "MAX_BEST_OF", int, 2, "largest best_of a request may ask"),
    ("--max-client-batch-size", "MAX_CLIENT_BATCH_SIZE", int, 4, "most prompts in one request"),
    ("--payload-limit", "PAYLOAD_LIMIT", int, 2_000_000, "largest request body in bytes (413 beyond)"),
    # TGI's watermark (Kirchenbauer et al.) for requests that send `watermark: true`; TGI's defaults.
    ("--watermark-gamma", "WATERMARK_GAMMA", float, 0.5,
     "fraction of the vocabulary in each green list of the watermark (the detector needs the same value)"),
    ("--watermark-delta", "WATERMARK_DELTA", float, 2.0, "logit bias the watermark adds to green tokens"),
    ("--max-input-tokens", "MAX_INPUT_TOKENS", _optional(int), None,
     "longest prompt in tokens (default: min(max_position_embeddings - 1, 4095))"),
    ("--max-total-tokens", "MAX_TOTAL_TOKENS", _optional(int), None,
     "longest prompt + max_new_tokens (default: min(max_position_embeddings, 4096))"),
    ("--waiting-served-ratio", "WAITING_SERVED_RATIO", float, 0.3,
     "waiting/running ratio at which a prefill may delay the running batch: new requests join a batch of B "
     "only in groups of floor(B * ratio) (TGI); the rest of a group that --max-batch-prefill-tokens cut short "
     "joins at the next steps"),
    ("--max-batch-prefill-tokens", "MAX_BATCH_PREFILL_TOKENS", _optional(int), None,
     "tokens one prefill step may compute (default: max input tokens + 50)"),
    ("--max-batch-total-tokens", "MAX_BATCH_TOTAL_TOKENS", _optional(int), None,
     "tokens the whole batch may hold in the KV cache (default: what the KV cache memory allows)"),
    ("--max-waiting-tokens", "MAX_WAITING_TOKENS", int, 20,
     "decode steps before waiting requests join whatever their number (see --waiting-served-ratio)"),
    ("--max-batch-size", "MAX_BATCH_SIZE", _optional(int), None, "most requests in one batch (default: no limit)"),
    ("--hostname", "HOSTNAME", str, "0.0.0.0", "address the HTTP server listens on"),
    ("--port", "PORT", int, 3000, "HTTP port"),
    ("--shard-uds-path", "SHARD_UDS_PATH", str, "/tmp/textgen-server", "shard socket prefix (<path>-<rank>)"),
    ("--huggingface-hub-cache", "HUGGINGFACE_HUB_CACHE", _optional(str), None, "hub download cache directory"),
    ("--kv-cache-memory", "KV_CACHE_MEMORY", _optional(parse_bytes), None,
     "KV cache size: bytes or 512MiB / 2GiB (default: 1 GiB per pod on cpu and for static shapes; on cuda 90%% of "
     "the device memory free after loading and the largest prefill, see --cuda-memory-fraction)"),
    # TGI's flag and variable: how much of the CUDA device this process may count as its own.
    ("--cuda-memory-fraction", "CUDA_MEMORY_FRACTION", float, 1.0,
     "on cuda without --kv-cache-memory: the share of each device this server may use (another process may hold "
     "the rest); the KV cache takes 90%% of what is free of that share after loading and the largest prefill"),
    # TGI's flag and variable. TGI captures 1,2,4,8,16,32 by default; here graphs stay off until they are measured
    # on a GPU (issue 15), so they are captured only when asked for.
    ("--cuda-graphs", "CUDA_GRAPHS", devices.parse_cuda_graph_sizes, (),
     "on cuda: batch sizes whose decode steps are captured as CUDA graphs at warmup and replayed, e.g. 1,2,4,8,16,32 "
     "(TGI's default); 0 or nothing: none (the default here); one shard, dynamic shapes only"),
    ("--graceful-termination-timeout", "GRACEFUL_TERMINATION_TIMEOUT", float, 60.0,
     "seconds in-flight requests may take to finish after SIGTERM"),
    ("--static-shapes", "TEXTGEN_STATIC_SHAPES", _parse_bool, False,
     "true: pad every forward pass to TGI on Gaudi's buckets (BATCH_BUCKET_SIZE, PREFILL_BATCH_BUCKET_SIZE, "
     "PAD_SEQUENCE_TO_MULTIPLE_OF) and run every shape before serving (WARMUP_ENABLED), on any device; needs a "
     "batch bound (--max-batch-size or --max-batch-total-tokens) and --speculate 0; always on with --device hpu"),
    ("--shard-startup-timeout", "SHARD_STARTUP_TIMEOUT", float, 600.0,
     "seconds to wait for shard sockets (model load) before giving up"),
)


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    """The argparse parser; each default comes from the flag's environment variable when that is set."""
    # No abbreviations (as TGI's clap): `--max-input 5` must not quietly mean --max-input-tokens.
    parser = argparse.ArgumentParser(prog="textgen-launcher", description="Serve a text-generation model "
                                     "(TGI-compatible HTTP API) with continuous batching.", allow_abbrev=False)
    for flag, env, kind, default, help_text in _FLAGS:
        env_value = environ.get(env)
        value = kind(env_value) if env_value is not None else default
        parser.add_argument(flag, type=kind, default=value, help=f"{help_text} [env: {env}] [default: {default}]")
    disable_env = environ.get("DISABLE_PREFIX_CACHING", "").lower() in ("1", "true", "yes")
    parser.add_argument("--disable-prefix-caching", action="store_true", default=disable_env,
                        help="turn off the KV prefix cache [env: DISABLE_PREFIX_CACHING]")
    grammar_env = environ.get("DISABLE_GRAMMAR_SUPPORT", "").lower() in ("1", "true", "yes")
    parser.add_argument("--disable-grammar-support", action="store_true", default=grammar_env,
                        help="refuse (422) constrained decoding: `grammar`, `response_format` other than text, "
                        "and `tools` [env: DISABLE_GRAMMAR_SUPPORT]")
    trust_env = environ.get("TRUST_REMOTE_CODE", "").lower() in ("1", "true", "yes")
    parser.add_argument("--trust-remote-code", action="store_true", default=trust_env,
                        help="let the tokenizer run code from the model repository (the model itself always runs "
                        "a built-in architecture) [env: TRUST_REMOTE_CODE]")
    _add_ops_flags(parser, environ)
    return parser


def _add_ops_flags(parser: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    """Operations flags (TGI's names and env vars): JSON logs, bearer API key, CORS origins."""
    json_env = environ.get("JSON_OUTPUT", "").lower() in ("1", "true", "yes")
    parser.add_argument("--json-output", action="store_true", default=json_env,
                        help="log one JSON object per line (with request ids) [env: JSON_OUTPUT]")
    parser.add_argument("--api-key", default=environ.get("API_KEY") or None,
                        help="require `Authorization: Bearer <key>` on the API routes; /health, /ping, /metrics "
                        "and /info stay open (prefer the env var: flags show in `ps`) [env: API_KEY]")
    env_origins = [environ["CORS_ALLOW_ORIGIN"]] if environ.get("CORS_ALLOW_ORIGIN") else []
    parser.add_argument("--cors-allow-origin", action="append", default=None,
                        help="an origin browsers may call from (repeat the flag or give a comma list; '*' for any) "
                        "[env: CORS_ALLOW_ORIGIN, comma list]")
    parser.set_defaults(_env_origins=env_origins)


def _origins(values: list[str]) -> tuple[str, ...]:
    return tuple(origin.strip() for value in values for origin in value.split(",") if origin.strip())


def parse_args(argv: Sequence[str], environ: Mapping[str, str]) -> LauncherArgs:
    """Reads flags (which win) and environment variables (TGI's names) into LauncherArgs."""
    try:
        parser = build_parser(environ)
        namespace = parser.parse_args(list(argv))
    except ValueError as error:  # a bad environment value; argparse handles bad flags itself
        raise ConfigError(f"an environment variable has an invalid value: {error}") from error
    refused = tgi_env.refused_environment(environ, tgi_env.honoured_environment(parser))
    refused += [f"{flag} is given more than once (only the last would count); give it once"
                for flag in tgi_env.repeated_flags(argv, ["--cors-allow-origin"])]
    if refused:
        raise ConfigError("; ".join(refused))
    values = vars(namespace)
    values["device_env_names"] = tuple(name for name in tgi_env.DEVICE_ENV if name in environ)
    values["gaudi_environ"] = tuple((name, environ[name]) for name in GAUDI_ENV_NAMES if name in environ)
    # The flag, when given, replaces the environment's list rather than adding to it.
    env_origins = values.pop("_env_origins")
    values["cors_allow_origin"] = _origins(values["cors_allow_origin"] or env_origins)
    token = environ.get("HF_TOKEN") or environ.get("HUGGING_FACE_HUB_TOKEN")
    if values["device"] not in DEVICE_CHOICES:
        raise ConfigError(f"--device {values['device']!r} is not one of {', '.join(DEVICE_CHOICES)}")
    values["device_environ"] = tuple((k, environ[k]) for k in DEVICE_ENV_VARS if k in environ)
    return LauncherArgs(hf_token=token, **values)


def build_config(args: LauncherArgs, model_path: Path, model_config: Mapping[str, Any]) -> LauncherConfig:
    """Fills TGI's model-dependent defaults from config.json and validates everything; raises ConfigError."""
    max_positions = _max_position_embeddings(model_config)
    max_total = args.max_total_tokens
    if max_total is None:
        max_total = min(max_positions or DEFAULT_MAX_TOTAL_TOKENS_CAP, DEFAULT_MAX_TOTAL_TOKENS_CAP)
        if args.max_input_tokens is not None and args.max_input_tokens >= max_total:
            max_total = args.max_input_tokens + 1
    max_input = args.max_input_tokens if args.max_input_tokens is not None else max_total - 1
    prefill = args.max_batch_prefill_tokens
    if prefill is None:
        prefill = max_input + PREFILL_HEADROOM_TOKENS
    try:  # before anything else: a shard count the heads do not divide is refused before weights load
        parallel = build_parallel_config(args.num_shard, args.sharded, args.device, args.master_addr,
                                         args.master_port, model_config, dict(args.device_environ), visible_cpus())
    except ParallelConfigError as error:
        raise ConfigError(str(error)) from error
    gaudi = _gaudi_config(args, parallel, max_input)
    buckets = None
    on_hpu = parallel.device.actual == "hpu"   # HPU graphs need static shapes: always on there
    if args.static_shapes or on_hpu:
        try:
            buckets = static_shapes.build_buckets(gaudi or GaudiConfig(), max_input, max_total, prefill,
                                                  args.max_batch_size, args.max_batch_total_tokens,
                                                  args.speculate or 0)
        except BucketError as error:
            flag = "--static-shapes" if args.static_shapes else "--device hpu (always static shapes)"
            raise ConfigError(f"{flag}: {error}") from error
    unapplied = set(args.device_env_names) - (static_shapes.APPLIED_ENV if buckets is not None else set())
    config = LauncherConfig(args=args, model_path=model_path, max_input_tokens=max_input,
                            max_total_tokens=max_total, max_batch_prefill_tokens=prefill, parallel=parallel,
                            gaudi=gaudi, buckets=buckets,
                            warnings=tgi_env.device_env_warnings(unapplied, parallel.device.actual))
    validate(config, max_positions)
    return config


def _gaudi_config(args: LauncherArgs, parallel: ParallelConfig, max_input: int) -> GaudiConfig | None:
    """TGI on Gaudi's variables, checked whenever one is set (a bad value is refused on every node, also where the
    device is overridden to the CPU and they are not applied) or the shards run on hpu. Not when the user asked
    for another device (--device cpu|cuda) without --static-shapes: they are then another device's runtime
    settings, inherited from the environment, and the launcher only warns that they are not applied."""
    if not args.gaudi_environ and parallel.device.actual != "hpu":
        return None
    if parallel.device.requested in ("cpu", "cuda") and not args.static_shapes:
        return None
    try:
        gaudi = parse_gaudi_env(dict(args.gaudi_environ), parallel.num_shard)
    except GaudiConfigError as error:
        raise ConfigError(str(error)) from error
    problems = check_bucket_limits(gaudi, max_input)
    if problems:
        raise ConfigError("; ".join(problems))
    return gaudi


def validate(config: LauncherConfig, max_position_embeddings: int | None) -> None:
    """Raises ConfigError naming the first inconsistent value and how to fix it."""
    for message in _problems(config, max_position_embeddings):
        raise ConfigError(message)


def _problems(config: LauncherConfig, max_positions: int | None) -> list[str]:
    args = config.args
    problems = tgi_env.model_flag_problems(args.quantize)
    if args.dtype is not None and args.dtype not in DEFAULT_DTYPES:
        problems.append(f"--dtype {args.dtype!r} is not one of {', '.join(DEFAULT_DTYPES)}")
    if config.max_input_tokens < 1:
        problems.append(f"--max-input-tokens must be at least 1, got {config.max_input_tokens}")
    if config.max_total_tokens <= config.max_input_tokens:
        problems.append(f"--max-total-tokens ({config.max_total_tokens}) must be greater than --max-input-tokens "
                        f"({config.max_input_tokens}) so that at least one token can be generated")
    if max_positions is not None and config.max_total_tokens > max_positions:
        problems.append(f"--max-total-tokens ({config.max_total_tokens}) exceeds the model's "
                        f"max_position_embeddings ({max_positions}); lower it to at most {max_positions}")
    if config.max_batch_prefill_tokens < 1:
        problems.append(f"--max-batch-prefill-tokens must be at least 1, got {config.max_batch_prefill_tokens}")
    total = args.max_batch_total_tokens
    if total is not None and total < config.max_total_tokens:
        problems.append(f"--max-batch-total-tokens ({total}) must be at least --max-total-tokens "
                        f"({config.max_total_tokens}) so that one full request fits")
    if total is not None and config.max_batch_prefill_tokens > total:
        problems.append(f"--max-batch-prefill-tokens ({config.max_batch_prefill_tokens}) must be at most "
                        f"--max-batch-total-tokens ({total})")
    problems.extend(_positive_problems(args))
    fraction = devices.memory_fraction_problem(args.cuda_memory_fraction, config.parallel.device.actual,
                                               args.kv_cache_memory is not None, config.buckets is not None)
    graphs = devices.cuda_graphs_problem(args.cuda_graphs, config.parallel.device.actual, config.buckets is not None,
                                         config.parallel.num_shard)
    problems.extend(problem for problem in (fraction, graphs) if problem)
    return problems


def _positive_problems(args: LauncherArgs) -> list[str]:
    checks = {"--max-concurrent-requests": args.max_concurrent_requests, "--max-batch-size": args.max_batch_size,
              "--max-best-of": args.max_best_of, "--max-client-batch-size": args.max_client_batch_size,
              "--payload-limit": args.payload_limit, "--kv-cache-memory": args.kv_cache_memory}
    problems = [f"{flag} must be positive, got {value}" for flag, value in checks.items()
                if value is not None and value <= 0]
    if args.max_waiting_tokens < 0:  # 0 is TGI's "admit waiting requests at every step"
        problems.append(f"--max-waiting-tokens must be >= 0, got {args.max_waiting_tokens}")
    if args.speculation_costs not in SPECULATION_COSTS:
        problems.append(f"--speculation-costs must be one of {', '.join(SPECULATION_COSTS)}, "
                        f"got {args.speculation_costs!r}")
    if args.waiting_served_ratio < 0:
        problems.append(f"--waiting-served-ratio must be >= 0, got {args.waiting_served_ratio}")
    if not 0 < args.port < 65536:
        problems.append(f"--port must be between 1 and 65535, got {args.port}")
    if not 0.0 < args.watermark_gamma < 1.0:  # also refuses NaN
        problems.append(f"--watermark-gamma must be strictly between 0 and 1 (the green fraction of the vocabulary), "
                        f"got {args.watermark_gamma}")
    if not (args.watermark_delta > 0.0 and math.isfinite(args.watermark_delta)):
        problems.append(f"--watermark-delta must be a positive finite logit bias, got {args.watermark_delta}")
    if args.graceful_termination_timeout < 0:
        problems.append(f"--graceful-termination-timeout must be >= 0, got {args.graceful_termination_timeout}")
    return problems


def _max_position_embeddings(model_config: Mapping[str, Any]) -> int | None:
    # Same fallbacks as TGI: different architectures name their context length differently.
    for key in ("max_position_embeddings", "max_seq_len", "n_positions"):
        value = model_config.get(key)
        if isinstance(value, int) and value > 0:
            return value
    return None

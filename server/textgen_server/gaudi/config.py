"""TGI on Gaudi's environment variables, read once into one typed, frozen config (torch-free).

Names, defaults and meanings are tgi-gaudi's (its README's "Environment Variables" and "Profiler" tables; the
router reads WARMUP_ENABLED, BATCH_BUCKET_SIZE, PREFILL_BATCH_BUCKET_SIZE, PAD_SEQUENCE_TO_MULTIPLE_OF,
SKIP_TOKENIZER_IN_TGI and QUEUE_THRESHOLD_MS; the Python server reads the rest). `VARIABLES` is the table; the
documentation table in server/docs/gaudi.md is checked against it by a test.

Two deliberate differences, both so that nothing is silently ignored:
- tgi-gaudi reads a boolean as `value.lower() == "true"`, so `ENABLE_HPU_GRAPH=1` or a typo means false there.
  Here true/false/1/0/yes/no are read (any case) and anything else is refused naming the variable.
- Combinations where one setting would make another do nothing are refused (LIMIT_HPU_GRAPH without HPU graphs,
  FLASH_ATTENTION_RECOMPUTE without USE_FLASH_ATTENTION, PROF_* without PROF_STEP > 0), as is
  SKIP_TOKENIZER_IN_TGI=true (token-id strings in place of text are not implemented).
"""
from __future__ import annotations

import glob
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


class GaudiConfigError(ValueError):
    """A Gaudi environment value that cannot work; the message names the variable, the value and what to do."""


@dataclass(frozen=True)
class ProfilerConfig:
    """PROF_*: habana_frameworks' torch profiler around serving steps (off unless PROF_STEP > 0)."""

    wait_steps: int = 0                  # PROF_WAITSTEP
    warmup_steps: int = 0                # PROF_WARMUPSTEP
    active_steps: int = 0                # PROF_STEP
    path: str = "/tmp/hpu_profile"       # PROF_PATH
    ranks: tuple[int, ...] = (0,)        # PROF_RANKS
    record_shapes: bool = False          # PROF_RECORD_SHAPES

    @property
    def enabled(self) -> bool:
        return self.active_steps > 0

    def profiles_rank(self, rank: int) -> bool:
        """Whether this rank records a trace (tgi-gaudi: only the ranks listed in PROF_RANKS)."""
        return self.enabled and rank in self.ranks


@dataclass(frozen=True)
class GaudiConfig:
    """Everything the Gaudi path reads from the environment, with tgi-gaudi's defaults."""

    enable_hpu_graph: bool = True            # ENABLE_HPU_GRAPH
    limit_hpu_graph: bool = False            # LIMIT_HPU_GRAPH: graphs for decode only
    batch_bucket_size: int = 8               # BATCH_BUCKET_SIZE (decode)
    prefill_batch_bucket_size: int = 4       # PREFILL_BATCH_BUCKET_SIZE
    pad_sequence_to_multiple_of: int = 128   # PAD_SEQUENCE_TO_MULTIPLE_OF
    skip_tokenizer_in_tgi: bool = False      # SKIP_TOKENIZER_IN_TGI (only false is accepted)
    warmup_enabled: bool = True              # WARMUP_ENABLED
    queue_threshold_ms: int = 120            # QUEUE_THRESHOLD_MS
    use_flash_attention: bool = False        # USE_FLASH_ATTENTION: Habana FusedSDPA for prefill attention
    flash_attention_recompute: bool = False  # FLASH_ATTENTION_RECOMPUTE
    quant_config: str | None = None          # QUANT_CONFIG: INC FP8 config path; None = bf16/fp32 as --dtype
    lazy_mode: bool = True                   # PT_HPU_LAZY_MODE (Habana's; only lazy mode, 1, is supported)
    lazy_collectives: bool = False           # PT_HPU_ENABLE_LAZY_COLLECTIVES (Habana's; needed with > 1 card)
    profiler: ProfilerConfig = field(default_factory=ProfilerConfig)

    @property
    def hpu_graphs_for_decode(self) -> bool:
        return self.enable_hpu_graph

    @property
    def hpu_graphs_for_prefill(self) -> bool:
        """LIMIT_HPU_GRAPH keeps prefill out of HPU graphs (their long-sequence graphs cost device memory)."""
        return self.enable_hpu_graph and not self.limit_hpu_graph


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ValueError("write true or false")


def _count(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise ValueError("write a whole number") from None
        if value < minimum:
            raise ValueError(f"it must be at least {minimum}")
        return value
    return parse


def _ranks(text: str) -> tuple[int, ...]:
    parts = [part.strip() for part in text.split(",")]
    if not parts or not all(part.isdigit() for part in parts):
        raise ValueError("write a comma-separated list of rank numbers, e.g. 0 or 0,1")
    return tuple(int(part) for part in parts)


def _optional_path(text: str) -> str | None:
    return text if text.strip() else None  # tgi-gaudi: an empty QUANT_CONFIG means no quantization


def _path(text: str) -> str:
    if not text.strip():
        raise ValueError("write a directory path")
    return text


@dataclass(frozen=True)
class GaudiVariable:
    """One row of the table: the environment name, the config field it fills, its parser and tgi-gaudi's default."""

    name: str
    field: str                      # attribute of GaudiConfig, or "profiler.<attribute>"
    parse: Callable[[str], Any]
    default: str                    # as tgi-gaudi documents it
    meaning: str


VARIABLES: tuple[GaudiVariable, ...] = (
    GaudiVariable("ENABLE_HPU_GRAPH", "enable_hpu_graph", _bool, "true",
                  "Capture the model's forward passes as HPU graphs (replayed per static shape)."),
    GaudiVariable("LIMIT_HPU_GRAPH", "limit_hpu_graph", _bool, "false",
                  "HPU graphs for decode only: prefill runs without graphs, saving device memory."),
    GaudiVariable("BATCH_BUCKET_SIZE", "batch_bucket_size", _count(1), "8",
                  "Decode batch sizes are rounded up to a multiple of this (bounds the number of graphs)."),
    GaudiVariable("PREFILL_BATCH_BUCKET_SIZE", "prefill_batch_bucket_size", _count(1), "4",
                  "Prefill batch sizes are rounded up to a multiple of this."),
    GaudiVariable("PAD_SEQUENCE_TO_MULTIPLE_OF", "pad_sequence_to_multiple_of", _count(1), "128",
                  "Prompt lengths are padded to a multiple of this (the last bucket is --max-input-tokens)."),
    GaudiVariable("SKIP_TOKENIZER_IN_TGI", "skip_tokenizer_in_tgi", _bool, "false",
                  "Inputs/outputs as comma-separated token ids instead of text. Not implemented: only false."),
    GaudiVariable("WARMUP_ENABLED", "warmup_enabled", _bool, "true",
                  "Run every static shape serving can produce before reporting ready."),
    GaudiVariable("QUEUE_THRESHOLD_MS", "queue_threshold_ms", _count(0), "120",
                  "Requests queued longer than this are admitted first; otherwise shorter prompts go first."),
    GaudiVariable("USE_FLASH_ATTENTION", "use_flash_attention", _bool, "false",
                  "Habana's fused scaled-dot-product attention (FusedSDPA) for prefill attention."),
    GaudiVariable("FLASH_ATTENTION_RECOMPUTE", "flash_attention_recompute", _bool, "false",
                  "FusedSDPA in recompute mode for the prefill (first token); needs USE_FLASH_ATTENTION."),
    GaudiVariable("QUANT_CONFIG", "quant_config", _optional_path, "(unset)",
                  "Intel Neural Compressor FP8 config (mode QUANTIZE) whose measured statistics exist."),
    GaudiVariable("PT_HPU_LAZY_MODE", "lazy_mode", _bool, "1",
                  "Habana's execution mode; only lazy mode (1) is supported, as HPU graphs need it."),
    GaudiVariable("PT_HPU_ENABLE_LAZY_COLLECTIVES", "lazy_collectives", _bool, "false",
                  "Habana's switch for HCCL collectives inside HPU graphs; required with more than one card."),
    GaudiVariable("PROF_WAITSTEP", "profiler.wait_steps", _count(0), "0", "Profiler: steps to skip first."),
    GaudiVariable("PROF_WARMUPSTEP", "profiler.warmup_steps", _count(0), "0",
                  "Profiler: steps traced but discarded before the recorded ones."),
    GaudiVariable("PROF_STEP", "profiler.active_steps", _count(0), "0",
                  "Profiler: steps recorded; 0 turns the profiler off."),
    GaudiVariable("PROF_PATH", "profiler.path", _path, "/tmp/hpu_profile", "Profiler: trace output directory."),
    GaudiVariable("PROF_RANKS", "profiler.ranks", _ranks, "0", "Profiler: comma-separated ranks that record."),
    GaudiVariable("PROF_RECORD_SHAPES", "profiler.record_shapes", _bool, "false",
                  "Profiler: record operator input shapes."),
)
ENV_NAMES: tuple[str, ...] = tuple(variable.name for variable in VARIABLES)


def parse_gaudi_env(environ: Mapping[str, str], num_shards: int = 1) -> GaudiConfig:
    """Reads the Gaudi variables of `environ` (unset ones keep the defaults); raises GaudiConfigError listing
    every bad value or combination. `num_shards` is the pod's card count (the collectives need a flag)."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    for variable in VARIABLES:
        text = environ.get(variable.name)
        if text is None:
            continue
        try:
            values[variable.field] = variable.parse(text)
        except ValueError as error:
            problems.append(f"{variable.name}={text!r} is invalid: {error}")
    if problems:
        raise GaudiConfigError("; ".join(problems))
    profiler = ProfilerConfig(**{key.split(".", 1)[1]: value for key, value in values.items()
                                 if key.startswith("profiler.")})
    config = GaudiConfig(profiler=profiler, **{key: value for key, value in values.items() if "." not in key})
    problems = _combination_problems(config, set(environ) & set(ENV_NAMES), num_shards)
    if problems:
        raise GaudiConfigError("; ".join(problems))
    return config


def _combination_problems(config: GaudiConfig, names_set: set[str], num_shards: int) -> list[str]:
    problems = []
    if config.limit_hpu_graph and not config.enable_hpu_graph:
        problems.append("LIMIT_HPU_GRAPH=true limits HPU graphs to decode, but ENABLE_HPU_GRAPH=false turns them "
                        "off: set ENABLE_HPU_GRAPH=true or unset LIMIT_HPU_GRAPH")
    if config.flash_attention_recompute and not config.use_flash_attention:
        problems.append("FLASH_ATTENTION_RECOMPUTE=true needs USE_FLASH_ATTENTION=true (it is a mode of the fused "
                        "attention); set both or unset FLASH_ATTENTION_RECOMPUTE")
    if config.skip_tokenizer_in_tgi:
        problems.append("SKIP_TOKENIZER_IN_TGI=true (inputs and outputs as comma-separated token ids) is not "
                        "implemented: send text, and unset SKIP_TOKENIZER_IN_TGI or set it to false")
    if not config.lazy_mode:
        problems.append("PT_HPU_LAZY_MODE=0 (eager/torch.compile mode) is not supported: the Gaudi backend runs in "
                        "lazy mode with HPU graphs; unset PT_HPU_LAZY_MODE or set it to 1")
    inert = sorted(names_set & {"PROF_WAITSTEP", "PROF_WARMUPSTEP", "PROF_PATH", "PROF_RANKS", "PROF_RECORD_SHAPES"})
    if inert and not config.profiler.enabled:
        problems.append(f"{', '.join(inert)} set but PROF_STEP is 0 (profiler off): set PROF_STEP to the number "
                        "of steps to record, or unset them")
    out_of_range = [rank for rank in config.profiler.ranks if rank >= num_shards]
    if config.profiler.enabled and out_of_range:
        problems.append(f"PROF_RANKS={','.join(map(str, config.profiler.ranks))} names rank(s) {out_of_range} but "
                        f"there are {num_shards} shard(s) (ranks 0..{num_shards - 1}); list existing ranks")
    if num_shards > 1 and config.enable_hpu_graph and not config.lazy_collectives:
        problems.append(f"{num_shards} Gaudi shards with HPU graphs need PT_HPU_ENABLE_LAZY_COLLECTIVES=true (HCCL "
                        "collectives inside graphs); set it, or ENABLE_HPU_GRAPH=false")
    return problems


def check_bucket_limits(config: GaudiConfig, max_input_tokens: int) -> list[str]:
    """Problems of the buckets against the launcher's limits (tgi-gaudi asserts the first one at prefill)."""
    if config.pad_sequence_to_multiple_of > max_input_tokens:
        return [f"PAD_SEQUENCE_TO_MULTIPLE_OF={config.pad_sequence_to_multiple_of} exceeds --max-input-tokens "
                f"({max_input_tokens}): no prompt could be padded to it; lower it to at most {max_input_tokens}"]
    return []


def check_quant_config(path: str, cwd: str | None = None) -> dict[str, Any]:
    """QUANT_CONFIG must name an INC FP8 config in QUANTIZE mode whose measurement (MEASURE mode's dump files,
    `<dump_stats_path>_hooks_*`) exists; returns the parsed JSON or raises GaudiConfigError saying what to do.
    Relative paths are relative to `cwd` (the process's working directory), as INC reads them."""
    base = cwd or os.getcwd()
    full = os.path.join(base, path)
    try:
        with open(full, encoding="utf-8") as handle:
            document = json.load(handle)
    except (OSError, json.JSONDecodeError) as error:
        raise GaudiConfigError(f"QUANT_CONFIG={path!r}: cannot read it as JSON ({error}); point it at an Intel "
                               "Neural Compressor FP8 config such as optimum-habana's maxabs_quant.json") from None
    if not isinstance(document, dict) or str(document.get("mode", "")).upper() != "QUANTIZE":
        mode = document.get("mode") if isinstance(document, dict) else None
        raise GaudiConfigError(f"QUANT_CONFIG={path!r} has mode {mode!r}: serving needs a QUANTIZE config; run the "
                               "MEASURE config with optimum-habana's measurement script first, then point "
                               "QUANT_CONFIG at the matching QUANTIZE config")
    prefix = document.get("dump_stats_path")
    if not isinstance(prefix, str) or not prefix:
        raise GaudiConfigError(f"QUANT_CONFIG={path!r} names no dump_stats_path: INC cannot find the measured "
                               "statistics; add the dump_stats_path the measurement wrote")
    stats_prefix = os.path.join(base, prefix)
    if not glob.glob(glob.escape(stats_prefix) + "_hooks_*"):
        raise GaudiConfigError(f"QUANT_CONFIG={path!r}: no measured statistics at {prefix}_hooks_* (relative to "
                               f"{base}); run the measurement (MEASURE mode) for this model and card count first, "
                               "or unset QUANT_CONFIG to serve in --dtype")
    return document

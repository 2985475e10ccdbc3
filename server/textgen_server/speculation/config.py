"""Which speculation a server runs, decided once from the model directory and --speculate (torch-free).

- A Medusa repository (config.json has `medusa_num_heads`, `medusa_num_layers`, `base_model_name_or_path`; heads
  in `medusa_lm_head.safetensors`, TGI's layout): Medusa, with --speculate defaulting to the number of heads and
  refused above it. The base model is resolved from `base_model_name_or_path` (a directory or a hub id).
- Any other model: n-gram prompt lookup when --speculate N > 0 (see ngram.py), off otherwise.
The launcher calls `plan_speculation` before any shard starts (so a malformed Medusa repository fails before
serving), and passes the result to the shards as `--speculate N [--medusa-path DIR]`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


MEDUSA_WEIGHTS = "medusa_lm_head.safetensors"
MAX_SPECULATE = 16  # candidates per step; beyond it the verify pass costs more than it can save


class SpeculationConfigError(ValueError):
    """--speculate or a Medusa repository cannot be used; the message names the value and the fix."""


@dataclass(frozen=True)
class MedusaConfig:
    """A Medusa repository: its heads and the base model they were trained on."""

    path: Path
    num_heads: int
    num_layers: int
    base_model_id: str


@dataclass(frozen=True)
class SpeculationPlan:
    """method "off" (num_tokens 0), "ngram" or "medusa" (then `medusa` is set); num_tokens = candidates per step."""

    method: str
    num_tokens: int
    medusa: MedusaConfig | None = None


def read_medusa_config(model_dir: Path) -> MedusaConfig | None:
    """The Medusa facts of `model_dir`, None when it is not a Medusa repository; raises when it is a broken one."""
    raw: dict[str, Any] = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    medusa_keys = ("medusa_num_heads", "medusa_num_layers")
    if not any(key in raw for key in medusa_keys):
        return None
    where = f"Medusa repository {model_dir}"
    for key in medusa_keys:
        value = raw.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise SpeculationConfigError(f"{where}: config.json {key} must be an integer >= 1, got {value!r}")
    base = raw.get("base_model_name_or_path")
    if not isinstance(base, str) or not base:
        raise SpeculationConfigError(
            f"{where}: config.json needs base_model_name_or_path (the base model's directory or hub id), got {base!r}"
        )
    if not (model_dir / MEDUSA_WEIGHTS).is_file():
        found = sorted(p.name for p in model_dir.glob("medusa_lm_head*"))
        hint = f" (found {found}: only safetensors are loaded; convert the heads)" if found else ""
        raise SpeculationConfigError(f"{where}: the heads file {MEDUSA_WEIGHTS} is missing{hint}")
    return MedusaConfig(model_dir, raw["medusa_num_heads"], raw["medusa_num_layers"], base)


def plan_speculation(model_dir: Path, speculate: int | None) -> SpeculationPlan:
    """The one decision: Medusa for a Medusa repository, n-gram for --speculate > 0 on any other model."""
    if speculate is not None and not 0 <= speculate <= MAX_SPECULATE:
        raise SpeculationConfigError(
            f"--speculate {speculate} is out of range: use 0 (off) to {MAX_SPECULATE} candidate tokens per step"
        )
    medusa = read_medusa_config(model_dir)
    if medusa is None:
        return SpeculationPlan("ngram", speculate) if speculate else SpeculationPlan("off", 0)
    if speculate is None:
        speculate = medusa.num_heads  # TGI's default for a Medusa model
    if speculate > medusa.num_heads:
        raise SpeculationConfigError(
            f"--speculate {speculate} exceeds the {medusa.num_heads} Medusa heads of {model_dir}: each candidate"
            f" comes from one head; set --speculate (SPECULATE) to at most {medusa.num_heads}"
        )
    if speculate == 0:
        return SpeculationPlan("off", 0)
    return SpeculationPlan("medusa", speculate, medusa)


def check_medusa_heads(medusa: MedusaConfig, hidden_size: int, vocab_size: int) -> None:
    """Refuses heads whose tensors do not fit the base model, from the safetensors header alone (no torch)."""
    path = medusa.path / MEDUSA_WEIGHTS
    try:
        with open(path, "rb") as file:
            header_len = int.from_bytes(file.read(8), "little")
            header: dict[str, Any] = json.loads(file.read(header_len))
    except (OSError, ValueError) as error:
        raise SpeculationConfigError(f"cannot read the Medusa heads {path}: {error}") from error
    found = {key: tuple(value["shape"]) for key, value in header.items() if key != "__metadata__"}
    expected = expected_medusa_shapes(medusa.num_heads, medusa.num_layers, hidden_size, vocab_size)
    if found != expected:
        wrong = sorted(k for k in set(found) ^ set(expected)) + sorted(
            f"{k} {found[k]} (expected {expected[k]})" for k in set(found) & set(expected) if found[k] != expected[k])
        raise SpeculationConfigError(
            f"{path} does not fit medusa_num_heads={medusa.num_heads}, medusa_num_layers={medusa.num_layers} and the"
            f" base model {medusa.base_model_id} (hidden size {hidden_size}, vocabulary {vocab_size}): missing,"
            f" unexpected or misshapen tensors {wrong[:6]}; the heads must be trained for this base model"
        )


def expected_medusa_shapes(num_heads: int, num_layers: int, hidden_size: int,
                           vocab_size: int) -> dict[str, tuple[int, ...]]:
    """TGI's layout: `{h}.{l}.linear.weight/bias` per residual block, `{h}.{num_layers}.weight` the projection."""
    shapes: dict[str, tuple[int, ...]] = {}
    for head in range(num_heads):
        for layer in range(num_layers):
            shapes[f"{head}.{layer}.linear.weight"] = (hidden_size, hidden_size)
            shapes[f"{head}.{layer}.linear.bias"] = (hidden_size,)
        shapes[f"{head}.{num_layers}.weight"] = (vocab_size, hidden_size)
    return shapes

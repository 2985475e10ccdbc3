"""Load one rank's slices of a safetensors checkpoint into a tensor-parallel model skeleton.

The skeleton is built on the meta device (no memory), models/tp.py swaps its modules for rank-local ones, then
every parameter is read with `safe_open(...).get_slice(name)[start:stop]` (rows) or `[:, start:stop]`
(columns): a rank materialises only its part of each sharded weight, so its resident weight memory is about
1/N of the sharded weights plus the replicated norms.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from textgen_server.models.tp import SliceSpec, apply_tensor_parallel


def checkpoint_files(path: Path) -> dict[str, Path]:
    """{tensor name: safetensors file} for a single-file or index-sharded checkpoint."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return {name: path / file for name, file in weight_map.items()}
    single = path / "model.safetensors"
    with safe_open(str(single), framework="pt") as handle:
        return {name: single for name in handle.keys()}


def build_sharded_model(model_class: type[PreTrainedModel], path: Path, dtype: torch.dtype, device: torch.device,
                        attn_implementation: str, rank: int, world_size: int) -> PreTrainedModel:
    """The model with this rank's slices of every weight, in eval mode on `device`."""
    config = model_class.config_class.from_pretrained(path)
    config._attn_implementation = attn_implementation
    with torch.device("meta"):
        model = model_class(config).to(dtype)
    plan = apply_tensor_parallel(model, rank, world_size)
    load_slices(model, checkpoint_files(path), plan, dtype, device)
    if getattr(config, "tie_word_embeddings", False):
        # Both are this rank's vocabulary block, so tying the slices ties the whole.
        model.get_output_embeddings().weight = model.get_input_embeddings().weight
    _rebuild_meta_buffers(model, config, device)
    _check_materialised(model)
    return model.eval()


def load_slices(model: nn.Module, files: dict[str, Path], plan: dict[str, SliceSpec], dtype: torch.dtype,
                device: torch.device) -> None:
    """Reads every parameter the model has from the checkpoint, sliced per `plan` (whole when absent)."""
    wanted = {name for name, _ in model.named_parameters()}
    by_file: dict[Path, list[str]] = {}
    for name in wanted & files.keys():
        by_file.setdefault(files[name], []).append(name)
    for file, names in by_file.items():
        with safe_open(str(file), framework="pt") as handle:
            for name in names:
                # A copy: a tensor that shares the file's memory map would keep the map, and every page that a
                # strided column slice touched, resident for the life of the model.
                tensor = _read(handle, name, plan.get(name)).to(dtype=dtype, device=device, copy=True)
                module_name, _, leaf = name.rpartition(".")
                setattr(model.get_submodule(module_name), leaf, nn.Parameter(tensor, requires_grad=False))


def _read(handle: Any, name: str, spec: SliceSpec | None) -> torch.Tensor:
    if spec is None:
        return handle.get_tensor(name)
    sliced = handle.get_slice(name)
    part = sliced[spec.start:spec.stop] if spec.dim == 0 else sliced[:, spec.start:spec.stop]
    missing = spec.size - (spec.stop - spec.start)
    if missing > 0:  # the last vocabulary block of an uneven vocabulary: zero rows that no id selects
        part = torch.cat([part, part.new_zeros(missing, *part.shape[1:])])
    return part


def _rebuild_meta_buffers(model: nn.Module, config: PretrainedConfig, device: torch.device) -> None:
    """Non-persistent buffers (rotary inv_freq) are not in the checkpoint: compute them again, for real."""
    for name, module in list(model.named_modules()):
        if any(buffer.is_meta for buffer in module.buffers(recurse=False)):
            if not hasattr(module, "inv_freq"):
                raise RuntimeError(f"{name} has buffers the sharded loader cannot rebuild")
            parent_name, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent_name), leaf, type(module)(config=config).to(device))


def _check_materialised(model: nn.Module) -> None:
    missing = [name for name, p in model.named_parameters() if p.is_meta]
    if missing:
        raise ValueError(f"the checkpoint lacks {len(missing)} weight(s) the model needs, e.g. {missing[:3]}")

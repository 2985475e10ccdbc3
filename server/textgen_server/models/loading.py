"""Load a checkpoint directory (already resolved by models.hub) into a model ready for paged inference."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PretrainedConfig, PreTrainedModel

from textgen_server.models.attention import register_paged_attention
from textgen_server.models.hub import check_checkpoint_dir
from textgen_server.models.kv_cache import BLOCK_SIZE, KVCacheShape
from textgen_server.models.registry import model_class_for
from textgen_server.models.sharded_loading import build_sharded_model

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    # Not a serving dtype (the launcher's --dtype does not offer it): float64 checkpoints, such as the test models
    # that compare tensor-parallel output with transformers exactly, run as stored with --dtype auto.
    "float64": torch.float64,
}


@dataclass(frozen=True)
class LoadedModel:
    """A model in eval mode on its device, with the facts the runner and the router need."""

    model: PreTrainedModel
    config: PretrainedConfig
    dtype: torch.dtype
    eos_token_ids: list[int]
    sliding_window: int | None
    world_size: int = 1  # tensor-parallel ranks: this rank holds 1/world_size of the KV heads

    def kv_cache_shape(self, block_size: int = BLOCK_SIZE) -> KVCacheShape:
        """The KV cache geometry this model needs."""
        config = self.config
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        num_kv_heads = (config.num_key_value_heads or config.num_attention_heads) // self.world_size
        return KVCacheShape(config.num_hidden_layers, num_kv_heads, head_dim, block_size, self.dtype)


def load_model(path: str | Path, dtype: str = "auto", device: str | torch.device = "cpu", rank: int = 0,
               world_size: int = 1) -> LoadedModel:
    """Load the safetensors checkpoint at `path` in `dtype` ("float32", "bfloat16", "float16" or "auto":
    the checkpoint's own dtype, float32 when it names none) onto `device`, with paged attention.

    With world_size > 1 only rank `rank`'s tensor-parallel slices are read (models/tp.py); the process group
    must be initialised before the model runs."""
    path = check_checkpoint_dir(Path(path), str(path))
    raw_config = json.loads((path / "config.json").read_text())
    model_class = model_class_for(raw_config.get("model_type", "<missing>"))
    torch_dtype = resolve_dtype(dtype, raw_config)
    if world_size > 1:
        model = build_sharded_model(model_class, path, torch_dtype, torch.device(device),
                                    register_paged_attention(), rank, world_size)
    else:
        model = model_class.from_pretrained(
            path, dtype=torch_dtype, attn_implementation=register_paged_attention(), use_safetensors=True
        )
        model = model.to(device).eval()
    return LoadedModel(
        model=model,
        config=model.config,
        dtype=torch_dtype,
        eos_token_ids=read_eos_token_ids(path, raw_config),
        sliding_window=sliding_window_of(model.config),
        world_size=world_size,
    )


def resolve_dtype(dtype: str, raw_config: dict[str, Any]) -> torch.dtype:
    """The torch dtype for --dtype; "auto" follows config.json's torch_dtype (or dtype), else float32."""
    if dtype == "auto":
        dtype = raw_config.get("dtype") or raw_config.get("torch_dtype") or "float32"
    if dtype not in DTYPES:
        serving = [name for name in DTYPES if name != "float64"]  # what --dtype offers
        raise ValueError(f"unsupported dtype {dtype!r}; choose one of {', '.join([*serving, 'auto'])} for --dtype")
    return DTYPES[dtype]


def read_eos_token_ids(path: Path, raw_config: dict[str, Any]) -> list[int]:
    """EOS ids from generation_config.json (int or list), falling back to config.json; may be empty."""
    generation_config_path = path / "generation_config.json"
    eos: Any = None
    if generation_config_path.is_file():
        eos = json.loads(generation_config_path.read_text()).get("eos_token_id")
    if eos is None:
        eos = raw_config.get("eos_token_id")
    if eos is None:
        return []
    return sorted({int(e) for e in (eos if isinstance(eos, list) else [eos])})


def sliding_window_of(config: PretrainedConfig) -> int | None:
    """The sliding window every layer uses, or None when some layer (or all) attends to the full context."""
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    if window is None or (layer_types is not None and any(t != "sliding_attention" for t in layer_types)):
        return None
    if getattr(config, "use_sliding_window", True) is False:
        return None
    return int(window)

"""Supported architectures: config.json model_type -> the transformers class that runs it.

All of them run through the same paged attention (models/attention.py); adding an architecture whose
transformers implementation calls the attention-function registry is one line here.
"""
from __future__ import annotations

from transformers import LlamaForCausalLM, MistralForCausalLM, PreTrainedModel, Qwen2ForCausalLM

ARCHITECTURES: dict[str, type[PreTrainedModel]] = {
    "llama": LlamaForCausalLM,
    "mistral": MistralForCausalLM,
    "qwen2": Qwen2ForCausalLM,
}


class UnsupportedArchitectureError(ValueError):
    """config.json names a model_type this server cannot run."""


def model_class_for(model_type: str) -> type[PreTrainedModel]:
    """The transformers class for `model_type`, or an error naming the supported ones."""
    if model_type not in ARCHITECTURES:
        raise UnsupportedArchitectureError(
            f"model_type {model_type!r} is not supported; supported architectures: {', '.join(sorted(ARCHITECTURES))}"
        )
    return ARCHITECTURES[model_type]

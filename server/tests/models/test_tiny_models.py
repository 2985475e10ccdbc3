"""The offline tiny models are real checkpoints: transformers loads them, tokenizers round-trip UTF-8."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from textgen_server.testing import build_tiny_model

ARCHS = ["llama", "mistral", "qwen2"]


@pytest.mark.parametrize("arch", ARCHS)
def test_transformers_loads_the_tiny_model(tiny_model_dir, arch: str) -> None:
    path = tiny_model_dir(arch)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    assert model.config.model_type == arch
    assert model.config.vocab_size == len(tokenizer)
    assert (path / "model.safetensors").exists()
    generation_config = json.loads((path / "generation_config.json").read_text())
    assert tokenizer.convert_tokens_to_ids("</s>") in generation_config["eos_token_id"]


@pytest.mark.parametrize("arch", ARCHS)
def test_tokenizer_round_trips_multibyte_text(tiny_model_dir, arch: str) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir(arch))
    text = "Grüße aus München 🚀 我们的服务器 👨‍👩‍👧 ∑ π"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    # Some merges must split inside multi-byte characters for incremental detokenization tests to mean much.
    assert any("\ufffd" in tokenizer.decode([i]) for i in ids)


def test_chat_template_renders(tiny_llama_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
    assert rendered == "<|user|>hi<|end|><|assistant|>"


def test_same_seed_same_weights_other_seed_differs(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    a = load_file(build_tiny_model(tmp_path / "a", "llama", seed=3) / "model.safetensors")
    b = load_file(build_tiny_model(tmp_path / "b", "llama", seed=3) / "model.safetensors")
    c = load_file(build_tiny_model(tmp_path / "c", "llama", seed=4) / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_mistral_window_is_smaller_than_test_prompts(tiny_mistral_dir: Path) -> None:
    config = json.loads((tiny_mistral_dir / "config.json").read_text())
    assert config["sliding_window"] == 32

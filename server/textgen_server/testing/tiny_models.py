"""Offline tiny random-weight models for tests, benchmarks and the quickstart.

`build_tiny_model` writes a real model directory (config.json, generation_config.json, model.safetensors and a
tokenizer trained on the spot) that `transformers.AutoModelForCausalLM/AutoTokenizer.from_pretrained` load like a
hub checkpoint. Everything is deterministic for a seed. Weights are initialised with a large standard deviation so
that next-token logits are far apart: float32 greedy decoding is then robust to the summation-order differences
between our paged attention and transformers' own, and a mismatch in a test means a real bug.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    MistralConfig,
    PretrainedConfig,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

from textgen_server.testing.corpus import build_corpus

BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"
PAD_TOKEN = "<pad>"
CHAT_TOKENS = ("<|user|>", "<|assistant|>", "<|system|>", "<|end|>")
SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, *CHAT_TOKENS)

# A minimal chat template in the usual Jinja form; "<|end|>" closes each turn and is a second EOS id, as many
# chat models have (generation_config.eos_token_id is then a list).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)

# Small but not trivial: GQA (4 query heads on 2 KV heads), 2 layers, head_dim 16.
COMMON_CONFIG: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 1024,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "initializer_range": 0.2,
}

ARCH_CONFIGS: dict[str, Callable[..., PretrainedConfig]] = {
    "llama": lambda **kw: LlamaConfig(**{"tie_word_embeddings": False, **kw}),
    # A window smaller than typical test prompts, so paged attention must honour it.
    "mistral": lambda **kw: MistralConfig(**{"sliding_window": 32, "tie_word_embeddings": False, **kw}),
    # Qwen2 has biases on q/k/v projections and usually ties embeddings.
    "qwen2": lambda **kw: Qwen2Config(**{"tie_word_embeddings": True, "use_sliding_window": False, **kw}),
}

LOGIT_GAIN = 4.0

# Real Llama/Mistral tokenizers prepend BOS; Qwen2's does not. Keep that difference so the router meets both.
ADDS_BOS = {"llama": True, "mistral": True, "qwen2": False}


def build_tiny_tokenizer(vocab_size: int = 768, add_bos: bool = True) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on the built-in corpus (deterministic; any UTF-8 text round-trips)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(build_corpus(), trainer=trainer)
    if add_bos:
        bos_id = tokenizer.token_to_id(BOS_TOKEN)
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{BOS_TOKEN} $A", pair=f"{BOS_TOKEN} $A {BOS_TOKEN} $B", special_tokens=[(BOS_TOKEN, bos_id)]
        )
    else:
        tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        additional_special_tokens=list(CHAT_TOKENS),
        chat_template=CHAT_TEMPLATE,
    )


def build_tiny_config(arch: str, tokenizer: PreTrainedTokenizerBase, **overrides: Any) -> PretrainedConfig:
    """The model config for `arch` sized to the tokenizer; `overrides` replace any field (e.g. sliding_window)."""
    if arch not in ARCH_CONFIGS:
        raise ValueError(f"unknown tiny-model arch {arch!r}; choose one of {sorted(ARCH_CONFIGS)}")
    eos_ids = [tokenizer.convert_tokens_to_ids(EOS_TOKEN), tokenizer.convert_tokens_to_ids("<|end|>")]
    fields = {
        **COMMON_CONFIG,
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.convert_tokens_to_ids(BOS_TOKEN),
        "eos_token_id": eos_ids,
        "pad_token_id": tokenizer.convert_tokens_to_ids(PAD_TOKEN),
        **overrides,
    }
    return ARCH_CONFIGS[arch](**fields)


def build_tiny_model(path: str | Path, arch: str = "llama", seed: int = 0, dtype: str = "float32",
                     tokenizer_vocab_size: int = 768, **overrides: Any) -> Path:
    """Write a random-weight `arch` model ("llama", "mistral" or "qwen2") with its tokenizer into `path`.

    `overrides` replace config fields (e.g. `sliding_window=16`, `num_hidden_layers=4`, `hidden_size=512`).
    `dtype` is the stored (and, with --dtype auto, served) dtype: "float64" makes comparisons whose summation
    order differs (tensor parallelism) exact for all practical purposes. `tokenizer_vocab_size` sizes the BPE
    vocabulary, hence the model's (e.g. 765 for a vocabulary no shard count divides).
    Returns the directory. The same (arch, seed, dtype, sizes, overrides) always gives the same files' contents.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    build_tiny_tokenizer(vocab_size=tokenizer_vocab_size, add_bos=ADDS_BOS.get(arch, True)).save_pretrained(path)
    _pin_tokenizer_class(path)
    # Size the model to the tokenizer as transformers loads it for this model type: for some types (qwen2) it
    # picks the family's own class, which may add a special token.
    (path / "config.json").write_text(json.dumps({"model_type": arch}))
    tokenizer = AutoTokenizer.from_pretrained(path)
    config = build_tiny_config(arch, tokenizer, **overrides)
    model = _build_random_model(config, seed).to(getattr(torch, dtype))
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.bos_token_id = config.bos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    model.save_pretrained(path)
    return path


def _build_random_model(config: PretrainedConfig, seed: int) -> torch.nn.Module:
    # A local generator state: other tests' use of the global RNG must not change the weights.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    # A larger final-norm gain scales every logit (tied or untied lm_head alike), widening the gaps between the
    # best and second-best token without making the output degenerate.
    with torch.no_grad():
        model.model.norm.weight.mul_(LOGIT_GAIN)
    return model.eval()


def _pin_tokenizer_class(path: Path) -> None:
    """Load the saved tokenizer.json as is, not through the model family's own tokenizer class."""
    config_path = path / "tokenizer_config.json"
    tokenizer_config = json.loads(config_path.read_text())
    tokenizer_config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(tokenizer_config, indent=2, ensure_ascii=False) + "\n")

"""Helpers for the tensor-parallel tests: a cached float64 reference that also records how close its greedy
choices were (the smallest top-2 logit gap), and the launcher flags that give each rank its own rendezvous port."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from server_testlib import free_port

# The float64 pipeline's own error (ours vs transformers) is ~1e-12 on these logits; a gap above this bound
# cannot be crossed by summation order, so equal tokens are a meaningful check.
# 8 attention heads on 4 KV heads (head_dim 8) split over 2 or 4 ranks; vocabularies 765 (llama, mistral) and
# 766 (qwen2's tokenizer adds one) divide by neither 2 nor 4 (qwen2: not 4), so the padded last block is exercised.
TP_MODEL_OVERRIDES: dict[str, Any] = {"dtype": "float64", "tokenizer_vocab_size": 765,
                                      "num_attention_heads": 8, "num_key_value_heads": 4}
MIN_MEANINGFUL_GAP = 1e-6


def tp_flags(num_shard: int) -> list[str]:
    """--num-shard N with a free rendezvous port (tests run beside other launchers on the default 29500)."""
    return ["--num-shard", str(num_shard), "--master-port", str(free_port()), "--device", "cpu"]


class ReferenceCache:
    """transformers' float64 `generate(do_sample=False)`, cached per (model, prompt, max_new_tokens)."""

    def __init__(self) -> None:
        self._models: dict[Path, Any] = {}
        self._tokenizers: dict[Path, Any] = {}
        self._results: dict[tuple[Path, tuple[int, ...], int], list[int]] = {}
        self.min_gap = float("inf")

    def tokenizer(self, model_dir: Path) -> Any:
        if model_dir not in self._tokenizers:
            from transformers import AutoTokenizer

            self._tokenizers[model_dir] = AutoTokenizer.from_pretrained(model_dir)
        return self._tokenizers[model_dir]

    def greedy(self, model_dir: Path, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
        key = (model_dir, tuple(prompt_ids), max_new_tokens)
        if key not in self._results:
            self._results[key] = self._generate(model_dir, prompt_ids, max_new_tokens)
        return self._results[key]

    def _generate(self, model_dir: Path, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
        import torch

        model = self._model(model_dir)
        with torch.no_grad():
            output = model.generate(torch.tensor([prompt_ids]), attention_mask=torch.ones(1, len(prompt_ids),
                                    dtype=torch.long), do_sample=False, max_new_tokens=max_new_tokens,
                                    min_new_tokens=0, output_scores=True, return_dict_in_generate=True)
        for scores in output.scores:  # [1, V] per generated token
            top2 = scores[0].topk(2).values
            self.min_gap = min(self.min_gap, float(top2[0] - top2[1]))
        return [int(t) for t in output.sequences[0, len(prompt_ids):]]

    def _model(self, model_dir: Path) -> Any:
        if model_dir not in self._models:
            import torch
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float64).eval()
            self._models[model_dir] = model
        return self._models[model_dir]

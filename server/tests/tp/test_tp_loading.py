"""The tensor-parallel pass and the sharded loader, in process (no collectives run while loading): each rank's
modules have 1/N of the rows or columns, and hold exactly those slices of the checkpoint (zero-padded vocabulary
rows on the last rank, Qwen2's q/k/v biases sliced with their weights, tied embeddings still tied)."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from textgen_server.models.attention import register_paged_attention
from textgen_server.models.registry import model_class_for
from textgen_server.models.sharded_loading import build_sharded_model
from textgen_server.models.tp import RowParallelLinear, VocabParallelEmbedding, VocabParallelLMHead, vocab_split


def _load(model_dir, arch: str, rank: int, world_size: int):  # type: ignore[no-untyped-def]
    return build_sharded_model(model_class_for(arch), model_dir, torch.float64, torch.device("cpu"),
                               register_paged_attention(), rank, world_size)


def test_vocab_blocks_cover_an_uneven_vocabulary() -> None:
    blocks = [vocab_split(765, rank, 4) for rank in range(4)]
    assert [(b.start, b.stop, b.size) for b in blocks] == [(0, 192, 192), (192, 384, 192), (384, 576, 192),
                                                           (576, 765, 192)]


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_each_rank_holds_exactly_its_slices(arch: str, tp_model_dir) -> None:
    model_dir = tp_model_dir(arch)
    full = load_file(str(model_dir / "model.safetensors"))
    vocab = full["model.embed_tokens.weight"].shape[0]
    for rank in range(4):
        model = _load(model_dir, arch, rank, 4)
        attention, mlp = model.model.layers[1].self_attn, model.model.layers[1].mlp
        q_rows, kv_rows, mlp_rows = 8 * 8 // 4, 4 * 8 // 4, 128 // 4  # heads x head_dim / N, intermediate / N
        prefix = "model.layers.1."
        assert torch.equal(attention.q_proj.weight, full[prefix + "self_attn.q_proj.weight"][rank * q_rows:][:q_rows])
        assert torch.equal(attention.v_proj.weight, full[prefix + "self_attn.v_proj.weight"][rank * kv_rows:][:kv_rows])
        assert torch.equal(mlp.up_proj.weight, full[prefix + "mlp.up_proj.weight"][rank * mlp_rows:][:mlp_rows])
        assert isinstance(attention.o_proj, RowParallelLinear) and isinstance(mlp.down_proj, RowParallelLinear)
        o_proj, down_proj = full[prefix + "self_attn.o_proj.weight"], full[prefix + "mlp.down_proj.weight"]
        assert torch.equal(attention.o_proj.weight, o_proj[:, rank * q_rows:][:, :q_rows])
        assert torch.equal(mlp.down_proj.weight, down_proj[:, rank * mlp_rows:][:, :mlp_rows])
        if arch == "qwen2":  # q/k/v biases are sliced with their rows; embeddings stay tied
            assert torch.equal(attention.k_proj.bias, full[prefix + "self_attn.k_proj.bias"][rank * kv_rows:][:kv_rows])
            assert model.lm_head.weight is model.model.embed_tokens.weight
        block = vocab_split(vocab, rank, 4)
        assert isinstance(model.model.embed_tokens, VocabParallelEmbedding)
        assert isinstance(model.lm_head, VocabParallelLMHead)
        embed = model.model.embed_tokens.weight
        assert embed.shape[0] == block.size
        assert torch.equal(embed[:block.stop - block.start], full["model.embed_tokens.weight"][block.start:block.stop])
        assert not embed[block.stop - block.start:].any()  # the padding rows of an uneven vocabulary
        assert torch.equal(model.model.norm.weight, full["model.norm.weight"])  # replicated
        assert not any(p.is_meta for p in model.parameters()) and not any(b.is_meta for b in model.buffers())


def test_heads_that_do_not_divide_are_refused_by_the_pass_too(tp_model_dir) -> None:
    with pytest.raises(ValueError, match="model has 8 attention heads, not divisible by 3 shards"):
        _load(tp_model_dir("llama"), "llama", 0, 3)

"""A Medusa repository built offline (tests/speculation, hack/bench-speculation.py): heads fitted in seconds to the
base model's own greedy continuations.

The repository is what TGI loads: config.json with medusa_num_heads, medusa_num_layers and
base_model_name_or_path (here the base model's directory), and medusa_lm_head.safetensors in TGI's layout.
Head h learns, from the base model's last hidden state at position t, the token at t + 2 + h of the greedy
continuations of `prompts`; the projections start from the base LM head, as Medusa training does.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

from textgen_server.speculation.config import MEDUSA_WEIGHTS
from textgen_server.speculation.medusa import MedusaHeads

FIT_STEPS = 150


def build_medusa_repo(path: Path, base_dir: Path, prompts: list[list[int]], num_new_tokens: int,
                      num_heads: int = 3, num_layers: int = 1) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float64).eval()
    hidden, targets = _training_data(base, prompts, num_new_tokens, num_heads)
    heads = MedusaHeads(base.config.hidden_size, base.config.vocab_size, num_heads, num_layers).double()
    with torch.no_grad():
        for head in heads.heads:
            head[-1].weight.copy_(base.get_output_embeddings().weight)
            for block in head[:-1]:
                block.linear.weight.zero_()
                block.linear.bias.zero_()
    _fit(heads, hidden, targets)
    save_file(heads.state_dict_for_file(), str(path / MEDUSA_WEIGHTS), metadata={"format": "pt"})
    config = {"medusa_num_heads": num_heads, "medusa_num_layers": num_layers, "base_model_name_or_path": str(base_dir)}
    (path / "config.json").write_text(json.dumps(config))
    return path


def _training_data(base: torch.nn.Module, prompts: list[list[int]], num_new_tokens: int,
                   num_heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    rows, targets = [], []
    with torch.no_grad():
        for prompt in prompts:
            output = base.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                   do_sample=False, max_new_tokens=num_new_tokens, min_new_tokens=num_new_tokens)
            tokens = output[0]
            hidden = base.model(input_ids=tokens.unsqueeze(0)).last_hidden_state[0]  # after the final norm
            last = len(tokens) - 1 - num_heads - 1
            positions = torch.arange(len(prompt) - 1, last + 1)
            rows.append(hidden[positions])
            targets.append(torch.stack([tokens[positions + 2 + h] for h in range(num_heads)], dim=1))
    return torch.cat(rows), torch.cat(targets)


def _fit(heads: MedusaHeads, hidden: torch.Tensor, targets: torch.Tensor) -> None:
    optimizer = torch.optim.Adam(heads.parameters(), lr=1e-2)
    for _ in range(FIT_STEPS):
        logits = heads(hidden)  # [N, heads, V]
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    heads.eval()



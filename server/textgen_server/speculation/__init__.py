"""Speculative decoding: proposers of candidate tokens (n-gram, Medusa) and the one place that picks them.

Torch-free at the package level: `config` (the choice, read by the launcher and the shard) and `ngram` are pure
Python; `medusa` and `proposer` (the shard's side) import torch and are imported only by the shard.
"""

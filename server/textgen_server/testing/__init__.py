"""Offline test fixtures: tiny random-weight models with a real tokenizer (see tiny_models.py)."""
from textgen_server.testing.tiny_models import build_tiny_model, build_tiny_tokenizer

__all__ = ["build_tiny_model", "build_tiny_tokenizer"]

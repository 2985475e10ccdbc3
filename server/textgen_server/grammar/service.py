"""The router's grammar checker: TGI grammar objects -> checked llguidance grammar text, cached, off the loop.

Routes `await service.prepare(grammar)` before their (synchronous) validation: that compiles in a worker thread
and caches the outcome, so `service.compile(grammar)` inside validation is a dictionary lookup. The llguidance
tokenizer is built on first use (about 10 ms for a small vocabulary, ~1 s for 150k tokens), also off the loop.
"""
from __future__ import annotations

import asyncio
import json
import threading
from collections import OrderedDict
from typing import Any, Callable

import llguidance

from textgen_server.grammar.compile import (CACHE_SIZE, GrammarCompiler, GrammarError, build_ll_tokenizer,
                                           hf_tokenizer_json)


class GrammarService:
    """Thread-safe; one per server."""

    def __init__(self, build_tokenizer: Callable[[], llguidance.LLTokenizer]) -> None:
        self._build_tokenizer = build_tokenizer
        self._compiler: GrammarCompiler | None = None
        self._results: OrderedDict[str, str | GrammarError] = OrderedDict()
        self._lock = threading.Lock()

    def compile(self, grammar: Any) -> str:
        """Checked llguidance grammar text for TGI's grammar object; raises GrammarError with the reason."""
        key = _key(grammar)
        with self._lock:
            result = self._results.get(key)
            if result is not None:
                self._results.move_to_end(key)
        if result is None:
            result = self._compile_uncached(grammar)
            with self._lock:
                self._results[key] = result
                while len(self._results) > CACHE_SIZE:
                    self._results.popitem(last=False)
        if isinstance(result, GrammarError):
            raise result
        return result

    async def prepare(self, grammar: Any) -> None:
        """Compile in a worker thread so that compile() afterwards finds the result cached."""
        try:
            await asyncio.to_thread(self.compile, grammar)
        except GrammarError:
            pass  # cached; validation raises it as a 422

    def _compile_uncached(self, grammar: Any) -> str | GrammarError:
        try:
            return self._require_compiler().compile(grammar)
        except GrammarError as error:
            return error

    def _require_compiler(self) -> GrammarCompiler:
        with self._lock:
            if self._compiler is None:
                self._compiler = GrammarCompiler(self._build_tokenizer())
            return self._compiler


def _key(grammar: Any) -> str:
    try:
        return json.dumps(grammar, sort_keys=True)
    except (TypeError, ValueError):
        return repr(grammar)


def build_grammar_service(disabled: bool, tokenizer: Any, vocab_size: int,
                          eos_token_ids: list[int]) -> GrammarService | None:
    """The server's checker, or None with --disable-grammar-support (grammar requests then get a 422)."""
    if disabled:
        return None
    return GrammarService(lambda: build_ll_tokenizer(hf_tokenizer_json(tokenizer), vocab_size, eos_token_ids))

"""From a request's grammar to llguidance's grammar text, checked against the tokenizer (router side).

`build_grammar` is pure: TGI's `{"type": "json" | "json_object" | "json_schema" | "regex", "value": ...}` (or the
OpenAI `response_format` forms mapped onto it) -> llguidance's grammar text, or GrammarError naming the problem.
`GrammarCompiler.compile` then builds a real matcher with the server's tokenizer under explicit limits, so a grammar
that cannot be built (unsupported JSON Schema keyword, bad regex, too large) fails here and not on the shard; its
results (text or error) are cached per grammar, and it is meant to run in a worker thread (llguidance drops the GIL
while it builds).
"""
from __future__ import annotations

import copy
import json
import threading
from collections import OrderedDict
from typing import Any

import llguidance

MAX_GRAMMAR_BYTES = 64 * 1024        # of the grammar's JSON/regex text; a larger one is refused, not truncated
CACHE_SIZE = 256                     # compiled grammars kept (LRU); a tool set or schema repeats across requests
# JSON as the compact form a model is likely to continue: no free whitespace between tokens (a random or weak
# model would otherwise fill its budget with spaces). A schema may override it with llguidance's "x-guidance".
JSON_OPTIONS: Any = {"whitespace_flexible": False}  # llguidance.JsonCompileOptions
# Bounds on what one grammar may cost; past them the compile fails with llguidance's message (-> 422).
MAX_GRAMMAR_SIZE, MAX_LEXER_STATES, INITIAL_LEXER_FUEL = 200_000, 100_000, 1_000_000


class GrammarError(ValueError):
    """The grammar cannot be used; answered 422 with the reason."""


def build_grammar(grammar: Any) -> str:
    """TGI's grammar object -> llguidance grammar text (not yet checked against a tokenizer)."""
    if not isinstance(grammar, dict) or not isinstance(grammar.get("type"), str):
        raise GrammarError('`grammar` must be an object {"type": "json" | "regex", "value": ...}, '
                           f"got {_short(grammar)}")
    kind = grammar["type"]
    if kind == "json_schema":  # TGI's OpenAI-style form: {"type": "json_schema", "value": {"name", "schema"}}
        config = grammar.get("value")
        if not isinstance(config, dict) or "schema" not in config:
            raise GrammarError('`grammar` of type "json_schema" needs "value": {"name": ..., "schema": {...}}')
        return json_schema_grammar(config["schema"])
    if "value" not in grammar:
        raise GrammarError(f'`grammar` of type "{kind}" needs a "value"')
    value = grammar["value"]
    if kind in ("json", "json_object"):
        return json_schema_grammar(value)
    if kind == "regex":
        if not isinstance(value, str) or not value:
            raise GrammarError(f"`grammar` regex must be a non-empty string, got {_short(value)}")
        _check_size(value)
        return llguidance.LLMatcher.grammar_from_regex(value)
    raise GrammarError(f'`grammar` type {kind!r} is not supported: use "json" (a JSON Schema) or "regex"')


def json_schema_grammar(schema: Any) -> str:
    """A JSON Schema (an object, or a string holding one, as TGI accepts) -> llguidance grammar text."""
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as error:
            raise GrammarError(f"the JSON Schema is not valid JSON: {error}") from None
    if isinstance(schema, bool) or not isinstance(schema, dict):
        raise GrammarError(f"the JSON Schema must be a JSON object, got {_short(schema)}")
    _check_size(json.dumps(schema))
    return llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=JSON_OPTIONS)


def any_json_object_grammar() -> str:
    """OpenAI's `response_format: {"type": "json_object"}`: any JSON object."""
    return json_schema_grammar({"type": "object"})


def _check_size(text: str) -> None:
    size = len(text.encode("utf-8"))
    if size > MAX_GRAMMAR_BYTES:
        raise GrammarError(f"the grammar is {size} bytes, over this server's limit of {MAX_GRAMMAR_BYTES} bytes; "
                           "send a smaller schema or regex")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class GrammarCompiler:
    """Checks grammars against one tokenizer, caching each result. Thread-safe (called from worker threads)."""

    def __init__(self, tokenizer: llguidance.LLTokenizer) -> None:
        self.tokenizer = tokenizer
        self.limits = llguidance.LLParserLimits(max_grammar_size=MAX_GRAMMAR_SIZE, max_lexer_states=MAX_LEXER_STATES,
                                               initial_lexer_fuel=INITIAL_LEXER_FUEL, verbose_errors=False)
        self._cache: OrderedDict[str, str | None] = OrderedDict()   # grammar text -> error (None = valid)
        self._lock = threading.Lock()

    def check(self, grammar_text: str) -> str:
        """Returns grammar_text when a matcher builds from it; raises GrammarError with llguidance's reason."""
        with self._lock:
            if grammar_text in self._cache:
                self._cache.move_to_end(grammar_text)
                error = self._cache[grammar_text]
                return _raise_or(grammar_text, error)
        matcher = llguidance.LLMatcher(self.tokenizer, grammar_text, log_level=0, limits=self.limits)
        error = matcher.get_error() if matcher.is_error() else None
        if error is None and not _has_first_mask(matcher):
            error = "the grammar allows no token at all with this tokenizer"
        with self._lock:
            self._cache[grammar_text] = error
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return _raise_or(grammar_text, error)

    def compile(self, grammar: Any) -> str:
        """TGI's grammar object -> checked llguidance grammar text."""
        return self.check(build_grammar(grammar))


def _has_first_mask(matcher: llguidance.LLMatcher) -> bool:
    """Computing the first mask also runs the lexer's first step, where resource limits show up."""
    mask = matcher.compute_bitmask()
    return not matcher.is_error() and any(mask)


def _raise_or(grammar_text: str, error: str | None) -> str:
    if error is not None:
        raise GrammarError(f"the grammar is not valid: {error.strip()}")
    return grammar_text


def build_ll_tokenizer(tokenizer_json: str, vocab_size: int, eos_token_ids: list[int]) -> llguidance.LLTokenizer:
    """llguidance's view of a Hugging Face fast tokenizer (its tokenizer.json text). `vocab_size` is the model's
    logit width (it may exceed the tokenizer's); `eos_token_ids` are the ids that end a sequence, all of which a
    complete grammar allows."""
    return llguidance.LLTokenizer(tokenizer_json, n_vocab=vocab_size, eos_token=eos_token_ids)


def hf_tokenizer_json(tokenizer: Any) -> str:
    """The tokenizer.json text of a transformers fast tokenizer (added tokens included), without the padding and
    truncation settings that would change how llguidance tokenizes."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise GrammarError(f"constrained decoding needs a fast (tokenizers-based) tokenizer; this model's is "
                           f"{type(tokenizer).__name__}: start the server with --disable-grammar-support")
    backend = copy.copy(backend)
    backend.no_padding()
    backend.no_truncation()
    return str(backend.to_str())

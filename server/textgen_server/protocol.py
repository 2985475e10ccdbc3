"""Plain data shared by the router and the shards (no torch, no grpc).

These mirror server/proto/shard.proto one to one; textgen_server.shard.convert maps between the two. The
router's engine produces StepItems, a shard's ModelRunner consumes them and returns Generations.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class WatermarkParams:
    """Kirchenbauer et al.'s green-list watermark as TGI applies it (defaults: TGI's WATERMARK_GAMMA/DELTA)."""

    gamma: float = 0.5             # fraction of the vocabulary in each green list
    delta: float = 2.0             # logit bias added to green tokens


@dataclass(frozen=True)
class SamplingParams:
    """How to choose the next token. Defaults mean "off", so SamplingParams() is greedy."""

    temperature: float = 1.0
    top_k: int = 0                 # 0 = off
    top_p: float = 1.0             # 1.0 = off
    typical_p: float = 1.0         # 1.0 = off
    do_sample: bool = False        # False = greedy (argmax after penalties)
    seed: int = 0                  # meaningful only with do_sample; the router draws one when the user gave none
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    top_n_tokens: int = 0          # alternatives returned with each chosen token
    watermark: WatermarkParams | None = None  # None = off
    grammar: str = ""              # llguidance grammar text (router-checked); "" = unconstrained


@dataclass(frozen=True)
class StepItem:
    """The tokens one request computes in one forward step (a prompt chunk or a single decode token)."""

    request_id: int
    token_ids: list[int]           # computed at positions start_pos, start_pos + 1, ...
    start_pos: int
    block_ids: list[int]           # the request's whole block table
    sample: bool                   # sample a next token from the last position
    # Present on the first item since (re)admission; the shard (re)starts the request's state then.
    params: SamplingParams | None = None
    prefix_token_ids: list[int] = field(default_factory=list)  # positions [0, start_pos), with params only
    num_prompt_tokens: int = 0     # with params only
    # Compute prompt logprobs for this item's tokens (every chunk of the first prefill, from start_pos 0); the
    # shard returns them all on the Generation of the request's sampling item (see shard.proto).
    prefill_logprobs: bool = False
    # Speculative decoding: the last `num_speculative` entries of token_ids are candidate tokens (a decode item is
    # then [current token, c1..cK]); the shard samples at every one of those positions and returns one Generation
    # per accepted candidate plus the token chosen after the last match (see shard.proto).
    num_speculative: int = 0


@dataclass(frozen=True)
class Token:
    id: int
    logprob: float


@dataclass(frozen=True)
class Generation:
    """A sampled token for one StepItem that had sample=True (a speculative item gets one per accepted token)."""

    request_id: int
    token: Token
    top_tokens: list[Token] = field(default_factory=list)
    # log P(prompt[i] | prompt[:i]) for i = 1 .. len(prompt) - 1, only on the first Generation of a request
    # whose items asked for prefill_logprobs; empty otherwise.
    prefill_logprobs: list[float] = field(default_factory=list)
    # Candidates for the request's next step (speculative decoding), on the last Generation of its item only.
    speculative_ids: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class WarmupSpec:
    max_input_tokens: int
    max_total_tokens: int
    max_prefill_tokens: int
    max_batch_size: int | None = None
    kv_cache_memory_bytes: int | None = None     # None: the backend decides
    max_batch_total_tokens: int | None = None    # None: derive from memory


@dataclass(frozen=True)
class WarmupResult:
    num_blocks: int
    block_size: int
    max_supported_total_tokens: int
    duration_seconds: float


@dataclass(frozen=True)
class ModelInfo:
    model_type: str
    dtype: str
    device_type: str
    vocab_size: int
    eos_token_ids: list[int]
    max_position_embeddings: int
    block_size: int
    sliding_window: int | None
    num_shards: int = 1
    rank: int = 0

"""Intel Gaudi (device `hpu`): TGI-on-Gaudi's environment, and the backend that applies it.

- `config` (torch-free): the one typed reading of TGI on Gaudi's environment variables (ENABLE_HPU_GRAPH,
  BATCH_BUCKET_SIZE, ..., PROF_*), with their names, defaults and meaning; bad values are refused by name.
- `plan` (torch-free): what the backend does for one rank, as data.
- `runner`: `load_backend` (plan, Habana runtime variables, then the backend import) and `HpuRunner`, the shard's
  runner on `hpu`.
- `backend`: the only module that imports `habana_frameworks` and `neural_compressor`. It is imported only when the
  shard's device is `hpu`; importing it elsewhere fails without the Habana stack (tests/gaudi prove the isolation).

The runner decision. Our engine is a paged KV cache with continuous batching: the router hands out KV blocks and
the model's attention layers call `models/attention.py`'s paged attention, which reads and writes those blocks.
optimum-habana's `adapt_transformers_to_gaudi` swaps in model classes with their own static KV cache and attention
(`token_idx`, `reuse_cache`, ...): calling it and then running our paged runner would compute with a cache the
router does not manage, so it is not called, and no optimum-habana model class or forward kwarg is used. TGI's
own Gaudi backend made the same split: its paged "flash" models (backends/gaudi/server/text_generation_server/
models/flash_causal_lm.py, TGI 3.x) are its own modules with HPU paged-attention ops (layers/attention/hpu.py:
FusedSDPA for prefill, vllm-hpu-extension's flat_pa for decode), wrapped with `wrap_in_hpu_graph(model,
disable_tensor_cache=True)`, `bypass_hpu_graphs` for prefill with LIMIT_HPU_GRAPH, `mark_step` after the forward
and `hccl` for the ranks; optimum-habana's classes served only its older non-paged CausalLM, which TGI removed
(PR #3261 "[Gaudi] Remove optimum-habana", June 2025: causal_lm.py and the optimum-habana dependency).

So the `hpu` shard runs shard/static_runner.py's static-shape paged runner (every forward pass padded to a warmed
bucket shape, which HPU graphs need), on stock transformers modules with our paged attention, and the backend adds:
FusedSDPA for prefill attention with USE_FLASH_ATTENTION (recompute mode with FLASH_ATTENTION_RECOMPUTE; decode
stays on torch SDPA over the gathered blocks, padded to a static block-table width: vllm-hpu-extension is not
used), `wrap_in_hpu_graph` around the step module with ENABLE_HPU_GRAPH (prefill bypassing it with
LIMIT_HPU_GRAPH), `htcore.mark_step()` after each forward pass, HCCL between ranks (PT_HPU_ENABLE_LAZY_COLLECTIVES
with graphs), FP8 through Intel Neural Compressor with QUANT_CONFIG, and torch.profiler (CPU + HPU activity) for
PROF_*. The image therefore installs no optimum-habana (images/README.md).

Not run on a Gaudi card: none is available to this project. tests/gaudi/ runs all of it on the CPU against
recording stand-ins for habana_frameworks and neural_compressor (test_backend_calls.py, test_hpu_shard.py).

The static shapes the HPU graphs need (batch and sequence buckets, the warmup's shape list) are pure arithmetic in
`textgen_server.engine.buckets`; the overdue-first admission order of QUEUE_THRESHOLD_MS is
`textgen_server.engine.queue_policy`.
"""

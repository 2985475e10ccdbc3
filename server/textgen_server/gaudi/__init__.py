"""Intel Gaudi (device `hpu`): TGI-on-Gaudi's environment, and the backend that applies it.

- `config` (torch-free): the one typed reading of TGI on Gaudi's environment variables (ENABLE_HPU_GRAPH,
  BATCH_BUCKET_SIZE, ..., PROF_*), with their names, defaults and meaning; bad values are refused by name.
- `backend`: the only module that imports `habana_frameworks` and `optimum.habana`. It is imported only when the
  shard's device is `hpu`; importing it elsewhere fails without the Habana stack (tests/gaudi prove the isolation).

The static shapes the HPU graphs need (batch and sequence buckets, the warmup's shape list) are pure arithmetic in
`textgen_server.engine.buckets`; the overdue-first admission order of QUEUE_THRESHOLD_MS is
`textgen_server.engine.queue_policy`.
"""

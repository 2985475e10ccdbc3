"""Next-token choice on the shard: logits processors, seeded sampling, logprobs (see sampler.py)."""
from textgen_server.sampling.sampler import RequestState, sample_batch

__all__ = ["RequestState", "sample_batch"]

"""The watermark with speculative decoding: at every verified position the green list is seeded by the token
before it (the candidate), so seeded watermarked sampling with speculation gives the very tokens it gives
without, and the watermark is really applied (the output differs from the same seed unwatermarked)."""
from __future__ import annotations

from pathlib import Path

from spec_testlib import EngineRun, Job, echo_prompts, random_prompts
from textgen_server.protocol import SamplingParams, WatermarkParams


def test_watermarked_seeded_sampling_with_speculation_equals_no_speculation(repetitive_model_dir) -> None:
    model_dir: Path = repetitive_model_dir("llama")
    plain_engine = EngineRun(model_dir, speculate=0)
    prompts = echo_prompts(plain_engine, random_prompts(4, 10, 700, seed=47))

    def jobs(watermark: WatermarkParams | None) -> list[Job]:
        return [Job(p, 40, arrival_step=i, params=SamplingParams(do_sample=True, seed=300 + i, watermark=watermark))
                for i, p in enumerate(prompts)]

    marked = plain_engine.run(jobs(WatermarkParams(gamma=0.5, delta=2.0)))
    speculative = EngineRun(model_dir, speculate=3).run(jobs(WatermarkParams(gamma=0.5, delta=2.0)))
    assert speculative.outputs == marked.outputs
    assert speculative.num_accepted > 0 and speculative.num_rejected > 0
    assert plain_engine.run(jobs(None)).outputs != marked.outputs

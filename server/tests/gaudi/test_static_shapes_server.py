"""--static-shapes through the real `textgen-launcher` on 127.0.0.1: the server tier's greedy workload (24
concurrent requests of 1..300 prompt tokens, half streamed, arriving one after another) gives transformers'
tokens, and the shard warmed its shapes (its log line). A step outside the warmed shapes would be refused by the
shard (shard/static_runner.py) and fail its requests, so exactness also means no such step was served."""
from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))   # the server tier's helpers

from server_testlib import Launch, ReferenceModels  # noqa: E402
from server_workload import build_jobs, run_jobs  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture
def reference() -> ReferenceModels:
    return ReferenceModels()


@pytest.fixture
def launch(tmp_path: Path) -> Launch:
    from contextlib import ExitStack

    from server_testlib import launcher_factory
    with ExitStack() as stack:
        yield launcher_factory(tmp_path, stack)


def test_static_shapes_server_matches_transformers(tiny_llama_dir: Path, launch: Launch,
                                                   reference: ReferenceModels) -> None:
    server = launch(tiny_llama_dir, "--static-shapes", "true", "--max-batch-size", "8", "--max-input-tokens",
                    "320", "--max-total-tokens", "400", "--max-batch-prefill-tokens", "640")
    jobs = build_jobs(reference.tokenizer(tiny_llama_dir))
    results = asyncio.run(run_jobs(server.base_url, jobs))
    mismatches = [len(job.prompt_ids) for job, result in zip(jobs, results)
                  if result["token_ids"] != reference.greedy(tiny_llama_dir, job.prompt_ids, job.max_new_tokens)]
    assert mismatches == [], f"requests with these prompt lengths differ from transformers: {mismatches}"
    warmed = re.search(r"static shapes: (\d+) warmed in ([\d.]+) s", server.log())
    # defaults 8 / 4 / 128: sequence buckets 128, 256, 320 hold 5, 2, 2 prompts (640 // bucket) -> prefill batches
    # 4 and 8 at 128, 4 at 256 and 320; decode batch 8: 5 shapes
    assert warmed is not None and int(warmed.group(1)) == 5, server.log()[-3000:]

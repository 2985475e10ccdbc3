"""The real shard process over real gRPC on a unix socket: every RPC, error statuses, SIGTERM, fatal start."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import torch
from transformers import AutoModelForCausalLM

from textgen_server.pb import shard_pb2 as pb
from textgen_server.pb import shard_pb2_grpc as pb_grpc
from textgen_server.protocol import SamplingParams, StepItem, WarmupSpec
from textgen_server.shard import convert

START_TIMEOUT_S = 60


def _start_shard(model_path: Path, uds_prefix: str, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "textgen_server.shard", "--model-path", str(model_path),
               "--uds-path", uds_prefix, "--rank", "0", "--dtype", "float32", *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_socket(process: subprocess.Popen, path: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not os.path.exists(path):
        if process.poll() is not None:
            raise AssertionError(f"shard exited with {process.returncode}: {process.stdout.read()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"shard did not open {path} in {START_TIMEOUT_S} s")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def shard(tiny_llama_dir: Path) -> Iterator[tuple[subprocess.Popen, pb_grpc.ShardStub]]:
    # Unix socket paths are limited to ~107 bytes: keep it short.
    prefix = os.path.join(tempfile.mkdtemp(prefix="tg-", dir="/tmp"), "shard")
    process = _start_shard(tiny_llama_dir, prefix, "--kv-cache-memory", str(4 << 20))
    try:
        _wait_for_socket(process, f"{prefix}-0")
        with grpc.insecure_channel(f"unix://{prefix}-0") as channel:
            yield process, pb_grpc.ShardStub(channel)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _items(prompt: list[int]) -> pb.StepRequest:
    item = StepItem(1, prompt, 0, [0, 1], True, SamplingParams(top_n_tokens=2), [], len(prompt))
    return convert.step_request_to_pb([item])


def _code(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value.code(), raised.value.details()


def test_every_rpc_over_grpc(shard, tiny_llama_dir: Path) -> None:
    process, stub = shard
    info = convert.model_info_from_pb(stub.Info(pb.InfoRequest()))
    assert (info.model_type, info.dtype, info.device_type, info.block_size) == ("llama", "float32", "cpu", 16)
    assert info.eos_token_ids and info.sliding_window is None
    stub.Health(pb.HealthRequest())

    prompt = list(range(10, 30))
    code, details = _code(lambda: stub.Prefill(_items(prompt)))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "Warmup" in details

    code, details = _code(lambda: stub.Warmup(convert.warmup_spec_to_pb(
        WarmupSpec(max_input_tokens=64, max_total_tokens=128, max_prefill_tokens=128, max_batch_total_tokens=10**7))))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "--max-batch-total-tokens" in details

    result = convert.warmup_result_from_pb(stub.Warmup(convert.warmup_spec_to_pb(
        WarmupSpec(max_input_tokens=64, max_total_tokens=128, max_prefill_tokens=256))))
    # 4 MiB / (2 layers * 2 (k, v) * 16 tokens * 2 heads * 16 dims * 4 bytes) = 512 blocks
    assert (result.num_blocks, result.max_supported_total_tokens) == (512, 512 * 16)

    first = convert.generations_from_pb(stub.Prefill(_items(prompt)))
    assert len(first) == 1 and len(first[0].top_tokens) == 2
    generated = [first[0].token.id]
    for position in range(len(prompt), len(prompt) + 4):
        decode = convert.step_request_to_pb([StepItem(1, [generated[-1]], position, [0, 1], True)])
        response = stub.Decode(decode)
        assert response.forward_ns > 0
        generated.append(convert.generations_from_pb(response)[0].token.id)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    expected = model.generate(torch.tensor([prompt]), max_new_tokens=5, do_sample=False, eos_token_id=None)
    assert generated == expected[0, len(prompt):].tolist()

    stub.FilterBatch(pb.FilterBatchRequest(request_ids=[1]))
    code, details = _code(lambda: stub.Decode(convert.step_request_to_pb([StepItem(1, [5], 25, [0, 1], True)])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "request 1 has no state" in details
    code, details = _code(lambda: stub.Prefill(convert.step_request_to_pb(
        [StepItem(2, [5, 6], 0, [99999], True, SamplingParams(), [], 2)])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "99999" in details
    stub.ClearCache(pb.ClearCacheRequest())


def test_sigterm_stops_the_shard_with_exit_0(shard) -> None:
    process, stub = shard
    stub.Health(pb.HealthRequest())
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 0


def test_fatal_start_exits_non_zero_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    (tmp_path / "pytorch_model.bin").write_bytes(b"not really")
    process = _start_shard(tmp_path, str(tmp_path / "s"))
    output, _ = process.communicate(timeout=60)
    assert process.returncode != 0
    assert "pickle" in output and "safetensors" in output

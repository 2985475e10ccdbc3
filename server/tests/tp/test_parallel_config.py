"""Tensor-parallel settings and the device choice, torch-free: TGI's --num-shard/--sharded rules, the heads check
(before any weight loads), threads per rank, --device auto/explicit, TEXTGEN_DEVICE_OVERRIDE, shard command line."""
from __future__ import annotations

from pathlib import Path

import pytest

from textgen_server.devices import DeviceError, count_visible, resolve_device
from textgen_server.launcher.config import ConfigError, build_config, parse_args
from textgen_server.launcher.parallel import (ParallelConfigError, head_count_problems, resolve_num_shard,
                                              threads_per_rank)
from textgen_server.launcher.shards import ShardSpec, build_shard_command, build_shard_environ

MODEL = {"max_position_embeddings": 1024, "num_attention_heads": 12, "num_key_value_heads": 12,
         "intermediate_size": 1536}


def _config(argv: list[str], env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return build_config(parse_args(argv, env or {}), Path("/m"), MODEL)


def test_heads_not_divisible_names_the_numbers_and_the_valid_counts() -> None:
    with pytest.raises(ConfigError) as raised:
        _config(["--num-shard", "5", "--device", "cpu"])
    assert str(raised.value) == ("model has 12 attention heads, not divisible by --num-shard 5; valid shard counts: "
                                 "1, 2, 3, 4, 6, 12")


def test_kv_heads_and_mlp_width_are_checked_too() -> None:
    model = {"num_attention_heads": 8, "num_key_value_heads": 2, "intermediate_size": 96}
    assert head_count_problems(model, 4) == ["model has 2 KV heads, not divisible by --num-shard 4; valid shard "
                                             "counts: 1, 2"]
    assert head_count_problems(model, 2) == []
    # KV heads default to the attention heads (MHA configs omit them).
    assert head_count_problems({"num_attention_heads": 6}, 4)[0].startswith("model has 6 attention heads")


@pytest.mark.parametrize(("num_shard", "sharded", "device", "visible", "expected"), [
    (None, None, "cpu", 1, 1),
    (4, None, "cpu", 1, 4),
    (2, True, "cpu", 1, 2),
    (1, False, "cpu", 1, 1),
    (None, False, "cuda", 8, 1),
    (None, True, "cuda", 8, 8),      # TGI: --sharded true alone means every visible device
])
def test_tgi_num_shard_rules(num_shard: int | None, sharded: bool | None, device: str, visible: int,
                             expected: int) -> None:
    assert resolve_num_shard(num_shard, sharded, device, visible) == expected


@pytest.mark.parametrize(("num_shard", "sharded", "device", "visible", "message"), [
    (2, False, "cpu", 1, "--sharded false contradicts --num-shard 2"),
    (None, True, "cpu", 1, "the CPU does not define; set --num-shard N"),
    (None, True, "cuda", 1, "found 1 visible cuda device(s)"),
    (1, True, "cuda", 4, "--sharded true needs at least 2 shards"),
    (0, None, "cpu", 1, "--num-shard must be at least 1, got 0"),
])
def test_tgi_num_shard_errors(num_shard: int | None, sharded: bool | None, device: str, visible: int,
                              message: str) -> None:
    with pytest.raises(ParallelConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_num_shard(num_shard, sharded, device, visible)


def test_flags_and_environment_reach_the_parallel_config() -> None:
    env = {"NUM_SHARD": "4", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29600", "DEVICE": "cpu", "SHARDED": "true"}
    parallel = _config([], env).parallel
    assert (parallel.num_shard, parallel.master_addr, parallel.master_port) == (4, "127.0.0.1", 29600)
    assert parallel.device.actual == "cpu" and parallel.device.backend == "gloo"
    assert _config(["--num-shard", "2", "--master-port", "29700", "--device", "cpu"]).parallel.master_port == 29700
    with pytest.raises(ConfigError, match="not a boolean"):
        parse_args([], {"SHARDED": "maybe"})
    with pytest.raises(ConfigError, match="--device 'tpu' is not one of auto, cpu, cuda, hpu"):
        parse_args(["--device", "tpu"], {})


def test_threads_per_rank_split_the_cpus() -> None:
    assert [threads_per_rank(n, 16) for n in (1, 2, 4, 3, 32)] == [16, 8, 4, 5, 1]


def test_auto_prefers_cuda_then_hpu_then_cpu(tmp_path: Path) -> None:
    dev, accel = tmp_path / "dev", tmp_path / "accel"
    dev.mkdir()
    accel.mkdir()
    dirs = {"cuda": str(dev), "hpu": str(accel)}
    assert resolve_device("auto", {}, dirs).actual == "cpu"
    (accel / "accel0").touch()
    assert resolve_device("auto", {}, dirs).actual == "hpu"   # a Gaudi card, and no NVIDIA one
    (dev / "nvidia0").touch()
    (dev / "nvidia1").touch()
    (dev / "nvidiactl").touch()  # not a device
    assert resolve_device("auto", {}, dirs).actual == "cuda"
    assert count_visible("cuda", {}, dirs) == 2
    assert count_visible("cuda", {"CUDA_VISIBLE_DEVICES": "0,3,5"}, dirs) == 3


def test_explicit_devices_and_the_development_override() -> None:
    assert resolve_device("cuda", {}).actual == "cuda"  # presence is checked with torch in the shard
    assert resolve_device("hpu", {}).actual == "hpu"    # the shard checks the card (gaudi/backend.py)
    overridden = resolve_device("hpu", {"TEXTGEN_DEVICE_OVERRIDE": "cpu"})
    assert (overridden.requested, overridden.actual, overridden.overridden) == ("hpu", "cpu", True)
    assert not resolve_device("cpu", {"TEXTGEN_DEVICE_OVERRIDE": "cpu"}).overridden
    with pytest.raises(DeviceError, match="TEXTGEN_DEVICE_OVERRIDE='cuda' is not supported"):
        resolve_device("cpu", {"TEXTGEN_DEVICE_OVERRIDE": "cuda"})
    config = _config(["--device", "cuda", "--num-shard", "2"], {"TEXTGEN_DEVICE_OVERRIDE": "cpu"})
    assert config.parallel.device.actual == "cpu" and config.parallel.device.backend == "gloo"


def test_shard_command_and_environment_for_a_rank() -> None:
    spec = ShardSpec(model_path=Path("/m"), uds_path="/tmp/s", rank=1, world_size=2, dtype=None,
                     kv_cache_memory=None, device="cpu", master_addr="127.0.0.1", master_port=29555, num_threads=3,
                     join_timeout=30.0, group_key="k1")
    command = build_shard_command(spec)
    assert command[3:] == ["--model-path", "/m", "--uds-path", "/tmp/s", "--rank", "1", "--world-size", "2",
                           "--device", "cpu", "--master-addr", "127.0.0.1", "--master-port", "29555",
                           "--join-timeout", "30.0", "--group-key", "k1", "--num-threads", "3"]
    env = build_shard_environ(spec, {"PATH": "/bin"})
    assert env == {"PATH": "/bin", "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "3"}
    # A user's own interface choice wins; a non-loopback master (several hosts) leaves gloo's default.
    assert build_shard_environ(spec, {"GLOO_SOCKET_IFNAME": "eth0"})["GLOO_SOCKET_IFNAME"] == "eth0"


def test_the_shard_parser_accepts_what_the_launcher_emits() -> None:
    from textgen_server.shard.__main__ import parse_args as parse_shard_args

    spec = ShardSpec(model_path=Path("/m"), uds_path="/tmp/s", rank=1, world_size=2, dtype="float32",
                     kv_cache_memory=1024, device="cpu", master_addr="127.0.0.1", master_port=29555, num_threads=3)
    config = parse_shard_args(build_shard_command(spec)[3:])
    assert (config.rank, config.world_size, config.device, config.master_port, config.num_threads) == (
        1, 2, "cpu", 29555, 3)

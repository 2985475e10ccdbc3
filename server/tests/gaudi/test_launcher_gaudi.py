"""The launcher reads TGI on Gaudi's variables through gaudi/config.py: checked on every node, kept in the config."""
from __future__ import annotations

from pathlib import Path

import pytest

from textgen_server.gaudi.config import ENV_NAMES
from textgen_server.launcher.config import ConfigError, LauncherConfig, build_config, parse_args
from textgen_server.launcher.tgi_env import DEVICE_ENV

MODEL = {"model_type": "llama", "max_position_embeddings": 4096, "num_attention_heads": 32,
         "num_key_value_heads": 8, "intermediate_size": 1024}
AGENT_NODE = {"TEXTGEN_DEVICE_OVERRIDE": "cpu"}   # a simulated Gaudi node: the shards compute on the CPU


def launch(environ: dict[str, str], *argv: str) -> LauncherConfig:
    return build_config(parse_args(["--model-id", "m", *argv], environ), Path("/m"), MODEL)


def test_no_gaudi_variable_no_gaudi_config() -> None:
    assert launch({}).gaudi is None


def test_the_operators_gaudi_env_is_parsed_on_an_agent_node() -> None:
    env = {**AGENT_NODE, "BATCH_BUCKET_SIZE": "256", "PREFILL_BATCH_BUCKET_SIZE": "4",
           "PAD_SEQUENCE_TO_MULTIPLE_OF": "64", "PT_HPU_ENABLE_LAZY_COLLECTIVES": "true",
           "OMPI_MCA_btl_vader_single_copy_mechanism": "none"}
    config = launch(env, "--device", "hpu", "--num-shard", "8", "--max-input-tokens", "1024",
                    "--max-total-tokens", "2048")
    assert config.gaudi is not None and config.parallel.device.actual == "cpu"
    assert (config.gaudi.batch_bucket_size, config.gaudi.prefill_batch_bucket_size,
            config.gaudi.pad_sequence_to_multiple_of, config.gaudi.lazy_collectives) == (256, 4, 64, True)
    # ... and still reported as not applied there (the shards run on the CPU).
    assert any("BATCH_BUCKET_SIZE" in warning and "not applied" in warning for warning in config.warnings)


@pytest.mark.parametrize("env,argv,fragment", [
    ({"ENABLE_HPU_GRAPH": "yes please"}, (), "ENABLE_HPU_GRAPH='yes please' is invalid"),
    ({"BATCH_BUCKET_SIZE": "0"}, (), "BATCH_BUCKET_SIZE='0' is invalid"),
    ({"PAD_SEQUENCE_TO_MULTIPLE_OF": "256"}, ("--max-input-tokens", "100", "--max-total-tokens", "200"),
     "PAD_SEQUENCE_TO_MULTIPLE_OF=256 exceeds --max-input-tokens (100)"),
    ({"ENABLE_HPU_GRAPH": "true"}, ("--num-shard", "2"), "PT_HPU_ENABLE_LAZY_COLLECTIVES=true"),
    ({"SKIP_TOKENIZER_IN_TGI": "true"}, (), "SKIP_TOKENIZER_IN_TGI=true"),
])
def test_bad_gaudi_values_stop_the_launcher_naming_the_variable(env: dict[str, str], argv: tuple[str, ...],
                                                               fragment: str) -> None:
    with pytest.raises(ConfigError) as error:
        launch({**AGENT_NODE, **env}, "--device", "hpu", *argv)
    assert fragment in str(error.value)


def test_gaudi_variables_inherited_by_a_cpu_or_cuda_launch_are_warned_about_not_checked() -> None:
    """A shell that once ran on a Gaudi node still has PT_HPU_LAZY_MODE: --device cpu must start (its default
    PAD_SEQUENCE_TO_MULTIPLE_OF, 128, exceeds this --max-input-tokens), saying the variable is not applied."""
    for device in ("cpu", "cuda"):
        environ = {"PT_HPU_LAZY_MODE": "1"} if device == "cpu" else {"PT_HPU_LAZY_MODE": "1", "CUDA_VISIBLE_DEVICES": "0"}
        config = launch(environ, "--device", device, "--max-input-tokens", "100", "--max-total-tokens", "200")
        assert config.gaudi is None
        assert any("PT_HPU_LAZY_MODE" in warning and "not applied" in warning for warning in config.warnings)
    with pytest.raises(ConfigError, match="PAD_SEQUENCE_TO_MULTIPLE_OF=128 exceeds --max-input-tokens"):
        launch({**AGENT_NODE, "PT_HPU_LAZY_MODE": "1"}, "--device", "hpu", "--max-input-tokens", "100",
               "--max-total-tokens", "200")   # a (simulated) Gaudi node: checked as on the card


def test_every_gaudi_variable_is_a_device_variable_of_hpu() -> None:
    assert all(DEVICE_ENV.get(name) == "hpu" for name in ENV_NAMES)


def test_queue_threshold_orders_admission_on_hpu_only() -> None:
    import dataclasses

    from textgen_server.devices import DeviceChoice
    from textgen_server.launcher.serving import build_scheduler
    from textgen_server.protocol import WarmupResult
    config = launch({**AGENT_NODE, "QUEUE_THRESHOLD_MS": "50"}, "--device", "hpu")
    warm = WarmupResult(num_blocks=512, block_size=16, max_supported_total_tokens=8192, duration_seconds=0.0)
    assert build_scheduler(config, warm).config.queue_threshold_ms is None     # computing on the CPU: FIFO
    on_hpu = dataclasses.replace(config, parallel=dataclasses.replace(
        config.parallel, device=DeviceChoice("hpu", "hpu", overridden=False)))
    assert build_scheduler(on_hpu, warm).config.queue_threshold_ms == 50


def test_static_shapes_switch_builds_the_buckets_and_applies_the_bucket_variables() -> None:
    env = {"BATCH_BUCKET_SIZE": "4", "PREFILL_BATCH_BUCKET_SIZE": "2", "PAD_SEQUENCE_TO_MULTIPLE_OF": "32",
           "QUEUE_THRESHOLD_MS": "10"}
    config = launch(env, "--device", "cpu", "--static-shapes", "true", "--max-input-tokens", "160",
                    "--max-total-tokens", "200", "--max-batch-prefill-tokens", "320", "--max-batch-size", "12")
    assert config.buckets is not None
    assert (config.buckets.batch_bucket_size, config.buckets.prefill_batch_bucket_size,
            config.buckets.pad_sequence_to_multiple_of, config.buckets.max_batch_size) == (4, 2, 32, 12)
    # the bucket sizes are applied on the CPU now; QUEUE_THRESHOLD_MS still is not (hpu only)
    assert len(config.warnings) == 1 and "QUEUE_THRESHOLD_MS set but not applied" in config.warnings[0]
    assert launch(env, "--device", "cpu").buckets is None


@pytest.mark.parametrize("argv,fragment", [
    (("--max-input-tokens", "160", "--max-total-tokens", "200"), "--static-shapes: static shapes need a batch bound"),
    (("--max-batch-size", "8", "--speculate", "2"), "does not support speculative decoding"),
    (("--max-batch-size", "8", "--max-input-tokens", "500", "--max-total-tokens", "600",
      "--max-batch-prefill-tokens", "100"), "--max-batch-prefill-tokens (100) must be at least --max-input-tokens"),
])
def test_static_shapes_refusals(argv: tuple[str, ...], fragment: str) -> None:
    with pytest.raises(ConfigError) as error:
        launch({}, "--static-shapes", "true", *argv)
    assert fragment in str(error.value)


def test_the_shard_reads_the_static_shape_flags_the_launcher_writes() -> None:
    from textgen_server.launcher.shards import ShardSpec, build_shard_command
    from textgen_server.shard.__main__ import parse_args as shard_parse_args
    command = build_shard_command(ShardSpec(Path("/m"), "/tmp/s", 0, 1, None, None, bucket_sizes=(4, 2, 32),
                                            shape_warmup=False))
    shard = shard_parse_args(command[3:])
    assert shard.bucket_sizes == (4, 2, 32) and shard.shape_warmup is False
    assert shard_parse_args(build_shard_command(ShardSpec(Path("/m"), "/tmp/s", 0, 1, None, None))[3:]).bucket_sizes \
        is None


def test_the_scheduler_gets_the_buckets_with_the_shards_block_size() -> None:
    from textgen_server.launcher.serving import build_scheduler
    from textgen_server.protocol import WarmupResult
    config = launch({}, "--static-shapes", "true", "--max-batch-size", "8", "--max-input-tokens", "160",
                    "--max-total-tokens", "200")
    scheduler = build_scheduler(config, WarmupResult(num_blocks=99, block_size=16, max_supported_total_tokens=1584,
                                                     duration_seconds=0.0))
    assert scheduler.config.buckets is not None and scheduler.config.buckets.block_size == 16
    assert scheduler.config.buckets.max_batch_size == 8


def test_device_hpu_always_serves_static_shapes_and_applies_every_gaudi_variable() -> None:
    env = {"BATCH_BUCKET_SIZE": "4", "PAD_SEQUENCE_TO_MULTIPLE_OF": "32", "QUEUE_THRESHOLD_MS": "10",
           "USE_FLASH_ATTENTION": "true"}
    config = launch(env, "--device", "hpu", "--max-batch-size", "8", "--max-input-tokens", "160",
                    "--max-total-tokens", "200")
    assert config.parallel.device.actual == "hpu" and config.args.static_shapes is False
    assert config.buckets is not None and config.buckets.batch_bucket_size == 4   # implied by the device
    assert config.warnings == ()             # on hpu every Gaudi variable is applied: nothing to warn about
    with pytest.raises(ConfigError, match=r"--device hpu \(always static shapes\): static shapes need a batch bound"):
        launch({}, "--device", "hpu")

"""Launcher configuration: TGI flag names, environment variables, model-dependent defaults, validation."""
from __future__ import annotations

from pathlib import Path

import pytest

from textgen_server.launcher.config import ConfigError, build_config, parse_args, parse_bytes
from textgen_server.launcher.shards import ShardSpec, build_shard_command

MODEL = {"max_position_embeddings": 1024}


def _config(argv: list[str], env: dict[str, str] | None = None, model: dict | None = None):  # type: ignore
    return build_config(parse_args(argv, env or {}), Path("/m"), MODEL if model is None else model)


def test_tgi_defaults() -> None:
    config = _config([])
    args = config.args
    assert (args.model_id, args.port, args.hostname, config.parallel.num_shard) == ("bigscience/bloom-560m", 3000, "0.0.0.0", 1)
    assert (args.max_concurrent_requests, args.waiting_served_ratio, args.max_waiting_tokens) == (128, 0.3, 20)
    assert (args.max_stop_sequences, args.max_top_n_tokens, args.max_batch_size) == (4, 5, None)
    # TGI: max_total = min(max_position_embeddings, 4096), max_input = max_total - 1, prefill = input + 50.
    assert (config.max_total_tokens, config.max_input_tokens, config.max_batch_prefill_tokens) == (1024, 1023, 1073)
    assert _config([], model={"max_position_embeddings": 32768}).max_total_tokens == 4096


@pytest.mark.parametrize(
    ("env", "attribute", "value"),
    [
        ({"MODEL_ID": "/models/x"}, "model_id", "/models/x"),
        ({"REVISION": "refs/pr/2"}, "revision", "refs/pr/2"),
        ({"DTYPE": "bfloat16"}, "dtype", "bfloat16"),
        ({"MAX_INPUT_TOKENS": "100"}, "max_input_tokens", 100),
        ({"MAX_TOTAL_TOKENS": "200"}, "max_total_tokens", 200),
        ({"MAX_BATCH_PREFILL_TOKENS": "300"}, "max_batch_prefill_tokens", 300),
        ({"MAX_BATCH_TOTAL_TOKENS": "5000"}, "max_batch_total_tokens", 5000),
        ({"MAX_BATCH_SIZE": "8"}, "max_batch_size", 8),
        ({"MAX_WAITING_TOKENS": "5"}, "max_waiting_tokens", 5),
        ({"WAITING_SERVED_RATIO": "1.2"}, "waiting_served_ratio", 1.2),
        ({"MAX_CONCURRENT_REQUESTS": "7"}, "max_concurrent_requests", 7),
        ({"HOSTNAME": "127.0.0.2"}, "hostname", "127.0.0.2"),
        ({"PORT": "8080"}, "port", 8080),
        ({"SHARD_UDS_PATH": "/tmp/s"}, "shard_uds_path", "/tmp/s"),
        ({"HUGGINGFACE_HUB_CACHE": "/data"}, "huggingface_hub_cache", "/data"),
        ({"HF_TOKEN": "hf_x"}, "hf_token", "hf_x"),
        ({"KV_CACHE_MEMORY": "2GiB"}, "kv_cache_memory", 2 * 2**30),
        ({"NUM_SHARD": "1"}, "num_shard", 1),
    ],
)
def test_each_setting_is_read_from_its_tgi_environment_variable(env: dict, attribute: str, value: object) -> None:
    assert getattr(parse_args([], env), attribute) == value


def test_flag_wins_over_environment() -> None:
    assert parse_args(["--port", "9000"], {"PORT": "8080"}).port == 9000


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--num-shard", "0"], "--num-shard must be at least 1, got 0"),
        (["--max-input-tokens", "100", "--max-total-tokens", "100"],
         "--max-total-tokens (100) must be greater than --max-input-tokens (100)"),
        (["--max-total-tokens", "2000"], "exceeds the model's max_position_embeddings (1024)"),
        (["--max-batch-total-tokens", "500", "--max-total-tokens", "600"], "--max-batch-total-tokens (500)"),
        (["--dtype", "int4"], "--dtype 'int4' is not one of"),
        (["--max-batch-size", "0"], "--max-batch-size must be positive, got 0"),
        (["--waiting-served-ratio", "-1"], "--waiting-served-ratio must be >= 0"),
    ],
)
def test_invalid_combinations_are_explained(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        _config(argv)
    assert message in str(raised.value)


@pytest.mark.parametrize(("text", "value"), [("1000", 1000), ("512MiB", 512 * 2**20), ("2GiB", 2 * 2**30),
                                             ("1.5GB", 1_500_000_000), ("64 kib", 65536)])
def test_parse_bytes(text: str, value: int) -> None:
    assert parse_bytes(text) == value


def test_parse_bytes_rejects_nonsense_with_examples() -> None:
    with pytest.raises(ConfigError, match="512MiB"):
        parse_bytes("lots")


def test_shard_command_line() -> None:
    spec = ShardSpec(model_path=Path("/m"), uds_path="/tmp/s", rank=0, world_size=1, dtype="float32",
                     kv_cache_memory=1024)
    command = build_shard_command(spec)
    assert command[1:3] == ["-m", "textgen_server.shard"]
    assert command[3:] == ["--model-path", "/m", "--uds-path", "/tmp/s", "--rank", "0", "--world-size", "1",
                           "--dtype", "float32", "--kv-cache-memory", "1024", "--device", "cpu"]
    assert spec.socket_path == "/tmp/s-0"


def test_speculation_costs_reach_the_shard_only_when_speculating_and_not_default() -> None:
    base = dict(model_path=Path("/m"), uds_path="/tmp/s", rank=0, world_size=1, dtype="float32", kv_cache_memory=None)
    flat = build_shard_command(ShardSpec(**base, speculate=2, speculation_costs="flat"))
    assert flat[flat.index("--speculation-costs") + 1] == "flat"
    assert "--speculation-costs" not in build_shard_command(ShardSpec(**base, speculate=2))
    assert "--speculation-costs" not in build_shard_command(ShardSpec(**base, speculation_costs="flat"))


def test_an_unknown_speculation_costs_value_is_refused_with_the_choices() -> None:
    with pytest.raises(ConfigError, match="--speculation-costs must be one of measured, flat, got 'fast'"):
        build_config(parse_args(["--speculation-costs", "fast"], {}), Path("/m"),
                     {"max_position_embeddings": 1024, "num_attention_heads": 8, "num_key_value_heads": 8})


def test_flat_speculation_costs_without_speculation_is_refused(tiny_llama_dir: Path) -> None:
    from textgen_server.launcher.main import load_config

    with pytest.raises(ConfigError, match="--speculation-costs flat applies to speculation, which is off"):
        load_config(parse_args(["--model-id", str(tiny_llama_dir), "--speculation-costs", "flat"], {}))
    assert load_config(parse_args(["--model-id", str(tiny_llama_dir), "--speculate", "2",
                                   "--speculation-costs", "flat"], {})).args.speculation_costs == "flat"


@pytest.mark.parametrize("argv, env", [(["--device", "cuda", "--cuda-memory-fraction", "0.8"], {}),
                                       (["--device", "cuda"], {"CUDA_MEMORY_FRACTION": "0.8"})])
def test_a_cuda_memory_fraction_reaches_a_shard_that_accepts_it(argv: list[str], env: dict[str, str]) -> None:
    """The launcher's shard command line goes through the shard's own parser (the real other side)."""
    from textgen_server.shard.__main__ import parse_args as parse_shard_args

    config = _config(argv, env)
    spec = ShardSpec(model_path=Path("/m"), uds_path="/tmp/s", rank=0, world_size=1, dtype=None, kv_cache_memory=None,
                     device=config.parallel.device.actual, cuda_memory_fraction=config.args.cuda_memory_fraction)
    shard = parse_shard_args(build_shard_command(spec)[3:])
    assert (shard.device, shard.cuda_memory_fraction) == ("cuda", 0.8)
    assert "--cuda-memory-fraction" not in build_shard_command(ShardSpec(**{**spec.__dict__,
                                                                            "cuda_memory_fraction": 1.0}))


@pytest.mark.parametrize("argv, message", [
    (["--cuda-memory-fraction", "0.8"], "this launch runs on cpu"),
    (["--device", "cuda", "--cuda-memory-fraction", "0.8", "--kv-cache-memory", "1GiB"], "give one of them"),
    (["--device", "cuda", "--cuda-memory-fraction", "0.8", "--static-shapes", "true", "--max-batch-size", "4"],
     "static shapes size the KV cache from --kv-cache-memory"),
    (["--device", "cuda", "--cuda-memory-fraction", "1.5"], r"give a share of the device in \(0, 1\]"),
    (["--device", "cuda", "--cuda-memory-fraction", "0"], r"give a share of the device in \(0, 1\]"),
])
def test_a_cuda_memory_fraction_that_would_not_apply_is_refused(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _config(argv)


def test_the_shard_refuses_a_fraction_off_cuda_too() -> None:
    from textgen_server.shard.__main__ import parse_args as parse_shard_args

    with pytest.raises(SystemExit):
        parse_shard_args(["--model-path", "/m", "--uds-path", "/tmp/s", "--cuda-memory-fraction", "0.5"])


@pytest.mark.parametrize("argv, env", [(["--device", "cuda", "--cuda-graphs", "4,1,2"], {}),
                                       (["--device", "cuda"], {"CUDA_GRAPHS": "1,2,4"})])
def test_cuda_graphs_reach_a_shard_that_accepts_them(argv: list[str], env: dict[str, str]) -> None:
    """TGI's --cuda-graphs / CUDA_GRAPHS through the launcher's shard command and the shard's own parser."""
    from textgen_server.shard.__main__ import parse_args as parse_shard_args

    config = _config(argv, env)
    assert config.args.cuda_graphs == (1, 2, 4)
    spec = ShardSpec(model_path=Path("/m"), uds_path="/tmp/s", rank=0, world_size=1, dtype=None, kv_cache_memory=None,
                     device=config.parallel.device.actual, cuda_graphs=config.args.cuda_graphs)
    assert parse_shard_args(build_shard_command(spec)[3:]).cuda_graphs == (1, 2, 4)
    assert "--cuda-graphs" not in build_shard_command(ShardSpec(**{**spec.__dict__, "cuda_graphs": ()}))


@pytest.mark.parametrize("argv, env", [([], {}), ([], {"CUDA_GRAPHS": "0"}), (["--cuda-graphs", "0"], {})])
def test_no_cuda_graphs_by_default_and_zero_is_none(argv: list[str], env: dict[str, str]) -> None:
    assert _config(argv, env).args.cuda_graphs == ()


@pytest.mark.parametrize("argv, env, message", [
    (["--cuda-graphs", "1,2"], {}, "captured on CUDA devices only, and this launch runs on cpu"),
    ([], {"CUDA_GRAPHS": "8"}, "captured on CUDA devices only"),
    (["--device", "cuda", "--cuda-graphs", "1", "--static-shapes", "true", "--max-batch-size", "4"], {},
     "static shapes .* run without CUDA graphs"),
    (["--device", "cuda", "--cuda-graphs", "1", "--num-shard", "2"], {}, "not captured across tensor-parallel ranks"),
    ([], {"CUDA_GRAPHS": "one,two"}, "expected comma-separated batch sizes"),
])
def test_cuda_graphs_that_would_not_apply_are_refused(argv: list[str], env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _config(argv, env)


def test_the_shard_refuses_graphs_off_cuda_and_bad_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    from textgen_server.shard.__main__ import parse_args as parse_shard_args

    for value, message in (("1,2", "captured on CUDA devices only"), ("x", "expected comma-separated batch sizes")):
        with pytest.raises(SystemExit):
            parse_shard_args(["--model-path", "/m", "--uds-path", "/tmp/s", "--cuda-graphs", value])
        assert message in capsys.readouterr().err

"""Model resolution and loading fail with messages that say what is wrong and what to do."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from textgen_server.models.hub import ModelResolveError, resolve_model
from textgen_server.models.loading import load_model, read_eos_token_ids, resolve_dtype
from textgen_server.models.registry import UnsupportedArchitectureError


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_local_dir_is_returned_as_is(tiny_llama_dir: Path) -> None:
    assert resolve_model(str(tiny_llama_dir)) == tiny_llama_dir


def test_missing_local_dir(tmp_path: Path) -> None:
    with pytest.raises(ModelResolveError, match="does not exist.*--model-id"):
        resolve_model(str(tmp_path / "nope"))


def test_dir_without_config(tmp_path: Path) -> None:
    with pytest.raises(ModelResolveError, match="no config.json"):
        resolve_model(str(tmp_path))


def test_pickle_only_checkpoint(tiny_llama_dir: Path, tmp_path: Path) -> None:
    path = _copy(tiny_llama_dir, tmp_path / "m")
    (path / "model.safetensors").unlink()
    (path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ModelResolveError, match=r"only pickle weights \(pytorch_model.bin\).*safe_serialization"):
        resolve_model(str(path))
    with pytest.raises(ModelResolveError, match="pickle"):
        load_model(path)


def test_unsupported_architecture_names_the_supported_ones(tiny_llama_dir: Path, tmp_path: Path) -> None:
    path = _copy(tiny_llama_dir, tmp_path / "m")
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    with pytest.raises(UnsupportedArchitectureError, match="'gpt2'.*llama, mistral, qwen2"):
        load_model(path)


def _fake_hub_cache(cache: Path, repo: str, files: dict[str, bytes]) -> None:
    """The on-disk layout huggingface_hub uses (models--owner--name/{refs,snapshots}), built by hand."""
    repo_dir = cache / f"models--{repo.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    for name, data in files.items():
        (snapshot / name).write_bytes(data)


def test_hub_id_resolves_from_the_hub_cache(tiny_llama_dir: Path, tmp_path: Path) -> None:
    """The real snapshot_download path, offline (local_files_only) against a cache laid out as the hub does."""
    files = {p.name: p.read_bytes() for p in tiny_llama_dir.iterdir()}
    _fake_hub_cache(tmp_path, "acme/tiny", files)
    path = resolve_model("acme/tiny", cache_dir=tmp_path, local_files_only=True)
    assert (path / "model.safetensors").is_file() and "snapshots" in str(path)


def test_hub_id_missing_from_an_offline_cache(tmp_path: Path) -> None:
    with pytest.raises(ModelResolveError, match="not in the cache"):
        resolve_model("acme/absent", cache_dir=tmp_path, local_files_only=True)


@pytest.mark.parametrize(
    ("dtype", "config", "expected"),
    [
        ("auto", {"torch_dtype": "bfloat16"}, torch.bfloat16),
        ("auto", {"dtype": "float16"}, torch.float16),
        ("auto", {}, torch.float32),
        ("float32", {"torch_dtype": "bfloat16"}, torch.float32),
    ],
)
def test_resolve_dtype(dtype: str, config: dict, expected: torch.dtype) -> None:
    assert resolve_dtype(dtype, config) == expected


def test_bad_dtype_names_the_choices() -> None:
    with pytest.raises(ValueError, match="'int3'.*float32, bfloat16, float16, auto.*--dtype"):
        resolve_dtype("int3", {})


def test_dtype_is_honoured(tiny_qwen2_dir: Path) -> None:
    loaded = load_model(tiny_qwen2_dir, "bfloat16")
    assert next(loaded.model.parameters()).dtype == torch.bfloat16
    assert loaded.kv_cache_shape().dtype == torch.bfloat16


@pytest.mark.parametrize(
    ("generation_config", "config", "expected"),
    [({"eos_token_id": 7}, {}, [7]), ({"eos_token_id": [9, 7]}, {}, [7, 9]), ({}, {"eos_token_id": 3}, [3]), ({}, {}, [])],
)
def test_eos_ids_int_or_list(tmp_path: Path, generation_config: dict, config: dict, expected: list[int]) -> None:
    (tmp_path / "generation_config.json").write_text(json.dumps(generation_config))
    assert read_eos_token_ids(tmp_path, config) == expected

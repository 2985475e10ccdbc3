"""Resolve a model id (a local directory or a Hugging Face hub repo id) to a local checkpoint directory.

Torch-free on purpose: the launcher calls `resolve_model` once, before any shard starts, and passes the local
path to the shards and to the router's tokenizer. Only safetensors weights are accepted: pickle checkpoints
(*.bin, *.pt, *.pth) can run arbitrary code when loaded.
"""
from __future__ import annotations

from pathlib import Path

# What a shard and the router's tokenizer need from a hub repo; nothing else is downloaded.
HUB_ALLOW_PATTERNS = [
    "*.safetensors",
    "*.json",
    "tokenizer.model",
    "*.tiktoken",
    "*.txt",
    "*.jinja",
]
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


class ModelResolveError(ValueError):
    """The model id does not name a usable safetensors checkpoint; the message says what to do."""


def resolve_model(
    model_id: str,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    token: str | None = None,
    local_files_only: bool = False,
    with_code: bool = False,
) -> Path:
    """Return a local directory holding `model_id`'s config.json, *.safetensors and tokenizer files.

    A local directory is returned as is (after checks). Anything else is a hub repo id, downloaded with
    huggingface_hub.snapshot_download into `cache_dir` (None: the hub's default cache) at `revision`; with
    `with_code` (--trust-remote-code) the repository's *.py files too, for a custom tokenizer class.
    Raises ModelResolveError with an actionable message when the checkpoint cannot be used.
    """
    local = Path(model_id).expanduser()
    if local.is_dir():
        return check_checkpoint_dir(local, model_id)
    if _looks_like_path(model_id):
        raise ModelResolveError(
            f"model directory {model_id!r} does not exist; pass an existing local directory or a hub repo id "
            "such as 'meta-llama/Llama-3.2-1B' to --model-id"
        )
    snapshot = _download(model_id, revision, cache_dir, token, local_files_only, with_code)
    # allow_patterns skipped any pickle weights, so ask the hub what the repo has to explain a miss.
    has_weights = any(snapshot.glob("*.safetensors"))
    hub_file_names = None if has_weights or local_files_only else _list_repo_files(model_id, revision, token)
    return check_checkpoint_dir(snapshot, model_id, hub_file_names)


def check_checkpoint_dir(path: Path, model_id: str, hub_file_names: list[str] | None = None) -> Path:
    """Check that `path` has config.json and safetensors weights; explain pickle-only checkpoints."""
    if not (path / "config.json").is_file():
        raise ModelResolveError(
            f"model {model_id!r} ({path}) has no config.json; point --model-id at a transformers checkpoint "
            "directory (config.json, *.safetensors, tokenizer files)"
        )
    if any(path.glob("*.safetensors")):
        return path
    names = hub_file_names if hub_file_names is not None else [p.name for p in path.iterdir()]
    pickles = sorted(n for n in names if n.endswith(PICKLE_SUFFIXES))
    if pickles:
        raise ModelResolveError(
            f"model {model_id!r} has only pickle weights ({', '.join(pickles[:3])}); only *.safetensors are "
            "loaded, because unpickling can run arbitrary code. Convert the checkpoint with "
            "`model.save_pretrained(dir, safe_serialization=True)` or pick a revision with safetensors"
        )
    raise ModelResolveError(
        f"model {model_id!r} ({path}) has no *.safetensors weights; point --model-id at a checkpoint that has them"
    )


def _looks_like_path(model_id: str) -> bool:
    # Hub ids are "name" or "owner/name"; anything else that does not exist locally is a mistyped path.
    return model_id.startswith(("/", "./", "../", "~")) or model_id.count("/") > 1


def _download(
    model_id: str, revision: str | None, cache_dir: str | Path | None, token: str | None, local_files_only: bool,
    with_code: bool = False,
) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(
            snapshot_download(
                model_id,
                revision=revision,
                cache_dir=cache_dir,
                token=token,
                allow_patterns=HUB_ALLOW_PATTERNS + (["*.py"] if with_code else []),
                local_files_only=local_files_only,
            )
        )
    except RepositoryNotFoundError as err:
        raise ModelResolveError(
            f"hub repo {model_id!r} not found (or private: set HF_TOKEN); check --model-id"
        ) from err
    except LocalEntryNotFoundError as err:
        raise ModelResolveError(
            f"hub repo {model_id!r} (revision {revision or 'main'}) is not in the cache "
            f"{cache_dir or 'default'} and the hub cannot be reached; download it first or fix --huggingface-hub-cache"
        ) from err
    except HfHubHTTPError as err:
        raise ModelResolveError(f"downloading hub repo {model_id!r} failed: {err}") from err


def _list_repo_files(model_id: str, revision: str | None, token: str | None) -> list[str] | None:
    """The repo's file names, to explain a missing safetensors file; None when the hub cannot be asked."""
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE:
        return None
    try:
        return HfApi().list_repo_files(model_id, revision=revision, token=token)
    except Exception:  # noqa: BLE001 - only used to improve an error message
        return None

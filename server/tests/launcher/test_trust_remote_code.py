"""--trust-remote-code: a repository's custom tokenizer class runs only when the flag is given (real transformers)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from textgen_server.launcher.config import build_config, parse_args
from textgen_server.launcher.serving import load_tokenizer
from textgen_server.testing.tiny_models import build_tiny_tokenizer

CUSTOM_TOKENIZER = '''
from transformers import PreTrainedTokenizerFast


class MarkedTokenizer(PreTrainedTokenizerFast):
    """Repository code: proves that it ran."""

    ran_repository_code = True
'''


@pytest.fixture(scope="module")
def repo_with_custom_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model directory whose tokenizer_config.json names a tokenizer class defined in the repository itself."""
    path = tmp_path_factory.mktemp("custom-code")
    build_tiny_tokenizer(vocab_size=300).save_pretrained(path)
    (path / "marked_tokenizer.py").write_text(CUSTOM_TOKENIZER)
    config_path = path / "tokenizer_config.json"
    tokenizer_config = json.loads(config_path.read_text())
    tokenizer_config["tokenizer_class"] = "MarkedTokenizer"
    tokenizer_config["auto_map"] = {"AutoTokenizer": [None, "marked_tokenizer.MarkedTokenizer"]}
    config_path.write_text(json.dumps(tokenizer_config))
    (path / "config.json").write_text(json.dumps({"model_type": "llama", "max_position_embeddings": 128}))
    return path


def _load(path: Path, argv: list[str]):  # type: ignore[no-untyped-def]
    config = build_config(parse_args(["--model-id", str(path), *argv], {}), path, {"max_position_embeddings": 128})
    return load_tokenizer(config)


def test_repository_code_runs_with_trust_remote_code(repo_with_custom_tokenizer: Path) -> None:
    tokenizer = _load(repo_with_custom_tokenizer, ["--trust-remote-code"])
    assert type(tokenizer).__name__ == "MarkedTokenizer" and tokenizer.ran_repository_code


def test_repository_code_never_runs_without_it(repo_with_custom_tokenizer: Path) -> None:
    with pytest.raises(Exception) as raised:  # transformers' own refusal (its wording varies by version)
        _load(repo_with_custom_tokenizer, [])
    assert "MarkedTokenizer" in str(raised.value) or "trust_remote_code" in str(raised.value)

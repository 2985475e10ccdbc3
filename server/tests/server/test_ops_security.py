"""Operations flags on the real launcher: --api-key (bearer, 401), --cors-allow-origin, --json-output logs with
request ids and no prompt text, and the OpenAPI document."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_testlib import Launch, LauncherProcess

from textgen_server.launcher.config import parse_args
from textgen_server.router.ops import choose_request_id, error_type_for_status, is_authorized, parse_origins

pytestmark = pytest.mark.slow

API_KEY = "s3cret-key"
ORIGIN = "https://chat.example.test"
# Distinctive words: the test asserts they never reach the logs.
SECRET_PROMPT = "zebra quartz umbrella"


@pytest.fixture(scope="module")
def server(tiny_llama_dir: Path, launch_for_module: Launch) -> LauncherProcess:
    return launch_for_module(tiny_llama_dir, "--max-total-tokens", "256", "--api-key", API_KEY, "--json-output",
                             "--cors-allow-origin", f"{ORIGIN}, https://other.example.test")


def _generate(server: LauncherProcess, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{server.base_url}/generate", headers=headers, timeout=60,
                      json={"inputs": SECRET_PROMPT, "parameters": {"max_new_tokens": 3}})


def test_api_key_guards_the_api_but_not_probes_or_metrics(server: LauncherProcess) -> None:
    missing = _generate(server)
    assert missing.status_code == 401
    assert missing.json()["error_type"] == "unauthorized" and "Authorization: Bearer" in missing.json()["error"]
    assert missing.headers["www-authenticate"] == "Bearer"
    assert _generate(server, {"Authorization": "Bearer wrong"}).status_code == 401
    assert _generate(server, {"Authorization": f"Basic {API_KEY}"}).status_code == 401
    assert _generate(server, {"Authorization": f"bearer {API_KEY}"}).status_code == 200
    for path in ("/health", "/ping", "/metrics", "/info", "/openapi.json"):
        assert httpx.get(f"{server.base_url}{path}").status_code == 200, path


def test_cors_preflight_and_headers(server: LauncherProcess) -> None:
    preflight = httpx.options(f"{server.base_url}/generate", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, authorization"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in preflight.headers["access-control-allow-methods"]
    answer = _generate(server, {"Authorization": f"Bearer {API_KEY}", "Origin": "https://other.example.test"})
    assert answer.headers["access-control-allow-origin"] == "https://other.example.test"
    stranger = httpx.get(f"{server.base_url}/health", headers={"Origin": "https://evil.example.test"})
    assert "access-control-allow-origin" not in stranger.headers


def test_json_logs_carry_request_ids_and_no_prompt_text(server: LauncherProcess) -> None:
    answer = _generate(server, {"Authorization": f"Bearer {API_KEY}", "x-request-id": "trace-abc-123"})
    assert answer.status_code == 200 and answer.headers["x-request-id"] == "trace-abc-123"
    generated = answer.json()["generated_text"]
    fresh = _generate(server, {"Authorization": f"Bearer {API_KEY}", "x-request-id": "bad id with spaces"})
    assert len(fresh.headers["x-request-id"]) == 32  # replaced by our own
    entries = _log_entries(server)
    mine = [entry for entry in entries if entry.get("request_id") == "trace-abc-123"]
    assert any(entry["message"].startswith("POST /generate 200") for entry in mine), mine
    assert any("done: finish_reason=length" in entry["message"] for entry in mine), mine
    assert all({"timestamp", "level", "target", "message"} <= entry.keys() for entry in entries)
    log = server.log()
    for word in SECRET_PROMPT.split():
        assert word not in log
    if generated.strip():
        assert generated not in log


def test_openapi_document_is_served_and_lists_the_routes(server: LauncherProcess) -> None:
    document = httpx.get(f"{server.base_url}/openapi.json").json()
    assert document["openapi"].startswith("3.")
    assert {"/generate", "/generate_stream", "/health", "/metrics"} <= document["paths"].keys()


def test_pure_helpers() -> None:
    assert choose_request_id("abc-1.2") == "abc-1.2"
    assert choose_request_id("x" * 129) != "x" * 129 and len(choose_request_id(None)) == 32
    assert is_authorized("Bearer k", "k") and is_authorized("  BEARER k ", "k")
    assert not is_authorized("Bearer K", "k") and not is_authorized(None, "k") and not is_authorized("k", "k")
    assert parse_origins(["a, b", "", "c"]) == ("a", "b", "c")
    assert [error_type_for_status(s) for s in (200, 413, 422, 424, 429, 500, 503)] == [
        None, "payload_too_large", "validation", None, "overloaded", None, "unhealthy"]


def test_flags_and_environment() -> None:
    env = {"API_KEY": "k1", "JSON_OUTPUT": "true", "CORS_ALLOW_ORIGIN": "https://a.test,https://b.test"}
    args = parse_args([], env)
    assert (args.api_key, args.json_output, args.cors_allow_origin) == ("k1", True, ("https://a.test",
                                                                                     "https://b.test"))
    args = parse_args(["--cors-allow-origin", "https://c.test", "--cors-allow-origin", "*", "--api-key", "k2"], env)
    assert (args.api_key, args.cors_allow_origin) == ("k2", ("https://c.test", "*"))
    args = parse_args([], {})
    assert (args.api_key, args.json_output, args.cors_allow_origin) == (None, False, ())


def _log_entries(server: LauncherProcess) -> list[dict[str, Any]]:
    entries = []
    for line in server.log().splitlines():
        if line.startswith("{"):
            entries.append(json.loads(line))
    assert entries, "no JSON log lines"
    return entries

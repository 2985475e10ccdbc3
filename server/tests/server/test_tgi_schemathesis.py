"""schemathesis against the real launcher's /openapi.json, POST routes: no 5xx, and every response (errors
included) matches the schema the document declares for its status code.

Bounded so that it finishes on 2 CPU cores: --max-total-tokens 64 caps any accepted generation, and each route
gets MAX_EXAMPLES generated bodies."""
from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance, status_code_conformance
from server_testlib import Launch, LauncherProcess

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 40
POST_ROUTES = ["/generate", "/generate_stream", "/", "/invocations", "/tokenize", "/vertex", "/chat_tokenize"]


@pytest.fixture(scope="module")
def server(tiny_llama_dir: Path, launch_for_module: Launch) -> LauncherProcess:
    return launch_for_module(tiny_llama_dir, "--max-input-tokens", "48", "--max-total-tokens", "64")


@pytest.mark.parametrize(("path", "mode"), [*((path, schemathesis.GenerationMode.POSITIVE) for path in POST_ROUTES),
                                            ("/generate", schemathesis.GenerationMode.NEGATIVE)])
def test_generated_bodies_never_get_5xx_and_match_the_documented_responses(
        server: LauncherProcess, path: str, mode: schemathesis.GenerationMode) -> None:
    """POSITIVE: bodies the schema allows (values out of the server's limits get 422). NEGATIVE: bodies the
    schema forbids (wrong types, missing fields), which must all get a documented 4xx."""
    schema = schemathesis.openapi.from_url(f"{server.base_url}/openapi.json")
    operation = schema[path]["POST"]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case: schemathesis.Case) -> None:
        response = case.call(base_url=server.base_url, timeout=60)
        case.validate_response(response, checks=[not_a_server_error, status_code_conformance,
                                                 response_schema_conformance])

    check()

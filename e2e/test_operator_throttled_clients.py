"""The python `kubernetes` clients of the e2e harness and of hack/bench-operator.py send a request again when
the API server answers 429 Too Many Requests, after its Retry-After (as kubectl does; the bare client raises).

The server here is a mock of the Kubernetes API server on 127.0.0.1 (http.server): only its 429 behaviour
matters, which the real one shows only for a moment (right after a CRD is installed, "storage is
(re)initializing", Retry-After 1). No cluster is needed.
"""
from __future__ import annotations

import importlib.util
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
import yaml

from e2e.harness import REPO_ROOT, throttle_aware_client

THROTTLED = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "TooManyRequests", "code": 429,
             "message": "storage is (re)initializing", "details": {"retryAfterSeconds": 1}}


def bench_client() -> Callable[[Path], kubernetes.client.ApiClient]:
    spec = importlib.util.spec_from_file_location("bench_operator", REPO_ROOT / "hack" / "bench-operator.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.throttle_aware_client    # type: ignore[no-any-return]


class Mock:
    """Answers the first `throttle` requests with 429 (Retry-After 1), then 200/201 echoing a namespace."""

    def __init__(self, throttle: int) -> None:
        self.throttle = throttle
        self.requests: list[tuple[Any, ...]] = []
        mock = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                mock.requests.append((self.command, self.path, self.rfile.read(length), time.monotonic()))
                throttled = len(mock.requests) <= mock.throttle
                body = json.dumps(THROTTLED if throttled else
                                  {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns"}}).encode()
                self.send_response(429 if throttled else (201 if self.command == "POST" else 200))
                if throttled:
                    self.send_header("Retry-After", "1")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def mock_api(tmp_path: Path) -> Iterator[Callable[[int], tuple[Mock, Path]]]:
    servers: list[Mock] = []

    def start(throttle: int) -> tuple[Mock, Path]:
        mock = Mock(throttle)
        threading.Thread(target=mock.server.serve_forever, daemon=True).start()
        servers.append(mock)
        kubeconfig = tmp_path / f"kubeconfig-{len(servers)}"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "mock",
            "clusters": [{"name": "mock", "cluster": {"server": mock.url}}],
            "users": [{"name": "mock", "user": {"token": "t"}}],
            "contexts": [{"name": "mock", "context": {"cluster": "mock", "user": "mock"}}]}))
        return mock, kubeconfig

    yield start
    for mock in servers:
        mock.server.shutdown()


@pytest.mark.parametrize("make_client", [throttle_aware_client, bench_client()], ids=["harness", "bench"])
def test_a_throttled_read_and_create_are_sent_again(mock_api: Any, make_client: Any) -> None:
    mock, kubeconfig = mock_api(1)
    core = kubernetes.client.CoreV1Api(make_client(kubeconfig))
    assert core.read_namespace("ns").metadata.name == "ns"
    assert [r[0] for r in mock.requests] == ["GET", "GET"]
    assert mock.requests[1][3] - mock.requests[0][3] >= 0.9, "Retry-After: 1 was honoured"
    mock.throttle = 3
    core.create_namespace({"metadata": {"name": "ns"}})
    posts = [r for r in mock.requests if r[0] == "POST"]
    assert len(posts) == 2 and posts[0][2] == posts[1][2], "the same body, sent again"


def test_the_bare_client_would_have_failed_a_create(mock_api: Any) -> None:
    """What the helpers fix: the `kubernetes` client as configured by default (urllib3's Retry(3)) retries a
    throttled GET but raises on a throttled POST, e.g. the bench's first TGS create right after the CRD."""
    import kubernetes.config
    _, kubeconfig = mock_api(1)
    core = kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config(config_file=str(kubeconfig)))
    with pytest.raises(kubernetes.client.ApiException) as error:
        core.create_namespace({"metadata": {"name": "ns"}})
    assert error.value.status == 429

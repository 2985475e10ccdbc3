"""The one module that talks to the Kubernetes API (aiohttp, kopf's credentials). It computes nothing.

Every request is counted in textgen_operator_api_requests_total{verb,resource} so benchmarks and tests can
tell reads from writes.
"""
from __future__ import annotations

import base64
import json
import os
import ssl
import tempfile
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp
import kopf

from textgen_operator import FIELD_MANAGER, GROUP, PLURAL, VERSION
from textgen_operator.metrics import API_REQUESTS
from textgen_operator.names import Body

# apiVersion/kind -> (collection path with {ns}, resource name for metrics)
RESOURCES: dict[str, tuple[str, str]] = {
    "v1/ServiceAccount": ("/api/v1/namespaces/{ns}/serviceaccounts", "serviceaccounts"),
    "v1/Service": ("/api/v1/namespaces/{ns}/services", "services"),
    "v1/Pod": ("/api/v1/namespaces/{ns}/pods", "pods"),
    "v1/Secret": ("/api/v1/namespaces/{ns}/secrets", "secrets"),
    "v1/Event": ("/api/v1/namespaces/{ns}/events", "events"),
    "policy/v1/PodDisruptionBudget": ("/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets", "poddisruptionbudgets"),
    "apps/v1/StatefulSet": ("/apis/apps/v1/namespaces/{ns}/statefulsets", "statefulsets"),
    f"{GROUP}/{VERSION}/TextGenerationService": (f"/apis/{GROUP}/{VERSION}/namespaces/{{ns}}/{PLURAL}", PLURAL),
}


class ApiError(Exception):
    """A non-2xx answer, with the API server's own message (it says what was rejected and why)."""

    def __init__(self, status: int, message: str, reason: str = "") -> None:
        super().__init__(f"HTTP {status} {reason}: {message}")
        self.status = status
        self.message = message
        self.reason = reason


def _pem(data: str | bytes) -> bytes:
    """kubeconfig *-data fields are base64 of PEM; PEM passed directly is kept as is."""
    raw = data.encode() if isinstance(data, str) else data
    return raw if raw.lstrip().startswith(b"-----") else base64.b64decode(raw)


def _ssl_context(info: kopf.ConnectionInfo) -> ssl.SSLContext | bool:
    if info.insecure:
        return False
    ctx = ssl.create_default_context(
        cafile=str(info.ca_path) if info.ca_path else None,
        cadata=_pem(info.ca_data).decode() if info.ca_data else None)
    if info.certificate_path and info.private_key_path:
        ctx.load_cert_chain(str(info.certificate_path), str(info.private_key_path))
    elif info.certificate_data and info.private_key_data:
        # ssl loads client keys from files only; the files live just long enough to be read.
        with tempfile.TemporaryDirectory() as tmp:
            cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
            with open(cert, "wb") as f:
                f.write(_pem(info.certificate_data))
            with open(os.open(key, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
                f.write(_pem(info.private_key_data))
            ctx.load_cert_chain(cert, key)
    return ctx


USER_AGENT = "textgen-operator/0.1.0"   # tells our requests apart in the API server's audit log


def _headers(info: kopf.ConnectionInfo) -> dict[str, str]:
    headers = {"User-Agent": USER_AGENT}
    if info.token:
        headers["Authorization"] = f"{info.scheme or 'Bearer'} {info.token}"
    return headers


class Kube:
    """A thin async client for the few calls the reconciler makes."""

    def __init__(self, info: kopf.ConnectionInfo, max_connections: int = 128) -> None:
        self._server = info.server.rstrip("/")
        # HTTP/1.1: one request per connection at a time, so this caps the requests in flight; the reconciler
        # stays under it (a request waiting for a connection would hold its urgency slot meanwhile).
        self._max_connections = max_connections
        self._auth_headers = _headers(info)
        self._ssl = _ssl_context(info)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self._auth_headers, connector=aiohttp.TCPConnector(ssl=self._ssl, limit=self._max_connections),
                timeout=aiohttp.ClientTimeout(total=30))
        return self._session

    async def _request(self, verb: str, resource: str, method: str, path: str, *,
                       params: dict[str, str] | None = None, body: Any = None,
                       content_type: str = "application/json", allow_404: bool = False) -> Body | None:
        API_REQUESTS.labels(verb=verb, resource=resource).inc()
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        async with self._client().request(method, self._server + path, params=params, data=data,
                                          headers=headers) as response:
            payload = await response.json(content_type=None)
            if response.status == 404 and allow_404:
                return None
            if response.status >= 300:
                raise ApiError(response.status, str((payload or {}).get("message", payload)),
                               str((payload or {}).get("reason", "")))
            return payload if isinstance(payload, dict) else {}

    @staticmethod
    def collection(api_kind: str, namespace: str) -> tuple[str, str]:
        path, resource = RESOURCES[api_kind]
        return path.format(ns=quote(namespace)), resource

    async def get(self, api_kind: str, namespace: str, name: str) -> Body | None:
        """The object, or None when it does not exist."""
        path, resource = self.collection(api_kind, namespace)
        return await self._request("get", resource, "GET", f"{path}/{quote(name)}", allow_404=True)

    async def list_all(self, api_kind: str, namespaces: tuple[str, ...], label_selector: str) -> list[Body]:
        """Every matching object in the given namespaces (all namespaces when empty), with apiVersion and kind
        set on each item (a LIST answer leaves them out)."""
        path, resource = RESOURCES[api_kind]
        paths = [path.format(ns=quote(ns)) for ns in namespaces] or [path.replace("/namespaces/{ns}", "")]
        version, kind = api_kind.rsplit("/", 1)
        items: list[Body] = []
        for collection in paths:
            params = {"labelSelector": label_selector} if label_selector else None
            answer = await self._request("list", resource, "GET", collection, params=params)
            items += [{**item, "apiVersion": version, "kind": kind} for item in (answer or {}).get("items", [])]
        return items

    async def watch(self, api_kind: str, namespace: str) -> AsyncIterator[tuple[str, Body]]:
        """(event type, object) from one watch of a namespace's collection, until the server ends it. The
        operator watches through kopf; this serves tools such as hack/bench-operator.py's baseline reactor."""
        path, resource = self.collection(api_kind, namespace)
        API_REQUESTS.labels(verb="watch", resource=resource).inc()
        async with self._client().get(self._server + path, params={"watch": "true"},
                                      timeout=aiohttp.ClientTimeout(total=None, sock_read=None)) as response:
            if response.status >= 300:
                raise ApiError(response.status, await response.text())
            async for line in response.content:
                if line.strip():
                    event = json.loads(line)
                    yield event["type"], event["object"]

    async def exists(self, api_kind: str, namespace: str, name: str) -> bool:
        """Existence only: asks for metadata, so a Secret's data never reaches the operator."""
        path, resource = self.collection(api_kind, namespace)
        API_REQUESTS.labels(verb="get", resource=resource).inc()
        headers = {"Accept": "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"}
        async with self._client().get(f"{self._server}{path}/{quote(name)}", headers=headers) as response:
            if response.status == 404:
                return False
            if response.status >= 300:
                payload = await response.json(content_type=None)
                raise ApiError(response.status, str((payload or {}).get("message", payload)))
            return True

    async def apply(self, obj: Body) -> Body:
        """Server-side apply under our field manager; force=True takes fields back from hand edits."""
        path, resource = self.collection(f"{obj['apiVersion']}/{obj['kind']}", obj["metadata"]["namespace"])
        answer = await self._request("apply", resource, "PATCH", f"{path}/{quote(obj['metadata']['name'])}",
                                     params={"fieldManager": FIELD_MANAGER, "force": "true"}, body=obj,
                                     content_type="application/apply-patch+yaml")
        return answer or {}

    async def create(self, obj: Body) -> Body:
        """A plain create (POST). The reconciler applies instead; this serves the benchmark's baseline."""
        path, resource = self.collection(f"{obj['apiVersion']}/{obj['kind']}", obj["metadata"]["namespace"])
        answer = await self._request("create", resource, "POST", path, params={"fieldManager": FIELD_MANAGER},
                                     body=obj)
        return answer or {}

    async def patch_status(self, namespace: str, name: str, status: Body) -> None:
        """Merge-patch the TGS status subresource (only called when it changed)."""
        path, resource = self.collection(f"{GROUP}/{VERSION}/TextGenerationService", namespace)
        await self._request("patch_status", f"{resource}/status", "PATCH", f"{path}/{quote(name)}/status",
                            body={"status": status}, content_type="application/merge-patch+json")

    async def create_event(self, event: Body) -> None:
        path, resource = self.collection("v1/Event", event["metadata"]["namespace"])
        await self._request("create", resource, "POST", path, body=event)

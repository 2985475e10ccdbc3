"""The one module that talks to the Kubernetes API (aiohttp, kopf's credentials). It computes nothing.

Every request is counted in textgen_operator_api_requests_total{verb,resource} so benchmarks and tests can
tell reads from writes. Every request and watch honours the API server's "come back later" (HTTP 429, e.g.
"storage is (re)initializing" right after a CRD is installed, or 5xx with Retry-After): it waits Retry-After
seconds and sends again, up to MAX_THROTTLED_RETRIES times, as client-go does.
"""
from __future__ import annotations

import asyncio
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
from textgen_operator.metrics import API_REQUESTS, API_THROTTLED
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
    "autoscaling/v2/HorizontalPodAutoscaler": ("/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers",
                                               "horizontalpodautoscalers"),
    "keda.sh/v1alpha1/ScaledObject": ("/apis/keda.sh/v1alpha1/namespaces/{ns}/scaledobjects", "scaledobjects"),
    f"{GROUP}/{VERSION}/TextGenerationService": (f"/apis/{GROUP}/{VERSION}/namespaces/{{ns}}/{PLURAL}", PLURAL),
}


MAX_THROTTLED_RETRIES = 10       # client-go's maxRetries for Retry-After answers
MAX_RETRY_AFTER_SECONDS = 30.0   # a longer Retry-After is honoured as this many seconds
WATCH_SECONDS = 290              # a watch the server ends after this is resumed from its last resourceVersion


def retry_after(status: int, header: str | None) -> float | None:
    """Seconds to wait before sending a request again, or None when the answer is final.

    As client-go: 429 Too Many Requests, or a 5xx that carries Retry-After, means the API server did not process
    the request and asks to come back later (a 429 without the header waits 1 s)."""
    if status != 429 and not (500 <= status < 600 and header):
        return None
    try:
        seconds = float(header) if header else 1.0
    except ValueError:      # an HTTP-date: the API server sends seconds, other proxies may not
        seconds = 1.0
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


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


_STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_read=None)   # a watch waits as long as the server lets it
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

    async def _send(self, verb: str, resource: str, method: str, url: str, **kwargs: Any) -> aiohttp.ClientResponse:
        """One request, sent again while the API server answers "come back later" (see retry_after); the
        caller reads and releases the response (`async with`)."""
        for attempt in range(MAX_THROTTLED_RETRIES + 1):
            API_REQUESTS.labels(verb=verb, resource=resource).inc()
            response = await self._client().request(method, url, **kwargs)
            wait = retry_after(response.status, response.headers.get("Retry-After"))
            if wait is None or attempt == MAX_THROTTLED_RETRIES:
                return response
            response.release()
            API_THROTTLED.labels(verb=verb, resource=resource).inc()
            await asyncio.sleep(wait)
        raise AssertionError("unreachable")

    async def _request(self, verb: str, resource: str, method: str, path: str, *,
                       params: dict[str, str] | None = None, body: Any = None,
                       content_type: str = "application/json", allow_404: bool = False) -> Body | None:
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        async with await self._send(verb, resource, method, self._server + path, params=params, data=data,
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
        operator watches through kopf and follow(); this serves tools such as hack/bench-operator.py."""
        path, resource = self.collection(api_kind, namespace)
        async with await self._send("watch", resource, "GET", self._server + path, params={"watch": "true"},
                                    timeout=_STREAM_TIMEOUT) as response:
            if response.status >= 300:
                raise ApiError(response.status, await response.text())
            async for line in response.content:
                if line.strip():
                    event = json.loads(line)
                    yield event["type"], event["object"]

    async def follow(self, api_kind: str, namespace: str | None, field_selector: str = ""
                     ) -> AsyncIterator[tuple[str, Body]]:
        """LIST, then WATCH from the list's resourceVersion, resumed whenever the server ends it; forever.

        Yields ("RESET", {}) before each (re)list, then each listed object as ADDED, then the watch's ADDED /
        MODIFIED / DELETED. A 410 Gone (the version is too old) lists again: a consumer drops what it holds at
        RESET, so deletions missed meanwhile are not kept. namespace None: every namespace."""
        path, resource = RESOURCES[api_kind]
        collection = path.format(ns=quote(namespace)) if namespace else path.replace("/namespaces/{ns}", "")
        selector = {"fieldSelector": field_selector} if field_selector else {}
        while True:
            answer = await self._request("list", resource, "GET", collection, params=selector) or {}
            yield "RESET", {}
            for item in answer.get("items", []):
                yield "ADDED", item
            version: str | None = answer.get("metadata", {}).get("resourceVersion")
            while version:
                params = {**selector, "watch": "true", "resourceVersion": version, "allowWatchBookmarks": "true",
                          "timeoutSeconds": str(WATCH_SECONDS)}
                async with await self._send("watch", resource, "GET", self._server + collection, params=params,
                                            timeout=_STREAM_TIMEOUT) as response:
                    if response.status == 410:
                        break
                    if response.status >= 300:
                        raise ApiError(response.status, await response.text())
                    async for line in response.content:
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        obj = event.get("object", {})
                        if event.get("type") == "ERROR":
                            if obj.get("code") == 410:
                                version = None
                                break
                            raise ApiError(int(obj.get("code", 500)), str(obj.get("message", obj)))
                        version = obj.get("metadata", {}).get("resourceVersion") or version
                        if event.get("type") != "BOOKMARK":
                            yield str(event["type"]), obj

    async def exists(self, api_kind: str, namespace: str, name: str) -> bool:
        """Existence only: asks for metadata, so a Secret's data never reaches the operator."""
        path, resource = self.collection(api_kind, namespace)
        headers = {"Accept": "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"}
        async with await self._send("get", resource, "GET", f"{self._server}{path}/{quote(name)}",
                                    headers=headers) as response:
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

    async def delete(self, obj: Body) -> None:
        """Deletes the object if it is still the one we saw (uid precondition); gone already is fine. Used only
        for an autoscaler whose spec.autoscaling was removed: every other child goes by garbage collection."""
        path, resource = self.collection(f"{obj['apiVersion']}/{obj['kind']}", obj["metadata"]["namespace"])
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": obj["metadata"]["uid"]}}
        await self._request("delete", resource, "DELETE", f"{path}/{quote(obj['metadata']['name'])}", body=body,
                            allow_404=True)

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

    async def delete_pod(self, namespace: str, name: str, uid: str) -> Body | None:
        """Deletes a pod if it is still the one we saw (uid precondition; 409 otherwise), with its own grace
        period (preStop, drain); returns the API's answer (the pod with its deletionTimestamp), None if gone.
        Only the rollout deletes pods."""
        path, resource = self.collection("v1/Pod", namespace)
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid}}
        return await self._request("delete", resource, "DELETE", f"{path}/{quote(name)}", body=body,
                                   allow_404=True)

"""API I/O: one client, calls that honour 429/Retry-After, and list+watch loops in threads feeding asyncio.

The `kubernetes` client is synchronous; calls run in worker threads (asyncio.to_thread) so the event loop that
runs probes, forwarders and containers never blocks on the API server.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import kubernetes.client
import kubernetes.config
import kubernetes.watch
from kubernetes.client.rest import ApiException

log = logging.getLogger("node-agent.kube")
T = TypeVar("T")
Event = tuple[str, dict[str, Any]]       # ("ADDED" | "MODIFIED" | "DELETED" | "SYNCED", object as a dict)
MAX_ATTEMPTS = 8


def retry_after(exc: ApiException) -> float | None:
    """Seconds to wait before retrying a refused call (429, or 5xx while the API server starts), else None."""
    if exc.status == 429 or (exc.status or 0) >= 500:
        header = (exc.headers or {}).get("Retry-After")
        try:
            return float(header) if header else 1.0
        except ValueError:
            return 1.0
    return None


def call_sync(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """fn(*args, **kwargs), retried after Retry-After on 429/5xx (at most MAX_ATTEMPTS times)."""
    for attempt in range(MAX_ATTEMPTS):
        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            wait = retry_after(exc)
            if wait is None or attempt == MAX_ATTEMPTS - 1:
                raise
            log.info("API answered %s; retrying in %.1fs", exc.status, wait)
            time.sleep(wait)
    raise AssertionError("unreachable")


class Kube:
    """The agent's API access (admin credentials, see the README)."""

    def __init__(self, kubeconfig: Path) -> None:
        self.client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
        self.core = kubernetes.client.CoreV1Api(self.client)
        self.coordination = kubernetes.client.CoordinationV1Api(self.client)
        self.storage = kubernetes.client.StorageV1Api(self.client)

    def to_dict(self, obj: Any) -> dict[str, Any]:
        """A client model as the API's JSON (camelCase keys)."""
        value: dict[str, Any] = self.client.sanitize_for_serialization(obj)
        return value

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(call_sync, fn, *args, **kwargs)

    def start_watch(self, list_fn: Callable[..., Any], on_event: Callable[[Event], None], **kwargs: Any) -> None:
        """Lists then watches in a daemon thread forever; each event goes to on_event in the event loop.

        After every (re)list a ("SYNCED", {"uids": [...]}) event says which objects exist, so the consumer can
        forget objects deleted while the watch was down.
        """
        loop = asyncio.get_running_loop()

        def emit(event: Event) -> None:
            loop.call_soon_threadsafe(on_event, event)

        threading.Thread(target=self._watch_loop, args=(list_fn, emit, kwargs), daemon=True).start()

    def _watch_loop(self, list_fn: Callable[..., Any], emit: Callable[[Event], None], kwargs: dict[str, Any]) -> None:
        while True:
            try:
                listed = call_sync(list_fn, **kwargs)
                items = [self.to_dict(i) for i in listed.items]
                for item in items:
                    emit(("MODIFIED", item))
                emit(("SYNCED", {"uids": [i["metadata"]["uid"] for i in items]}))
                self._watch_from(list_fn, listed.metadata.resource_version, emit, kwargs)
            except ApiException as exc:
                wait = retry_after(exc)
                log.info("watch of %s ended (%s); relisting in %.1fs", list_fn.__name__, exc.status, wait or 1)
                time.sleep(wait or 1.0)
            except Exception as exc:  # the API server restarting, a dropped connection: relist
                log.info("watch of %s failed (%s); relisting", list_fn.__name__, exc)
                time.sleep(1.0)

    def _watch_from(self, list_fn: Callable[..., Any], version: str, emit: Callable[[Event], None],
                    kwargs: dict[str, Any]) -> None:
        while True:
            stream = kubernetes.watch.Watch().stream(list_fn, resource_version=version, timeout_seconds=240,
                                                     allow_watch_bookmarks=True, **kwargs)
            for event in stream:
                obj = event["object"]
                if event["type"] == "ERROR":
                    raise ApiException(status=obj.get("code", 500) if isinstance(obj, dict) else 500)
                data = self.to_dict(obj)
                version = data["metadata"]["resourceVersion"]
                if event["type"] != "BOOKMARK":
                    emit((event["type"], data))


_background: set[asyncio.Task[Any]] = set()


def background(coro: Any) -> asyncio.Task[Any]:
    """create_task that keeps a reference until the task ends (the loop holds only weak ones)."""
    task = asyncio.create_task(coro)
    _background.add(task)
    task.add_done_callback(_report)
    return task


def _report(task: asyncio.Task[Any]) -> None:
    _background.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("background task %s failed", task.get_coro(), exc_info=task.exception())

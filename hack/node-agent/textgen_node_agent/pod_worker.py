"""One pod on an agent node, from admission to removal: IP, volumes, sandbox, port forwarders, containers,
status, and graceful termination ending in the pod's deletion with grace 0 (what the kubelet does)."""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from kubernetes.client.rest import ApiException

from textgen_node_agent.container import ContainerRunner
from textgen_node_agent.envs import ContainerConfigError
from textgen_node_agent.forwarder import start_forwarders
from textgen_node_agent.nodes import now_rfc3339
from textgen_node_agent.kube import background
from textgen_node_agent.pod_io import PodIO
from textgen_node_agent.sandbox import Sandbox, TmpfsMount
from textgen_node_agent.status import build_pod_status
from textgen_node_agent.volumes import prepare_volumes

log = logging.getLogger("node-agent.pod")
UNSUPPORTED = {"initContainers": "init containers", "ephemeralContainers": "ephemeral containers",
               "hostNetwork": "hostNetwork", "hostPID": "hostPID", "hostIPC": "hostIPC"}


def unsupported_reason(pod: dict[str, Any]) -> str | None:
    """Why the agent refuses (admission) a pod, or None: what it cannot run is refused, never ignored."""
    used = [label for key, label in UNSUPPORTED.items() if pod["spec"].get(key)]
    if used:
        return f"the textgen node agent does not run pods with {', '.join(used)}"
    return None


class Runtime(Protocol):
    io: PodIO
    def allocate_ip(self, uid: str) -> str: ...
    def release_ip(self, ip: str | None, failed: bool = False) -> None: ...
    def pod_dir(self, pod: dict[str, Any]) -> Path: ...


class PodWorker:
    """Runs one pod; `update` feeds it the pod as the API server has it now."""

    def __init__(self, runtime: Runtime, pod: dict[str, Any]) -> None:
        self.runtime, self.io, self.pod = runtime, runtime.io, pod
        self.uid = pod["metadata"]["uid"]
        self.terminating = asyncio.Event()
        self.sandbox: Sandbox | None = None
        self.servers: list[asyncio.Server] = []
        self.volume_paths: dict[str, Path] = {}
        self.tmpfs: list[TmpfsMount] = []
        self.log_dir = runtime.pod_dir(pod)
        self.pod_ip: str | None = None
        self.start_time = (pod.get("status") or {}).get("startTime") or now_rfc3339()
        previous = {s["name"]: s.get("restartCount", 0) for s in (pod.get("status") or {}).get("containerStatuses") or []}
        self.runners = [ContainerRunner(self, c, previous.get(c["name"], 0)) for c in pod["spec"]["containers"]]
        self.transitions: dict[str, tuple[str, str]] = {}
        self.last_posted: dict[str, Any] | None = None
        self.dirty = asyncio.Event()
        self.gone = False          # the pod no longer exists in the API
        self.main = asyncio.create_task(self.run())
        self.status_writer = asyncio.create_task(self.write_status_forever())
        self.termination: asyncio.Task[None] | None = None
        self.on_done: Callable[[str], None] = lambda uid: None   # called once the pod is fully gone

    # ---- PodContext ----
    def changed(self) -> None:
        self.dirty.set()

    def event(self, reason: str, message: str, kind: str = "Normal", container: str | None = None) -> None:
        self.io.event(self.pod, reason, message, kind, container)

    async def resolve_env(self, container: dict[str, Any]) -> dict[str, str]:
        return await self.io.resolve_env(self.pod, container, self.pod_ip)

    # ---- life ----
    async def run(self) -> None:
        refusal = unsupported_reason(self.pod)
        if refusal:
            await self.io.post_status(self.pod, {"phase": "Failed", "reason": "UnsupportedByNodeAgent",
                                                 "message": refusal, "startTime": self.start_time})
            self.event("UnsupportedByNodeAgent", refusal, "Warning")
            return
        self.changed()
        if not await self._prepare_volumes() or not await self._create_sandbox():
            return
        self.changed()
        await asyncio.gather(*(r.run() for r in self.runners))
        if not self.terminating.is_set():   # a completed pod: its sandbox goes, its status stays
            await self._teardown()

    async def _create_sandbox(self) -> bool:
        """Pod IP, namespaces and port forwarders; retried (another IP) until it works or the pod goes, as the
        kubelet retries FailedCreatePodSandBox. An address can be taken between the check and the bind (another
        cluster's agent on the same range), so a failed bind puts that address aside for a while."""
        sysctls = {s["name"]: str(s["value"]) for s in (self.pod["spec"].get("securityContext") or {}).get("sysctls") or []}
        ports = [p["containerPort"] for c in self.pod["spec"]["containers"] for p in c.get("ports") or []
                 if p.get("protocol", "TCP") == "TCP"]
        while not self.terminating.is_set():
            self.pod_ip = self.runtime.allocate_ip(self.uid)
            self.pod.setdefault("status", {})["podIP"] = self.pod_ip
            try:
                self.sandbox = await Sandbox.start(self.tmpfs, sysctls)
                self.io.record_sandbox(self.log_dir, self.sandbox)
                self.servers = await start_forwarders(self.sandbox, self.pod_ip, ports)
                return True
            except (OSError, RuntimeError, ValueError) as exc:
                self.event("FailedCreatePodSandBox", f"Failed to create pod sandbox: {exc}", "Warning")
                log.warning("pod %s: sandbox failed: %s", self.pod["metadata"]["name"], exc)
                await self._teardown(failed_ip=isinstance(exc, OSError))
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.terminating.wait(), 3)
        return False

    async def _prepare_volumes(self) -> bool:
        while not self.terminating.is_set():
            try:
                volumes = await prepare_volumes(self.pod, self.log_dir, self.io.fetchers(self.pod))
            except ContainerConfigError as exc:
                self.event("FailedMount", f"MountVolume.SetUp failed: {exc}", "Warning")
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.terminating.wait(), 3)
                continue
            self.volume_paths = volumes.paths
            self.tmpfs = volumes.tmpfs
            return True
        return False

    async def _teardown(self, failed_ip: bool = False) -> None:
        for server in self.servers:
            server.close()
        self.servers = []
        if self.sandbox is not None:
            await self.sandbox.stop()
            self.sandbox = None
        self.runtime.release_ip(self.pod_ip, failed_ip)

    def update(self, pod: dict[str, Any]) -> None:
        self.pod = {**pod, "status": {**(pod.get("status") or {}), "podIP": self.pod_ip}}
        if pod["metadata"].get("deletionTimestamp") and self.termination is None:
            grace = pod["metadata"].get("deletionGracePeriodSeconds")
            self.termination = background(self.terminate(float(30 if grace is None else grace)))

    def removed(self) -> None:
        """The pod is gone from the API (force-deleted): stop it at once."""
        self.gone = True
        if self.termination is None:
            self.termination = background(self.terminate(0.0))

    async def terminate(self, grace: float) -> None:
        """preStop, SIGTERM, SIGKILL after `grace`, for all containers at once; then the sandbox goes and the
        pod is deleted with grace 0 (unless someone force-deleted it already)."""
        self.terminating.set()
        await asyncio.gather(*(r.kill(grace, f"Stopping container {r.name}") for r in self.runners))
        with contextlib.suppress(asyncio.CancelledError):
            await self.main
        await self._teardown()
        if not self.gone:
            await self.flush_status()
            await self.io.delete_pod(self.pod)
        self.status_writer.cancel()
        self.io.forget_events(self.uid)
        self.on_done(self.uid)

    async def shutdown(self) -> None:
        """The agent stops: kill everything now, leave the API objects as they are."""
        self.main.cancel()
        self.status_writer.cancel()
        await self._teardown()

    # ---- status ----
    def build_status(self) -> dict[str, Any]:
        status = build_pod_status(self.pod, [dict(r.status) for r in self.runners], self.pod_ip, self.start_time)
        for condition in status["conditions"]:
            previous = self.transitions.get(condition["type"])
            if previous is None or previous[0] != condition["status"]:
                self.transitions[condition["type"]] = (condition["status"], now_rfc3339())
            condition["lastTransitionTime"] = self.transitions[condition["type"]][1]
        return status

    async def flush_status(self) -> None:
        status = self.build_status()
        if status != self.last_posted:
            with contextlib.suppress(ApiException):
                await self.io.post_status(self.pod, status)
            self.last_posted = status

    async def write_status_forever(self) -> None:
        while True:
            await self.dirty.wait()
            await asyncio.sleep(0.1)     # coalesce bursts of changes into one write
            self.dirty.clear()
            try:
                await self.flush_status()
            except Exception as exc:
                log.warning("status of %s not written: %s", self.pod["metadata"]["name"], exc)


"""The API side of running pods: their Secrets/ConfigMaps/claims/tokens, status writes, Events, deletion."""
from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kubernetes.client.rest import ApiException

from textgen_node_agent.envs import ContainerConfigError, build_env
from textgen_node_agent.kube import Kube
from textgen_node_agent.nodes import now_micro, now_rfc3339
from textgen_node_agent.sandbox import Sandbox
from textgen_node_agent.volumes import Fetchers

log = logging.getLogger("node-agent.pod-io")


class PodIO:
    """API calls on behalf of pods; `base_env(pod)` is the image-like environment every container starts from."""

    def __init__(self, kube: Kube, base_env: Any) -> None:
        self.kube = kube
        self.base_env = base_env          # Callable[[pod], dict[str, str]]
        self._event_tasks: set[asyncio.Task[None]] = set()
        # (pod uid, container, reason, message) -> [Event name, count]: a repeated Event is counted on the
        # first one (count, lastTimestamp), as the kubelet's event correlator aggregates.
        self._seen: dict[tuple[str, str, str, str], list[Any]] = {}

    async def data(self, namespace: str, kind: str, name: str) -> dict[str, bytes] | None:
        """A Secret's or ConfigMap's data as bytes, None when it does not exist."""
        try:
            if kind == "secret":
                secret = await self.kube.call(self.kube.core.read_namespaced_secret, name, namespace)
                return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}
            cm = await self.kube.call(self.kube.core.read_namespaced_config_map, name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        out = {k: v.encode() for k, v in (cm.data or {}).items()}
        out.update({k: base64.b64decode(v) for k, v in (cm.binary_data or {}).items()})
        return out

    async def resolve_env(self, pod: dict[str, Any], container: dict[str, Any], pod_ip: str | None) -> dict[str, str]:
        """The container's environment, with every Secret/ConfigMap it refers to read now."""
        namespace = pod["metadata"]["namespace"]
        wanted: set[tuple[str, str]] = set()
        for entry in container.get("envFrom") or []:
            ref = entry.get("secretRef") or entry.get("configMapRef") or {}
            wanted.add(("secret" if "secretRef" in entry else "configmap", ref.get("name", "")))
        for entry in container.get("env") or []:
            source = entry.get("valueFrom") or {}
            for kind, key in (("secret", "secretKeyRef"), ("configmap", "configMapKeyRef")):
                if key in source:
                    wanted.add((kind, source[key]["name"]))
        found: dict[tuple[str, str], Mapping[str, str] | None] = {}
        for kind, name in wanted:
            raw = await self.data(namespace, kind, name)
            found[(kind, name)] = None if raw is None else {k: v.decode(errors="replace") for k, v in raw.items()}
        view = {**pod, "status": {**(pod.get("status") or {}), "podIP": pod_ip or "",
                                  "podIPs": [{"ip": pod_ip}] if pod_ip else []}}
        return build_env(container, view, self.base_env(pod), lambda kind, name: found.get((kind, name)))

    def fetchers(self, pod: dict[str, Any]) -> Fetchers:
        namespace = pod["metadata"]["namespace"]

        async def data(kind: str, name: str) -> Mapping[str, bytes] | None:
            return await self.data(namespace, kind, name)

        async def claim_path(name: str) -> Path:
            try:
                claim = await self.kube.call(self.kube.core.read_namespaced_persistent_volume_claim, name, namespace)
            except ApiException as exc:
                if exc.status == 404:
                    raise ContainerConfigError(f'persistentvolumeclaim "{name}" not found') from None
                raise
            if claim.status.phase != "Bound" or not claim.spec.volume_name:
                raise ContainerConfigError(f'unbound immediate PersistentVolumeClaims: "{name}" is {claim.status.phase}')
            volume = await self.kube.call(self.kube.core.read_persistent_volume, claim.spec.volume_name)
            source = volume.spec.host_path or volume.spec.local
            if source is None:
                raise ContainerConfigError(f"volume {volume.metadata.name} is neither hostPath nor local: "
                                           "the node agent mounts only directories")
            return Path(source.path)

        async def token(projection: Mapping[str, Any]) -> str:
            request = {"spec": {"audiences": [projection["audience"]] if projection.get("audience") else None,
                                "expirationSeconds": projection.get("expirationSeconds", 3607),
                                "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": pod["metadata"]["name"],
                                                   "uid": pod["metadata"]["uid"]}}}
            answer = await self.kube.call(self.kube.core.create_namespaced_service_account_token,
                                          pod["spec"].get("serviceAccountName") or "default", namespace, request)
            value: str = answer.status.token
            return value

        return Fetchers(data, claim_path, token)

    async def post_status(self, pod: dict[str, Any], status: dict[str, Any]) -> None:
        meta = pod["metadata"]
        await self.kube.call(self.kube.core.patch_namespaced_pod_status, meta["name"], meta["namespace"],
                             {"status": status})

    async def delete_pod(self, pod: dict[str, Any]) -> None:
        """Removes a terminated pod for good (grace 0, this uid only), as the kubelet does. The grace period goes
        in the body: with a body, the API server ignores the gracePeriodSeconds query parameter."""
        meta = pod["metadata"]
        try:
            await self.kube.call(self.kube.core.delete_namespaced_pod, meta["name"], meta["namespace"],
                                 body={"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}})
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    def event(self, pod: dict[str, Any], reason: str, message: str, kind: str, container: str | None) -> None:
        """Records an Event on the pod in the background (reported by component "kubelet", as users expect)."""
        meta = pod["metadata"]
        involved = {"kind": "Pod", "apiVersion": "v1", "name": meta["name"], "namespace": meta["namespace"],
                    "uid": meta["uid"], **({"fieldPath": f"spec.containers{{{container}}}"} if container else {})}
        body = {"metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
                "involvedObject": involved, "reason": reason, "message": message[:1024], "type": kind,
                "source": {"component": "kubelet", "host": pod["spec"].get("nodeName", "")},
                "firstTimestamp": now_rfc3339(), "lastTimestamp": now_rfc3339(), "eventTime": None, "count": 1,
                "reportingComponent": "kubelet", "reportingInstance": pod["spec"].get("nodeName", "")}
        key = (meta["uid"], container or "", reason, message)
        task = asyncio.create_task(self._record_event(meta["namespace"], body, key))
        self._event_tasks.add(task)
        task.add_done_callback(self._event_tasks.discard)

    async def _record_event(self, namespace: str, body: dict[str, Any], key: tuple[str, str, str, str]) -> None:
        seen = self._seen.get(key)
        try:
            if seen is not None and seen[0] is not None:
                seen[1] += 1
                await self.kube.call(self.kube.core.patch_namespaced_event, seen[0], namespace,
                                     {"count": seen[1], "lastTimestamp": body["lastTimestamp"]})
                return
            self._seen[key] = [None, 1]
            created = await self.kube.call(self.kube.core.create_namespaced_event, namespace, body)
            self._seen[key][0] = created.metadata.name
        except Exception as exc:   # an Event is best effort, as in the kubelet
            log.info("event not recorded: %s", exc)

    def forget_events(self, uid: str) -> None:
        """Drops a removed pod's aggregation keys."""
        for key in [k for k in self._seen if k[0] == uid]:
            del self._seen[key]

    @staticmethod
    def record_sandbox(pod_dir: Path, sandbox: Sandbox) -> None:
        """pid and netns inode of a sandbox, so a restarted agent can kill what a killed one left running."""
        pod_dir.mkdir(parents=True, exist_ok=True)
        (pod_dir / "sandbox").write_text(f"{sandbox.pid} {sandbox.netns_inode()} {now_micro()}\n")

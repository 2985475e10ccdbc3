"""A local-path style dynamic provisioner for the StorageClass `hack/cluster` declares default.

A pending claim of that class gets a directory under <state>/claims/ and a hostPath PersistentVolume pointing
to it, pre-bound to the claim (the PV controller completes the binding); the directory outlives pods, so a
model downloaded once survives restarts and rollouts. A released volume (its claim deleted) is removed with
its directory (reclaimPolicy Delete). A claim the agent cannot serve stays Pending with a ProvisioningFailed
Event saying why.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from kubernetes.client.rest import ApiException

from textgen_node_agent.kube import Event, Kube, background
from textgen_node_agent.nodes import now_rfc3339
from textgen_node_agent.quantity import parse_quantity

log = logging.getLogger("node-agent.provisioner")
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"


def refusal(claim: dict[str, Any], claims_dir: Path) -> str | None:
    """Why a claim of our class cannot be provisioned here, or None."""
    spec = claim["spec"]
    if spec.get("volumeMode") == "Block":
        return "volumeMode Block is not supported: the node agent provisions directories (use Filesystem)"
    if spec.get("selector"):
        return "claims with a selector cannot be dynamically provisioned (remove spec.selector)"
    if spec.get("dataSource") or spec.get("dataSourceRef"):
        return "volume populators and clones (spec.dataSource) are not supported by the node agent"
    size = parse_quantity(((spec.get("resources") or {}).get("requests") or {}).get("storage", "0"))
    claims_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(claims_dir).free
    if size > free:
        return f"requested {size} bytes but only {free} bytes are free under {claims_dir}"
    return None


def build_volume(claim: dict[str, Any], path: Path, storage_class: str, provisioner: str) -> dict[str, Any]:
    meta, spec = claim["metadata"], claim["spec"]
    return {"apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": f"pvc-{meta['uid']}", "annotations": {PROVISIONED_BY: provisioner}},
            "spec": {"capacity": {"storage": spec["resources"]["requests"]["storage"]},
                     "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                     "persistentVolumeReclaimPolicy": "Delete", "storageClassName": storage_class,
                     "volumeMode": "Filesystem",
                     "hostPath": {"path": str(path), "type": "DirectoryOrCreate"},
                     "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": meta["namespace"],
                                  "name": meta["name"], "uid": meta["uid"]}}}


class Provisioner:
    def __init__(self, kube: Kube, claims_dir: Path, storage_class: str, name: str) -> None:
        self.kube, self.claims_dir, self.storage_class, self.name = kube, claims_dir, storage_class, name
        self.refused: set[str] = set()

    def start(self) -> None:
        self.kube.start_watch(self.kube.core.list_persistent_volume_claim_for_all_namespaces, self.on_claim)
        self.kube.start_watch(self.kube.core.list_persistent_volume, self.on_volume)

    def on_claim(self, event: Event) -> None:
        kind, claim = event
        if kind in ("DELETED", "SYNCED") or claim["spec"].get("storageClassName") != self.storage_class:
            return
        if (claim.get("status") or {}).get("phase") == "Pending" and not claim["spec"].get("volumeName"):
            background(self.provision(claim))

    async def provision(self, claim: dict[str, Any]) -> None:
        meta = claim["metadata"]
        reason = refusal(claim, self.claims_dir)
        if reason:
            if meta["uid"] not in self.refused:
                self.refused.add(meta["uid"])
                await self._event(claim, "ProvisioningFailed", f"failed to provision volume: {reason}")
            return
        path = self.claims_dir / f"{meta['namespace']}_{meta['name']}_{meta['uid']}"
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o777)      # any runAsUser may write, as local-path-provisioner makes them
        try:
            await self.kube.call(self.kube.core.create_persistent_volume,
                                 build_volume(claim, path, self.storage_class, self.name))
        except ApiException as exc:
            if exc.status != 409:
                raise
            return
        await self._event(claim, "ProvisioningSucceeded", f"Successfully provisioned volume pvc-{meta['uid']} at {path}")

    def on_volume(self, event: Event) -> None:
        kind, volume = event
        if kind in ("DELETED", "SYNCED") or (volume["metadata"].get("annotations") or {}).get(PROVISIONED_BY) != self.name:
            return
        if (volume.get("status") or {}).get("phase") == "Released" and \
                volume["spec"].get("persistentVolumeReclaimPolicy") == "Delete":
            background(self.delete(volume))

    async def delete(self, volume: dict[str, Any]) -> None:
        path = Path(volume["spec"]["hostPath"]["path"])
        if path.parent == self.claims_dir:
            shutil.rmtree(path, ignore_errors=True)
        try:
            await self.kube.call(self.kube.core.delete_persistent_volume, volume["metadata"]["name"])
        except ApiException as exc:
            if exc.status != 404:
                raise

    async def _event(self, claim: dict[str, Any], reason: str, message: str) -> None:
        meta = claim["metadata"]
        body = {"metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
                "involvedObject": {"kind": "PersistentVolumeClaim", "apiVersion": "v1", "name": meta["name"],
                                   "namespace": meta["namespace"], "uid": meta["uid"]},
                "reason": reason, "message": message, "type": "Normal" if reason.endswith("Succeeded") else "Warning",
                "source": {"component": self.name}, "firstTimestamp": now_rfc3339(), "lastTimestamp": now_rfc3339(),
                "count": 1}
        try:
            await self.kube.call(self.kube.core.create_namespaced_event, meta["namespace"], body)
        except ApiException as exc:
            log.info("event not recorded: %s", exc)

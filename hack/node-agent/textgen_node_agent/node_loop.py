"""Registers the agent's nodes and keeps them alive: Lease renewals (what the node lifecycle controller reads)
and node status (conditions, capacity), as a kubelet does."""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from kubernetes.client.rest import ApiException

from textgen_node_agent.kube import Kube
from textgen_node_agent.nodes import build_lease, build_node, build_node_status, now_micro

log = logging.getLogger("node-agent.nodes")
NODE_STATUS_SECONDS = 30   # the kubelet reports at least every 5 min; sooner here keeps heartbeats visible


async def register_node(kube: Kube, name: str, profile: str, kubelet_port: int) -> str:
    """Creates the Node (or updates labels/taints of an existing one, as a restarted kubelet does); its uid."""
    body = build_node(name, profile)
    try:
        node = await kube.call(kube.core.create_node, body)
    except ApiException as exc:
        if exc.status != 409:
            raise
        node = await kube.call(kube.core.patch_node, name, {"metadata": body["metadata"], "spec": body["spec"]})
    await kube.call(kube.core.patch_node_status, name, {"status": build_node_status(profile, kubelet_port)})
    log.info("node %s (%s) registered", name, profile)
    uid: str = node.metadata.uid
    return uid


async def renew_lease(kube: Kube, name: str, uid: str, duration: int) -> None:
    lease: dict[str, Any] = build_lease(name, uid, duration)
    try:
        await kube.call(kube.coordination.patch_namespaced_lease, name, "kube-node-lease",
                        {"spec": {"holderIdentity": name, "leaseDurationSeconds": duration, "renewTime": now_micro()}})
    except ApiException as exc:
        if exc.status != 404:
            raise
        await kube.call(kube.coordination.create_namespaced_lease, "kube-node-lease", lease)


async def keep_node_alive(kube: Kube, name: str, profile: str, lease_seconds: int, kubelet_port: int) -> None:
    """Forever: renew the Lease every quarter of its duration (the kubelet's ratio), post status now and then."""
    uid = await register_node(kube, name, profile, kubelet_port)
    renewals_per_status = max(1, round(NODE_STATUS_SECONDS / (lease_seconds / 4)))
    count = 0
    while True:
        try:
            await renew_lease(kube, name, uid, lease_seconds)
            count += 1
            if count % renewals_per_status == 0:
                await kube.call(kube.core.patch_node_status, name, {"status": build_node_status(profile, kubelet_port)})
        except ApiException as exc:
            if exc.status == 404:  # the Node was deleted: a kubelet re-registers
                uid = await register_node(kube, name, profile, kubelet_port)
            else:
                log.warning("heartbeat of %s failed: %s", name, exc.reason)
        except Exception as exc:
            log.warning("heartbeat of %s failed: %s", name, exc)
        await asyncio.sleep(lease_seconds / 4)

"""The agent: its nodes' heartbeats, the provisioner, and one PodWorker per pod bound to its nodes."""
from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textgen_node_agent.config import AgentConfig, container_base_env
from textgen_node_agent.ipam import LoopbackIPAM
from textgen_node_agent.kube import Event, Kube, background
from textgen_node_agent.logs_server import serve_logs
from textgen_node_agent.node_loop import keep_node_alive
from textgen_node_agent.nodes import PROFILES, device_override
from textgen_node_agent.pod_io import PodIO
from textgen_node_agent.pod_worker import PodWorker
from textgen_node_agent.provisioner import Provisioner
from textgen_node_agent.sandbox import pids_in_netns

log = logging.getLogger("node-agent")
DEVICE_OVERRIDE_ENV = "TEXTGEN_DEVICE_OVERRIDE"


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.kube = Kube(config.kubeconfig)
        self.nodes: dict[str, str] = {}    # node name -> profile
        for entry in config.node_names:
            profile, name = entry.split("=", 1)
            self.nodes[name] = profile
        for name, profile in self.nodes.items():
            if profile not in PROFILES:
                raise SystemExit(f"--node {profile}={name}: unknown profile {profile!r}; one of {sorted(PROFILES)}")
        self.ipam = LoopbackIPAM(config.pod_cidr)
        self.io = PodIO(self.kube, self.base_env)
        self.workers: dict[str, PodWorker] = {}

    # ---- Runtime (for PodWorker) ----
    def allocate_ip(self, uid: str) -> str:
        return self.ipam.allocate(uid)

    def release_ip(self, ip: str | None, failed: bool = False) -> None:
        self.ipam.release(ip, failed)

    def pod_dir(self, pod: dict[str, Any]) -> Path:
        meta = pod["metadata"]
        return self.config.pods_dir / f"{meta['namespace']}_{meta['name']}_{meta['uid']}"

    def base_env(self, pod: dict[str, Any]) -> dict[str, str]:
        env = container_base_env(self.config)
        env["HOSTNAME"] = pod["metadata"]["name"]
        override = device_override(self.nodes[pod["spec"]["nodeName"]])
        if override:
            env[DEVICE_OVERRIDE_ENV] = override
        return env

    # ---- pods ----
    def on_pod(self, event: Event) -> None:
        kind, pod = event
        if kind == "SYNCED":
            return self._forget_missing(pod["uids"], pod.get("node"))
        uid = pod["metadata"]["uid"]
        worker = self.workers.get(uid)
        if kind == "DELETED":
            if worker:
                worker.removed()
            return
        if worker is None:
            if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                return      # finished before (an agent restart): nothing to run
            if pod["metadata"].get("deletionTimestamp"):
                background(self.io.delete_pod(pod))
                return
            worker = self.workers[uid] = PodWorker(self, pod)
            worker.on_done = self._forget
        worker.update(pod)

    def _forget(self, uid: str) -> None:
        self.workers.pop(uid, None)

    def _forget_missing(self, uids: list[str], node: str | None) -> None:
        for uid, worker in list(self.workers.items()):
            if worker.pod["spec"]["nodeName"] == node and uid not in uids:
                worker.removed()

    def watch_node_pods(self, node: str) -> None:
        def on_event(event: Event) -> None:
            if event[0] == "SYNCED":
                event = ("SYNCED", {**event[1], "node": node})
            self.on_pod(event)
        self.kube.start_watch(self.kube.core.list_pod_for_all_namespaces, on_event,
                              field_selector=f"spec.nodeName={node}")

    def find_pod(self, namespace: str, name: str) -> tuple[Path, dict[str, int], Callable[[], bool]] | None:
        """For the logs endpoint: a pod's directory, its containers' restart counts, whether it still runs."""
        for worker in self.workers.values():
            meta = worker.pod["metadata"]
            if (meta["namespace"], meta["name"]) == (namespace, name):
                restarts = {r.name: int(r.status["restartCount"]) for r in worker.runners}
                return worker.log_dir, restarts, lambda: not worker.terminating.is_set() and not worker.main.done()
        dirs = sorted(self.config.pods_dir.glob(f"{namespace}_{name}_*"), key=lambda d: d.stat().st_mtime)
        if not dirs:
            return None
        restarts = {c.name: max(int(f.stem) for f in c.glob("*.log")) for c in dirs[-1].iterdir()
                    if c.is_dir() and any(c.glob("*.log"))}
        return dirs[-1], restarts, lambda: False

    # ---- process ----
    async def run(self) -> None:
        kill_leftovers(self.config.pods_dir)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        for name, profile in self.nodes.items():
            background(keep_node_alive(self.kube, name, profile, self.config.lease_seconds,
                                       self.config.kubelet_port))
            self.watch_node_pods(name)
        if self.config.kubelet_port:
            assert self.config.serving_cert and self.config.serving_key
            await serve_logs(self.find_pod, self.config.kubelet_port, self.config.serving_cert,
                             self.config.serving_key)
        Provisioner(self.kube, self.config.claims_dir, self.config.storage_class, self.config.provisioner_name).start()
        log.info("node agent up: nodes %s, pod IPs from %s", ", ".join(self.nodes), self.config.pod_cidr)
        await stop.wait()
        log.info("stopping: killing the processes of %d pods (pods stay in the API)", len(self.workers))
        await asyncio.gather(*(w.shutdown() for w in self.workers.values()), return_exceptions=True)


def kill_leftovers(pods_dir: Path) -> None:
    """Kills what an agent that was SIGKILLed left running: every process in a recorded sandbox's netns."""
    for record in pods_dir.glob("*/sandbox"):
        try:
            pid, inode = (int(x) for x in record.read_text().split()[:2])
            if os.stat(f"/proc/{pid}/ns/net").st_ino == inode:
                for stray in pids_in_netns(inode):
                    os.kill(stray, signal.SIGKILL)
        except (OSError, ValueError):
            pass
        record.unlink(missing_ok=True)

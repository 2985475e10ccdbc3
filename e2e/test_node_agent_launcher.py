"""A real textgen-launcher pod on the node agent's NVIDIA-like node: shaped as the operator builds it
(non-root, read-only root, /dev/shm tmpfs, /tmp emptyDir, the model cache a claim at /data, probes on the named
port), computing on the CPU through TEXTGEN_DEVICE_OVERRIDE, answering a generation at its pod IP."""
from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import kubernetes.client

from e2e.harness import AGENT_NODES, Cluster, agent_placement, apply_yaml, wait_for
from e2e.test_node_agent_pods import condition, pod_yaml, read_pod

MODEL_DIR = "tiny-llama"


def place_tiny_model(cluster: Cluster, namespace: str) -> None:
    """A claim, bound, with a tiny random-weight llama written into its directory (the model cache)."""
    apply_yaml(cluster, "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: model-cache}\n"
                        "spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n", namespace)
    core = kubernetes.client.CoreV1Api(cluster.api_client())
    volume = wait_for(lambda: core.read_namespaced_persistent_volume_claim("model-cache", namespace).spec.volume_name,
                      30, "the model cache claim bound")
    path = Path(core.read_persistent_volume(volume).spec.host_path.path) / MODEL_DIR
    # A subprocess: torch stays out of the test process.
    subprocess.run([sys.executable, "-c", "import sys; from textgen_server.testing import build_tiny_model; "
                    "build_tiny_model(sys.argv[1], arch='llama')", str(path)], check=True, timeout=300)
    # The pod runs as uid 1000 and safetensors writes its file 0600: make the cache readable, as an operator
    # who pre-loads a cache would.
    subprocess.run(["chmod", "-R", "a+rX", str(path)], check=True)


def launcher_container() -> dict[str, object]:
    probe = {"httpGet": {"path": "/health", "port": "http"}, "timeoutSeconds": 5}
    return {
        "name": "server", "image": "ghcr.io/example/textgen-server:cuda",
        "command": ["textgen-launcher"],
        "args": ["--model-id", f"/data/{MODEL_DIR}", "--num-shard", "1", "--port", "80", "--hostname", "0.0.0.0",
                 "--huggingface-hub-cache", "/data", "--device", "cuda"],
        "ports": [{"name": "http", "containerPort": 80}],
        "startupProbe": {**probe, "periodSeconds": 1, "failureThreshold": 180},
        "readinessProbe": {**probe, "periodSeconds": 2},
        "resources": {"limits": {"nvidia.com/gpu": "1"}, "requests": {"nvidia.com/gpu": "1"}},
        "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True},
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": "shm", "mountPath": "/dev/shm"}, {"name": "tmp", "mountPath": "/tmp"},
                         {"name": "model-cache", "mountPath": "/data"}],
    }


def test_launcher_pod_answers_a_generation_at_its_pod_ip(cluster: Cluster, namespace: str) -> None:
    place_tiny_model(cluster, namespace)
    volumes = [{"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}}, {"name": "tmp", "emptyDir": {}},
               {"name": "model-cache", "persistentVolumeClaim": {"claimName": "model-cache"}}]
    security = {"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000, "runAsNonRoot": True,
                "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]}
    apply_yaml(cluster, pod_yaml("tiny-llama-0", [launcher_container()], volumes=volumes, securityContext=security,
                                 **agent_placement(AGENT_NODES["nvidia"])), namespace)

    def ready_pod() -> dict[str, Any] | None:
        pod = read_pod(cluster, namespace, "tiny-llama-0")
        return pod if pod and condition(pod, "Ready") == "True" else None

    pod = wait_for(ready_pod, 240, "the launcher pod Ready")
    request = urllib.request.Request(
        f"http://{pod['status']['podIP']}:80/generate", method="POST", headers={"Content-Type": "application/json"},
        data=json.dumps({"inputs": "Hello", "parameters": {"max_new_tokens": 5, "details": True}}).encode())
    with urllib.request.urlopen(request, timeout=60) as answer:
        generated = json.load(answer)

    assert generated["details"]["generated_tokens"] == 5, generated
    log = next((cluster.state_dir / "node-agent" / "pods").glob(f"{namespace}_tiny-llama-0_*/server/0.log"))
    assert "TEXTGEN_DEVICE_OVERRIDE=cpu" in log.read_text()

"""Every example in crds/examples/ on real pods: the operator's StatefulSet runs on the node agent's nodes
(hack/node-agent), each pod's container is a real `textgen-launcher` with one shard process per accelerator,
and the TGS becomes Ready only because the pods' real probes pass. Each pod then answers a real generation at
its own pod IP.

What is changed in an example: its model id (a tiny random-weight model of the same architecture family, with
head counts every example's shard count divides) and `scheduling` (the agent nodes' label and taint); nothing
else. Devices are simulated: the agent's NVIDIA/Gaudi-like nodes set TEXTGEN_DEVICE_OVERRIDE=cpu, and the
launcher says so in its log. The examples run one at a time (the 70B Gaudi one has 8 shard processes).
"""
from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import yaml

from e2e.harness import Cluster, apply_yaml
from e2e.operator_run import Operator, wait_ready
from e2e.real_pods import (AGENT_LABEL, EXAMPLES, ProcessPeak, example_on_real_pods, generate, launcher_pids,
                           operator, pod_log, pod_processes, pods, process_peak, shard_pids)

__all__ = ["operator", "process_peak"]   # fixtures
DEVICE = {"nvidia": "cuda", "gaudi": "hpu", "cpu": "cpu"}
READY_TIMEOUT = 600      # 8 shards importing torch on 2 shared cores


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_example_serves_from_real_pods(cluster: Cluster, operator: Operator, namespace: str,
                                       process_peak: ProcessPeak, example: Path) -> None:
    original, body = example_on_real_pods(example)
    spec = original["spec"]
    if "tokenSecretRef" in spec["model"]:
        ref = spec["model"]["tokenSecretRef"]
        cluster.kubectl("create", "secret", "generic", ref["name"], "-n", namespace,
                        f"--from-literal={ref.get('key', 'token')}=hf_not_needed_for_a_local_model")
    [applied] = apply_yaml(cluster, yaml.safe_dump(body), namespace)
    name, replicas, shards = applied["metadata"]["name"], spec["replicas"], spec["accelerator"]["count"]
    accelerator = spec["accelerator"]["type"]

    wait_ready(cluster, namespace, name, replicas, timeout=READY_TIMEOUT)
    placed = pods(cluster, namespace, name)
    assert len(placed) == replicas
    for pod in placed:
        node = cluster.kubectl("get", "node", pod["spec"]["nodeName"], "-o", "json")
        assert f'"{AGENT_LABEL}": "true"' in node.stdout, f"{pod['metadata']['name']} is not on an agent node"
        args = pod["spec"]["containers"][0]["args"]
        assert args[args.index("--device") + 1] == DEVICE[accelerator]
        assert args[args.index("--num-shard") + 1] == str(shards)
        ip = pod["status"]["podIP"]
        assert ipaddress.ip_address(ip).is_loopback, ip
        processes = pod_processes(cluster, pod)
        assert len(launcher_pids(processes)) == 1, processes
        assert len(shard_pids(processes)) == shards, processes
        answer = generate(ip, max_new_tokens=16)
        assert answer["details"]["generated_tokens"] == 16, answer
        assert answer["details"]["finish_reason"] == "length", answer
        log = pod_log(cluster, pod)
        assert f"starting {shards} shard(s) on cpu" in log, log[-3000:]
        if accelerator != "cpu":   # the one simulated part, said plainly by the launcher
            assert "TEXTGEN_DEVICE_OVERRIDE" in log, log[-3000:]
    assert process_peak.peak == replicas * (shards + 1), "launchers and shards at once, nothing else"

#!/usr/bin/env python
"""Rolling upgrades under load on real pods: the operator's warmup-aware rollout against the StatefulSet
controller's own RollingUpdate, measured the same way in the same run.

Both runs serve the same tiny Llama (e2e/real_pods.tiny_model) from 3 real `textgen-launcher` pods on the node
agent's `agent-cpu-0` (hack/node-agent), with the same pod template (the operator's builder), a continuous load
of streaming requests sent to the Ready pods as kube-proxy would (e2e/ready_pods_load.py), and one spec change
(a pod annotation) that replaces every pod:
  - operator: a TGS with rollout.maxSurge 1 (the default), driven by the operator (chart + local process);
  - statefulset: the StatefulSet our builder makes, applied by hand with `updateStrategy: RollingUpdate`
    (the controller deletes a pod, then waits for its replacement to be Ready, one at a time).
Reported per run: rollout time (spec change -> every pod at the new revision and Ready), the pods' warmup
(Ready minus container start, the operator's lastWarmupSeconds measure), the fewest Ready pods a pod watch saw
during the rollout, the most pods at once, ok / failed requests with reasons and their latency.

Usage: hack/cluster up && .venv/bin/python hack/bench-rollout.py [--concurrency 3] [--max-new-tokens 24]
       [--only operator|statefulset] [--json PATH]
A cluster of its own: TEXTGEN_CLUSTER_DIR=/tmp/x TEXTGEN_CLUSTER_API_PORT=... (hack/README.md) before both.
"""
from __future__ import annotations

import argparse
import json
import secrets
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import yaml  # noqa: E402

from e2e.harness import Cluster, apply_yaml, find_bin_dir, run_hack_cluster, wait_for  # noqa: E402
from e2e.operator_run import (condition, get_tgs, install_chart, run_operator, token_kubeconfig,  # noqa: E402
                              wait_ready)
from e2e.ready_pods_load import Load, ReadyPods  # noqa: E402
from e2e.real_pods import RELEASE, SYSTEM_NS, on_real_pods, tiny_model  # noqa: E402
from textgen_operator.builders import build_desired  # noqa: E402
from textgen_operator.config import OperatorConfig  # noqa: E402
from textgen_operator.pod_health import warmup_seconds  # noqa: E402
from textgen_operator.render import as_live  # noqa: E402

TIMEOUT = 900


@dataclass
class Result:
    run: str
    rollout_seconds: float
    warmup_seconds: float | None
    min_ready: int
    peak_pods: int
    ok: int
    failed: int
    reasons: dict[str, int]
    drained: int
    latency_p50_s: float | None
    latency_p99_s: float | None


def tgs_body(name: str, try_value: str) -> dict[str, Any]:
    body = yaml.safe_load((REPO_ROOT / "crds" / "examples" / "smollm2-cpu.yaml").read_text())
    body["metadata"]["name"] = name
    body["spec"].update({"replicas": 3, "kvCacheMemory": "64Mi", "podAnnotations": {"bench.textgen.dev/try": try_value}})
    return on_real_pods(body, tiny_model("llama"))


def pods_json(cluster: Cluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    out = cluster.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json").stdout
    return list(json.loads(out)["items"])


def mean_warmup(cluster: Cluster, namespace: str, selector: str) -> float | None:
    measured = [m[1] for p in pods_json(cluster, namespace, selector) if (m := warmup_seconds(p)) is not None]
    return sum(measured) / len(measured) if measured else None


def measure(cluster: Cluster, namespace: str, selector: str, change: Any, done: Any, args: argparse.Namespace,
            run: str) -> Result:
    """Load on, the change, wait for `done`, load off; the numbers of that window."""
    with ReadyPods(cluster.api_client(), namespace, selector) as ready:
        with Load(ready, max_new_tokens=args.max_new_tokens) as load:
            load.set_concurrency(args.concurrency)
            time.sleep(3)
            started = time.monotonic()
            change()
            wait_for(done, TIMEOUT, f"{run}: every pod at the new revision and Ready", interval=0.5)
            elapsed = time.monotonic() - started
            time.sleep(2)
        summary = load.summary()
    return Result(run, round(elapsed, 1), mean_warmup(cluster, namespace, selector), ready.min_ready(started),
                  ready.peak_pods, summary.ok, summary.failed, summary.reasons, summary.drained,
                  summary.latency_p50_s, summary.latency_p99_s)


def run_operator_rollout(cluster: Cluster, workdir: Path, args: argparse.Namespace) -> Result:
    namespace = f"bench-rollout-op-{secrets.token_hex(3)}"
    cluster.kubectl("create", "namespace", namespace)
    install_chart(cluster, RELEASE, SYSTEM_NS)
    kubeconfig = token_kubeconfig(cluster, workdir / "kubeconfig", RELEASE, SYSTEM_NS)
    try:
        with run_operator(kubeconfig, workdir, "--peering-name", RELEASE, "--blocked-retry-seconds", "2"):
            apply_yaml(cluster, yaml.safe_dump(tgs_body("bench", "1")), namespace)
            before = wait_ready(cluster, namespace, "bench", 3, timeout=TIMEOUT)["status"]["currentRevision"]

            def done() -> bool:
                tgs = get_tgs(cluster, namespace, "bench")
                status = tgs.get("status", {})
                return (condition(tgs, "Ready").get("status") == "True" and status.get("readyReplicas") == 3
                        and status.get("updatedReplicas") == 3
                        and status.get("currentRevision") not in (None, before))

            return measure(cluster, namespace, "app.kubernetes.io/instance=bench",
                           lambda: apply_yaml(cluster, yaml.safe_dump(tgs_body("bench", "2")), namespace),
                           done, args, "operator")
    finally:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false")


def plain_statefulset(namespace: str, try_value: str) -> list[dict[str, Any]]:
    """Our ServiceAccount and StatefulSet for the same spec, left to the StatefulSet controller's RollingUpdate."""
    crd = yaml.safe_load((REPO_ROOT / "crds" / "textgen.dev_textgenerationservices.yaml").read_text())
    tgs = as_live(tgs_body("bench", try_value), crd)
    tgs["metadata"].update({"namespace": namespace, "uid": "00000000-0000-0000-0000-000000000000"})
    objects = [o for o in build_desired(tgs, OperatorConfig()) if o["kind"] in ("ServiceAccount", "StatefulSet")]
    for obj in objects:
        obj["metadata"].pop("ownerReferences", None)
        if obj["kind"] == "StatefulSet":
            obj["spec"]["updateStrategy"] = {"type": "RollingUpdate"}
    return objects


def run_statefulset_rollout(cluster: Cluster, args: argparse.Namespace) -> Result:
    namespace = f"bench-rollout-sts-{secrets.token_hex(3)}"
    cluster.kubectl("create", "namespace", namespace)
    selector = "app.kubernetes.io/instance=bench"

    def sts_status() -> dict[str, Any]:
        out = cluster.kubectl("get", "statefulset", "bench", "-n", namespace, "-o", "json").stdout
        return dict(json.loads(out))

    def rolled() -> bool:
        sts = sts_status()
        st = sts.get("status", {})
        observed = st.get("observedGeneration") == sts["metadata"]["generation"]
        return bool(observed and st.get("updatedReplicas") == 3 and st.get("readyReplicas") == 3
                    and st.get("currentRevision") == st.get("updateRevision"))

    try:
        apply_yaml(cluster, yaml.safe_dump_all(plain_statefulset(namespace, "1")), namespace)
        wait_for(rolled, TIMEOUT, "the plain StatefulSet Ready", interval=1)
        return measure(cluster, namespace, selector,
                       lambda: apply_yaml(cluster, yaml.safe_dump_all(plain_statefulset(namespace, "2")), namespace),
                       rolled, args, "statefulset")
    finally:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false")


def print_table(results: list[Result]) -> None:
    print("\n| rollout of 3 pods | rollout time | pod warmup (mean) | min Ready during rollout | most pods | "
          "requests ok / failed | latency p50 / p99 | streams drained | failure reasons |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        warm = f"{r.warmup_seconds:.0f} s" if r.warmup_seconds is not None else "?"
        latency = f"{r.latency_p50_s or 0:.2f} / {r.latency_p99_s or 0:.2f} s"
        print(f"| {r.run} | {r.rollout_seconds:.0f} s | {warm} | {r.min_ready} of 3 | {r.peak_pods} | "
              f"{r.ok} / {r.failed} | {latency} | {r.drained} | {r.reasons or '-'} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=3, help="streams at once during the rollout")
    parser.add_argument("--max-new-tokens", type=int, default=24, help="tokens per streamed request")
    parser.add_argument("--only", choices=("operator", "statefulset"), help="run only one of the two")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    kubeconfig = Path(run_hack_cluster("up").strip().splitlines()[-1])     # `up` prints the kubeconfig's path
    cluster = Cluster(kubeconfig=kubeconfig, bin_dir=find_bin_dir(), state_dir=kubeconfig.parent)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-rollout-") as work:
        if args.only in (None, "statefulset"):
            results.append(run_statefulset_rollout(cluster, args))
            print(asdict(results[-1]), flush=True)
        if args.only in (None, "operator"):
            results.append(run_operator_rollout(cluster, Path(work), args))
            print(asdict(results[-1]), flush=True)
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""Benchmark of queue-depth autoscaling on the local cluster (a script, not a test).

Everything real but the devices: the operator (chart installed by helm, run locally with the chart's identity),
its HorizontalPodAutoscaler and the real HPA controller, a real Prometheus and prometheus-adapter
(`hack/cluster metrics up`, started here when not up), and `textgen-launcher` pods of a tiny llama on the node
agent, loaded through their Ready pods as kube-proxy would (e2e/ready_pods_load.py).

One TGS, autoscaled minReplicas..maxReplicas on --metric (default QueueAndBatchSize) with the operator's default
target unless --target, idles, then takes a load step of --streams concurrent streams for --step-seconds, then
the load stops. Printed:
  - time from the load step to the first new pod Ready, and to all pods the HPA asked for Ready,
  - time from the step to the queue back under target: the HPA's metric per Ready pod <= its target,
  - time from the end of the load to minReplicas,
  - replicas and the queue over time as a PNG (--plot): spec.replicas, Ready pods, the HPA's metric (sum over
    Ready pods) and tgi_queue_size summed over Ready pods (from Prometheus).

Usage: hack/cluster up && .venv/bin/python hack/bench-autoscale.py [--streams 6] [--plot autoscale.png]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from e2e.autoscaling_watch import Sample, Timeline, replica_changes  # noqa: E402
from e2e.harness import (REPO_ROOT, Cluster, apply_yaml, find_bin_dir, new_namespace_name,  # noqa: E402
                         run_hack_cluster, wait_for)
from e2e.metrics_pipeline import metrics_command, prometheus_query  # noqa: E402
from e2e.operator_run import chart_operator, get_tgs, wait_ready  # noqa: E402
from e2e.ready_pods_load import Load, ReadyPods  # noqa: E402
from e2e.real_pods import RELEASE, SYSTEM_NS, on_real_pods, tiny_model  # noqa: E402

METRICS = {"QueueSize": "textgen_ready_queue_size", "QueueAndBatchSize": "textgen_ready_queue_and_batch_size"}


def tgs_body(args: argparse.Namespace) -> dict[str, Any]:
    body = yaml.safe_load((REPO_ROOT / "crds" / "examples" / "smollm2-cpu.yaml").read_text())
    body["metadata"]["name"] = "bench"
    body["spec"]["limits"]["maxBatchSize"] = args.batch
    metric: dict[str, Any] = {"type": args.metric}
    if args.target:
        metric["averageValue"] = args.target
    body["spec"]["autoscaling"] = {
        "minReplicas": 1, "maxReplicas": args.max_replicas, "metric": metric,
        "behavior": {"scaleDown": {"stabilizationWindowSeconds": args.scale_down_window,
                                   "policies": [{"type": "Pods", "value": 1, "periodSeconds": 10}]}}}
    return dict(on_real_pods(body, tiny_model("llama")))


def queue_sampler(namespace: str, out: list[tuple[float, float]]) -> Any:
    def sample() -> None:
        expr = (f'sum(tgi_queue_size{{namespace="{namespace}"}} and on(namespace, pod) '
                f'(tgi_server_phase{{phase="ready"}} == 1))')
        result = prometheus_query(expr)
        out.append((time.monotonic(), float(result[0]["value"][1]) if result else 0.0))
    return sample


def run(args: argparse.Namespace, cluster: Cluster, namespace: str) -> dict[str, Any]:
    apply_yaml(cluster, yaml.safe_dump(tgs_body(args)), namespace)
    wait_ready(cluster, namespace, "bench", 1, timeout=300)
    tgs = get_tgs(cluster, namespace, "bench")
    hpa = yaml.safe_load(cluster.kubectl("get", "hpa", "bench", "-n", namespace, "-o", "yaml").stdout)
    target = float(hpa["spec"]["metrics"][0]["external"]["target"]["averageValue"])
    queue: list[tuple[float, float]] = []
    sample_queue = queue_sampler(namespace, queue)
    with Timeline(cluster, namespace, "bench", METRICS[args.metric]) as timeline, \
            ReadyPods(cluster.api_client(), namespace, "app.kubernetes.io/instance=bench") as ready, \
            Load(ready, max_new_tokens=args.tokens) as load:
        idle_end = time.monotonic() + args.idle_seconds
        while time.monotonic() < idle_end:
            sample_queue(); time.sleep(1)
        step = time.monotonic()
        load.set_concurrency(args.streams)
        while time.monotonic() < step + args.step_seconds:
            sample_queue(); time.sleep(1)
        stop = time.monotonic()
        load.set_concurrency(0)
        deadline = stop + args.down_timeout
        while time.monotonic() < deadline and get_tgs(cluster, namespace, "bench")["spec"]["replicas"] > 1:
            sample_queue(); time.sleep(1)
        down = time.monotonic()
        for _ in range(5):
            sample_queue(); time.sleep(1)
    return figures(args, timeline.samples, queue, ready.history, step, stop, down, target, load.summary(), tgs)


def first_after(samples: list[Sample], since: float, predicate: Any) -> float | None:
    hit = next((s for s in samples if s.t >= since and predicate(s)), None)
    return None if hit is None else hit.t - since


def figures(args: argparse.Namespace, samples: list[Sample], queue: list[tuple[float, float]],
            history: list[tuple[float, tuple[str, ...]]], step: float, stop: float, down: float, target: float,
            summary: Any, tgs: dict[str, Any]) -> dict[str, Any]:
    peak = max((s.spec_replicas for s in samples if step <= s.t <= stop), default=1)
    first_new = next((t - step for t, names in history if t >= step and len(names) >= 2), None)
    under = first_after(samples, step + 1, lambda s: s.ready >= peak and s.metric is not None
                        and s.metric / max(s.ready, 1) <= target)
    return {
        "streams": args.streams, "batch": args.batch, "metric": args.metric, "target_per_pod": target, "peak_replicas": peak,
        "warmup_s": tgs.get("status", {}).get("lastWarmupSeconds"),
        "step_to_first_new_pod_ready_s": first_new,
        "step_to_all_ready_s": first_after(samples, step, lambda s: s.ready >= peak and peak > 1),
        "step_to_metric_under_target_s": under,
        "load_stop_to_min_replicas_s": (down - stop) if down - stop < args.down_timeout else None,
        "replicas_during_step": replica_changes([s for s in samples if step <= s.t <= stop]),
        "requests_ok": summary.ok, "requests_failed": summary.failed, "failure_reasons": summary.reasons,
        "ttft_p50_s": summary.ttft_p50_s, "latency_p99_s": summary.latency_p99_s,
        "_series": (samples, queue, step, stop, target),
    }


def plot(path: Path, result: dict[str, Any]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples, queue, step, stop, target = result["_series"]
    t0 = samples[0].t
    fig, left = plt.subplots(figsize=(10, 5))
    times = [s.t - t0 for s in samples]
    left.step(times, [s.spec_replicas for s in samples], where="post", label="spec.replicas (HPA)", color="C0")
    left.step(times, [s.ready for s in samples], where="post", label="Ready pods", color="C2")
    left.set_xlabel("seconds"); left.set_ylabel("replicas")
    left.set_ylim(0, max(s.spec_replicas for s in samples) + 1)
    right = left.twinx()
    right.plot([t - t0 for t, _ in queue], [v for _, v in queue], label="tgi_queue_size, sum over Ready pods",
               color="C3")
    right.plot(times, [s.metric if s.metric is not None else float("nan") for s in samples], color="C1",
               label=f"HPA metric {result['metric']} (target {target:g}/pod)", linestyle="--")
    right.set_ylabel("requests")
    for x, text in ((step - t0, "load step"), (stop - t0, "load stops")):
        left.axvline(x, color="grey", linestyle=":"); left.text(x, 0.2, text, rotation=90, color="grey")
    lines = left.get_legend_handles_labels(), right.get_legend_handles_labels()
    left.legend(lines[0][0] + lines[1][0], lines[0][1] + lines[1][1], loc="upper right", fontsize=8)
    left.set_title(f"{result['streams']} streams on a tiny llama, maxBatchSize {result['batch']} per pod; "
                   "real HPA, Prometheus, prometheus-adapter")
    fig.tight_layout(); fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=6, help="concurrent streams of the load step")
    parser.add_argument("--metric", choices=sorted(METRICS), default="QueueAndBatchSize")
    parser.add_argument("--target", default="", help="averageValue per pod (default: the operator's)")
    parser.add_argument("--batch", type=int, default=2, help="limits.maxBatchSize of each pod")
    parser.add_argument("--max-replicas", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=48, help="tokens per stream")
    parser.add_argument("--idle-seconds", type=float, default=10)
    parser.add_argument("--step-seconds", type=float, default=90)
    parser.add_argument("--scale-down-window", type=int, default=15)
    parser.add_argument("--down-timeout", type=float, default=120)
    parser.add_argument("--plot", type=Path, default=Path("autoscale.png"))
    args = parser.parse_args()
    kubeconfig = Path(run_hack_cluster("up").strip().splitlines()[-1])
    cluster = Cluster(kubeconfig=kubeconfig, bin_dir=find_bin_dir(), state_dir=kubeconfig.parent)
    metrics_command("up")
    namespace = new_namespace_name("bench-autoscale")
    cluster.kubectl("create", "namespace", namespace)
    wait_for(lambda: cluster.kubectl("get", "sa", "default", "-n", namespace, check=False).returncode == 0, 30,
             "the namespace's default ServiceAccount")
    try:
        with tempfile.TemporaryDirectory() as work, chart_operator(cluster, Path(work), RELEASE, SYSTEM_NS):
            result = run(args, cluster, namespace)
    finally:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    plot(args.plot, result)
    for key, value in result.items():
        if not key.startswith("_"):
            print(f"{key}: {round(value, 1) if isinstance(value, float) else value}")
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()

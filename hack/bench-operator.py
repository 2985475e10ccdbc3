#!/usr/bin/env python3
"""Benchmark of the operator on the local control plane (a script, not a test).

Creates N TextGenerationServices at once (default 200) in a fresh namespace and measures:
  - create-to-StatefulSet latency p50/p99: from the TGS ADDED event to its StatefulSet ADDED event, both as
    they arrive on this script's watches (monotonic clock; server-side creationTimestamps have one-second
    granularity, too coarse for a 100 ms goal); also from the create call's return, as a cross-check,
  - time until every StatefulSet exists and every TGS status is Ready,
  - the operator's RSS and CPU time (it runs as a child process here),
  - API requests per reconcile (the operator's own counters),
  - writes at steady state (the API server's audit log, filtered on the operator's User-Agent).
Goal: p50 <= 100 ms, all converged within 60 s, zero writes at steady state.

Usage: hack/cluster up && .venv/bin/python hack/bench-operator.py [--count 200] [--steady-seconds 60]
Pods are simulated by kwok (nothing runs in them).
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import kubernetes.client
import kubernetes.config
import kubernetes.watch

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("TEXTGEN_CLUSTER_DIR", Path.home() / ".cache" / "textgen" / "cluster"))
USER_AGENT = "textgen-operator/"
WRITES = {"create", "update", "patch", "delete"}


def tgs_body(name: str) -> dict[str, Any]:
    # The simulated cluster has 16 GPUs, far fewer than 200 replicas: cpu replicas that tolerate every taint
    # spread over all five fake nodes (110 pods each) instead. The operator's work per TGS is the same.
    return {"apiVersion": "textgen.dev/v1alpha1", "kind": "TextGenerationService", "metadata": {"name": name},
            "spec": {"model": {"id": "org/tiny"}, "accelerator": {"type": "cpu", "count": 1},
                     "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                     "scheduling": {"tolerations": [{"operator": "Exists"}]}}}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def proc_usage(pid: int) -> tuple[float, float]:
    """(RSS MiB, CPU seconds) of a process, from /proc."""
    rss_kib = next(int(line.split()[1]) for line in open(f"/proc/{pid}/status") if line.startswith("VmRSS:"))
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return rss_kib / 1024, (int(fields[11]) + int(fields[12])) / ticks


def scrape(url: str) -> dict[str, float]:
    totals: dict[str, float] = {}
    for line in urllib.request.urlopen(url, timeout=5).read().decode().splitlines():
        if line.startswith("textgen_operator_") and not line.startswith("#"):
            name = line.split("{")[0].split(" ")[0]
            totals[name] = totals.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return totals


def audit_writes(offset: int) -> list[dict[str, Any]]:
    lines = (STATE / "audit.log").read_text().splitlines()[offset:]
    events = [json.loads(line) for line in lines if line.strip()]
    return [e for e in events if e.get("userAgent", "").startswith(USER_AGENT) and e["verb"] in WRITES]


def audit_length() -> int:
    return len((STATE / "audit.log").read_text().splitlines())


def start_operator(kubeconfig: Path, metrics_port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    return subprocess.Popen([sys.executable, "-m", "textgen_operator.main", "--standalone", "--liveness-port", "0",
                             "--metrics-port", str(metrics_port), "--bind-host", "127.0.0.1",
                             "--log-format", "json", "--log-level", "WARNING"], env=env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--steady-seconds", type=float, default=60)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--metrics-port", type=int, default=19391)
    args = parser.parse_args()

    kubeconfig = STATE / "kubeconfig"
    client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
    core, custom = kubernetes.client.CoreV1Api(client), kubernetes.client.CustomObjectsApi(client)
    # The CRD (and kopf's peering CRDs) straight from crds/, as `kubectl apply -f crds/` would.
    bin_dir = subprocess.run([str(ROOT / "hack" / "build-tools.sh"), "--print-bin-dir"], capture_output=True,
                             text=True, check=True).stdout.strip()
    for crd in sorted((ROOT / "crds").glob("*.yaml")):
        subprocess.run([f"{bin_dir}/kubectl", "--kubeconfig", str(kubeconfig), "apply", "--server-side",
                        "--field-manager=bench", "-f", str(crd)], check=True, capture_output=True)

    namespace = f"bench-{secrets.token_hex(3)}"
    core.create_namespace({"metadata": {"name": namespace}})
    deadline = time.monotonic() + 30
    while True:
        try:
            core.read_namespaced_service_account("default", namespace)
            break
        except kubernetes.client.ApiException:
            if time.monotonic() > deadline:
                raise SystemExit(f"namespace {namespace}: no default ServiceAccount after 30 s; is the "
                                 "controller-manager running (hack/cluster status)?")
            time.sleep(0.2)

    operator = start_operator(kubeconfig, args.metrics_port)
    metrics_url = f"http://127.0.0.1:{args.metrics_port}/metrics"
    try:
        run(args, client, custom, namespace, operator, metrics_url)
    finally:
        operator.terminate()
        operator.wait(30)
        core.delete_namespace(namespace)


def run(args: argparse.Namespace, client: kubernetes.client.ApiClient, custom: kubernetes.client.CustomObjectsApi,
        namespace: str, operator: subprocess.Popen[bytes], metrics_url: str) -> None:
    for _ in range(100):
        try:
            scrape(metrics_url)
            break
        except OSError:
            time.sleep(0.2)
    time.sleep(3)   # kopf lists and starts its watches
    load_at_start = os.getloadavg()[0]
    names = [f"tgs-{i:04d}" for i in range(args.count)]
    created: dict[str, float] = {}
    sts_seen: dict[str, float] = {}
    tgs_seen: dict[str, float] = {}
    apps = kubernetes.client.AppsV1Api(client)
    stop = threading.Event()

    def watch_tgs() -> None:
        w = kubernetes.watch.Watch()
        for event in w.stream(custom.list_namespaced_custom_object, "textgen.dev", "v1alpha1", namespace,
                              "textgenerationservices", timeout_seconds=int(args.timeout)):
            if event["type"] == "ADDED":
                tgs_seen.setdefault(event["object"]["metadata"]["name"], time.monotonic())
            if stop.is_set() or len(tgs_seen) == args.count:
                w.stop()

    def watch_statefulsets() -> None:
        w = kubernetes.watch.Watch()
        for event in w.stream(apps.list_namespaced_stateful_set, namespace, timeout_seconds=int(args.timeout)):
            if event["type"] == "ADDED":
                sts_seen.setdefault(event["object"].metadata.name, time.monotonic())
            if stop.is_set() or len(sts_seen) == args.count:
                w.stop()

    for target in (watch_statefulsets, watch_tgs):
        threading.Thread(target=target, daemon=True).start()
    time.sleep(1)
    before = scrape(metrics_url)
    t0 = time.monotonic()

    def create(name: str) -> None:
        custom.create_namespaced_custom_object("textgen.dev", "v1alpha1", namespace, "textgenerationservices",
                                               tgs_body(name))
        created[name] = time.monotonic()

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(create, names))
    created_all = time.monotonic() - t0

    def all_ready() -> bool:
        items = custom.list_namespaced_custom_object("textgen.dev", "v1alpha1", namespace,
                                                     "textgenerationservices")["items"]
        return len(items) == args.count and all(
            any(c["type"] == "Ready" and c["status"] == "True" for c in i.get("status", {}).get("conditions", []))
            for i in items)

    deadline = t0 + args.timeout
    while not all_ready():
        if time.monotonic() > deadline:
            raise SystemExit(f"not converged after {args.timeout} s: {len(sts_seen)} StatefulSets seen")
        time.sleep(0.5)
    converged = time.monotonic() - t0
    stop.set()
    sts_all = max(sts_seen.values()) - t0 if len(sts_seen) == args.count else float("nan")
    after = scrape(metrics_url)
    rss, cpu = proc_usage(operator.pid)

    latencies = [(sts_seen[n] - tgs_seen[n]) * 1000 for n in names if n in sts_seen and n in tgs_seen]
    from_call = [(sts_seen[n] - created[n]) * 1000 for n in names if n in sts_seen]
    reconciles = after["textgen_operator_reconciles_total"] - before.get("textgen_operator_reconciles_total", 0)
    requests = (after["textgen_operator_api_requests_total"]
                - before.get("textgen_operator_api_requests_total", 0))
    time.sleep(5)
    offset = audit_length()
    time.sleep(args.steady_seconds)
    steady = audit_writes(offset)
    result = {
        "count": args.count,
        "create_calls_seconds": round(created_all, 2),
        "all_statefulsets_seconds": round(sts_all, 2),
        "all_ready_seconds": round(converged, 2),
        "create_to_statefulset_ms_p50": round(statistics.median(latencies), 1),
        "create_to_statefulset_ms_p99": round(percentile(latencies, 0.99), 1),
        "create_call_return_to_statefulset_ms_p50": round(statistics.median(from_call), 1),
        "load_average_1m_at_start": load_at_start,
        "operator_rss_mib": round(rss, 1),
        "operator_cpu_seconds": round(cpu, 1),
        "reconciles": int(reconciles),
        "api_requests": int(requests),
        "api_requests_per_reconcile": round(requests / max(reconciles, 1), 2),
        "reconcile_seconds_mean": round((after.get("textgen_operator_reconcile_duration_seconds_sum", 0)
                                         - before.get("textgen_operator_reconcile_duration_seconds_sum", 0))
                                        / max(reconciles, 1), 3),
        "applies": int(after.get("textgen_operator_applies_total", 0) - before.get("textgen_operator_applies_total", 0)),
        f"writes_in_{int(args.steady_seconds)}s_steady_state": len(steady),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

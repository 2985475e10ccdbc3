#!/usr/bin/env python3
"""Benchmark of the operator on the local control plane (a script, not a test).

Creates N TextGenerationServices at once (default 200, from 16 client threads) in a fresh namespace and measures:
  - create-to-StatefulSet latency p50/p99: from the moment the API server finished creating a TGS to the moment
    it finished creating that TGS's StatefulSet. Both instants come from the API server's audit log
    (microseconds, one clock): creationTimestamps have one-second granularity, and a client's watch adds its own
    delivery lag, which under this load is itself tens to hundreds of milliseconds,
  - time until every StatefulSet exists and every TGS status is Ready,
  - the operator's RSS and CPU time (it runs as a child process here),
  - API requests per reconcile (the operator's own counters),
  - writes at steady state (the audit log, filtered on the operator's User-Agent).
Goal: p50 <= 100 ms, all converged within 60 s, zero writes at steady state.

The comparison, measured in the same run: a baseline reactor that does the least any operator must do -- one
watch on TGSs, and for each ADDED event one server-side apply of the very StatefulSet our builder makes, nothing
else (no ServiceAccount, Services, PDB or status; no queue, cache or kopf). It runs first, on its own namespace;
ours/baseline is the price of everything the operator does beyond that. On a machine where the API server is
saturated by the burst, the baseline shows the floor that no operator design can go below.

Usage: hack/cluster up && .venv/bin/python hack/bench-operator.py [--count 200] [--steady-seconds 60]
Pods are simulated by kwok (nothing runs in them).

Where the time goes: `burst_requests` counts the operator's requests the API server completed between the first
TGS create and the last StatefulSet create (audit log), by verb and resource: everything there beyond one
StatefulSet per TGS competes with the StatefulSets for the API server. `--profile FILE` also records the operator
with py-spy (raw collapsed stacks, 100 Hz) from the first create until all are Ready and prints its top functions.
`create_to_statefulset_ms_p50_operator_side` / `_api_side` split each latency at the instant the API server received
the StatefulSet write. `--compare LABEL=DIR` (e.g. `git archive <commit> operator | tar -x -C DIR`) runs an older
operator in the same run, `--rounds N` repeats all systems with the order rotated: on this shared machine ratios
between separate runs swing several-fold with the load, so only systems of the same round compare.

Every request honours the API server's HTTP 429 / Retry-After (right after the CRD is installed, its storage
answers 429 "storage is (re)initializing" for a moment): the baseline reactor watches through the operator's own
kube.Kube.follow, the bench's own calls through e2e.harness.throttle_aware_client (urllib3 retries 429).
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import signal
import datetime
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

import kopf
import kubernetes.client
import kubernetes.config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # the repository root: e2e's helpers
from e2e.harness import throttle_aware_client  # noqa: E402  (429 Retry-After aware, shared with the e2e suite)

from textgen_operator.builders import build_desired
from textgen_operator.config import OperatorConfig
from textgen_operator.kube import Kube

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("TEXTGEN_CLUSTER_DIR", Path.home() / ".cache" / "textgen" / "cluster"))
USER_AGENT = "textgen-operator/"
WRITES = {"create", "update", "patch", "delete"}
TGS = ("textgen.dev", "v1alpha1", "textgenerationservices")


# Never on the node agent's nodes (hack/node-agent): those run every pod as a real process.
KWOK_NODES_ONLY = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
    {"matchExpressions": [{"key": "textgen.dev/node-agent", "operator": "DoesNotExist"}]}]}}}


def tgs_body(name: str) -> dict[str, Any]:
    # The simulated cluster has 16 GPUs, far fewer than 200 replicas: cpu replicas that tolerate every taint
    # spread over all five fake (kwok) nodes (110 pods each) instead. The operator's work per TGS is the same.
    return {"apiVersion": "textgen.dev/v1alpha1", "kind": "TextGenerationService", "metadata": {"name": name},
            "spec": {"model": {"id": "org/tiny"}, "accelerator": {"type": "cpu", "count": 1},
                     "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                     "scheduling": {"tolerations": [{"operator": "Exists"}], "affinity": KWOK_NODES_ONLY}}}


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


# --- the audit log -------------------------------------------------------------------------------------------

def audit_events(since: float) -> list[dict[str, Any]]:
    """ResponseComplete events of every audit file written since `since` (the API server rotates at 100 MB)."""
    files = sorted((f for f in STATE.glob("audit*.log") if f.stat().st_mtime >= since), key=lambda f: f.stat().st_mtime)
    events = []
    for path in files:
        for line in path.read_text().splitlines():
            if line.strip():
                event = json.loads(line)
                if event.get("stage") == "ResponseComplete":
                    events.append(event)
    return events


def stamp(value: str) -> float:
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def created_at(events: list[dict[str, Any]], namespace: str, resource: str) -> dict[str, float]:
    """name -> when the API server finished creating it (a POST, or a server-side apply answered 201)."""
    found: dict[str, float] = {}
    for event in events:
        ref = event.get("objectRef", {})
        if (ref.get("namespace") == namespace and ref.get("resource") == resource and not ref.get("subresource")
                and event["verb"] in ("create", "patch") and event.get("responseStatus", {}).get("code") == 201):
            found.setdefault(ref["name"], stamp(event["stageTimestamp"]))
    return found


def latencies(since: float, namespace: str) -> tuple[list[float], float]:
    """Create-to-StatefulSet latencies (ms), and seconds from the first TGS to the last StatefulSet."""
    events = audit_events(since)
    tgs, sts = created_at(events, namespace, "textgenerationservices"), created_at(events, namespace, "statefulsets")
    found = [(sts[name] - at) * 1000 for name, at in tgs.items() if name in sts]
    span = max(sts.values()) - min(tgs.values()) if sts and tgs else float("nan")
    return found, span


def split_p50(since: float, namespace: str) -> tuple[float, float]:
    """p50 (ms) of the two halves of create-to-StatefulSet: the operator's (TGS created -> its StatefulSet write
    received by the API server: watch delivery, queueing, the operator's CPU) and the API server's (that write
    received -> completed)."""
    events = audit_events(since)
    tgs = created_at(events, namespace, "textgenerationservices")
    received: dict[str, tuple[float, float]] = {}
    for event in events:
        ref = event.get("objectRef", {})
        if (ref.get("namespace") == namespace and ref.get("resource") == "statefulsets" and not ref.get("subresource")
                and event["verb"] in ("create", "patch") and event.get("responseStatus", {}).get("code") == 201):
            received.setdefault(ref["name"], (stamp(event["requestReceivedTimestamp"]),
                                              stamp(event["stageTimestamp"])))
    names = [name for name in tgs if name in received]
    if not names:
        return float("nan"), float("nan")
    return (statistics.median((received[n][0] - tgs[n]) * 1000 for n in names),
            statistics.median((received[n][1] - received[n][0]) * 1000 for n in names))


def burst_requests(since: float, namespace: str) -> dict[str, int]:
    """The operator's requests completed from the first TGS create to the last StatefulSet create of namespace,
    by "verb resource[/subresource]", most first."""
    events = audit_events(since)
    tgs, sts = created_at(events, namespace, "textgenerationservices"), created_at(events, namespace, "statefulsets")
    if not tgs or not sts:
        return {}
    start, end = min(tgs.values()), max(sts.values())
    counts: collections.Counter[str] = collections.Counter()
    for event in events:
        ref = event.get("objectRef", {})
        if (event.get("userAgent", "").startswith(USER_AGENT) and ref.get("namespace") in (namespace, None)
                and start <= stamp(event["stageTimestamp"]) <= end):
            sub = f"/{ref['subresource']}" if ref.get("subresource") else ""
            counts[f"{event['verb']} {ref.get('resource', '?')}{sub}"] += 1
    return dict(counts.most_common())


def start_profiler(pid: int, path: Path) -> subprocess.Popen[bytes]:
    """py-spy record (raw collapsed stacks, idle frames left out) on the operator until SIGINT."""
    py_spy = Path(sys.executable).parent / "py-spy"
    return subprocess.Popen([str(py_spy), "record", "--pid", str(pid), "--format", "raw", "--rate", "100",
                             "--output", str(path), "--nonblocking"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def top_functions(path: Path, count: int = 15) -> list[str]:
    """'share own / share inclusive  function' for the functions with most samples, inclusive (one per function,
    lines merged), from py-spy's raw collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    for line in path.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        frames = [f.rsplit(":", 1)[0] + ")" if f.endswith(")") and ":" in f else f for f in stack.split(";")]
        own[frames[-1]] += int(samples)
        for frame in set(frames):
            inclusive[frame] += int(samples)
    total = sum(own.values()) or 1
    return [f"{own[f] / total:6.1%} {n / total:6.1%}  {f}" for f, n in inclusive.most_common(count)]


def steady_writes(since: float) -> list[dict[str, Any]]:
    return [e for e in audit_events(since) if e.get("userAgent", "").startswith(USER_AGENT)
            and e["verb"] in WRITES and stamp(e["requestReceivedTimestamp"]) >= since]


# --- the phases ------------------------------------------------------------------------------------------------

class Cluster:
    """The bench's own clients and namespaces."""

    def __init__(self, kubeconfig: Path) -> None:
        client = throttle_aware_client(kubeconfig)
        self.core = kubernetes.client.CoreV1Api(client)
        self.custom = kubernetes.client.CustomObjectsApi(client)

    def new_namespace(self, prefix: str) -> str:
        namespace = f"{prefix}-{secrets.token_hex(3)}"
        self.core.create_namespace({"metadata": {"name": namespace}})
        deadline = time.monotonic() + 30
        while True:
            try:
                self.core.read_namespaced_service_account("default", namespace)
                return namespace
            except kubernetes.client.ApiException:
                if time.monotonic() > deadline:
                    raise SystemExit(f"namespace {namespace}: no default ServiceAccount after 30 s; is the "
                                     "controller-manager running (hack/cluster status)?") from None
                time.sleep(0.2)

    def delete_namespace(self, namespace: str, timeout: float = 300) -> None:
        """Deletes it and waits for the namespace controller, so the next phase does not measure this cleanup."""
        self.core.delete_namespace(namespace)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.core.read_namespace(namespace)
            except kubernetes.client.ApiException as error:
                if error.status == 404:
                    return
                raise
            time.sleep(1)
        print(f"warning: namespace {namespace} still exists after {timeout:.0f} s", file=sys.stderr)

    def create_all(self, namespace: str, count: int) -> float:
        """Creates the TGSs from 16 threads at once; returns how long the create calls took."""
        started = time.monotonic()

        def create(name: str) -> None:
            self.custom.create_namespaced_custom_object(*TGS[:2], namespace, TGS[2], tgs_body(name))

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(create, [f"tgs-{i:04d}" for i in range(count)]))
        return time.monotonic() - started

    def count_ready(self, namespace: str) -> int:
        items = self.custom.list_namespaced_custom_object(*TGS[:2], namespace, TGS[2])["items"]
        return sum(any(c["type"] == "Ready" and c["status"] == "True"
                       for c in i.get("status", {}).get("conditions", [])) for i in items)


def baseline_reactor(namespace: str, stop: threading.Event, write: str, errors: list[BaseException]) -> None:
    """Watches TGSs and writes each one's StatefulSet (server-side apply, or a plain create): the least any
    operator must do. The watch is kube.Kube.follow (429 waited out, resumed when the server ends it); an error
    that ends the reactor lands in `errors`, so the bench stops at once instead of waiting for its timeout."""
    config = OperatorConfig()

    async def react(tgs: dict[str, Any], kube: Kube) -> None:
        tgs = {**tgs, "apiVersion": "textgen.dev/v1alpha1", "kind": "TextGenerationService"}
        sts = next(o for o in build_desired(tgs, config) if o["kind"] == "StatefulSet")
        await (kube.apply(sts) if write == "apply" else kube.create(sts))

    async def run() -> None:
        settings = kopf.OperatorSettings()
        kube = Kube(kopf.login_with_kubeconfig(settings=settings), max_connections=config.max_requests_in_flight)
        tasks: set[asyncio.Task[None]] = set()
        seen: set[str] = set()          # a re-list repeats objects as ADDED: one write per TGS all the same
        try:
            async for kind, obj in kube.follow("textgen.dev/v1alpha1/TextGenerationService", namespace):
                if stop.is_set():
                    break
                if kind == "ADDED" and obj["metadata"]["name"] not in seen:
                    seen.add(obj["metadata"]["name"])
                    task = asyncio.create_task(react(obj, kube))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
        finally:
            for result in await asyncio.gather(*tasks, return_exceptions=True):
                if isinstance(result, BaseException):
                    errors.append(result)
            await kube.close()

    try:
        asyncio.run(run())
    except BaseException as error:
        errors.append(error)


def run_baseline(args: argparse.Namespace, cluster: Cluster, since: float) -> dict[str, Any]:
    namespace = cluster.new_namespace("bench-baseline")
    stop = threading.Event()
    errors: list[BaseException] = []
    reactor = threading.Thread(target=baseline_reactor, args=(namespace, stop, args.baseline_write, errors),
                               daemon=True)
    reactor.start()
    time.sleep(2)                      # the watch is open
    try:
        cluster.create_all(namespace, args.count)
        deadline = time.monotonic() + args.timeout
        while len(latencies(since, namespace)[0]) < args.count:
            if errors or not reactor.is_alive():
                raise SystemExit(f"baseline: the reactor stopped: {errors[0] if errors else 'without an error'}")
            if time.monotonic() > deadline:
                raise SystemExit(f"baseline: not every StatefulSet exists after {args.timeout} s")
            time.sleep(1)
        found, span = latencies(since, namespace)
        split = split_p50(since, namespace)
    finally:
        stop.set()
        cluster.custom.create_namespaced_custom_object(*TGS[:2], namespace, TGS[2], tgs_body("wake-the-watch"))
        reactor.join(30)
        cluster.delete_namespace(namespace)
    return {"p50": statistics.median(found), "p99": percentile(found, 0.99), "span": span, "split": split}


def start_operator(kubeconfig: Path, metrics_port: int, tree: Path | None = None) -> subprocess.Popen[bytes]:
    """This checkout's operator, or (tree) the one in tree/operator, e.g. a `git archive` of an older commit."""
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(tree / "operator"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.Popen([sys.executable, "-m", "textgen_operator.main", "--standalone", "--liveness-port", "0",
                             "--metrics-port", str(metrics_port), "--bind-host", "127.0.0.1",
                             "--log-format", "json", "--log-level", "WARNING"], env=env)


def run_operator(args: argparse.Namespace, cluster: Cluster, kubeconfig: Path, since: float,
                 tree: Path | None = None) -> dict[str, Any]:
    namespace = cluster.new_namespace("bench")
    operator = start_operator(kubeconfig, args.metrics_port, tree)
    profiler = None
    metrics_url = f"http://127.0.0.1:{args.metrics_port}/metrics"
    try:
        for _ in range(100):
            try:
                scrape(metrics_url)
                break
            except OSError:
                time.sleep(0.2)
        time.sleep(3)   # kopf lists and starts its watches
        load_at_start = os.getloadavg()[0]
        before = scrape(metrics_url)
        profiler = start_profiler(operator.pid, args.profile) if args.profile and tree is None else None
        t0 = time.monotonic()
        create_seconds = cluster.create_all(namespace, args.count)
        while cluster.count_ready(namespace) < args.count:
            if time.monotonic() > t0 + args.timeout:
                raise SystemExit(f"not converged after {args.timeout} s")
            time.sleep(0.5)
        converged = time.monotonic() - t0
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)     # py-spy writes its file on SIGINT
            profiler.wait(60)
        after = scrape(metrics_url)
        rss, cpu = proc_usage(operator.pid)
        time.sleep(5)
        steady_from = time.time()
        time.sleep(args.steady_seconds)
        steady = steady_writes(steady_from)
        found, span = latencies(since, namespace)
        burst = burst_requests(since, namespace)
        split = split_p50(since, namespace)
    finally:
        if profiler is not None and profiler.poll() is None:
            profiler.kill()
        operator.terminate()
        operator.wait(30)
        cluster.delete_namespace(namespace)

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    reconciles = delta("textgen_operator_reconciles_total")
    return {
        "p50": statistics.median(found), "p99": percentile(found, 0.99), "span": span, "found": len(found),
        "create_seconds": create_seconds, "converged": converged, "load": load_at_start, "rss": rss, "cpu": cpu,
        "reconciles": int(reconciles), "requests": int(delta("textgen_operator_api_requests_total")),
        "reconcile_mean": delta("textgen_operator_reconcile_duration_seconds_sum") / max(reconciles, 1),
        "applies": int(delta("textgen_operator_applies_total")), "steady_writes": len(steady), "burst": burst,
        "split": split,
    }


def kubectl(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    bin_dir = subprocess.run([str(ROOT / "hack" / "build-tools.sh"), "--print-bin-dir"], capture_output=True,
                             text=True, check=True).stdout.strip()
    return subprocess.run([f"{bin_dir}/kubectl", "--kubeconfig", str(kubeconfig), *args], capture_output=True,
                          text=True)


def install_missing_crds(kubeconfig: Path) -> list[Path]:
    """Applies each CRD of crds/ that the cluster lacks, as `kubectl apply -f crds/` would; returns those.

    CRDs already there are left alone: a chart release that owns them would refuse to upgrade after another
    field manager took them over."""
    installed = []
    for crd in sorted((ROOT / "crds").glob("*.yaml")):
        if kubectl(kubeconfig, "get", "-f", str(crd)).returncode != 0:
            applied = kubectl(kubeconfig, "apply", "--server-side", "--field-manager=bench", "-f", str(crd))
            if applied.returncode != 0:
                raise SystemExit(f"kubectl apply -f {crd} failed: {applied.stderr}")
            installed.append(crd)
            # Served only once Established; even then its storage may answer 429 for a moment (retried).
            established = kubectl(kubeconfig, "wait", "--for=condition=Established", "--timeout=60s", "-f", str(crd))
            if established.returncode != 0:
                raise SystemExit(f"CRD {crd.name} not Established within 60 s: {established.stderr}")
    return installed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--steady-seconds", type=float, default=60)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--metrics-port", type=int, default=19391)
    parser.add_argument("--no-baseline", action="store_true", help="skip the baseline reactor (no ratio)")
    parser.add_argument("--profile", type=Path, default=None,
                        help="py-spy the operator from the first create until all are Ready into FILE (raw)")
    parser.add_argument("--compare", action="append", default=[], metavar="LABEL=DIR",
                        help="also run the operator of DIR/operator (e.g. `git archive` of an older commit) on the "
                             "same cluster in the same run (repeatable): a regression's ratio, not two runs' noise")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat baseline, --compare operators and ours this often, the order rotated each round")
    parser.add_argument("--baseline-write", choices=["apply", "create"], default="apply",
                        help="the baseline's one write: a server-side apply, as the operator sends (default), or a "
                             "plain create, the cheapest request that makes a StatefulSet (a floor for any design)")
    args = parser.parse_args()

    kubeconfig = STATE / "kubeconfig"
    os.environ["KUBECONFIG"] = str(kubeconfig)          # for the baseline reactor's kopf login
    cluster = Cluster(kubeconfig)
    installed = install_missing_crds(kubeconfig)
    trees = dict(item.split("=", 1) for item in args.compare)
    systems = ([] if args.no_baseline else ["baseline"]) + list(trees) + ["ours"]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in systems}
    rounds: list[dict[str, float]] = []
    splits: list[dict[str, list[float]]] = []     # per round: system -> [operator side, API side] p50 ms
    try:
        since = time.time() - 1
        for index in range(args.rounds):
            shift = index % len(systems)
            for name in systems[shift:] + systems[:shift]:
                print(f"round {index + 1}: {name} (load {os.getloadavg()[0]:.1f})", file=sys.stderr)
                runs[name].append(run_baseline(args, cluster, since) if name == "baseline" else
                                  run_operator(args, cluster, kubeconfig, since,
                                               Path(trees[name]) if name in trees else None))
            rounds.append({name: round(runs[name][-1]["p50"], 1) for name in systems})
            splits.append({name: [round(v, 1) for v in runs[name][-1]["split"]] for name in systems})
    finally:
        for crd in installed:   # what was there before (e.g. the chart's) stays; what we added goes
            kubectl(kubeconfig, "delete", "--wait=false", "-f", str(crd))
    ours, baseline = runs["ours"][-1], (runs["baseline"][-1] if "baseline" in runs else None)
    result: dict[str, Any] = {
        "count": args.count,
        "create_calls_seconds": round(ours["create_seconds"], 2),
        "all_statefulsets_seconds": round(ours["span"], 2),
        "all_ready_seconds": round(ours["converged"], 2),
        "create_to_statefulset_ms_p50": round(ours["p50"], 1),
        "create_to_statefulset_ms_p99": round(ours["p99"], 1),
        "load_average_1m_at_start": round(ours["load"], 2),
        "operator_rss_mib": round(ours["rss"], 1),
        "operator_cpu_seconds": round(ours["cpu"], 1),
        "reconciles": ours["reconciles"],
        "api_requests": ours["requests"],
        "api_requests_per_reconcile": round(ours["requests"] / max(ours["reconciles"], 1), 2),
        "reconcile_seconds_mean": round(ours["reconcile_mean"], 3),
        "applies": ours["applies"],
        f"writes_in_{int(args.steady_seconds)}s_steady_state": ours["steady_writes"],
        "burst_requests": ours["burst"],
        "create_to_statefulset_ms_p50_operator_side": round(ours["split"][0], 1),
        "create_to_statefulset_ms_p50_api_side": round(ours["split"][1], 1),
    }
    if baseline is not None:
        result.update({
            "baseline_create_to_statefulset_ms_p50": round(baseline["p50"], 1),
            "baseline_create_to_statefulset_ms_p99": round(baseline["p99"], 1),
            "baseline_all_statefulsets_seconds": round(baseline["span"], 2),
            "baseline_write": args.baseline_write,
            "ours_over_baseline_p50": round(ours["p50"] / baseline["p50"], 2),
        })
    if len(systems) > 2 or args.rounds > 1:
        result["p50_ms_per_round"] = rounds       # same round = same machine state: compare within a round
        result["p50_ms_operator_side_api_side_per_round"] = splits
        if baseline is not None:
            result["p50_over_baseline_per_round"] = {
                name: [round(r[name] / r["baseline"], 2) for r in rounds] for name in systems if name != "baseline"}
        result["all_ready_seconds_per_round"] = {name: [round(r["converged"], 1) for r in runs[name]]
                                                 for name in systems if name != "baseline"}
        result["burst_requests_per_system"] = {name: runs[name][-1]["burst"] for name in systems if name != "baseline"}
    print(json.dumps(result, indent=2))
    if args.profile is not None and args.profile.exists():
        print(f"py-spy ({args.profile}): own / inclusive share of samples")
        print("\n".join(top_functions(args.profile, 30)))


if __name__ == "__main__":
    main()

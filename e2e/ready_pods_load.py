"""A load generator that reaches a Service's pods as kube-proxy would, for e2e tests and hack/ benchmarks.

The node agent's pods (hack/node-agent) answer at loopback pod IPs (127.x.0.N), but their Services get no
EndpointSlices (the API server refuses loopback addresses there), so there is no kube-proxy path to dial. This
module plays that part: it watches the pods of the Service's selector and sends each request to one pod that an
EndpointSlice would list as ready -- condition Ready=True, a pod IP, and no deletionTimestamp (kube-proxy stops
routing to a terminating pod as soon as a ready one exists; that is what the server's preStop sleep covers).
Picks are round-robin (kube-proxy's IPVS mode) or random (its iptables/nftables modes).

Requests are TGI `/generate_stream` calls with a fixed token count (EOS ignored), so a stream cut by a pod going
away is a failure with a reason, and a stream that was in flight when its pod was marked for deletion and still
ended with all its tokens shows a drain. Concurrency can be stepped up and down while it runs.

    with ReadyPods(api, "ns", selector) as ready, Load(ready, max_new_tokens=32) as load:
        load.set_concurrency(4); time.sleep(30); load.set_concurrency(1); ...
    print(load.summary())

CLI (for benchmarks by hand): `python -m e2e.ready_pods_load --kubeconfig K -n NS --service NAME
--steps 2:20,6:20,1:10 [--max-new-tokens 32] [--pick random]` prints the summary as JSON.
"""
from __future__ import annotations

import argparse
import http.client
import itertools
import json
import random
import socket
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes.client
import kubernetes.watch


@dataclass(frozen=True)
class Endpoint:
    name: str
    uid: str
    ip: str


def is_ready_endpoint(pod: dict[str, Any]) -> bool:
    """What an EndpointSlice marks `ready`: a pod with an IP, Ready=True, not terminating."""
    meta, status = pod.get("metadata", {}), pod.get("status", {})
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    return ready and bool(status.get("podIP")) and not meta.get("deletionTimestamp")


def service_selector(api: kubernetes.client.ApiClient, namespace: str, service: str) -> str:
    """The label selector of a Service, as `k=v,k2=v2` (what its EndpointSlice controller selects)."""
    spec = kubernetes.client.CoreV1Api(api).read_namespaced_service(service, namespace).spec
    return ",".join(f"{k}={v}" for k, v in sorted((spec.selector or {}).items()))


class ReadyPods:
    """The ready endpoints of a selector, kept current by a pod watch (re-listed whenever the watch ends).

    Besides the current set it records the history a test needs: every change of the ready set with its time,
    when each pod was first seen terminating, and when each pod first became ready."""

    def __init__(self, api: kubernetes.client.ApiClient, namespace: str, selector: str) -> None:
        self.api, self.namespace, self.selector = api, namespace, selector
        self._pods: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ready-pods", daemon=True)
        self._watch: kubernetes.watch.Watch | None = None
        self.history: list[tuple[float, tuple[str, ...]]] = []   # (monotonic time, ready pod names)
        self.terminating_at: dict[str, float] = {}                # pod uid -> first seen with deletionTimestamp
        self.ready_at: dict[str, float] = {}                      # pod uid -> first seen ready
        self.all_pods_seen: dict[str, dict[str, Any]] = {}        # uid -> last body seen
        self.peak_pods = 0                                        # most pod objects at once (terminating too)

    def __enter__(self) -> ReadyPods:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._list()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()
        self._thread.join(timeout=10)

    def endpoints(self) -> list[Endpoint]:
        """The ready endpoints now, ordered by pod name."""
        with self._lock:
            return self._ready_locked()

    def min_ready(self, since: float | None = None) -> int:
        """The fewest ready endpoints the watch saw at once (from `since`, a time.monotonic(), if given)."""
        with self._lock:
            counts = [len(names) for t, names in self.history if since is None or t >= since]
            before = [len(names) for t, names in self.history if since is not None and t < since]
        return min(counts + before[-1:]) if counts or before else 0

    def wait(self, predicate: Any, timeout: float) -> bool:
        """Blocks until predicate(list of pod bodies) is true (checked on every watch event)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(list(self._pods.values())):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def _ready_locked(self) -> list[Endpoint]:
        return [Endpoint(p["metadata"]["name"], p["metadata"]["uid"], p["status"]["podIP"])
                for _, p in sorted(self._pods.items()) if is_ready_endpoint(p)]

    def _apply(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        """Applies watch events (or a whole re-list at once, so a list never shows a partial ready set)."""
        now = time.monotonic()
        with self._changed:
            for kind, pod in events:
                meta = pod["metadata"]
                if kind == "DELETED":
                    self._pods.pop(meta["name"], None)
                else:
                    self._pods[meta["name"]] = pod
                self.all_pods_seen[meta["uid"]] = pod
                if meta.get("deletionTimestamp") or kind == "DELETED":
                    self.terminating_at.setdefault(meta["uid"], now)
                if kind != "DELETED" and is_ready_endpoint(pod):
                    self.ready_at.setdefault(meta["uid"], now)
            self.peak_pods = max(self.peak_pods, len(self._pods))
            names = tuple(e.name for e in self._ready_locked())
            if not self.history or self.history[-1][1] != names:
                self.history.append((now, names))
            self._changed.notify_all()

    def _list(self) -> str:
        core = kubernetes.client.CoreV1Api(self.api)
        listed = core.list_namespaced_pod(self.namespace, label_selector=self.selector)
        bodies = [self.api.sanitize_for_serialization(p) for p in listed.items]
        names = {b["metadata"]["name"] for b in bodies}
        with self._lock:
            gone = [pod for name, pod in self._pods.items() if name not in names]
        self._apply([("DELETED", pod) for pod in gone] + [("MODIFIED", body) for body in bodies])
        return str(listed.metadata.resource_version)

    def _run(self) -> None:
        version = None
        while not self._stop.is_set():
            try:
                version = version or self._list()
                self._watch = kubernetes.watch.Watch()
                for event in self._watch.stream(kubernetes.client.CoreV1Api(self.api).list_namespaced_pod,
                                                self.namespace, label_selector=self.selector,
                                                resource_version=version, timeout_seconds=60):
                    body = self.api.sanitize_for_serialization(event["object"])
                    version = body["metadata"]["resourceVersion"]
                    self._apply([(event["type"], body)])
                    if self._stop.is_set():
                        return
            except Exception:  # noqa: BLE001 - a watch that ends for any reason (410 Gone, a reset) re-lists
                version = None
                self._stop.wait(0.5)


@dataclass
class Result:
    """One request: where it went, when, how it ended."""
    pod: str
    pod_uid: str
    started: float
    ended: float = 0.0
    first_token: float | None = None
    num_tokens: int = 0
    error: str | None = None       # None: every token arrived and the stream ended with finish_reason length

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Summary:
    ok: int
    failed: int
    reasons: dict[str, int]
    latency_p50_s: float | None
    latency_p99_s: float | None
    ttft_p50_s: float | None
    per_pod: dict[str, int]
    drained: int                    # ok streams in flight when their pod was first seen terminating
    min_ready: int
    extra: dict[str, Any] = field(default_factory=dict)


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def _reason(error: BaseException) -> str:
    """A short, countable reason: the exception type and its first words (addresses stripped)."""
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, (socket.timeout, TimeoutError)):
        return "timeout"
    return f"{type(error).__name__}: {str(error)[:80]}"


class Load:
    """Workers that each loop: pick a ready endpoint, stream one request to it, record the result."""

    def __init__(self, ready: ReadyPods, max_new_tokens: int = 16, pick: str = "round-robin", port: int = 80,
                 timeout: float = 120, prompt: str = "The operator rolls the pods one at a time") -> None:
        if pick not in ("round-robin", "random"):
            raise ValueError(f"pick {pick!r}: use 'round-robin' or 'random'")
        self.ready, self.max_new_tokens, self.pick, self.port = ready, max_new_tokens, pick, port
        self.timeout, self.prompt = timeout, prompt
        self.results: list[Result] = []
        self._lock = threading.Lock()
        self._turn = itertools.count()
        self._concurrency = 0
        self._workers: list[threading.Thread] = []
        self._stop = threading.Event()

    def __enter__(self) -> Load:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set_concurrency(self, num_streams: int) -> None:
        """Streams at once from now on: workers above it finish their current request and stop."""
        with self._lock:
            self._concurrency = num_streams
            while len(self._workers) < num_streams:
                worker = threading.Thread(target=self._work, args=(len(self._workers),), daemon=True)
                self._workers.append(worker)
                worker.start()

    def run_steps(self, steps: list[tuple[int, float]]) -> None:
        """(concurrency, seconds) in turn; blocks for their total time."""
        for num_streams, seconds in steps:
            self.set_concurrency(num_streams)
            time.sleep(seconds)

    def stop(self) -> None:
        """Lets every in-flight request finish, then returns."""
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=self.timeout + 5)

    def _work(self, index: int) -> None:
        while not self._stop.is_set():
            with self._lock:
                active = index < self._concurrency
            if not active:
                # Parked, not ended: a later step up may need this worker again.
                self._stop.wait(0.1)
                continue
            self._one()

    def _choose(self) -> Endpoint | None:
        endpoints = self.ready.endpoints()
        if not endpoints:
            return None
        if self.pick == "random":
            return random.choice(endpoints)
        return endpoints[next(self._turn) % len(endpoints)]

    def _one(self) -> None:
        endpoint = self._choose()
        result = Result(pod=endpoint.name if endpoint else "", pod_uid=endpoint.uid if endpoint else "",
                        started=time.monotonic())
        if endpoint is None:
            # kube-proxy rejects a connection to a Service with no ready endpoint: a failed request.
            result.error, result.ended = "no ready endpoint", time.monotonic()
            self._record(result)
            self._stop.wait(0.2)
            return
        try:
            self._stream(endpoint.ip, result)
        except Exception as exc:  # noqa: BLE001 - every failure is counted with its reason
            result.error = _reason(exc)
        result.ended = time.monotonic()
        self._record(result)
        if not result.ok:
            self._stop.wait(0.2)

    def _record(self, result: Result) -> None:
        with self._lock:
            self.results.append(result)

    def _stream(self, ip: str, result: Result) -> None:
        body = {"inputs": self.prompt, "parameters": {
            "max_new_tokens": self.max_new_tokens, "ignore_eos_token": True, "details": True}}
        conn = http.client.HTTPConnection(ip, self.port, timeout=self.timeout)
        try:
            conn.request("POST", "/generate_stream", json.dumps(body), {"Content-Type": "application/json"})
            response = conn.getresponse()
            if response.status != 200:
                result.error = f"http {response.status}: {response.read()[:120].decode(errors='replace')}"
                return
            final = self._read_events(response, result)
        finally:
            conn.close()
        if final is None:
            result.error = f"stream cut after {result.num_tokens} of {self.max_new_tokens} tokens"
        elif "error" in final:
            result.error = f"error event: {str(final['error'])[:80]}"
        elif result.num_tokens != self.max_new_tokens:
            result.error = f"short stream: {result.num_tokens} of {self.max_new_tokens} tokens"

    @staticmethod
    def _read_events(response: http.client.HTTPResponse, result: Result) -> dict[str, Any] | None:
        """Reads SSE events; returns the last one (generated_text set, or an error), None if the stream was cut."""
        for raw in response:
            line = raw.decode().strip()
            if not line.startswith("data:"):
                continue
            event = json.loads(line[len("data:"):])
            if "error" in event:
                return dict(event)
            result.num_tokens += 1
            if result.first_token is None:
                result.first_token = time.monotonic()
            if event.get("generated_text") is not None:
                return dict(event)
        return None

    def summary(self, since: float | None = None) -> Summary:
        """Counts over every request that ended (from `since`, a time.monotonic(), if given)."""
        with self._lock:
            done = [r for r in self.results if since is None or r.started >= since]
        ok = [r for r in done if r.ok]
        terminating = dict(self.ready.terminating_at)
        drained = sum(1 for r in ok if r.started < terminating.get(r.pod_uid, -1.0) < r.ended)
        return Summary(
            ok=len(ok), failed=len(done) - len(ok),
            reasons=dict(Counter(r.error for r in done if r.error is not None)),
            latency_p50_s=_quantile([r.ended - r.started for r in ok], 0.5),
            latency_p99_s=_quantile([r.ended - r.started for r in ok], 0.99),
            ttft_p50_s=_quantile([r.first_token - r.started for r in ok if r.first_token is not None], 0.5),
            per_pod=dict(Counter(r.pod for r in ok)), drained=drained, min_ready=self.ready.min_ready(since))


def parse_steps(text: str) -> list[tuple[int, float]]:
    """`2:20,6:20,1:10` -> [(2, 20.0), (6, 20.0), (1, 10.0)] (concurrency:seconds)."""
    try:
        return [(int(c), float(s)) for c, s in (part.split(":") for part in text.split(","))]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--steps {text!r}: expected concurrency:seconds[,...], e.g. 2:20,6:20")


def main(argv: list[str] | None = None) -> int:
    from e2e.harness import throttle_aware_client

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("-n", "--namespace", required=True)
    parser.add_argument("--service", required=True, help="the Service whose selector picks the pods (a TGS's name)")
    parser.add_argument("--steps", type=parse_steps, default=parse_steps("2:30"), help="concurrency:seconds,...")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--pick", choices=("round-robin", "random"), default="round-robin")
    parser.add_argument("--port", type=int, default=80)
    args = parser.parse_args(argv)
    api = throttle_aware_client(args.kubeconfig)
    with ReadyPods(api, args.namespace, service_selector(api, args.namespace, args.service)) as ready:
        with Load(ready, args.max_new_tokens, args.pick, args.port) as load:
            load.run_steps(args.steps)
        print(json.dumps(load.summary().__dict__, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Prometheus metrics with TGI's names, types, labels and meanings, plus what TGI lacks (server/docs/metrics.md).

One `ServerMetrics` per process owns its own `CollectorRegistry` (nothing goes to prometheus_client's global
registry, so tests and benchmarks can build several). Counters are exposed under their bare names
(`tgi_request_count 3`, no `_total`, no `_created`) exactly as TGI's Rust exporter writes them, so dashboards
and autoscaling rules written for TGI keep working. Gauges that describe engine state (queue size, batch size,
KV-cache use, phase) are read at scrape time from a `GaugeSource`, so they can never drift from the engine.

Everything here is called from the event loop thread only (the batching loop and the /metrics handler).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Callable

from fastapi.responses import Response
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Latency buckets in seconds: 1 ms .. 10 min, dense where token latencies live (TGI uses 35 exponential buckets).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5,
                   2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
# Token counts: powers of two up to 128 Ki tokens.
TOKEN_BUCKETS = tuple(float(2 ** n) for n in range(18))
BATCH_SIZE_BUCKETS = tuple(float(2 ** n) for n in range(11))
METHODS = ("prefill", "decode")
WARMUP_LOADING, WARMUP_RUNNING, WARMUP_DONE = 0, 1, 2


@dataclass(frozen=True)
class RequestTimings:
    """One finished request as the batching loop saw it (seconds on the monotonic clock)."""

    arrival: float
    first_scheduled: float | None     # when its first prompt chunk was sent to the shard
    first_token: float | None
    finished: float
    num_input_tokens: int
    num_generated_tokens: int
    num_skipped_tokens: int = 0      # accepted speculative candidates (tokens that took no step of their own)


class _BareCounters(Collector):
    """Counters exposed as TGI exposes them: `# TYPE name counter` and samples named `name`, no `_total`."""

    def __init__(self) -> None:
        self._docs: dict[str, tuple[str, tuple[str, ...]]] = {}
        self._values: dict[str, dict[tuple[str, ...], float]] = {}

    def declare(self, name: str, documentation: str, label_names: tuple[str, ...] = ()) -> None:
        self._docs[name] = (documentation, label_names)
        self._values[name] = {} if label_names else {(): 0.0}

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        label_names = self._docs[name][1]
        key = tuple(labels[label] for label in label_names)
        series = self._values[name]
        series[key] = series.get(key, 0.0) + amount

    def names(self) -> frozenset[str]:
        return frozenset(self._docs)

    def value(self, name: str, **labels: str) -> float:
        key = tuple(labels[label] for label in self._docs[name][1])
        return self._values[name].get(key, 0.0)

    def collect(self) -> Iterable[Metric]:
        for name, (documentation, label_names) in self._docs.items():
            family = Metric(name, documentation, "counter")
            for key, value in self._values[name].items():
                family.add_sample(name, dict(zip(label_names, key)), value)
            yield family


class _ScrapeGauges(Collector):
    """Gauges computed from the engine when Prometheus scrapes."""

    DOCS = {
        "tgi_queue_size": "Requests waiting to be scheduled (TGI's queue)",
        "tgi_batch_current_size": "Requests in the running batch",
        "tgi_batch_current_max_tokens": "Tokens the running batch may reach: sum of prompt + max_new_tokens",
        "tgi_request_in_flight": "Requests admitted by the router and not finished (waiting + running)",
        "tgi_kv_cache_usage_ratio": "Fraction of KV-cache blocks held by requests (0..1)",
        "tgi_kv_cache_blocks_used": "KV-cache blocks held by requests",
        "tgi_kv_cache_num_blocks": "KV-cache blocks allocated by warmup",
        "tgi_kv_cache_blocks_cached": "KV-cache blocks whose content is in the prefix cache (used or not)",
        "tgi_warmup_state": "0 loading the model, 1 warming up, 2 warm (serving or draining)",
        "tgi_warmup_duration_seconds": "How long the shard's warmup took (0 until it is done)",
    }

    def __init__(self, values: Callable[[], Mapping[str, float]], phase: Callable[[], str]) -> None:
        self._values = values
        self._phase = phase

    def collect(self) -> Iterable[Metric]:
        values = self._values()
        for name, documentation in self.DOCS.items():
            yield GaugeMetricFamily(name, documentation, value=float(values.get(name, 0.0)))
        phase = GaugeMetricFamily("tgi_server_phase", "1 for the phase the server is in, else 0",
                                  labels=["phase"])
        current = self._phase()
        for name in ("loading", "warming", "ready", "draining", "broken"):
            phase.add_metric([name], 1.0 if name == current else 0.0)
        yield phase


class ServerMetrics:
    """The process's metrics: the batching loop and the HTTP layer record, /metrics renders."""

    def __init__(self, engine_gauges: Callable[[], Mapping[str, float]], phase: Callable[[], str]) -> None:
        """`engine_gauges()` gives the batcher's gauge values ({} before warmup); `phase()` the router phase."""
        self.registry = CollectorRegistry(auto_describe=True)
        self.counters = _BareCounters()
        self.warmup_state = WARMUP_LOADING
        self.warmup_seconds = 0.0
        self._declare_counters()
        self.registry.register(self.counters)
        self.registry.register(_ScrapeGauges(lambda: {**engine_gauges(), **self._warmup_gauges()},
                                             lambda: self._phase_name(phase())))
        self._build_histograms()

    # ---- warmup -----------------------------------------------------------------------------------------
    def warmup_started(self) -> None:
        self.warmup_state = WARMUP_RUNNING

    def warmup_done(self, seconds: float) -> None:
        self.warmup_state = WARMUP_DONE
        self.warmup_seconds = seconds

    def _warmup_gauges(self) -> dict[str, float]:
        return {"tgi_warmup_state": float(self.warmup_state), "tgi_warmup_duration_seconds": self.warmup_seconds}

    def _phase_name(self, router_phase: str) -> str:
        # The router has one "loading" phase; the metric splits it where warmup starts.
        return "warming" if router_phase == "loading" and self.warmup_state == WARMUP_RUNNING else router_phase

    # ---- rendering --------------------------------------------------------------------------------------
    def render(self) -> bytes:
        """The Prometheus text exposition (format 0.0.4) of every metric."""
        return _bare_counter_headers(_drop_created(generate_latest(self.registry)), self.counters.names())

    # ---- requests ---------------------------------------------------------------------------------------
    def request_rejected(self, error_type: str) -> None:
        """A request answered with an error before it reached the batcher (validation, overloaded, ...)."""
        self.counters.inc("tgi_request_count")
        self.counters.inc("tgi_request_failure", err=error_type)

    def request_accepted(self, num_input_tokens: int, max_new_tokens: int) -> None:
        self.counters.inc("tgi_request_count")
        self.request_input_length.observe(num_input_tokens)
        self.request_max_new_tokens.observe(max_new_tokens)

    def request_failed(self, error_type: str) -> None:
        """A request that was in the batcher and did not finish: "generation" (shard failure) or "cancelled"."""
        self.counters.inc("tgi_request_failure", err=error_type)

    def request_succeeded(self, timings: RequestTimings) -> None:
        """Everything TGI records when a request finishes, plus time to first token."""
        self.counters.inc("tgi_request_success")
        self.request_duration.observe(timings.finished - timings.arrival)
        scheduled = timings.first_scheduled if timings.first_scheduled is not None else timings.finished
        self.request_queue_duration.observe(scheduled - timings.arrival)
        self.request_inference_duration.observe(timings.finished - scheduled)
        self.request_generated_tokens.observe(timings.num_generated_tokens)
        self.request_skipped_tokens.observe(timings.num_skipped_tokens)
        if timings.first_token is not None:
            self.request_ttft.observe(timings.first_token - timings.arrival)
        if timings.num_generated_tokens > 1 and timings.first_token is not None:
            # TGI's mean time per token: inference time over generated tokens; ours excludes the first token
            # (its time is the prefill, reported as TTFT) as vLLM's TPOT does.
            decode = timings.finished - timings.first_token
            self.request_mean_time_per_token.observe(decode / (timings.num_generated_tokens - 1))

    def token_gap(self, seconds: float) -> None:
        """Time between two consecutive tokens of one request (inter-token latency)."""
        self.request_itl.observe(seconds)

    # ---- batches ----------------------------------------------------------------------------------------
    def batch_step(self, method: str, batch_size: int, inference_seconds: float, forward_seconds: float,
                   decode_seconds: float, success: bool) -> None:
        """One Prefill/Decode step: RPC time, the shard's own forward time, router postprocess + delivery."""
        self.counters.inc("tgi_batch_inference_count", method=method)
        self.batch_next_size.observe(batch_size)
        if not success:
            return
        self.counters.inc("tgi_batch_inference_success", method=method)
        self.batch_inference_duration.labels(method=method).observe(inference_seconds)
        self.batch_forward_duration.labels(method=method).observe(forward_seconds)
        self.batch_decode_duration.labels(method=method).observe(decode_seconds)

    def batch_filtered(self, method: str, seconds: float) -> None:
        self.batch_filter_duration.labels(method=method).observe(seconds)

    def batch_concat(self) -> None:
        """New requests joined a batch that was already decoding (TGI's concatenation)."""
        self.counters.inc("tgi_batch_concat", reason="continuous")

    def speculated(self, num_proposed: int, num_accepted: int) -> None:
        """One step's speculative candidates: sent for verification and accepted (acceptance rate = ratio)."""
        if num_proposed:
            self.counters.inc("tgi_speculative_proposed_tokens", num_proposed)
            self.counters.inc("tgi_speculative_accepted_tokens", num_accepted)

    def preempted(self, num_requests: int) -> None:
        self.counters.inc("tgi_request_preemptions", num_requests)

    def prefix_cache_hit(self, num_tokens: int) -> None:
        self.counters.inc("tgi_prefix_cache_hit_tokens", num_tokens)

    def prompt_tokens_scheduled(self, num_tokens: int) -> None:
        self.counters.inc("tgi_prefix_cache_queried_tokens", num_tokens)

    # ---- construction ----------------------------------------------------------------------------------
    def _declare_counters(self) -> None:
        declare = self.counters.declare
        declare("tgi_request_count", "Requests received on the generation routes")
        declare("tgi_request_success", "Requests that finished with a final token")
        declare("tgi_request_failure", "Requests that failed, by error type", ("err",))
        declare("tgi_batch_inference_count", "Prefill/Decode calls sent to the shards", ("method",))
        declare("tgi_batch_inference_success", "Prefill/Decode calls that succeeded", ("method",))
        declare("tgi_batch_concat", "Steps in which new requests joined a decoding batch", ("reason",))
        declare("tgi_request_preemptions", "Requests preempted for lack of KV blocks (recomputed later)")
        declare("tgi_prefix_cache_hit_tokens", "Prompt tokens served from the prefix cache at admission")
        declare("tgi_prefix_cache_queried_tokens", "Prompt tokens looked up in the prefix cache at admission")
        declare("tgi_speculative_proposed_tokens", "Speculative candidate tokens sent for verification")
        declare("tgi_speculative_accepted_tokens", "Speculative candidate tokens the model agreed with (kept)")

    def _build_histograms(self) -> None:
        def histogram(name: str, documentation: str, buckets: tuple[float, ...],
                      labels: tuple[str, ...] = ()) -> Histogram:
            return Histogram(name, documentation, labelnames=labels, buckets=buckets, registry=self.registry)

        self.request_duration = histogram("tgi_request_duration", "End-to-end request latency (s)",
                                          LATENCY_BUCKETS)
        self.request_validation_duration = histogram("tgi_request_validation_duration",
                                                     "Time spent validating the request (s)", LATENCY_BUCKETS)
        self.request_queue_duration = histogram("tgi_request_queue_duration",
                                                "Time from arrival to the first scheduled step (s)",
                                                LATENCY_BUCKETS)
        self.request_inference_duration = histogram("tgi_request_inference_duration",
                                                    "Time from the first scheduled step to the last token (s)",
                                                    LATENCY_BUCKETS)
        self.request_mean_time_per_token = histogram("tgi_request_mean_time_per_token_duration",
                                                     "Mean time per output token after the first (s)",
                                                     LATENCY_BUCKETS)
        self.request_ttft = histogram("tgi_request_time_to_first_token_seconds",
                                      "Time from arrival to the first generated token (s)", LATENCY_BUCKETS)
        self.request_itl = histogram("tgi_request_inter_token_latency_seconds",
                                     "Time between consecutive tokens of a request (s)", LATENCY_BUCKETS)
        self.request_generated_tokens = histogram("tgi_request_generated_tokens", "Generated tokens per request",
                                                  TOKEN_BUCKETS)
        self.request_skipped_tokens = histogram("tgi_request_skipped_tokens",
                                                "Accepted speculative tokens per request", TOKEN_BUCKETS)
        self.request_input_length = histogram("tgi_request_input_length", "Prompt tokens per request",
                                              TOKEN_BUCKETS)
        self.request_max_new_tokens = histogram("tgi_request_max_new_tokens", "max_new_tokens per request",
                                                TOKEN_BUCKETS)
        self.batch_next_size = histogram("tgi_batch_next_size", "Requests in each scheduled step",
                                         BATCH_SIZE_BUCKETS)
        method = ("method",)
        self.batch_inference_duration = histogram("tgi_batch_inference_duration",
                                                  "Prefill/Decode RPC time, shard compute included (s)",
                                                  LATENCY_BUCKETS, method)
        self.batch_forward_duration = histogram("tgi_batch_forward_duration", "The shard's model forward (s)",
                                                LATENCY_BUCKETS, method)
        self.batch_decode_duration = histogram("tgi_batch_decode_duration",
                                               "Router postprocess: detokenize, stop checks, delivery (s)",
                                               LATENCY_BUCKETS, method)
        self.batch_filter_duration = histogram("tgi_batch_filter_duration",
                                               "FilterBatch RPC dropping finished requests (s)", LATENCY_BUCKETS,
                                               method)


def _drop_created(exposition: bytes) -> bytes:
    # prometheus_client adds a `<name>_created` gauge per histogram; TGI has none and it doubles the series.
    # None of our own metric names ends in `_created`.
    return b"\n".join(line for line in exposition.split(b"\n") if not _metric_name(line).endswith(b"_created"))


def _bare_counter_headers(exposition: bytes, counter_names: frozenset[str]) -> bytes:
    # prometheus_client names a counter's HELP/TYPE lines `<name>_total` even when its samples are bare; TGI's
    # exporter writes `# TYPE tgi_request_count counter` over `tgi_request_count 3`, and Prometheus needs the
    # header to match the samples to type them.
    renamed = {f"{name}_total".encode(): name.encode() for name in counter_names}
    lines = []
    for line in exposition.split(b"\n"):
        name = _metric_name(line) if line.startswith(b"# ") else b""
        if name in renamed:
            line = line.replace(name, renamed[name], 1)
        lines.append(line)
    return b"\n".join(lines)


def _metric_name(line: bytes) -> bytes:
    if line.startswith(b"# "):  # "# HELP name ..." / "# TYPE name ..."
        parts = line.split(b" ")
        return parts[2] if len(parts) > 2 else b""
    return line.split(b"{", 1)[0].split(b" ", 1)[0]


def parse_exposition(text: str) -> Iterator[tuple[str, dict[str, str], float]]:
    """(sample name, labels, value) for each sample of a text exposition: for tests and the benchmark."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name
            if family.type == "counter" and name.endswith("_total"):  # the parser adds it; TGI's names have none
                name = name[:-len("_total")]
            yield name, dict(sample.labels), float(sample.value)


def register_metrics(app: Any, metrics: ServerMetrics) -> None:
    """GET /metrics on a FastAPI app: the Prometheus exposition, always open (as TGI)."""

    async def prometheus_metrics() -> Response:
        return Response(content=metrics.render(), media_type=CONTENT_TYPE)

    app.add_api_route("/metrics", prometheus_metrics, methods=["GET"], response_class=Response,
                      summary="Prometheus metrics (server/docs/metrics.md)",
                      responses={200: {"content": {"text/plain": {}}, "description": "text exposition 0.0.4"}})

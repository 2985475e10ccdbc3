"""ServerMetrics renders TGI's exposition: bare counter names, no `_created`, histograms fed by request timings,
scrape-time gauges and the phase one-hot."""
from __future__ import annotations

from textgen_server.router.metrics import RequestTimings, ServerMetrics, parse_exposition


def _samples(metrics: ServerMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.render().decode()
    return {(name, tuple(sorted(labels.items()))): value for name, labels, value in parse_exposition(text)}


def test_counters_are_exposed_under_tgi_names_without_total_or_created() -> None:
    metrics = ServerMetrics(lambda: {}, lambda: "ready")
    metrics.request_rejected("validation")
    metrics.request_accepted(num_input_tokens=7, max_new_tokens=20)
    text = metrics.render().decode()
    assert "# TYPE tgi_request_count counter\ntgi_request_count 2.0" in text
    assert 'tgi_request_failure{err="validation"} 1.0' in text
    assert "_total" not in text and "_created" not in text
    samples = _samples(metrics)
    assert samples[("tgi_request_input_length_sum", ())] == 7
    assert samples[("tgi_request_max_new_tokens_count", ())] == 1


def test_a_finished_request_feeds_every_latency_histogram() -> None:
    metrics = ServerMetrics(lambda: {}, lambda: "ready")
    metrics.request_succeeded(RequestTimings(arrival=10.0, first_scheduled=10.5, first_token=11.0, finished=14.0,
                                             num_input_tokens=3, num_generated_tokens=4))
    for gap in (1.0, 1.0, 1.0):
        metrics.token_gap(gap)
    samples = _samples(metrics)
    assert samples[("tgi_request_success", ())] == 1
    assert samples[("tgi_request_duration_sum", ())] == 4.0
    assert samples[("tgi_request_queue_duration_sum", ())] == 0.5
    assert samples[("tgi_request_inference_duration_sum", ())] == 3.5
    assert samples[("tgi_request_time_to_first_token_seconds_sum", ())] == 1.0
    assert samples[("tgi_request_mean_time_per_token_duration_sum", ())] == 1.0   # 3 s over 3 tokens after the 1st
    assert samples[("tgi_request_inter_token_latency_seconds_count", ())] == 3
    assert samples[("tgi_request_generated_tokens_sum", ())] == 4
    # 1.0 s falls in the le="1.0" bucket, not below it.
    assert samples[("tgi_request_time_to_first_token_seconds_bucket", (("le", "1.0"),))] == 1
    assert samples[("tgi_request_time_to_first_token_seconds_bucket", (("le", "0.75"),))] == 0


def test_batch_steps_are_labelled_by_method() -> None:
    metrics = ServerMetrics(lambda: {}, lambda: "ready")
    metrics.batch_step("prefill", 3, 0.2, 0.15, 0.01, success=True)
    metrics.batch_step("decode", 3, 0.0, 0.0, 0.0, success=False)
    samples = _samples(metrics)
    assert samples[("tgi_batch_inference_count", (("method", "prefill"),))] == 1
    assert samples[("tgi_batch_inference_count", (("method", "decode"),))] == 1
    assert ("tgi_batch_inference_success", (("method", "decode"),)) not in samples
    assert samples[("tgi_batch_forward_duration_sum", (("method", "prefill"),))] == 0.15
    assert samples[("tgi_batch_next_size_count", ())] == 2


def test_gauges_are_read_at_scrape_time_and_warmup_splits_the_loading_phase() -> None:
    engine = {"tgi_queue_size": 4.0}
    phase = ["loading"]
    metrics = ServerMetrics(lambda: engine, lambda: phase[0])
    samples = _samples(metrics)
    assert samples[("tgi_server_phase", (("phase", "loading"),))] == 1
    assert samples[("tgi_warmup_state", ())] == 0
    metrics.warmup_started()
    assert _samples(metrics)[("tgi_server_phase", (("phase", "warming"),))] == 1
    metrics.warmup_done(2.5)
    phase[0], engine["tgi_queue_size"] = "ready", 0.0
    samples = _samples(metrics)
    assert samples[("tgi_server_phase", (("phase", "ready"),))] == 1
    assert samples[("tgi_server_phase", (("phase", "warming"),))] == 0
    assert (samples[("tgi_warmup_state", ())], samples[("tgi_warmup_duration_seconds", ())]) == (2, 2.5)
    assert samples[("tgi_queue_size", ())] == 0


def test_two_instances_do_not_share_a_registry() -> None:
    first, second = ServerMetrics(lambda: {}, lambda: "ready"), ServerMetrics(lambda: {}, lambda: "ready")
    first.request_rejected("overloaded")
    assert _samples(second)[("tgi_request_count", ())] == 0

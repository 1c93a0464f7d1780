"""The supervisor's /metrics (``wallet-api --workers N``): every worker's samples, labelled."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from wallet_api.workers import merge_metrics, worker_argv


def worker_text(requests: int, in_flight: float) -> str:
    registry = CollectorRegistry()
    counter = Counter("http_requests_total", "HTTP requests.", ["route"], registry=registry)
    counter.labels("/deposit").inc(requests)
    Gauge("http_in_flight", "In flight.", registry=registry).set(in_flight)
    h = Histogram("http_request_duration_seconds", "Latency.", registry=registry, buckets=(0.01, 0.1))
    for _ in range(requests):
        h.observe(0.05)
    return generate_latest(registry).decode()


def test_each_workers_samples_are_kept_under_its_own_label_in_one_family_each():
    text = merge_metrics([worker_text(3, 1), worker_text(5, 2)]).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}  # parses: one HELP/TYPE per family
    assert text.count("# TYPE http_requests_total counter") == 1
    requests = {s.labels["worker"]: s.value for s in families["http_requests"].samples if s.name.endswith("_total")}
    assert requests == {"0": 3.0, "1": 5.0}
    gauges = {s.labels["worker"]: s.value for s in families["http_in_flight"].samples}
    assert gauges == {"0": 1.0, "1": 2.0}
    counts = {
        s.labels["worker"]: s.value
        for s in families["http_request_duration_seconds"].samples
        if s.name.endswith("_count")
    }
    assert counts == {"0": 3.0, "1": 5.0}
    buckets = [s for s in families["http_request_duration_seconds"].samples if s.name.endswith("_bucket")]
    assert {(s.labels["worker"], s.labels["le"]) for s in buckets} == {
        (w, le) for w in "01" for le in ("0.01", "0.1", "+Inf")
    }


def test_a_workers_command_line_overrides_the_supervisors_flags():
    argv = worker_argv(["--workers", "4", "--ops-port", "8090", "--state-dir", "/s"], 2, 40123, "/s")
    import argparse

    p = argparse.ArgumentParser()
    for flag in ("--workers", "--ops-port", "--state-dir", "--ops-host"):
        p.add_argument(flag)
    p.add_argument("--reuse-port", action="store_true")
    args = p.parse_args(argv)
    assert (args.workers, args.ops_port, args.state_dir, args.ops_host, args.reuse_port) == (
        "1",
        "40123",
        "/s/worker-2",
        "127.0.0.1",
        True,
    )

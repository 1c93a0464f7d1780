"""Histogram buckets cover the ranges their settings allow (a value past the last finite
bucket is only counted in +Inf, and its quantiles read as the last bucket's bound)."""

from __future__ import annotations

import inspect

from walletkit.stream import metrics
from walletkit.stream.processor import DEFAULT_BATCH_SIZE, Processor


def upper_bounds(histogram) -> list[float]:
    return [b for b in histogram._upper_bounds if b != float("inf")]


def test_batch_sizes_up_to_several_times_the_default_batch_have_buckets():
    assert max(upper_bounds(metrics.BATCH_SIZE)) >= 5 * DEFAULT_BATCH_SIZE
    assert DEFAULT_BATCH_SIZE in upper_bounds(metrics.BATCH_SIZE), "a full default batch is a bucket of its own"


def test_batch_durations_reach_the_flush_timeout():
    flush_timeout = inspect.signature(Processor.__init__).parameters["flush_timeout"].default
    for histogram in (metrics.FLUSH_SECONDS, metrics.CALLBACK_SECONDS, metrics.COMMIT_SECONDS):
        assert max(upper_bounds(histogram)) >= flush_timeout, histogram._name

"""Consumer lag, commit stalls and readiness from offset snapshots (no Kafka; the worker feeds the same
objects from its consumer, see tests/test_worker_web.py and tests/test_prometheus.py)."""

from __future__ import annotations

from collections import namedtuple

from prometheus_client.parser import text_string_to_metric_families

from stream_app.stream.health import Readiness
from stream_app.stream.lag import LagMonitor, Offsets
from stream_app.stream.metrics import StreamMetrics
from stream_app.stream.offsets import CommitClock

TP = namedtuple("TP", "topic partition")
R0, R1, I0 = TP("ratings", 0), TP("ratings", 1), TP("items", 0)


def samples(metrics: StreamMetrics, name: str) -> dict[tuple, float]:
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_commit_clock_starts_when_events_wait_and_restarts_on_a_new_commit():
    clock = CommitClock()
    assert clock.update({"p0": 5}, now=1.0) == {"p0": 1.0}
    assert clock.update({"p0": 5, "p1": None}, now=4.0) == {"p0": 1.0, "p1": 4.0}
    assert clock.update({"p0": 7}, now=6.0) == {"p0": 6.0}  # p0 committed further, p1 caught up


def test_lag_is_end_minus_committed_per_owned_partition_and_leaves_with_the_partition():
    metrics = StreamMetrics()
    lag = LagMonitor(metrics)
    lag.update({R0: Offsets(10, 10, 25), R1: Offsets(None, 3, 3), I0: Offsets(7, 7, 7)}, now=0.0)
    assert lag.lag == {R0: 15, R1: 0, I0: 0}
    assert samples(metrics, "recsys_consumer_lag") == {
        (("partition", "0"), ("topic", "ratings")): 15.0, (("partition", "1"), ("topic", "ratings")): 0.0,
        (("partition", "0"), ("topic", "items")): 0.0}
    lag.update({R0: Offsets(10, 10, 30)}, now=8.0)  # R1 and I0 revoked: another worker exports them now
    assert samples(metrics, "recsys_consumer_lag") == {(("partition", "0"), ("topic", "ratings")): 20.0}
    assert samples(metrics, "recsys_commit_stalled_seconds") == {(("partition", "0"), ("topic", "ratings")): 8.0}
    lag.update({R0: Offsets(30, 30, 30)}, now=9.0)  # caught up
    assert samples(metrics, "recsys_commit_stalled_seconds") == {(("partition", "0"), ("topic", "ratings")): 0.0}
    assert lag.stalled(now=100.0, timeout=1.0) == []


def test_never_committed_partition_counts_from_its_earliest_offset():
    lag = LagMonitor()
    lag.update({R0: Offsets(None, 4, 9)}, now=0.0)
    assert lag.lag == {R0: 5} and lag.stalled_since == {R0: 0.0}


def test_readiness_needs_an_assignment_and_no_long_stall():
    now = [0.0]
    metrics = StreamMetrics()
    lag = LagMonitor(metrics)
    ready = Readiness(lag, stall_timeout=60, metrics=metrics, clock=lambda: now[0])
    assert ready.refresh()[0] is False and samples(metrics, "recsys_ready") == {(): 0.0}
    ready.on_assigned(3)
    assert ready.refresh() == (True, "ready: 3 input partition(s) assigned")
    assert samples(metrics, "recsys_ready") == {(): 1.0}
    lag.update({R0: Offsets(10, 10, 12), R1: Offsets(4, 4, 4)}, now=0.0)
    now[0] = 59.0
    assert ready.check()[0] is True  # waiting, but not for long yet
    now[0] = 61.0
    is_ready, why = ready.refresh()
    assert not is_ready and "ratings[0]" in why and "2 event(s)" in why and "61 s" in why
    assert samples(metrics, "recsys_ready") == {(): 0.0}
    lag.update({R0: Offsets(12, 12, 12), R1: Offsets(4, 4, 4)}, now=62.0)  # the commit moved
    assert ready.check()[0] is True
    ready.on_revoked()  # a rebalance in progress
    assert ready.check()[0] is False
    ready.on_assigned(0)  # more workers than partitions: in the group, nothing to do, not a failure
    assert ready.check()[0] is True


def test_a_zero_stall_timeout_ignores_stalls():
    lag = LagMonitor()
    ready = Readiness(lag, stall_timeout=0, clock=lambda: 1e6)
    ready.on_assigned(1)
    lag.update({R0: Offsets(1, 1, 50)}, now=0.0)
    assert ready.check()[0] is True


def test_the_registry_serves_process_metrics_and_zeroed_counters():
    metrics = StreamMetrics()
    metrics.initialize(["ratings", "items"])
    text = metrics.render().decode()
    for series in ("process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds",
                   'recsys_model_swaps_total{outcome="refused"} 0.0', 'recsys_refolds_total{side="item"} 0.0',
                   'recsys_partition_replays_total{topic="items"} 0.0'):
        assert series in text

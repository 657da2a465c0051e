"""StallWatch: which input partitions to read again after their commits stalled (no Kafka)."""

from stream_app.stream.offsets import StallWatch


def test_a_partition_whose_commit_moves_is_never_replayed():
    watch = StallWatch(10)
    for t in range(0, 100, 3):  # a busy partition: something always waits, the commit moves every 3 s
        assert watch.stalled({"p0": t}, now=float(t)) == []


def test_a_commit_stuck_behind_waiting_events_is_replayed_once_per_timeout():
    watch = StallWatch(10)
    assert watch.stalled({"p0": 9, "p1": 40}, now=0.0) == []
    assert watch.stalled({"p0": 9, "p1": 41}, now=9.0) == []
    assert watch.stalled({"p0": 9, "p1": 42}, now=10.0) == [("p0", 9)]
    assert watch.stalled({"p0": 9, "p1": 43}, now=15.0) == []  # not again at once
    assert watch.stalled({"p0": 9}, now=20.0) == [("p0", 9)]  # still stuck after another timeout


def test_nothing_waiting_or_a_new_commit_resets_the_clock():
    watch = StallWatch(10)
    watch.stalled({"p0": None}, now=0.0)
    assert watch.stalled({}, now=5.0) == []  # nothing waiting any more (e.g. committed, or revoked)
    assert watch.stalled({"p0": None}, now=12.0) == []  # waiting again: a new clock
    assert watch.stalled({"p0": None}, now=22.0) == [("p0", None)]  # never committed: reported as None
    assert watch.stalled({"p0": 5}, now=31.0) == []

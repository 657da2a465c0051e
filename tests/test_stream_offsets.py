"""StallWatch and Progress: which input partitions to read again after their commits stalled (no Kafka)."""

from stream_app.stream.offsets import IDLE_FACTOR, Progress, StallWatch


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


def test_a_partition_merely_behind_on_a_backlog_is_not_held_back():
    progress = Progress()
    progress.assigned(["p0"], now=0.0)
    progress.handled("p0", 99, now=1.0)  # handled up to 99; the commit moved to 100; thousands wait in buffers
    assert not progress.holds_back("p0", committed=100, now=30.0, timeout=10)


def test_an_event_handled_past_the_commit_means_the_commit_waits_for_a_missing_one():
    progress = Progress()
    progress.assigned(["p0"], now=0.0)
    progress.handled("p0", 120, now=1.0)  # 120 handled, but the commit stays at 100: 100 was dropped
    assert progress.holds_back("p0", committed=100, now=2.0, timeout=10)
    assert progress.holds_back("p1", committed=None, now=2.0, timeout=10) is False  # unknown: since now


def test_a_partition_with_nothing_handled_for_long_is_held_back_and_revoking_forgets_it():
    progress = Progress()
    progress.assigned(["p0"], now=0.0)
    assert not progress.holds_back("p0", committed=5, now=IDLE_FACTOR * 10 - 1, timeout=10)
    assert progress.holds_back("p0", committed=5, now=IDLE_FACTOR * 10, timeout=10)
    progress.handled("p0", 3, now=50.0)  # handled below the commit (a re-read duplicate): activity, no hole
    assert not progress.holds_back("p0", committed=5, now=51.0, timeout=10)
    progress.forget(["p0"])
    progress.assigned(["p0"], now=100.0)
    assert not progress.holds_back("p0", committed=5, now=101.0, timeout=10)


def test_held_back_keeps_only_partitions_with_events_past_a_commit_that_waits_for_a_missing_one():
    progress = Progress()
    progress.handled("p0", 105, now=1.0)  # past its commit: the commit waits for an unhandled event
    progress.handled("p1", 40, now=1.0)  # behind its events: busy, not held back
    ends = {"p0": (110, 100), "p1": (110, 41), "p2": (100, 100), "p3": (None, 5)}  # p2 caught up, p3 unfetched
    assert progress.held_back(ends, now=2.0, timeout=10) == {"p0": 100}
    assert progress.held_back(ends, now=2.0 + IDLE_FACTOR * 10, timeout=10) == {"p0": 100, "p1": 41}

"""HandedOut: which input events Faust dropped before an agent took them (delivery.py rule 9). No Kafka."""

from stream_app.stream.handed_out import HandedOut


def handed(offsets, epoch=1, tp="p0") -> HandedOut:
    out = HandedOut()
    for offset in offsets:
        out.add(tp, offset, offset, epoch)  # the "event" is its offset here
    return out


def test_a_partition_is_read_again_from_the_first_event_no_agent_took():
    out = handed(range(10, 16))
    out.handled("p0", 10)  # the agent's batch: 10 handled, 11 taken and in progress
    assert out.dropped({"p0": 1}, taken={10, 11}.__contains__) == {"p0": 12}
    assert out.dropped({"p0": 1}, taken=lambda event: True) == {}  # all taken: nothing dropped


def test_events_fetched_before_the_partitions_last_seek_are_left_to_it():
    out = handed([5, 6])
    assert not out.fresh("p0", 5, seek_epoch=2) and out.fresh("p0", 5, seek_epoch=1)
    assert out.dropped({"p0": 2}, taken=lambda event: False) == {}  # the seek (epoch 2) reads them again
    out.add("p0", 5, 5, epoch=2)  # ...here it does
    assert out.dropped({"p0": 2}, taken=lambda event: False) == {"p0": 5}


def test_handled_and_revoked_events_are_forgotten():
    out = handed([1, 2])
    out.add("p1", 7, 7, epoch=1)
    out.handled("p0", 1)
    out.forget(["p1"])
    assert out.dropped({}, taken=lambda event: False) == {"p0": 2}
    assert not out.fresh("p1", 7, seek_epoch=0)

"""Consumer lag and commit stalls of the input partitions a worker owns, sampled every RECSYS_LAG_INTERVAL s.

Lag = end offset (asked of the broker) minus committed offset (the consumer's record of its last commit; a
partition never committed counts from its earliest offset, where the worker starts reading it). A sample is
a few ListOffsets requests per interval, never work per event. The stall clock (stream/offsets.py) says how
long each partition's commit has stayed put while events wait past it: exported, and read by /ready.

`LagMonitor.update` takes a plain snapshot (no Kafka), `sample_offsets` takes it from a Faust consumer.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from stream_app.stream.offsets import CommitClock

log = logging.getLogger(__name__)


class Offsets(NamedTuple):
    committed: int | None  # None: the group never committed this partition
    start: int  # where reading resumes: the committed offset, or the earliest offset when never committed
    end: int  # the offset the next event will get


class LagMonitor:
    """The latest lag sample of each owned input partition, and since when its commit has stalled."""

    def __init__(self, metrics=None):
        self.metrics = metrics
        self.clock = CommitClock()
        self.lag: dict[Any, int] = {}
        self.stalled_since: dict[Any, float] = {}  # partitions with events waiting past an unmoving commit
        self.sampled = False  # at least one sample taken since the worker started

    def update(self, offsets: Mapping[Any, Offsets], now: float) -> None:
        """offsets: partition (a TP: .topic, .partition) -> its offsets, for every input partition owned now."""
        lag = {tp: max(o.end - o.start, 0) for tp, o in offsets.items()}
        self.stalled_since = self.clock.update({tp: o.committed for tp, o in offsets.items() if lag[tp] > 0}, now)
        if self.metrics is not None:
            for tp in set(self.lag) - set(lag):  # no longer ours: its new owner exports it
                labels = dict(topic=tp.topic, partition=str(tp.partition))
                for gauge in (self.metrics.consumer_lag, self.metrics.commit_stalled):
                    with contextlib.suppress(KeyError):
                        gauge.remove(*labels.values())
            for tp, events in lag.items():
                labels = dict(topic=tp.topic, partition=str(tp.partition))
                self.metrics.consumer_lag.labels(**labels).set(events)
                self.metrics.commit_stalled.labels(**labels).set(now - self.stalled_since.get(tp, now))
        self.lag = lag
        self.sampled = True

    def stalled(self, now: float, timeout: float) -> list[tuple[Any, float]]:
        """(partition, seconds) of the partitions whose commit has stayed put for `timeout` s or more with events
        waiting, longest first."""
        ages = [(tp, now - since) for tp, since in self.stalled_since.items()]
        return sorted([(tp, age) for tp, age in ages if age >= timeout], key=lambda pair: -pair[1])


async def sample_offsets(consumer, topics: Iterable[str]) -> dict[Any, Offsets] | None:
    """Offsets of the partitions of `topics` the Faust consumer owns now (None: the broker did not answer, e.g.
    during a rebalance; the previous sample stands)."""
    topics = set(topics)
    try:
        owned = [tp for tp in consumer.assignment() if tp.topic in topics]
        if not owned:
            return {}
        committed = {tp: consumer.committed_offset(tp) for tp in owned}  # worker/delivery.py: Faust's record
        ends = await consumer.highwaters(*owned)
        never = [tp for tp in owned if committed[tp] is None]
        earliest = await consumer.earliest_offsets(*never) if never else {}
    except Exception as exc:  # noqa: BLE001 (not started, revoked meanwhile, broker away: next interval)
        log.debug("consumer lag not sampled: %r", exc)
        return None
    out = {}
    for tp in owned:
        end = ends.get(tp)
        start = committed[tp] if committed[tp] is not None else earliest.get(tp)
        if end is not None and start is not None:
            out[tp] = Offsets(committed[tp], int(start), int(end))
    return out

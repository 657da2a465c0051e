"""Replaying input partitions whose offset commits stalled. No Kafka here: the app feeds it snapshots.

The worker acknowledges only events an agent handled, so Faust commits an input partition only up to
its first event that was fetched but never handled. Around rebalances Faust can drop such an event (seen
after a worker was killed and another took over its partitions: a few ratings were never processed, and
the partition's commit stayed behind them). Nothing re-delivers a dropped event until the partition is
read again from its committed offset, so a partition whose commit has not moved for `timeout` seconds
while it has events past the commit is replayed from there: the events after the commit come again, the
ones already applied are dropped by event_id, and the dropped ones are processed.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping


class StallWatch:
    """Which partitions have had events past the same commit for too long."""

    def __init__(self, timeout: float):
        self.timeout = float(timeout)
        self._since: dict[Hashable, tuple[int | None, float]] = {}

    def stalled(self, pending: Mapping[Hashable, int | None], now: float) -> list[tuple[Hashable, int | None]]:
        """pending: partition -> its committed offset (None: never committed), for the partitions that have
        events past their commit. Returns (partition, committed offset) to replay; a partition is reported
        once per stall (again only after another `timeout` at the same commit)."""
        since = {tp: entry for tp, entry in self._since.items() if tp in pending}
        out = []
        for tp, committed in pending.items():
            first = since.get(tp)
            if first is None or first[0] != committed:
                since[tp] = (committed, now)
            elif now - first[1] >= self.timeout:
                out.append((tp, committed))
                since[tp] = (committed, now)
        self._since = since
        return out

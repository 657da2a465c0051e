"""Replaying input partitions whose offset commits stalled. No Kafka here: the app feeds it snapshots.

The worker acknowledges only events an agent handled, so Faust commits an input partition only up to
its first event that was fetched but never handled. Around rebalances Faust can drop such an event (seen
after a worker was killed and another took over its partitions: a few ratings were never processed, and
the partition's commit stayed behind them). Rule 9 of worker/delivery.py now reads such events again at
once; as a safety net, a partition whose commit has not moved for `timeout` seconds while it has events
past the commit is replayed from there: the events after the commit come again, the ones already applied
are dropped by event_id, and the dropped ones are processed.

Only a partition *held back* by a missing event is replayed (`Progress.holds_back`): one whose agents handled
an event past its commit, or none of its events for a long while. A worker that is merely behind (a backlog
waiting in its buffers, handled in order) is left alone: a replay would throw its buffered events away and
fetch them again, so a backlog would grow with every replay (seen in an overloaded soak: ~100 replays in 25
minutes on one worker, its lag at 40 000 events per partition).
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterable, Mapping

offsets_log = logging.getLogger("stream_app.offsets")  # seeks and commits, one line each (Settings.log_offsets)
offsets_log.setLevel(logging.WARNING)
IDLE_FACTOR = 4  # no event of a partition handled for this many stall timeouts: held back even with no hole


class CommitClock:
    """Since when each partition has had events waiting past the same committed offset.

    Shared by the replay below and by readiness and the stall gauge (stream/lag.py)."""

    def __init__(self):
        self._since: dict[Hashable, tuple[int | None, float]] = {}

    def update(self, pending: Mapping[Hashable, int | None], now: float) -> dict[Hashable, float]:
        """pending: partition -> its committed offset (None: never committed), for the partitions that have
        events past their commit. Returns partition -> the time its commit stopped moving with events waiting
        (a partition not pending, or with a new commit, starts a new clock)."""
        since = {}
        for tp, committed in pending.items():
            first = self._since.get(tp)
            since[tp] = first if first is not None and first[0] == committed else (committed, now)
        self._since = since
        return {tp: started for tp, (_, started) in since.items()}


class StallWatch:
    """Which partitions have had events past the same commit for too long."""

    def __init__(self, timeout: float):
        self.timeout = float(timeout)
        self.clock = CommitClock()
        self._reported: dict[Hashable, float] = {}  # when a partition was last reported during its stall

    def stalled(self, pending: Mapping[Hashable, int | None], now: float) -> list[tuple[Hashable, int | None]]:
        """pending: as CommitClock.update. Returns (partition, committed offset) to replay; a partition is
        reported once per stall (again only after another `timeout` at the same commit)."""
        since = self.clock.update(pending, now)
        reported, out = {}, []
        for tp, started in since.items():
            last = max(started, self._reported.get(tp, started))
            if now - last >= self.timeout:
                out.append((tp, pending[tp]))
                last = now
            if last > started:
                reported[tp] = last
        self._reported = reported
        return out


class Progress:
    """Per input partition: the highest offset an agent handled and when it last handled one of its events."""

    def __init__(self):
        self._frontier: dict[Hashable, int] = {}
        self._since: dict[Hashable, float] = {}  # the last handled event, or the assignment

    def assigned(self, tps: Iterable[Hashable], now: float) -> None:
        for tp in tps:
            self._since.setdefault(tp, now)

    def handled(self, tp: Hashable, offset: int, now: float) -> None:
        self._frontier[tp] = max(offset, self._frontier.get(tp, offset))
        self._since[tp] = now

    def forget(self, tps: Iterable[Hashable]) -> None:
        for tp in tps:
            self._frontier.pop(tp, None)
            self._since.pop(tp, None)

    def holds_back(self, tp: Hashable, committed: int | None, now: float, timeout: float) -> bool:
        """Whether `tp`, with events past its commit, is held back by a missing event rather than busy: an event
        at or past the commit was handled (the commit waits for one that was not), or none for a long while."""
        frontier = self._frontier.get(tp)
        if frontier is not None and (committed is None or frontier >= committed):
            return True
        return now - self._since.get(tp, now) >= IDLE_FACTOR * timeout

    def held_back(self, partitions: Mapping[Hashable, tuple[int | None, int | None]], now: float,
                  timeout: float) -> dict[Hashable, int | None]:
        """partitions: input partition -> (its end offset from the last fetch or None, its committed offset).
        Returns partition -> committed offset of those with events past their commit that `holds_back`."""
        self.assigned(partitions, now)
        return {tp: committed for tp, (end, committed) in partitions.items()
                if end and (committed or 0) < end and self.holds_back(tp, committed, now, timeout)}


def log_offsets(on: bool) -> None:
    """Log every seek, assignment and commit of an input partition (INFO on "stream_app.offsets")."""
    offsets_log.setLevel(logging.INFO if on else logging.WARNING)


def partition_names(tps) -> str:
    return " ".join(sorted(f"{tp.topic}[{tp.partition}]" for tp in tps))


def partition_offsets(offsets: Mapping) -> str:
    return " ".join(f"{tp.topic}[{tp.partition}]={offset}" for tp, offset in sorted(offsets.items()))

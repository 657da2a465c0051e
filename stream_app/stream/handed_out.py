"""Input events handed to the agents and not yet handled, per partition: which ones Faust dropped, and from
where to read their partition again (worker/delivery.py rule 9). No Kafka here: the consumer feeds it.

Each event is kept with the epoch of the fetch that brought it; each seek of a partition gives it a new epoch.
An event fetched before its partition's last seek is read again by that seek. One fetched after it that no
agent had taken when Faust cleared its stream buffers is gone: its partition is read again from the first
such event.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any, NamedTuple


class Handed(NamedTuple):
    event: Any
    epoch: int  # of the fetch that brought it


class HandedOut:
    def __init__(self):
        self._events: dict[Hashable, dict[int, Handed]] = {}

    def add(self, tp: Hashable, offset: int, event: Any, epoch: int) -> None:
        """`event`, at `offset` of partition `tp`, was handed out by a fetch of epoch `epoch`."""
        self._events.setdefault(tp, {})[offset] = Handed(event, epoch)

    def handled(self, tp: Hashable, offset: int) -> None:
        self._events.get(tp, {}).pop(offset, None)

    def forget(self, tps: Iterable[Hashable]) -> None:
        """These partitions are no longer ours (revoked)."""
        for tp in tps:
            self._events.pop(tp, None)

    def fresh(self, tp: Hashable, offset: int, seek_epoch: int) -> bool:
        """Whether that event was handed out since its partition's last seek (of epoch `seek_epoch`)."""
        entry = self._events.get(tp, {}).get(offset)
        return entry is not None and entry.epoch >= seek_epoch

    def dropped(self, seek_epochs: Mapping[Hashable, int], taken: Callable[[Any], bool]) -> dict[Hashable, int]:
        """Per partition, the first offset handed out since its last seek (seek_epochs: partition -> epoch)
        whose event no agent has `taken`. Events from before that seek are forgotten: it reads them again."""
        out = {}
        for tp, events in self._events.items():
            since = seek_epochs.get(tp, 0)
            events = self._events[tp] = {o: h for o, h in events.items() if h.epoch >= since}
            lost = [offset for offset, h in events.items() if not taken(h.event)]
            if lost:
                out[tp] = min(lost)
        return out

"""Every at-least-once delivery rule of the worker, and the only module that touches Faust's private names.

These overrides of Faust's aiokafka consumer make the worker at-least-once end to end: every input event is
processed by an agent, and everything it produces is delivered, before its offset is committed. The rules,
in the order an event meets them (0 is the precondition of exact tables):

0. A table recovers its changelog up to the true end, also on tansu, whose ListOffsets reports the first offset
   of a partition's last record batch (so the producer may batch): `_ConsumerThread._highwaters`.
1. A table write goes to the changelog (and RocksDB) partition of the entity's own key, also inside a
   `take_events` batch, where Faust tracks no current event: `event_context`.
2. An input event counts as acknowledged only once an agent handled it (applied, dead-lettered or rekeyed),
   never because Faust skipped it around a rebalance: `Consumer.mark_handled`, `Consumer.ack`.
3. A partition's commit continues from its last commit (or from where its reading began), never past an event
   there that no agent handled; a partition whose start is unknown here (revoked) commits nothing:
   `Consumer._new_offset`.
4. A jump in an input partition's offsets is left unacknowledged and read again at once: `Consumer._add_gap`.
5. After a rebalance, an input partition the group never committed restarts at its beginning:
   `_ConsumerThread.seek_to_committed`.
6. An input offset is committed only after every record produced before it (outputs, forwards, changelog
   records) was delivered: `Consumer._commit_tps` flushes the producer first.
7. An input partition whose commit stalls for `commit_stall_timeout` seconds with events past it (outside
   rebalances; the rule: stream/offsets.py) is read again from its commit: `StallReplayer.replay`, a counted
   safety net since rule 9 (`recsys_partition_replays_total`).
8. A re-delivered event changes no state, but its entity's row is written and its vector published again:
   `stream.processing.republish_duplicates` (a pure rule, unit-tested).
9. An input event Faust fetched and then dropped before an agent took it (it clears its stream buffers at the
   end of every rebalance) is read again at once: seeks run on the consumer's thread with an epoch
   (`_ConsumerThread.seek_epochs`); `Consumer.getmany` leaves out what was fetched before a partition's last
   seek and keeps Faust's read-offset filter from dropping what came after it; `Consumer.resume_flow` and
   `Consumer.ack` read a partition again from its first dropped event (`Consumer.reread`, stream/handed_out.py).

Re-read events are dropped by event_id (stream/state.py). Why each rule exists: docs/delivery.md. Tests:
test_stream_faults.py (kill -9, takeovers), test_delivery_rereads.py (9), test_delivery_commits.py (3).
pyproject.toml pins the faust-streaming minor version these overrides were tested with.
"""

from __future__ import annotations

import contextlib
import logging
import time
import weakref
from collections.abc import Callable, Iterator

import faust
from aiokafka.errors import IllegalStateError
from faust.streams import _current_event
from faust.tables import TableManager
from faust.transport.drivers import aiokafka as faust_aiokafka

from stream_app.settings import Settings
from stream_app.stream.handed_out import HandedOut
from stream_app.stream.offsets import Progress, StallWatch, offsets_log, partition_names, partition_offsets
from stream_app.worker.topics import fetched_highwaters

log = logging.getLogger(__name__)
MAX_HANDLED = 1_000_000  # handled but never acked (e.g. revoked meanwhile): cleared, such events are read again


def table_databases(table) -> list:
    """The RocksDB databases a table holds open now, one per partition (for the memory gauges, rocks.py)."""
    return list(table.data._dbs.values())


@contextlib.contextmanager
def event_context(event) -> Iterator[None]:
    """(1) Make `event` the stream's current event while its entity's table row is read or written: Faust
    routes a table write to the partition of the current event, which a `take_events` batch does not set."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's thread that owns the aiokafka consumer; every seek of ours runs on it (rules 0, 5, 9)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.start_offsets: dict = {}  # (3) input partition -> where the last seek to the commits put it
        self.seek_epochs: dict = {}  # (9) partition -> epoch of its last seek
        self.epoch = 0  # (9) bumped by each seek
        self.fetch_epoch = 0  # (9) the epoch when the last fetch took its records from aiokafka

    def _create_worker_consumer(self, transport):
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = self.consumer.app.fetch_max_wait_ms  # read when its fetcher starts
        return consumer

    async def _highwaters(self, partitions):
        # (0) tansu's ListOffsets(latest) is its last batch's base offset + 1; a fetch response has the true end
        listed = dict(await super()._highwaters(partitions))
        changelogs = self.consumer.app.tables.changelog_topics
        probe_tps = [tp for tp in listed if tp.topic in changelogs]
        if not probe_tps:
            return listed
        fetched = await fetched_highwaters(self.consumer.app, {tp: listed[tp] for tp in probe_tps})
        return {tp: max(offset, fetched.get(tp, 0)) for tp, offset in listed.items()}

    async def _fetch_records(self, *args, **kwargs):
        records = await super()._fetch_records(*args, **kwargs)
        self.fetch_epoch = self.epoch  # (9) no await since aiokafka handed them over: no seek came in between
        return records

    def _seek_now(self, offsets: dict) -> int:
        # (9) On this thread and without an await, so a fetch took its records either before or after it.
        consumer = self._ensure_consumer()
        self.epoch += 1
        for tp, offset in offsets.items():
            consumer.seek(tp, offset)
            self.seek_epochs[tp] = self.epoch
        offsets_log.info("seek %s (epoch %d)", partition_offsets(offsets), self.epoch)
        return self.epoch

    async def reseek(self, offsets: dict) -> int:
        """Seek these partitions on the consumer's thread; returns the seek's epoch."""
        async def seek() -> int:
            return self._seek_now(offsets)
        return await self.call_thread(seek)

    async def seek_to_committed(self):
        return await self.call_thread(self._seek_to_committed)

    async def _seek_to_committed(self):
        # (5) aiokafka does not seek a never-committed partition, so what Faust dropped was lost: seek to the start
        # (9) aiokafka's seek_to_committed, but all seeks at once and with their epoch
        consumer = self._ensure_consumer()
        committed = {tp: await consumer.committed(tp) for tp in consumer.assignment()}
        changelogs = self.app.tables.changelog_topics  # positioned by Faust's table recovery
        never = [tp for tp, offset in committed.items() if offset is None and tp.topic not in changelogs]
        offsets = dict(await consumer.beginning_offsets(never)) if never else {}
        offsets.update((tp, offset) for tp, offset in committed.items() if offset)  # aiokafka's rule: > 0 only
        self.start_offsets = {tp: offsets.get(tp, offset) for tp, offset in committed.items()
                              if tp.topic not in changelogs}
        self._seek_now(offsets)  # IllegalStateError if revoked meanwhile, as aiokafka's: Faust's recovery restarts
        return committed


class Consumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer, made at-least-once end to end (the numbers are the module docstring's)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.guarded_topics: set[str] = set()  # the agents' input topics (see guard())
        self._handled: set[tuple[str, int, int]] = set()  # (topic, partition, offset) handled, not yet acked
        self._reading_from: dict = {}  # (3) input partition -> where its reading began in this assignment
        self._handed_out = HandedOut()  # (9) events handed to Faust's streams, not handled yet
        self._batch_epoch = 0  # (9) fetch epoch of the records getmany is handing out
        self.progress = Progress()  # (7) what the agents handled, per partition: a stall or a backlog?
        self.on_reread: Callable[[str], None] | None = None  # (9) called with the topic of each partition

    def _new_consumer_thread(self):
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def guard(self, topics, on_reread: Callable[[str], None] | None = None) -> None:
        """Apply rules 2-5, 7 and 9 to these (input) topics; on_reread(topic) counts rule 9's re-reads."""
        self.guarded_topics.update(topics)
        self.on_reread = on_reread or self.on_reread

    def committed_offset(self, tp) -> int | None:
        """The last offset this consumer committed for `tp` (None: none yet)."""
        return self._committed_offset.get(tp)

    def mark_handled(self, events) -> None:
        """(2) The agent is done with these events (applied, rejected or rekeyed): their acks may count."""
        if len(self._handled) > MAX_HANDLED:
            self._handled.clear()
        self._handled.update((e.message.topic, e.message.partition, e.message.offset) for e in events)
        now = time.monotonic()
        for e in events:
            self._handed_out.handled(e.message.tp, e.message.offset)
            self.progress.handled(e.message.tp, e.message.offset, now)

    def ack(self, message) -> bool:
        # (2) Faust acks events it skips around a rebalance and commits past them: refuse, hold the commit back
        key = (message.topic, message.partition, message.offset)
        if message.topic in self.guarded_topics and key not in self._handled:
            self._unacked_messages.discard(message)  # nobody will ack it: do not wait for it on rebalance
            seek_epoch = self._thread.seek_epochs.get(message.tp, 0)
            if self.flow_active and self._handed_out.fresh(message.tp, message.offset, seek_epoch):  # (9)
                self._reread_soon({message.tp: message.offset})  # skipped after the flow resumed: no seek follows
            return False
        self._handled.discard(key)
        return super().ack(message)

    def _new_offset(self, tp):
        # (3) Faust lets the event *at* the committed offset be skipped, and forgets a revoked partition's commit
        acked, committed = self._acked[tp], self._committed_offset.get(tp)
        first = min(acked) if acked else None
        if first is not None and tp.topic in self.guarded_topics:
            base = committed if committed is not None else self._reading_from.get(tp)
            if base is None or first > base:
                return None
        offset = super()._new_offset(tp)
        if offset is not None and tp.topic in self.guarded_topics:
            offsets_log.info("%s[%s] commit %s: handled %s..%s, committed before: %s", tp.topic, tp.partition,
                             offset, first, offset - 1, committed)
        return offset

    async def _add_gap(self, tp, offset_from: int, offset_to: int) -> None:
        # (4) Faust takes a jump (compaction holes) as acknowledged; our inputs have none: skipped records
        if tp.topic not in self.guarded_topics:
            await super()._add_gap(tp, offset_from, offset_to)
            return
        log.warning("%s[%s]: offsets %s..%s skipped by the fetch; they will be read again", tp.topic, tp.partition,
                    offset_from, offset_to - 1)
        if self.flow_active:  # else a rebalance is on: its seek to the committed offset reads them again
            self._reread_soon({tp: offset_from})

    async def _getmany(self, active_partitions, timeout):
        records = await super()._getmany(active_partitions, timeout)
        self._batch_epoch = self._thread.fetch_epoch  # one fetch at a time: the drain loop's
        return records

    async def getmany(self, timeout):
        # (9) leave out records fetched before their partition's last seek; lower Faust's read offset (its
        # filter drops records below it) to a re-read record
        async for tp, message in super().getmany(timeout):
            if tp.topic in self.guarded_topics:
                if self._thread.seek_epochs.get(tp, 0) > self._batch_epoch:
                    continue
                read = self._read_offset.get(tp)
                if read is not None and message.offset < read:
                    self._read_offset[tp] = message.offset
                self._handed_out.add(tp, message.offset, message, self._batch_epoch)
            yield tp, message

    def resume_flow(self) -> None:
        # (9) called right after Faust cleared every stream buffer: read again what no agent took
        super().resume_flow()
        self._reread_soon(self._handed_out.dropped(self._thread.seek_epochs, lambda message: message.tracked))

    def _reread_soon(self, offsets: dict) -> None:
        if offsets:
            self.add_future(self.reread(offsets, dropped=True))

    async def reread(self, offsets: dict, dropped: bool = False) -> None:
        """Read these input partitions again from these offsets (rule 9; rule 7's replay)."""
        try:
            await self._thread.reseek(offsets)
        except IllegalStateError:  # revoked meanwhile: the next assignment seeks them
            log.info("partitions revoked before they could be read again")
            return
        except Exception:  # noqa: BLE001 (e.g. stopping): a failed seek must not crash the worker; rule 7 remains
            log.warning("could not read %s again", offsets, exc_info=True)
            return
        for tp, offset in offsets.items() if dropped else ():
            log.info("%s[%s]: events from offset %s never reached an agent (dropped by Faust or skipped by the "
                     "fetch); reading them again", tp.topic, tp.partition, offset)
            if self.on_reread is not None:
                self.on_reread(tp.topic)

    async def on_partitions_assigned(self, assigned, generation_id: int = 0) -> None:
        offsets_log.info("assigned %s (generation %s)", partition_names(assigned), generation_id)
        await super().on_partitions_assigned(assigned, generation_id)

    async def perform_seek(self) -> None:
        await super().perform_seek()  # Faust's: our _seek_to_committed, then its read and committed offsets
        assigned = self.assignment()
        self._reading_from = {tp: offset for tp, offset in self._thread.start_offsets.items() if tp in assigned}

    async def on_partitions_revoked(self, revoked) -> None:
        offsets_log.info("revoked %s", partition_names(revoked))
        for tp in revoked:
            self._reading_from.pop(tp, None)
        self._handed_out.forget(revoked)
        self.progress.forget(revoked)
        await super().on_partitions_revoked(revoked)

    async def _commit_tps(self, tps, start_new_transaction: bool) -> bool:
        # (6) everything produced so far (outputs, forwards, changelog records) is delivered before the commit
        try:
            await self.app.producer.flush()
        except RuntimeError:  # the producer is stopping: commit nothing, the events come again
            log.warning("producer not running: offsets not committed")
            return False
        return await super()._commit_tps(tps, start_new_transaction)


class _Transport(faust_aiokafka.Transport):
    Consumer = Consumer


class _TableManager(TableManager):
    async def on_start(self) -> None:
        # Faust sleeps 1 s first, for tables declared late; ours are declared before start (a sixth of a restart)
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()


class FastFetchApp(faust.App):
    """faust.App with the at-least-once consumer above, whose fetches wait at most `fetch_max_wait` seconds
    (Faust's fixed 1.5 s, which tansu holds even with data there, would be added to every hop), and whose table
    manager starts recovering at once."""

    def __init__(self, *args, fetch_max_wait: float = Settings.fetch_max_wait, **kwargs):
        self.fetch_max_wait_ms = max(int(fetch_max_wait * 1000), 1)
        kwargs.setdefault("TableManager", _TableManager)
        super().__init__(*args, **kwargs)

    def _new_transport(self):
        if self.conf.broker_consumer[0].scheme in ("kafka", "aiokafka"):
            return _Transport(self.conf.broker_consumer, self)
        return super()._new_transport()


class StallReplayer:
    """(7) Reads an input partition again from its committed offset when its commits stalled."""

    def __init__(self, app: faust.App, timeout: float, metrics):
        self.app, self.metrics = app, metrics
        self.stalls = StallWatch(timeout)

    async def replay(self) -> None:
        consumer = self.app.consumer
        if not isinstance(consumer, Consumer):
            return
        if self.app.rebalancing:  # paused until the rebalance's own seek to the commit: the clocks start after it
            self.stalls.stalled({}, time.monotonic())
            return
        now, ends = time.monotonic(), {}
        for tp in consumer.assignment():
            if tp.topic in consumer.guarded_topics:
                with contextlib.suppress(Exception):  # revoked meanwhile
                    ends[tp] = (consumer.highwater(tp), consumer.committed_offset(tp))  # end: from the last fetch
        pending = consumer.progress.held_back(ends, now, self.stalls.timeout)
        for tp, committed in self.stalls.stalled(pending, now):
            offset = committed if committed is not None else (await consumer.earliest_offsets(tp))[tp]
            log.warning("%s[%s]: commits stalled at %s for %.0f s with events past it; reading it again from there",
                        tp.topic, tp.partition, committed, self.stalls.timeout)
            await consumer.reread({tp: offset})
            self.metrics.replays.labels(topic=tp.topic).inc()

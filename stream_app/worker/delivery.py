"""Every at-least-once delivery rule of the worker, and the only module that touches Faust's private names.

Faust acknowledges and commits input offsets on its own terms; these overrides of its aiokafka consumer
make the worker at-least-once end to end: every input event is processed by an agent, and everything it
produces is delivered, before its offset is committed. The guarantees, in the order an event meets them
(0 is the precondition of exact tables):

0. A table recovers its changelog up to the true end, even on a broker (tansu) whose ListOffsets reports the
   first offset of a partition's last record batch: `_ConsumerThread._highwaters`. So the producer may batch.
1. A table write goes to the changelog (and RocksDB) partition of the entity's own key, even inside a
   `take_events` batch where Faust tracks no current event: `event_context`.
2. An input event counts as acknowledged only once an agent has handled it (applied, dead-lettered or
   rekeyed), never because Faust skipped it around a rebalance: `Consumer.mark_handled`, `Consumer.ack`.
3. A partition's commit continues from its last commit (or, never committed, from where its reading began),
   never past an event there that no agent handled: `Consumer._new_offset`. Acks of a partition whose start is
   unknown here commit nothing: after a rebalance revoked it, an agent finishing its batch would otherwise
   commit from the first offset it acked, past events this worker skipped (seen in a soak: a ~11 s run of
   ratings lost when partitions moved to a rejoining worker); the next owner reads them again.
4. A jump in an input partition's offsets (which Faust would count as acknowledged) is left unacknowledged,
   and the partition is read again at once from the first skipped offset: `Consumer._add_gap`.
5. After a rebalance, an input partition the group never committed restarts at its beginning (aiokafka does
   not seek it, and Faust dropped what it had fetched): `_ConsumerThread.seek_to_committed`.
6. An input offset is committed only after every record produced before it (outputs, forwards, changelog
   records) was delivered: `Consumer._commit_tps` flushes the producer first.
7. An input partition whose committed offset stays put for `commit_stall_timeout` seconds while events wait
   past it and an agent handled one past it (or none of its events for 4 timeouts), outside rebalances (which
   pause it and end with a seek to it), is read again from that offset: `StallReplayer.replay` (the stall
   rule and `Progress` are stream/offsets.py; a worker merely behind on a backlog is left alone). A safety
   net since rule 9: each replay is counted (`recsys_partition_replays_total`).
8. A re-delivered event changes no state, but its entity's row is written and its vector published again:
   `stream.processing.republish_duplicates` (a pure rule, unit-tested).
9. An input event Faust fetched and then dropped before an agent took it is read again at once (no timer),
   from the first such event of its partition. At the end of every rebalance Faust seeks the input
   partitions to their committed offsets while its fetcher is already delivering, then clears every stream
   buffer (flow_control.resume). So every seek runs on the consumer's thread with a new epoch for its
   partitions (`_ConsumerThread.seek_epochs`); `Consumer.getmany` leaves out what was fetched before a
   partition's last seek and keeps Faust's read-offset filter from dropping what was fetched after it; and
   `Consumer.resume_flow` (right after each clear) and `Consumer.ack` (an event a stream skipped) read a
   partition again from its first dropped event (`Consumer.reread`; the bookkeeping: stream/handed_out.py).

Re-read events (2-9) are recognised by event_id and dropped by the state's dedup horizon (stream/state.py).
`tests/test_stream_faults.py` kills workers (kill -9, takeovers) to check the whole chain, and
`tests/test_delivery_rereads.py` makes Faust drop events on purpose (rule 9). These overrides
depend on faust-streaming internals: pyproject.toml pins the minor version they were tested with.
"""

from __future__ import annotations

import asyncio
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
from stream_app.stream.offsets import Progress, StallWatch

log = logging.getLogger(__name__)
offsets_log = logging.getLogger("stream_app.offsets")  # seeks and commits, one line each (Settings.log_offsets)
offsets_log.setLevel(logging.WARNING)


def log_offsets(on: bool) -> None:
    offsets_log.setLevel(logging.INFO if on else logging.WARNING)


def _names(tps) -> str:
    return " ".join(sorted(f"{tp.topic}[{tp.partition}]" for tp in tps))


def _tps(offsets: dict) -> str:
    return " ".join(f"{tp.topic}[{tp.partition}]={offset}" for tp, offset in sorted(offsets.items()))

MAX_HANDLED = 1_000_000  # handled but never acked (e.g. revoked meanwhile): cleared, such events are read again


@contextlib.contextmanager
def event_context(event) -> Iterator[None]:
    """(1) Make `event` the stream's current event while its entity's table row is read or written.

    Faust routes a table write to the changelog partition (and RocksDB partition) of the *current event*;
    inside a `take_events` batch that is not set per event, so we set it to an event of the entity being
    written (faust.streams._current_event is the context variable Faust itself uses).
    """
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
        # (0) Changelog end offsets from a fetch, not from ListOffsets alone: tansu answers ListOffsets(latest)
        # with the base offset of a partition's last record batch + 1, so with batched writes Faust would
        # recover a changelog only up to the first record of its last batch (losing the rest) and then refuse
        # a local store "ahead" of it. A fetch response carries the true high watermark. On Kafka both agree.
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
        offsets_log.info("seek %s (epoch %d)", _tps(offsets), self.epoch)
        return self.epoch

    async def reseek(self, offsets: dict) -> int:
        """Seek these partitions on the consumer's thread; returns the seek's epoch."""
        return await self.call_thread(self._reseek, offsets)

    async def _reseek(self, offsets: dict) -> int:
        return self._seek_now(offsets)

    async def seek_to_committed(self):
        return await self.call_thread(self._seek_to_committed)

    async def _seek_to_committed(self):
        # (5) Faust drops records it has fetched but not processed when a rebalance interrupts it, and relies on
        # this seek to read them again; aiokafka does not seek a partition the group never committed, so they
        # were lost (seen: a worker killed before its first commit, its partitions taken over by another worker
        # that then skipped their backlog). Such a partition restarts at its beginning: what
        # consumer_auto_offset_reset="earliest" means; re-read events are dropped by event_id.
        # (9) aiokafka's seek_to_committed, but all seeks at once and with their epoch.
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


async def fetched_highwaters(app, listed: dict, timeout: float = 10.0) -> dict:
    """The high watermark of each partition as a fetch response reports it (read from just before `listed`)."""

    from aiokafka import AIOKafkaConsumer, TopicPartition

    bootstrap = ",".join(f"{u.host}:{u.port or 9092}" for u in app.conf.broker_consumer)
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                             fetch_max_wait_ms=10, max_partition_fetch_bytes=1024)
    await probe.start()
    try:
        tps = {tp: TopicPartition(tp.topic, tp.partition) for tp in listed}
        probe.assign(list(tps.values()))
        for tp, ktp in tps.items():
            probe.seek(ktp, max(int(listed[tp]) - 1, 0))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while any(probe.highwater(k) is None for k in tps.values()) and loop.time() < deadline:
            await probe.getmany(timeout_ms=100)
        return {tp: probe.highwater(k) or 0 for tp, k in tps.items()}
    finally:
        await probe.stop()


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
        # (2) Faust acks an event it skips without processing (fetched before a rebalance, or while the flow is
        # suspended for one) and then commits past it, so the event is never read again (seen: a rating lost on
        # a worker whose own partitions were reassigned when another worker died). Only an event an agent has
        # handled is acked; a refused one holds its partition's commit back, and the partition is read again
        # from there (by the rebalance's seek, or at once by rule 9).
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
        # (3) Faust holds a commit back when acknowledged offsets start more than one past the committed offset,
        # but the committed offset is the next one to read: the event *at* it could be skipped and committed
        # past (seen: the first rating after a rebalance lost for good). Hold the commit back for it too. Faust
        # forgets the committed offset of a revoked partition and then commits from whatever is acked: hold back.
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
        # (4) Faust counts a jump in a partition's offsets as acknowledged (holes left by compaction or
        # transaction markers) and commits past it. Our input topics have neither, so a jump means records were
        # skipped (seen: a rating on the survivor's own partition committed but never processed after a
        # takeover). Leave them unacknowledged: the partition's commit stops there, and it is read again from
        # there now (a jump outside rebalances, seen once at steady load, had waited 15 s for rule 7's replay).
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
        # (9) Records fetched before their partition was sought are left out (the seek reads them again), and
        # Faust's read offset (the highest offset it handed out) is lowered to a record fetched after the seek:
        # its filter would drop every re-read record below it (seen in a takeover: a batch fetched before the
        # seek to offset 30 went on to 119 after it, and Faust dropped the re-read 30-118).
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
        # (9) Faust calls this right after flow_control.resume() cleared every stream buffer: the events handed
        # out since their partition's last seek that no agent took are gone; their partitions are read again
        # from the first of them. At the end of a rebalance Faust seeks the input partitions to their committed
        # offsets while the fetcher already runs, then clears: what was fetched in between was lost (seen in
        # takeovers: the first events after the committed offset of a partition the survivor kept or took).
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
        offsets_log.info("assigned %s (generation %s)", _names(assigned), generation_id)
        await super().on_partitions_assigned(assigned, generation_id)

    async def perform_seek(self) -> None:
        await super().perform_seek()  # Faust's: our _seek_to_committed, then its read and committed offsets
        assigned = self.assignment()
        self._reading_from = {tp: offset for tp, offset in self._thread.start_offsets.items() if tp in assigned}

    async def on_partitions_revoked(self, revoked) -> None:
        offsets_log.info("revoked %s", _names(revoked))
        for tp in revoked:
            self._reading_from.pop(tp, None)
        self._handed_out.forget(revoked)
        self.progress.forget(revoked)
        await super().on_partitions_revoked(revoked)

    async def _commit_tps(self, tps, start_new_transaction: bool) -> bool:
        # (6) Commit an input offset only once everything produced so far (outputs, forwards, changelog records)
        # was delivered: Faust sends changelog records with send_soon and would otherwise commit past an event
        # whose records a kill -9 then loses, and nothing would deliver that event again.
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
        # Faust sleeps 1 s first, for tables declared after the app started: the worker declares all of them
        # before, and that second was a sixth of a restart's time to serve again
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()


class FastFetchApp(faust.App):
    """faust.App with the at-least-once consumer above, whose fetches wait at most `fetch_max_wait` seconds,
    and whose table manager starts recovering at once.

    Faust hardcodes 1.5 s; tansu holds a fetch for that long even when some data is there, so every hop of
    the pipeline (ratings -> item-updates -> ...) would cost up to it.
    """

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
        pending = {}  # input partitions held back with events past their last commit (Faust's own record of it)
        now = time.monotonic()
        for tp in consumer.assignment():
            if tp.topic not in consumer.guarded_topics:
                continue
            consumer.progress.assigned([tp], now)
            try:
                end = consumer.highwater(tp)  # from the last fetch response; None before one
            except Exception:  # noqa: BLE001 (revoked meanwhile)
                continue
            committed = consumer.committed_offset(tp)
            if end and (committed or 0) < end and consumer.progress.holds_back(tp, committed, now,
                                                                                self.stalls.timeout):
                pending[tp] = committed
        for tp, committed in self.stalls.stalled(pending, now):
            offset = committed if committed is not None else (await consumer.earliest_offsets(tp))[tp]
            log.warning("%s[%s]: commits stalled at %s for %.0f s with events past it; reading it again from there",
                        tp.topic, tp.partition, committed, self.stalls.timeout)
            await consumer.reread({tp: offset})
            self.metrics.replays.labels(topic=tp.topic).inc()

"""The Faust app: `faust -A stream_app.app worker` or `recsys worker` (settings from RECSYS_* env vars/flags).

A thin layer: parse and validate (stream/events.py), update per-entity state (stream/state.py) in
RocksDB tables backed by changelog topics, call the frozen model (stream/service.py), publish.

Topology (names are settings; P = settings.partitions for every topic below):

    ratings, users, recommend-requests  (keyed by user id) --> agent `user-processor`
        table `users`: window of recent ratings, side data, vector, n_ratings, recent event ids
        publishes user-vectors, recommendations; forwards each applied rating, with the user's new
        vector, to the internal topic `<app_id>-item-updates`, keyed by item id
    items, <app_id>-item-updates         (keyed by item id) --> agent `item-processor`
        table `items`: the same per item (window entries also carry the rater's vector and features)
        publishes item-vectors; updates this worker's item catalogue (what top-N lists score)
    every rejected input                                   --> dead-letters

Each table has exactly one writer (its agent), and every write goes to the changelog partition of
the entity's own key. Both agents batch with `stream.take_events`, so a busy stream folds many
entities per encoder call: one `Recommender.fold_in` call per side per batch.

An input event that sits on the wrong partition for its id (a producer that keyed it by something
else, or not at all) is sent again to the same topic keyed by its id and skipped (outcome
"rekeyed"); otherwise two workers could own the same user.

Delivery is at-least-once end to end: an input offset is committed only after the event was handled by
an agent and everything produced before it was delivered (`_Consumer`); a re-delivered event changes no
state but publishes its entity's current vector again (`republish_duplicates`); a partition whose commit
stalls is read again (`Runtime.replay_stalled`). `tests/test_stream_faults.py` kills workers to check it.

Every worker scores top-N lists over the whole catalogue, while an item's vector is computed by the
worker that owns its partition. So the item processor also writes each new item vector and side data
to `<app_id>-catalogue` (keyed by item id, compacted where the broker compacts), and every worker reads
all of that topic, from the start, outside the consumer group (`CatalogueSync`): a worker that starts
or restarts gets every item back, and sees other workers' items within moments.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import weakref
from collections.abc import Iterator
from typing import Any

import faust
from aiokafka.errors import IllegalStateError
from aiokafka.partitioner import DefaultPartitioner
from faust.streams import _current_event  # see event_context()
from faust.transport.drivers import aiokafka as faust_aiokafka

from stream_app.errors import EventError, RecsysError
from stream_app.settings import Settings
from stream_app.stream import events as ev
from stream_app.stream import lifecycle as lc
from stream_app.stream import state as st
from stream_app.stream.health import Readiness
from stream_app.stream.lag import LagMonitor, sample_offsets
from stream_app.stream.metrics import CONTENT_TYPE, StreamMetrics
from stream_app.stream.offsets import StallWatch
from stream_app.stream.service import FoldInService, Query, dense, sparse
from stream_app.stream.web import FAUST_WEB_OPTIONS, WebServer

log = logging.getLogger(__name__)

REKEYED_HEADER = "recsys-rekeyed"

def faust_config(settings: Settings) -> dict[str, Any]:
    """Faust settings derived from ours."""
    return dict(
        broker=settings.broker_url,
        store="rocksdb://",
        datadir=settings.store_dir,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        **FAUST_WEB_OPTIONS,  # Faust's own web server off: stream/web.py serves the worker's endpoints
        consumer_auto_offset_reset="earliest",  # a new deployment reads its inputs from the start
        key_serializer="raw",
        value_serializer="json",
        autodiscover=False,
        **producer_options(settings.producer_batching),
        table_standby_replicas=max(int(settings.standby_replicas), 0),
        **consumer_timeouts(settings.session_timeout),
    )


def producer_options(batching: bool) -> dict[str, Any]:
    """One record per batch unless batching is allowed: tansu reports a partition's end offset as the
    first offset of its last batch + 1, and Faust recovers a changelog only up to that end offset (and
    refuses to start when its local store is "ahead" of it)."""
    if batching:
        return dict(producer_linger=0.005)  # a few ms: far fewer produce requests when a batch publishes a lot
    return dict(producer_max_batch_size=1)  # aiokafka always accepts the first record of a batch


def consumer_timeouts(session_timeout: float) -> dict[str, float]:
    """Faust's 60 s defaults would make every worker start wait 30 s on tansu, which answers a JoinGroup
    only after about half the session timeout. Heartbeats run in the consumer's own thread, so a long
    fold-in on the event loop does not miss them."""
    session = max(float(session_timeout), 1.0)
    return dict(broker_session_timeout=session, broker_rebalance_timeout=session,
                broker_heartbeat_interval=max(session / 6.0, 0.2), broker_request_timeout=max(30.0, session))


def internal_topic(settings: Settings) -> str:
    return f"{settings.app_id}-item-updates"


def catalogue_topic(settings: Settings) -> str:
    return f"{settings.app_id}-catalogue"


@contextlib.contextmanager
def event_context(event) -> Iterator[None]:
    """Make `event` the stream's current event while its entity's table row is read or written.

    Faust routes a table write to the changelog partition (and RocksDB partition) of the *current
    event*; inside a `take_events` batch that is not set per event, so we set it to an event of the
    entity being written (faust.streams._current_event is the context variable Faust itself uses).
    """
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport):
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = self.consumer.app.fetch_max_wait_ms  # read when its fetcher starts
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer, made at-least-once end to end (each override says why)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.guarded_topics: set[str] = set()  # the agents' input topics (Runtime.on_assigned)
        self._handled: set[tuple[str, int, int]] = set()  # (topic, partition, offset) processed, not yet acked

    def _new_consumer_thread(self):
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def mark_handled(self, events) -> None:
        """The agent is done with these events (applied, rejected or rekeyed): their acks may count."""
        if len(self._handled) > 1_000_000:  # handled but never acked (e.g. revoked meanwhile): replayed anyway
            self._handled.clear()
        self._handled.update((e.message.topic, e.message.partition, e.message.offset) for e in events)

    def ack(self, message) -> bool:
        # Faust acks an event it skips without processing (fetched before a rebalance, or while the flow is
        # suspended for one) and then commits past it, so the event is never read again (seen: a rating
        # lost on a worker whose own partitions were reassigned when another worker died). Only an event an
        # agent has handled is acked; a refused one holds its partition's commit back, and the partition is
        # read again from there (after the rebalance, or by Runtime.replay_stalled).
        key = (message.topic, message.partition, message.offset)
        if message.topic in self.guarded_topics and key not in self._handled:
            self._unacked_messages.discard(message)  # nobody will ack it: do not wait for it on rebalance
            return False
        self._handled.discard(key)
        return super().ack(message)

    def _new_offset(self, tp):
        # Faust holds a commit back when acknowledged offsets start more than one past the committed offset,
        # but the committed offset is the next one to read: the event *at* it could be skipped and committed
        # past (seen: the first rating after a rebalance lost for good). Hold the commit back for it too.
        acked, committed = self._acked[tp], self._committed_offset.get(tp)
        if acked and committed is not None and tp.topic in self.guarded_topics and min(acked) > committed:
            return None
        return super()._new_offset(tp)

    async def _add_gap(self, tp, offset_from: int, offset_to: int) -> None:
        # Faust counts a jump in a partition's offsets as acknowledged (holes left by compaction or
        # transaction markers) and commits past it. Our input topics have neither, so a jump means records
        # were skipped (seen: a rating on the survivor's own partition committed but never processed after a
        # takeover). Leave them unacknowledged: the partition's commit stops there and it is read again.
        if tp.topic not in self.guarded_topics:
            await super()._add_gap(tp, offset_from, offset_to)
            return
        log.warning("%s[%s]: offsets %s..%s skipped by the fetch; they will be read again", tp.topic, tp.partition,
                    offset_from, offset_to - 1)

    async def seek_to_committed(self):
        # Faust drops records it has fetched but not processed when a rebalance interrupts it, and relies
        # on this seek to read them again; aiokafka does not seek a partition the group never committed,
        # so they were lost (seen: a worker killed before its first commit, its partitions taken over by
        # another worker that then skipped their backlog). Such a partition restarts at its beginning:
        # what consumer_auto_offset_reset="earliest" means; re-read events are dropped by event_id.
        committed = await super().seek_to_committed()
        changelogs = self.app.tables.changelog_topics  # positioned by Faust's table recovery
        never = [tp for tp, offset in committed.items() if offset is None and tp.topic not in changelogs]
        if never:
            try:
                for tp, offset in (await self.earliest_offsets(*never)).items():
                    await self._seek(tp, offset)
            except IllegalStateError:  # revoked meanwhile: another rebalance, and another seek, follows
                log.info("partitions revoked while seeking them to their beginning")
        return committed

    async def _commit_tps(self, tps, start_new_transaction: bool) -> bool:
        # Commit an input offset only once everything produced so far (outputs, forwards, changelog
        # records) was delivered: Faust sends changelog records with send_soon and would otherwise commit
        # past an event whose records a kill -9 then loses, and nothing would deliver that event again.
        try:
            await self.app.producer.flush()
        except RuntimeError:  # the producer is stopping: commit nothing, the events come again
            log.warning("producer not running: offsets not committed")
            return False
        return await super()._commit_tps(tps, start_new_transaction)


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class FastFetchApp(faust.App):
    """faust.App whose Kafka consumer waits at most `fetch_max_wait` seconds for a fetch.

    Faust hardcodes 1.5 s; tansu holds a fetch for that long even when some data is there, so every hop of
    the pipeline (ratings -> item-updates -> ...) would cost up to it.
    """

    def __init__(self, *args, fetch_max_wait: float = Settings.fetch_max_wait, **kwargs):
        self.fetch_max_wait_ms = max(int(fetch_max_wait * 1000), 1)
        super().__init__(*args, **kwargs)

    def _new_transport(self):
        if self.conf.broker_consumer[0].scheme in ("kafka", "aiokafka"):
            return _Transport(self.conf.broker_consumer, self)
        return super()._new_transport()


class RecsysApp(FastFetchApp):
    """faust.App that creates its topics (and checks their partitions) before it subscribes to them."""

    runtime: Runtime

    async def on_start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.runtime.prepare_topics)
        await super().on_start()


class Runtime:
    """The service's state inside one worker: settings, model, metrics, topics, tables and agents."""

    def __init__(self, app: RecsysApp, settings: Settings, service: FoldInService, metrics: StreamMetrics):
        self.app, self.settings, self.service, self.metrics = app, settings, service, metrics
        s = settings
        self.gate = lc.BatchGate()  # model swaps happen between batches (stream/lifecycle.py)
        self.watcher = lc.ModelWatcher(settings.artifacts_dir, service.rec, metrics)
        raw = dict(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
        self.user_inputs = app.topic(s.topic_ratings, s.topic_users, s.topic_requests, **raw)
        self.item_inputs = app.topic(s.topic_items, internal_topic(s), **raw)
        self.raw_topics = {name: app.topic(name, **raw) for name in
                           (s.topic_ratings, s.topic_users, s.topic_requests, s.topic_items)}
        out = dict(key_type=bytes, key_serializer="raw", value_serializer="json")
        self.item_updates = app.topic(internal_topic(s), **out)
        self.user_vectors = app.topic(s.topic_user_vectors, **out)
        self.item_vectors = app.topic(s.topic_item_vectors, **out)
        self.recommendations = app.topic(s.topic_recommendations, **out)
        self.dead_letters = app.topic(s.topic_dead_letters, **out)
        self.catalogue_updates = app.topic(catalogue_topic(s), **out)
        table = dict(partitions=s.partitions, key_type=str, value_type=None, default=None,
                     options={"driver": "rocksdict"})
        self.users = app.Table("users", help="per-user serving state (stream/state.py)", **table)
        self.items = app.Table("items", help="per-item serving state (stream/state.py)", **table)
        self.items.on_recover(self.rebuild_catalogue)
        self._partitioner = DefaultPartitioner()
        app.agent(self.user_inputs, name="user-processor")(self.user_agent)
        app.agent(self.item_inputs, name="item-processor")(self.item_agent)
        app.timer(15.0, name="table-sizes")(self.update_table_sizes)
        for table in (self.users, self.items):  # and after each recovery: a rebalance changes what is ours
            table.on_recover(self.update_table_sizes)
        app.task(self.sync_catalogue)
        if s.model_poll_interval > 0:
            app.timer(s.model_poll_interval, name="model-poll")(self.check_model)
        self.stalls = StallWatch(s.commit_stall_timeout)
        if s.commit_stall_timeout > 0:
            app.timer(max(s.commit_stall_timeout / 5, 0.5), name="commit-stalls")(self.replay_stalled)
        app.on_partitions_assigned.connect(self.on_assigned)
        app.on_partitions_revoked.connect(self.on_revoked)

        # web port, consumer lag, readiness (stream/web.py, stream/lag.py, stream/health.py)
        self.lag = LagMonitor(metrics)
        self.readiness = Readiness(self.lag, s.ready_stall_timeout, metrics)
        app.service(WebServer(s.web_bind, s.web_port, metrics.render, CONTENT_TYPE, self.readiness.refresh))
        if s.lag_interval > 0:
            app.timer(s.lag_interval, name="consumer-lag")(self.sample_lag)
        metrics.initialize(self.user_inputs.topics + self.item_inputs.topics)
        metrics.set_model(self.model_version)
        metrics.catalogue_items.set(len(service.catalogue))

    @property
    def model_version(self) -> str:
        return self.service.model_version

    # ------------------------------------------------------------------------------------------ model

    async def check_model(self) -> None:
        """Poll ARTIFACTS_DIR/current; load and check a new model in a thread, swap it in between batches."""
        rec = await self.watcher.poll()
        if rec is None:
            return
        new_service = await asyncio.to_thread(FoldInService.from_settings, rec, self.settings)
        requested = time.perf_counter()
        async with self.gate.exclusive():
            old_version = self.model_version
            carried = lc.swap_catalogue(self.service, new_service)
            self.service = new_service
            self.watcher.accepted(rec)
            self.metrics.set_model(self.model_version)
            self.metrics.catalogue_items.set(len(new_service.catalogue))
        pause = time.perf_counter() - requested
        self.metrics.model_swap_pause.observe(pause)
        log.info("model swapped: %s -> %s (load %.3f s, batches paused %.4f s, %d streamed items carried over)",
                 old_version, self.model_version, self.watcher.last_load_seconds or 0.0, pause, carried)

    # ------------------------------------------------------------------------------------------ topics

    def topic_partitions(self) -> dict[str, int]:
        s = self.settings
        names = (s.topic_ratings, s.topic_users, s.topic_requests, s.topic_items, internal_topic(s),
                 s.topic_user_vectors, s.topic_item_vectors, s.topic_recommendations, s.topic_dead_letters)
        return {name: s.partitions for name in names}

    def prepare_topics(self) -> None:
        """Create missing topics; refuse input topics whose partitions differ from the tables'."""
        from kafka import KafkaAdminClient

        from stream_app.broker import bootstrap_from_url, create_topics

        s = self.settings
        bootstrap = bootstrap_from_url(s.broker_url)
        wanted = self.topic_partitions()
        create_topics(bootstrap, wanted, replication_factor=s.replication_factor)
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id=f"{s.app_id}-setup")
        try:
            if catalogue_topic(s) not in admin.list_topics():
                from kafka.admin import NewTopic

                with contextlib.suppress(Exception):  # created meanwhile by another worker
                    admin.create_topics([NewTopic(catalogue_topic(s), s.partitions, s.replication_factor,
                                                  topic_configs={"cleanup.policy": "compact"})])
            described = admin.describe_topics([s.topic_ratings, s.topic_users, s.topic_requests, s.topic_items,
                                               internal_topic(s)])
        finally:
            admin.close()
        for topic in described:
            n = len(topic.get("partitions") or ())
            if n and n != s.partitions:
                raise RecsysError(f"topic {topic['topic']!r} has {n} partitions but the tables have "
                                  f"{s.partitions}: set RECSYS_PARTITIONS={n} (and a new RECSYS_APP_ID) or "
                                  f"recreate the topic")

    async def replay_stalled(self) -> None:
        """Read an input partition again from its committed offset when its commits stalled (stream/offsets.py)."""
        consumer = self.app.consumer
        pending = {}  # input partitions with events past their last commit (Faust's own record of it)
        for tp in consumer.assignment():
            if tp.topic not in consumer.guarded_topics:
                continue
            try:
                end = consumer.highwater(tp)  # from the last fetch response; None before one
            except Exception:  # noqa: BLE001 (revoked meanwhile)
                continue
            committed = consumer._committed_offset.get(tp)
            if end and (committed or 0) < end:
                pending[tp] = committed
        for tp, committed in self.stalls.stalled(pending, time.monotonic()):
            offset = committed if committed is not None else (await consumer.earliest_offsets(tp))[tp]
            log.warning("%s[%s]: commits stalled at %s for %.0f s with events past it; reading it again from there",
                        tp.topic, tp.partition, committed, self.stalls.timeout)
            await consumer.seek(tp, offset)
            self.metrics.replays.labels(topic=tp.topic).inc()

    async def on_assigned(self, sender, assigned, **kwargs) -> None:
        inputs = self.user_inputs.topics + self.item_inputs.topics
        self.app.consumer.guarded_topics.update(inputs)
        for name in (self.settings.topic_ratings, self.settings.topic_items):
            self.metrics.assigned_partitions.labels(topic=name).set(sum(1 for tp in assigned if tp.topic == name))
        self.readiness.on_assigned(sum(1 for tp in assigned if tp.topic in inputs))

    async def on_revoked(self, sender, revoked, **kwargs) -> None:
        for name in (self.settings.topic_ratings, self.settings.topic_items):
            self.metrics.assigned_partitions.labels(topic=name).set(0)
        self.readiness.on_revoked()

    async def sample_lag(self) -> None:
        """Consumer lag and commit stalls of the input partitions owned now (stream/lag.py), for /ready too."""
        offsets = await sample_offsets(self.app.consumer, self.user_inputs.topics + self.item_inputs.topics)
        if offsets is not None:
            self.lag.update(offsets, time.monotonic())
        self.readiness.refresh()

    def home_partition(self, topic: str, entity_id: str) -> int | None:
        n = self.app.consumer.topic_partitions(topic) or self.settings.partitions
        parts = list(range(n))
        return self._partitioner(entity_id.encode(), parts, parts)

    def on_home_partition(self, event, entity_id: str) -> bool:
        message = event.message
        if _header(message, REKEYED_HEADER) is not None:
            return True  # already sent again once: never loop
        return message.partition == self.home_partition(message.topic, entity_id)

    async def rekey(self, event, entity_id: str) -> None:
        message = event.message
        await self.raw_topics[message.topic].send(key=entity_id.encode(), value=message.value,
                                                  headers={REKEYED_HEADER: b"1"})
        self.metrics.events.labels(topic=message.topic, outcome="rekeyed").inc()

    async def dead_letter(self, event, error: EventError) -> None:
        message = event.message
        letter = ev.dead_letter(message.topic, message.partition, message.offset, message.value, error)
        await self.dead_letters.send(key=message.key if isinstance(message.key, bytes) else None, value=letter)
        self.metrics.events.labels(topic=message.topic, outcome="dead_letter").inc()
        self.metrics.dead_letters.labels(reason=error.reason).inc()
        self.metrics.published.labels(topic=self.settings.topic_dead_letters).inc()
        log.debug("dead letter from %s[%s]@%s: %s", message.topic, message.partition, message.offset, error)

    def count(self, event, outcome: str) -> None:
        self.metrics.events.labels(topic=event.message.topic, outcome=outcome).inc()

    # ------------------------------------------------------------------------------------------ users

    async def user_agent(self, stream) -> None:
        async for events in stream.take_events(self.settings.batch_size, within=self.settings.batch_timeout):
            try:
                async with self.gate.batch():
                    await self.process_user_batch(events)
            except Exception:  # a bug must not stop the worker; the events are reported, not lost
                log.exception("user batch of %d events failed", len(events))
                await self._dead_letter_all(events)
            self.app.consumer.mark_handled(events)

    def parse_user_side(self, event) -> tuple[str, str, Any]:
        s, topic, value = self.settings, event.message.topic, event.message.value
        if topic == s.topic_ratings:
            rating = ev.parse_rating(value, self.service.schema, s.max_event_bytes)
            return "rating", rating.user_id, rating
        if topic == s.topic_users:
            user = ev.parse_user(value, s.max_event_bytes)
            return "side", user.user_id, user
        request = ev.parse_request(value, s.max_event_bytes, s.top_n)
        return "request", request.user_id, request

    async def process_user_batch(self, events: list) -> None:
        s, svc = self.settings, self.service
        self.metrics.batch_events.labels(agent="users").observe(len(events))
        groups = await self._group(events, self.parse_user_side)
        states: dict[str, st.State] = {}
        dirty: dict[str, Any] = {}  # user id -> an event of that user (for the table write)
        to_fold: dict[str, st.State] = {}
        applied: dict[str, list] = {}  # user id -> [(RatingEvent, event)]
        redelivered: dict[str, list] = {}  # the same, for duplicates whose rating is in the window
        replay: dict[str, Any] = {}  # user id -> a duplicate event of that user (see republish_duplicates)
        requests: list = []
        for uid, entries in groups.items():
            with event_context(entries[0][2]):
                stored = self.users.get(uid)
            state = stored if stored is not None else svc.initial_state("user", uid)
            states[uid] = state
            if lc.is_stale(state, svc.model_version):  # computed by an older model: re-fold it now
                to_fold[uid] = state
                dirty[uid] = entries[0][2]
                self.metrics.refolds.labels(side="user").inc()
            for kind, parsed, event in entries:
                if kind == "rating":
                    fresh = st.add_rating(state, parsed.event_id, parsed.item_id, parsed.rates, parsed.ts,
                                          s.window_user)
                    if fresh:
                        applied.setdefault(uid, []).append((parsed, event))
                        to_fold[uid] = state
                    elif st.in_window(state, parsed.item_id, parsed.rates, parsed.ts):
                        # a re-delivery (e.g. after a crash between the table write and the forward):
                        # forward it again; the item side drops it if it has it already
                        redelivered.setdefault(uid, []).append((parsed, event))
                elif kind == "side":
                    fresh = st.update_side(state, parsed.event_id, parsed.side, s.window_user)
                    if fresh and not state["window"]:
                        to_fold[uid] = state  # no ratings: its cold-start vector follows its side data
                else:
                    fresh = True
                    requests.append((uid, parsed, event))
                if fresh and kind != "request":
                    dirty[uid] = event
                elif not fresh:
                    replay[uid] = event
                self.count(event, "ok" if fresh else "duplicate")
        vectors, failed = self._fold("user", to_fold)
        for uid in failed:
            await self._reject_entity(groups[uid], "user")
            dirty.pop(uid, None)
            applied.pop(uid, None)
            replay.pop(uid, None)
        for uid, vector in vectors.items():
            st.set_vector(states[uid], vector, self.model_version)
        republish = republish_duplicates(replay, states, dirty)
        for uid, event in dirty.items():
            with event_context(event):
                self.users[uid] = states[uid]
        for uid in {*vectors, *republish}:
            state = states[uid]
            await self._publish(self.user_vectors, uid,
                                ev.vector_update("user", uid, state["vector"], state["n_ratings"], self.model_version),
                                [e for _, e in applied.get(uid, [])], "user_vector")
        for uid in {*applied, *redelivered}:
            if uid not in states or states[uid].get("vector") is None:
                continue
            user_vector, user_features = svc.item_rater_columns(uid, states[uid], states[uid]["vector"])
            for rating, event in applied.get(uid, []) + redelivered.get(uid, []):
                update = ev.ItemUpdate(event_id=rating.event_id, item_id=rating.item_id, user_id=uid,
                                       rates=rating.rates, ts=rating.ts, user_vector=user_vector,
                                       user_features=user_features)
                # the rating's own broker timestamp travels on, for the event-to-publish latency of items
                await self.item_updates.send(key=rating.item_id.encode(), value=update,
                                             timestamp=event.message.timestamp)
        await self._recommend(states, {**redelivered, **applied}, requests)

    async def _recommend(self, states: dict, applied: dict, requests: list) -> None:
        s = self.settings
        queries, meta = [], []
        if s.recommend_on_rating:
            for uid, ratings in applied.items():
                queries.append(Query(uid, states[uid], s.top_n, max(r.ts for r, _ in ratings)))
                meta.append((uid, None, [e for _, e in ratings]))
        now = time.time()
        for uid, request, event in requests:
            queries.append(Query(uid, states.get(uid), request.n, now))
            meta.append((uid, request.request_id, [event]))
        if not queries:
            return
        started = time.perf_counter()
        results = self.service.recommend_many(queries)
        ranks = [self.service.rank_scores(top) for top in results]  # before an await can change the counts
        self.metrics.recommend_seconds.observe(time.perf_counter() - started)
        for (uid, request_id, sources), top, rank in zip(meta, results, ranks, strict=True):
            await self._publish(self.recommendations, uid,
                                ev.recommendations(uid, top, self.model_version, request_id=request_id,
                                                   rank_scores=rank),
                                sources, "recommendations")

    # ------------------------------------------------------------------------------------------ items

    async def item_agent(self, stream) -> None:
        async for events in stream.take_events(self.settings.batch_size, within=self.settings.batch_timeout):
            try:
                async with self.gate.batch():
                    await self.process_item_batch(events)
            except Exception:
                log.exception("item batch of %d events failed", len(events))
                await self._dead_letter_all(events)
            self.app.consumer.mark_handled(events)

    def parse_item_side(self, event) -> tuple[str, str, Any]:
        message = event.message
        if message.topic == self.settings.topic_items:
            item = ev.parse_item(message.value, self.settings.max_event_bytes)
            return "side", item.item_id, item
        update = ev.load_object(message.value, 1 << 30)  # internal: written by the user processor
        return "rating", str(update["item_id"]), update

    async def process_item_batch(self, events: list) -> None:
        s, svc = self.settings, self.service
        self.metrics.batch_events.labels(agent="items").observe(len(events))
        groups = await self._group(events, self.parse_item_side)
        states: dict[str, st.State] = {}
        dirty: dict[str, Any] = {}
        to_fold: dict[str, st.State] = {}
        sources: dict[str, list] = {}
        replay: dict[str, Any] = {}
        side_only: list[str] = []
        for iid, entries in groups.items():
            with event_context(entries[0][2]):
                stored = self.items.get(iid)
            state = stored if stored is not None else svc.initial_state("item", iid)
            states[iid] = state
            if lc.is_stale(state, svc.model_version):
                lc.refresh_item_window(state, svc.rec)
                to_fold[iid] = state
                dirty[iid] = entries[0][2]
                self.metrics.refolds.labels(side="item").inc()
            side_changed = False
            for kind, parsed, event in entries:
                if kind == "rating":
                    fresh = st.add_rating(state, parsed["event_id"], parsed["user_id"], parsed["rates"],
                                          parsed["ts"], s.window_item,
                                          extra=[parsed["user_vector"], parsed["user_features"]])
                    if fresh:
                        to_fold[iid] = state
                        sources.setdefault(iid, []).append(event)
                else:
                    fresh = st.update_side(state, parsed.event_id, parsed.side, s.window_item)
                    side_changed = side_changed or fresh
                    if fresh and not state["window"]:
                        to_fold[iid] = state
                if fresh:
                    dirty[iid] = event
                else:
                    replay[iid] = event
                self.count(event, "ok" if fresh else "duplicate")
            if side_changed and iid not in to_fold:  # rated item: its vector stays, its side data changes
                svc.catalogue.upsert(iid, features=svc.features("item", iid, state))
                side_only.append(iid)
        vectors, failed = self._fold("item", to_fold)
        for iid in failed:
            await self._reject_entity(groups[iid], "item")
            dirty.pop(iid, None)
            replay.pop(iid, None)
        for iid, vector in vectors.items():
            st.set_vector(states[iid], vector, self.model_version)
        republish = republish_duplicates(replay, states, dirty)
        for iid, event in dirty.items():
            with event_context(event):
                self.items[iid] = states[iid]
        for iid in {*vectors, *republish}:
            state = states[iid]
            await self._publish(self.item_vectors, iid,
                                ev.vector_update("item", iid, state["vector"], state["n_ratings"], self.model_version),
                                sources.get(iid, []), "item_vector")
        for iid in {*vectors, *republish, *side_only}:
            if states[iid].get("vector") is not None:
                await self.catalogue_updates.send(key=iid.encode(), value=self.catalogue_entry(iid, states[iid]))
        self.metrics.catalogue_items.set(len(svc.catalogue))

    def catalogue_entry(self, item_id: str, state: st.State) -> dict:
        return {"vector": st.pack_vector(state["vector"]),
                "features": sparse(self.service.features("item", item_id, state)),
                "n_ratings": int(state.get("n_ratings") or 0),
                "model_version": state.get("model_version")}

    def apply_catalogue_entry(self, item_id: str, entry: dict) -> None:
        if entry.get("model_version") not in (None, self.model_version):
            return  # another model's vector (before or after a swap): not comparable with ours
        features = dense([entry["features"]], self.service.schema.item_dim)[0]
        self.service.catalogue.upsert(item_id, st.unpack_vector(entry["vector"]), features, entry.get("n_ratings"))

    async def sync_catalogue(self) -> None:
        """Follow `<app_id>-catalogue` from its start, outside the consumer group, into this worker's catalogue."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        from stream_app.broker import bootstrap_from_url

        s = self.settings
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_from_url(s.broker_url), group_id=None,
                                    enable_auto_commit=False, auto_offset_reset="earliest",
                                    fetch_max_wait_ms=self.app.fetch_max_wait_ms,
                                    client_id=f"{s.app_id}-catalogue-sync")
        await consumer.start()
        try:
            parts = [TopicPartition(catalogue_topic(s), p) for p in range(s.partitions)]
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            while True:
                batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
                for records in batches.values():
                    for record in records:
                        try:
                            self.apply_catalogue_entry(record.key.decode(), json.loads(record.value))
                        except Exception:  # noqa: BLE001 (one bad entry must not stop the sync)
                            log.exception("bad catalogue entry at %s@%s", record.partition, record.offset)
                if batches:
                    self.metrics.catalogue_items.set(len(self.service.catalogue))
        finally:
            await consumer.stop()

    async def rebuild_catalogue(self) -> None:
        """After recovery: put the items of this worker's table partitions back in the catalogue."""
        svc, n = self.service, 0
        for iid, state in self.items.items():
            if state and state.get("vector") is not None and not lc.is_stale(state, svc.model_version):
                svc.catalogue.upsert(iid, state["vector"], svc.features("item", iid, state), state.get("n_ratings"))
                n += 1
        self.metrics.catalogue_items.set(len(svc.catalogue))
        log.info("catalogue: %d items (%d restored from the item table)", len(svc.catalogue), n)

    # ------------------------------------------------------------------------------------------ shared

    async def _group(self, events: list, parse) -> dict[str, list]:
        """Validate a batch: dead-letter bad events, rekey misplaced ones, group the rest by entity id."""
        groups: dict[str, list] = {}
        for event in events:
            try:
                kind, entity_id, parsed = parse(event)
            except EventError as error:
                await self.dead_letter(event, error)
                continue
            except Exception as exc:  # noqa: BLE001 (a parser bug must not stop the worker)
                log.exception("unexpected error parsing %s", event.message.topic)
                await self.dead_letter(event, EventError(ev.PROCESSING_ERROR, repr(exc)[:300]))
                continue
            if event.message.topic in self.raw_topics and not self.on_home_partition(event, entity_id):
                await self.rekey(event, entity_id)
                continue
            groups.setdefault(entity_id, []).append((kind, parsed, event))
        return groups

    def _fold(self, side: str, states: dict[str, st.State]) -> tuple[dict, set]:
        """One batched fold-in; if it fails, entity by entity, so one poisoned entity fails alone."""
        if not states:
            return {}, set()
        started = time.perf_counter()
        failed: set[str] = set()
        try:
            vectors = self.service.fold_in(side, states)
        except Exception:
            log.exception("batched %s fold-in failed; retrying entity by entity", side)
            vectors = {}
            for key, state in states.items():
                try:
                    vectors.update(self.service.fold_in(side, {key: state}))
                except Exception:
                    log.exception("%s fold-in failed for %r", side, key)
                    failed.add(key)
        self.metrics.foldin_seconds.labels(side=side).observe(time.perf_counter() - started)
        self.metrics.foldin_entities.labels(side=side).observe(len(states))
        return vectors, failed

    async def _reject_entity(self, entries: list, side: str) -> None:
        for _, _, event in entries:
            await self.dead_letter(event, EventError(ev.PROCESSING_ERROR, f"{side} fold-in failed"))

    async def _dead_letter_all(self, events: list) -> None:
        for event in events:
            with contextlib.suppress(Exception):
                await self.dead_letter(event, EventError(ev.PROCESSING_ERROR, "the batch failed; see the worker log"))

    async def _publish(self, topic, key: str, value, sources: list, output: str) -> None:
        await topic.send(key=key.encode(), value=value)
        self.metrics.published.labels(topic=topic.get_topic_name()).inc()
        now = time.time()
        for event in sources:
            stamp = event.message.timestamp
            if stamp:
                self.metrics.event_to_publish.labels(output=output).observe(max(0.0, now - stamp))

    async def update_table_sizes(self) -> None:
        self.metrics.table_entries.labels(table="users").set(len(self.users))
        self.metrics.table_entries.labels(table="items").set(len(self.items))


def republish_duplicates(replay: dict[str, Any], states: dict[str, st.State], dirty: dict[str, Any]) -> list[str]:
    """Entities that got a re-delivered event and have a vector: their row is written and their vector
    published again (at-least-once outputs).

    A re-delivery means the worker that applied the event may have died after writing the table row and
    before its changelog record or outputs left: a kill -9 leaves the local RocksDB row ahead of the
    changelog, and a takeover finds the changelog ahead of the outputs. Dropping the duplicate silently
    would then leave the entity's last vector unpublished (or its changelog short) for good.
    """
    again = []
    for key, event in replay.items():
        if states[key].get("vector") is not None:
            dirty.setdefault(key, event)
            again.append(key)
    return again


def _header(message, name: str) -> bytes | None:
    headers = message.headers or ()
    items = headers.items() if isinstance(headers, dict) else headers
    for key, value in items:
        if key == name:
            return value
    return None


def load_model(settings: Settings):
    import torch

    from stream_app.core.artifacts import load_artifact

    torch.set_num_threads(1)
    return load_artifact(settings.artifacts_dir)


def create_app(settings: Settings | None = None, recommender=None, metrics: StreamMetrics | None = None) -> RecsysApp:
    """A Faust app serving `recommender` (default: the model in settings.artifacts_dir)."""
    settings = settings or Settings.from_env()
    recommender = recommender or load_model(settings)
    service = FoldInService.from_settings(recommender, settings)
    app = RecsysApp(settings.app_id, fetch_max_wait=settings.fetch_max_wait, **faust_config(settings))
    app.runtime = Runtime(app, settings, service, metrics or StreamMetrics())
    return app


def __getattr__(name: str) -> Any:
    """`app` for `faust -A stream_app.app worker`, built on first access from the environment."""
    if name == "app":
        built = globals()["app"] = create_app(Settings.from_env())
        return built
    raise AttributeError(name)

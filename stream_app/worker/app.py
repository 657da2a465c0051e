"""The Faust app: `faust -A stream_app.worker.app worker` or `recsys worker` (settings from RECSYS_* env/flags).

Topology (names are settings; P = settings.partitions for every topic below):

    ratings, users, recommend-requests  (keyed by user id) --> agent `user-processor`
        table `users`: window of recent ratings, side data, vector, n_ratings, recent event ids
        publishes user-vectors, recommendations; forwards each applied rating, with the user's new
        vector, to the internal topic `<app_id>-item-updates`, keyed by item id
    items, <app_id>-item-updates         (keyed by item id) --> agent `item-processor`
        table `items`: the same per item (window entries also carry the rater's vector and features)
        publishes item-vectors and `<app_id>-catalogue` entries (services.CatalogueSync)
    every rejected input                                   --> dead-letters

An agent is a short loop: read the batch's rows, call the pure processor (stream/processing.py,
user_batch.py, item_batch.py), apply its outcome, mark the events handled (delivery.py). Each table has
exactly one writer (its agent); rows are stored in the binary encoding of stream/codec.py. An input event on
the wrong partition for its id is sent again keyed by its id (outcome "rekeyed"), so that no two workers
own the same user. Delivery is at-least-once end to end: delivery.py lists the rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from typing import Any

from aiokafka.partitioner import DefaultPartitioner

from stream_app.errors import EventError
from stream_app.settings import Settings
from stream_app.stream import events as ev
from stream_app.stream import lifecycle as lc
from stream_app.stream.codec import RowCache, RowDecodeError, decode_row, encode_row
from stream_app.stream.health import Readiness
from stream_app.stream.item_batch import parse_item_event, process_items, restore_catalogue
from stream_app.stream.lag import LagMonitor, sample_offsets
from stream_app.stream.metrics import CONTENT_TYPE, StreamMetrics
from stream_app.stream.offsets import log_offsets
from stream_app.stream.processing import Context, Outcome, RateLimiter, RawEvent, prepare, read_rows
from stream_app.stream.service import FoldInService
from stream_app.stream.user_batch import parse_user_event, process_users
from stream_app.stream.web import WebServer
from stream_app.worker import memory, rocks
from stream_app.worker import topics as tp
from stream_app.worker.delivery import FastFetchApp, StallReplayer, event_context
from stream_app.worker.services import CatalogueSync, ModelPoller

log = logging.getLogger(__name__)

# Per RocksDB (one per table partition): Faust's defaults are 3 x 64 MiB memtables; the memory they and the block
# cache may take together is the worker-wide budget of rocks.py (RECSYS_ROCKSDB_MEMTABLE_MB, RECSYS_ROCKSDB_CACHE_MB).
ROCKSDB_OPTIONS = dict(write_buffer_size=2 << 20, max_write_buffer_number=2)


class RecsysApp(FastFetchApp):
    """faust.App that creates its topics (and checks their partitions) before it subscribes to them."""

    runtime: Runtime

    async def on_start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, tp.prepare_topics, self.runtime.settings)
        await super().on_start()

class Runtime:
    """One worker: settings, the service in use, metrics, topics, tables, agents and services."""

    def __init__(self, app: RecsysApp, settings: Settings, service: FoldInService, metrics: StreamMetrics):
        self.app, self.settings, self.service, self.metrics = app, settings, service, metrics
        s = settings
        log_offsets(s.log_offsets)
        self.gate = lc.BatchGate()  # model swaps happen between batches (stream/lifecycle.py)
        self.limiter = RateLimiter(s.recommend_interval)
        raw = dict(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
        inputs = tp.input_topics(s)
        self.user_inputs = app.topic(*inputs["user"], **raw)
        self.item_inputs = app.topic(*inputs["item"], **raw)
        self.rekey_topics = tp.rekey_topics(s)
        self.raw_topics = {name: app.topic(name, **raw) for name in self.rekey_topics}
        out = dict(key_type=bytes, key_serializer="raw", value_serializer="json")
        self.outputs = {"item_updates": app.topic(tp.internal_topic(s), **out),
                        "user_vectors": app.topic(s.topic_user_vectors, **out),
                        "item_vectors": app.topic(s.topic_item_vectors, **out),
                        "recommendations": app.topic(s.topic_recommendations, **out),
                        "catalogue": app.topic(tp.catalogue_topic(s), **out)}
        self.output_names = {key: topic.get_topic_name() for key, topic in self.outputs.items()}
        self.dead_letters = app.topic(s.topic_dead_letters, **out)
        table = dict(partitions=s.partitions, key_type=str, value_type=bytes, default=None,  # rows: stream/codec.py
                     options={"driver": "rocksdict", **ROCKSDB_OPTIONS})
        self.users = app.Table("users", help="per-user serving state (stream/state.py)", **table)
        self.items = app.Table("items", help="per-item serving state (stream/state.py)", **table)
        self.rocks = rocks.RocksBudget(s.rocksdb_memtable_mb * rocks.MB, s.rocksdb_cache_mb * rocks.MB)
        for t in (self.users, self.items):
            rocks.use_budget(t, self.rocks)
        self.items.on_recover(self.rebuild_catalogue)
        self.row_cache = {"users": RowCache(), "items": RowCache()}  # decoded rows this worker wrote last
        self._partitioner = DefaultPartitioner()
        app.agent(self.user_inputs, name="user-processor")(self.user_agent)
        app.agent(self.item_inputs, name="item-processor")(self.item_agent)
        app.timer(15.0, name="table-sizes")(self.update_table_sizes)
        if s.memory_trim_interval > 0:
            app.timer(s.memory_trim_interval, name="memory-trim")(self.trim_memory)
        for t in (self.users, self.items):  # and after each recovery: a rebalance changes what is ours
            t.on_recover(self.update_table_sizes)
            if s.memory_trim_interval > 0:  # a recovery's read buffers are the biggest short-lived allocation
                t.on_recover(self.trim_memory)
        app.service(CatalogueSync(self))
        app.service(ModelPoller(self))
        if s.commit_stall_timeout > 0:
            replayer = StallReplayer(app, s.commit_stall_timeout, metrics)
            app.timer(max(s.commit_stall_timeout / 5, 0.5), name="commit-stalls")(replayer.replay)
        app.on_partitions_assigned.connect(self.on_assigned)
        app.on_partitions_revoked.connect(self.on_revoked)
        # web port, consumer lag, readiness (stream/web.py, stream/lag.py, stream/health.py)
        self.lag = LagMonitor(metrics)
        self.readiness = Readiness(self.lag, s.ready_stall_timeout, metrics)
        app.service(WebServer(s.web_bind, s.web_port, metrics.render, CONTENT_TYPE, self.readiness.refresh))
        if s.lag_interval > 0:
            app.timer(s.lag_interval, name="consumer-lag")(self.sample_lag)
        metrics.initialize(self.user_inputs.topics + self.item_inputs.topics)
        metrics.set_model(service.model_version)
        metrics.catalogue_items.set(len(service.catalogue))

    @property
    def model_version(self) -> str:
        return self.service.model_version

    def context(self) -> Context:
        return Context(self.service, self.settings, self.metrics, self.home_partition, self.limiter)

    # ------------------------------------------------------------------------------------------ agents

    async def user_agent(self, stream) -> None:
        async for events in stream.take_events(self.settings.batch_size, within=self.settings.batch_timeout):
            await self.run_batch(events, "users", self.users, parse_user_event, process_users)

    async def item_agent(self, stream) -> None:
        async for events in stream.take_events(self.settings.batch_size, within=self.settings.batch_timeout):
            await self.run_batch(events, "items", self.items, parse_item_event, process_items)

    async def run_batch(self, events: list, agent: str, table, parse, process) -> None:
        """Read rows, call the processor, apply its outcome; the events are handled whatever happens."""
        try:
            async with self.gate.batch():
                self.metrics.batch_events.labels(agent=agent).observe(len(events))
                ctx = self.context()
                batch = prepare([raw_event(e) for e in events], lambda r: parse(r, ctx), ctx, self.rekey_topics)
                cache = self.row_cache[agent]

                def read(entity_id: str, event: RawEvent):
                    with event_context(event.handle):
                        return cache.take(entity_id, table.get(entity_id))

                rows = read_rows(batch, read)
                await self.apply(process(batch, rows, ctx), table, cache)
        except Exception:  # a bug must not stop the worker; the events are reported, not lost
            log.exception("%s batch of %d events failed", agent, len(events))
            for event in events:
                with contextlib.suppress(Exception):
                    await self.dead_letter(raw_event(event), EventError(ev.PROCESSING_ERROR,
                                                                        "the batch failed; see the worker log"))
        self.app.consumer.mark_handled(events)

    async def apply(self, out: Outcome, table, cache: RowCache) -> None:
        for event, error in out.dead_letters:
            await self.dead_letter(event, error)
        for rekey in out.rekeys:
            await self.raw_topics[rekey.event.topic].send(key=rekey.entity_id.encode(), value=rekey.event.value,
                                                          headers={tp.REKEYED_HEADER: b"1"})
            self.metrics.events.labels(topic=rekey.event.topic, outcome="rekeyed").inc()
        for key, n in Counter(out.counts).items():
            self.metrics.events.labels(topic=key[0], outcome=key[1]).inc(n)
        for entity_id, (state, event) in out.writes.items():
            raw = encode_row(state)
            with event_context(event.handle):
                table[entity_id] = raw
            cache.put(entity_id, raw, state)
        now = time.time()
        for o in out.outputs:
            await self.outputs[o.topic].send(key=o.key.encode(), value=o.payload(), timestamp=o.timestamp)
            if o.metric is not None:
                latency = self.metrics.event_to_publish.labels(output=o.metric)
                for event in (e for e in o.sources if e.timestamp):
                    latency.observe(max(0.0, now - event.timestamp))
        for name, n in Counter(o.topic for o in out.outputs).items():
            self.metrics.published.labels(topic=self.output_names[name]).inc(n)

    async def dead_letter(self, event: RawEvent, error: EventError) -> None:
        letter = ev.dead_letter(event.topic, event.partition, event.offset, event.value, error)
        await self.dead_letters.send(key=event.key if isinstance(event.key, bytes) else None,
                                     value=letter.to_representation())
        self.metrics.events.labels(topic=event.topic, outcome="dead_letter").inc()
        self.metrics.dead_letters.labels(reason=error.reason).inc()
        self.metrics.published.labels(topic=self.settings.topic_dead_letters).inc()
        log.debug("dead letter from %s[%s]@%s: %s", event.topic, event.partition, event.offset, error)

    def home_partition(self, topic: str, entity_id: str) -> int | None:
        n = self.app.consumer.topic_partitions(topic) or self.settings.partitions
        parts = list(range(n))
        return self._partitioner(entity_id.encode(), parts, parts)

    # ------------------------------------------------------------------------------------------ housekeeping

    async def rebuild_catalogue(self) -> None:
        """After recovery: put the items of this worker's table partitions back in the catalogue."""
        svc = self.service
        n = restore_catalogue(svc, decoded_rows(self.items.items()))
        self.metrics.catalogue_items.set(len(svc.catalogue))
        log.info("catalogue: %d items (%d restored from the item table)", len(svc.catalogue), n)

    async def on_assigned(self, sender, assigned, **kwargs) -> None:
        inputs = self.user_inputs.topics + self.item_inputs.topics
        self.app.consumer.guard(inputs, on_reread=lambda topic: self.metrics.rereads.labels(topic=topic).inc())
        for name in (self.settings.topic_ratings, self.settings.topic_items):
            self.metrics.assigned_partitions.labels(topic=name).set(sum(1 for p in assigned if p.topic == name))
        self.readiness.on_assigned(sum(1 for p in assigned if p.topic in inputs))

    async def on_revoked(self, sender, revoked, **kwargs) -> None:
        for name in (self.settings.topic_ratings, self.settings.topic_items):
            self.metrics.assigned_partitions.labels(topic=name).set(0)
        self.readiness.on_revoked()
        for cache in self.row_cache.values():
            cache.clear()

    async def sample_lag(self) -> None:
        """Consumer lag and commit stalls of the input partitions owned now (stream/lag.py), for /ready too."""
        offsets = await sample_offsets(self.app.consumer, self.user_inputs.topics + self.item_inputs.topics)
        if offsets is not None:
            self.lag.update(offsets, time.monotonic())
        self.readiness.refresh()

    async def trim_memory(self) -> None:
        memory.trim()

    async def update_table_sizes(self) -> None:
        """Entities held, and where the worker's memory is (RocksDB's count, glibc's heap)."""
        m = self.metrics
        tracked = 0
        for name, t in (("users", self.users), ("items", self.items)):
            m.table_entries.labels(table=name).set(len(t))
            held = rocks.memory_of(t)
            tracked += held.databases
            m.rocksdb_bytes.labels(table=name, kind="memtables").set(held.memtables)
            m.rocksdb_bytes.labels(table=name, kind="table_readers").set(held.table_readers)
        m.rocksdb_bytes.labels(table="all", kind="block_cache").set(self.rocks.cache.get_usage())
        m.rocksdb_bytes.labels(table="all", kind="write_buffers").set(self.rocks.buffers.get_usage())
        m.rocksdb_databases.labels(state="tracked").set(tracked)
        m.rocksdb_databases.labels(state="open").set(rocks.open_databases(self.settings.store_dir))
        heap = memory.heap()
        if heap is not None:
            m.heap_bytes.labels(state="in_use").set(heap.in_use)
            m.heap_bytes.labels(state="free").set(heap.free)

def decoded_rows(rows):
    """(key, row) of stored rows; an undecodable one is logged and skipped (its events dead-letter when touched)."""
    for key, raw in rows:
        try:
            yield key, decode_row(raw)
        except RowDecodeError as exc:
            log.error("stored row of %r cannot be decoded (%s): skipped", key, exc)

def raw_event(event) -> RawEvent:
    """A Faust event as the processor sees it."""
    m = event.message
    return RawEvent(m.topic, m.partition, m.offset, m.key, m.value, m.timestamp,
                    _header(m, tp.REKEYED_HEADER) is not None, event)

def _header(message, name: str) -> bytes | None:
    headers = message.headers or ()
    items = headers.items() if isinstance(headers, dict) else headers
    for key, value in items:
        if key == name:
            return value
    return None

def load_model(settings: Settings):
    from stream_app.core.artifacts import load_artifact

    return load_artifact(settings.artifacts_dir)  # numpy only: serving never imports torch (core/inference.py)

def create_app(settings: Settings | None = None, recommender=None, metrics: StreamMetrics | None = None) -> RecsysApp:
    """A Faust app serving `recommender` (default: the model in settings.artifacts_dir)."""
    settings = settings or Settings.from_env()
    recommender = recommender or load_model(settings)
    service = FoldInService.from_settings(recommender, settings)
    app = RecsysApp(settings.app_id, fetch_max_wait=settings.fetch_max_wait, **tp.faust_config(settings))
    app.runtime = Runtime(app, settings, service, metrics or StreamMetrics())
    return app

def __getattr__(name: str) -> Any:
    """`app` for `faust -A stream_app.worker.app worker`, built on first access from the environment."""
    if name == "app":
        built = globals()["app"] = create_app(Settings.from_env())
        return built
    raise AttributeError(name)


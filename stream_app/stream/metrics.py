"""Prometheus metrics of a worker, in their own registry (several apps in one process stay apart).

    recsys_events_total{topic, outcome}        input events: outcome = ok, duplicate, dead_letter, rekeyed
    recsys_dead_letters_total{reason}          rejected events by reason (see events.py)
    recsys_foldin_batch_seconds{side}          one batched fold-in call (histogram)
    recsys_foldin_batch_entities{side}         entities per fold-in call (histogram)
    recsys_batch_events{agent}                 events per stream.take batch (histogram)
    recsys_event_to_publish_seconds{output}    from an input event's Kafka timestamp to the publication of a
                                               result: output = user_vector, item_vector, recommendations
    recsys_recommend_seconds                   one top-N scoring call for a batch of users (histogram)
    recsys_published_total{topic}              messages published on output topics
    recsys_model_info{model_version}           1 for the model being served
    recsys_table_entries{table}                entities in this worker's tables (its own partitions)
    recsys_catalogue_items                     items this worker can recommend
    recsys_assigned_partitions{topic}          input partitions this worker owns now (ratings, items)
    recsys_model_swaps_total{outcome}          new models seen in ARTIFACTS_DIR/current: swapped or refused
    recsys_model_load_seconds                  loading and checking a new model, in a thread (histogram)
    recsys_model_swap_pause_seconds            batches held back while a model is swapped in (histogram)
    recsys_refolds_total{side}                 stale entities (vector of an older model) re-folded on touch
    recsys_partition_replays_total{topic}      input partitions read again after their commits stalled (a safety
                                               net: 0 unless an event was lost to the re-reads below)
    recsys_partition_rereads_total{topic}      input partitions read again at once from the first event Faust
                                               dropped before an agent took it (rebalances; delivery.py rule 9)
    recsys_consumer_lag{topic, partition}      events of an input partition this worker owns past its committed
                                               offset (end offset minus committed offset; sampled every
                                               RECSYS_LAG_INTERVAL s by stream/lag.py; the internal item-updates
                                               topic included)
    recsys_commit_stalled_seconds{topic, partition}  how long that partition's committed offset has stayed put
                                               while events wait past it (0: moving or nothing waiting)
    recsys_ready                               1 when /ready answers 200 (stream/health.py), else 0
    process_*                                  the worker process: process_resident_memory_bytes,
                                               process_virtual_memory_bytes, process_cpu_seconds_total,
                                               process_open_fds, process_max_fds, process_start_time_seconds
                                               (prometheus_client's ProcessCollector; Linux)
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)

CONTENT_TYPE = CONTENT_TYPE_LATEST.split("; charset")[0]  # aiohttp wants the charset apart


class StreamMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events = Counter("recsys_events", "Input events by topic and outcome", ["topic", "outcome"], registry=r)
        self.dead_letters = Counter("recsys_dead_letters", "Events sent to dead-letters, by reason", ["reason"],
                                    registry=r)
        self.foldin_seconds = Histogram("recsys_foldin_batch_seconds", "Duration of one batched fold-in call",
                                        ["side"], buckets=LATENCY_BUCKETS, registry=r)
        self.foldin_entities = Histogram("recsys_foldin_batch_entities", "Entities folded in per call", ["side"],
                                         buckets=SIZE_BUCKETS, registry=r)
        self.batch_events = Histogram("recsys_batch_events", "Events per stream.take batch", ["agent"],
                                      buckets=SIZE_BUCKETS, registry=r)
        self.event_to_publish = Histogram("recsys_event_to_publish_seconds",
                                          "From an input event's broker timestamp to the publication of a result",
                                          ["output"], buckets=LATENCY_BUCKETS, registry=r)
        self.recommend_seconds = Histogram("recsys_recommend_seconds", "Duration of one batched top-N scoring",
                                           buckets=LATENCY_BUCKETS, registry=r)
        self.published = Counter("recsys_published", "Messages published, by output topic", ["topic"], registry=r)
        self.model_info = Gauge("recsys_model_info", "The model version being served (value 1)", ["model_version"],
                                registry=r)
        self.table_entries = Gauge("recsys_table_entries", "Entities held in this worker's table partitions",
                                   ["table"], registry=r)
        self.rocksdb_bytes = Gauge("recsys_rocksdb_memory_bytes", "RocksDB memory of this worker's tables "
                                   "(memtables, table_readers; table=all: block_cache, the shared cache, and "
                                   "write_buffers, memtables of every open database)",
                                   ["table", "kind"], registry=r)
        self.rocksdb_databases = Gauge("recsys_rocksdb_databases", "RocksDB databases: tracked (in Faust's "
                                       "tables), open (this process holds open, tracked or not)", ["state"], registry=r)
        self.heap_bytes = Gauge("recsys_heap_bytes", "glibc heap of this worker: bytes in use, bytes freed but kept",
                                ["state"], registry=r)
        self.catalogue_items = Gauge("recsys_catalogue_items", "Items this worker can recommend", registry=r)
        self.assigned_partitions = Gauge("recsys_assigned_partitions", "Input partitions this worker owns now",
                                         ["topic"], registry=r)

        self.model_swaps = Counter("recsys_model_swaps", "New models seen in ARTIFACTS_DIR/current, by outcome",
                                   ["outcome"], registry=r)
        self.model_load_seconds = Histogram("recsys_model_load_seconds", "Loading and checking a new model",
                                            buckets=LATENCY_BUCKETS, registry=r)
        self.model_swap_pause = Histogram("recsys_model_swap_pause_seconds",
                                          "Time batches were held back while a model was swapped in",
                                          buckets=LATENCY_BUCKETS, registry=r)
        self.replays = Counter("recsys_partition_replays", "Input partitions read again from their committed "
                               "offset after their commits stalled (stream/offsets.py)", ["topic"], registry=r)
        self.rereads = Counter("recsys_partition_rereads", "Input partitions read again from the first event "
                               "Faust dropped before an agent took it (worker/delivery.py rule 9)", ["topic"],
                               registry=r)
        self.refolds = Counter("recsys_refolds", "Stale entities re-folded with the model in service", ["side"],
                               registry=r)
        self.consumer_lag = Gauge("recsys_consumer_lag", "Events of an owned input partition past its committed "
                                  "offset (end offset minus committed offset)", ["topic", "partition"], registry=r)
        self.commit_stalled = Gauge("recsys_commit_stalled_seconds", "How long an owned input partition's committed "
                                    "offset has stayed put while events wait past it", ["topic", "partition"],
                                    registry=r)
        self.ready = Gauge("recsys_ready", "1 when the worker is ready (/ready answers 200)", registry=r)
        ProcessCollector(registry=r)  # process_* series of this process (memory, CPU, open files)

    def initialize(self, input_topics) -> None:
        """Series of every known label value at 0 from the start, so that rates, increases and alerts see a
        counter's first increment (a series born at 1 has no increase) and dashboards have data before it."""
        from stream_app.stream.lifecycle import REFUSED, SWAPPED

        for outcome in (SWAPPED, REFUSED):
            self.model_swaps.labels(outcome=outcome)
        for side in ("user", "item"):
            self.refolds.labels(side=side)
        for topic in input_topics:
            self.replays.labels(topic=topic)
            self.rereads.labels(topic=topic)

    def set_model(self, model_version: str) -> None:
        self.model_info.clear()
        self.model_info.labels(model_version=model_version).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)

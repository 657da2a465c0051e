"""The worker's long-running parts, as `faust.Service`s started and stopped with the app.

- `CatalogueSync`: every worker scores top-N lists over the whole catalogue, while an item's vector is
  computed by the worker that owns its partition. The item processor writes each new item vector and side
  data to `<app_id>-catalogue` (keyed by item id, compacted where the broker compacts); this service reads
  all of that topic, from the start, outside the consumer group, into this worker's catalogue: a worker
  that starts or restarts gets every item back, and sees other workers' items within moments.
- `ModelPoller`: polls ARTIFACTS_DIR/current; a new model is loaded and checked in a thread and swapped in
  between batches (stream/lifecycle.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import faust

from stream_app.errors import EventError
from stream_app.stream import lifecycle as lc
from stream_app.stream.item_batch import apply_catalogue_entry
from stream_app.stream.service import FoldInService
from stream_app.worker.topics import catalogue_topic

if TYPE_CHECKING:
    from stream_app.worker.app import Runtime

log = logging.getLogger(__name__)

CATALOGUE_FETCH_WAIT_MS = 100  # other workers' items may reach this one's catalogue this much later; fewer fetches


class CatalogueSync(faust.Service):
    """Follows `<app_id>-catalogue` from its start, outside the consumer group, into this worker's catalogue."""

    def __init__(self, runtime: Runtime, **kwargs):
        self.runtime = runtime
        super().__init__(**kwargs)

    @faust.Service.task
    async def _follow(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        from stream_app.kafka_admin import bootstrap_from_url

        rt = self.runtime
        s = rt.settings
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_from_url(s.broker_url), group_id=None,
                                    enable_auto_commit=False, auto_offset_reset="earliest",
                                    fetch_max_wait_ms=max(rt.app.fetch_max_wait_ms, CATALOGUE_FETCH_WAIT_MS),
                                    client_id=f"{s.app_id}-catalogue-sync")
        await consumer.start()
        try:
            parts = [TopicPartition(catalogue_topic(s), p) for p in range(s.partitions)]
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            while not self.should_stop:
                batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
                for records in batches.values():
                    for record in records:
                        try:
                            apply_catalogue_entry(rt.service, record.key, record.value)
                        except EventError as exc:
                            log.warning("bad catalogue entry at %s@%s skipped: %s", record.partition, record.offset,
                                        exc)
                        except Exception:  # noqa: BLE001 (one bad entry must not stop the sync)
                            log.exception("bad catalogue entry at %s@%s", record.partition, record.offset)
                if batches:
                    rt.metrics.catalogue_items.set(len(rt.service.catalogue))
        finally:
            await consumer.stop()


class ModelPoller(faust.Service):
    """Polls ARTIFACTS_DIR/current every `model_poll_interval` seconds; swaps a new model in between batches."""

    def __init__(self, runtime: Runtime, **kwargs):
        self.runtime = runtime
        self.watcher = lc.ModelWatcher(runtime.settings.artifacts_dir, runtime.service.rec, runtime.metrics)
        super().__init__(**kwargs)

    @faust.Service.task
    async def _poll(self) -> None:
        interval = self.runtime.settings.model_poll_interval
        while interval > 0 and not self.should_stop:
            await self.sleep(interval)
            try:
                await self.check()
            except Exception:  # noqa: BLE001 (keep serving, try again next time)
                log.exception("model poll failed")

    async def check(self) -> None:
        rt = self.runtime
        rec = await self.watcher.poll()
        if rec is None:
            return
        new_service = await asyncio.to_thread(FoldInService.from_settings, rec, rt.settings)
        requested = time.perf_counter()
        async with rt.gate.exclusive():
            old_version = rt.service.model_version
            carried = lc.swap_catalogue(rt.service, new_service)
            rt.service = new_service
            self.watcher.accepted(rec)
            rt.metrics.set_model(new_service.model_version)
            rt.metrics.catalogue_items.set(len(new_service.catalogue))
        pause = time.perf_counter() - requested
        rt.metrics.model_swap_pause.observe(pause)
        log.info("model swapped: %s -> %s (load %.3f s, batches paused %.4f s, %d streamed items carried over)",
                 old_version, new_service.model_version, self.watcher.last_load_seconds or 0.0, pause, carried)

"""The pure batch processor's common part: a batch of input events in, an `Outcome` out. No Kafka here.

The worker (stream_app/worker/app.py) runs each agent batch as

    batch = prepare(events, parse, ctx)            # validate: dead letters, rekeys, groups by entity id
    rows = read_rows(batch, <read a table row>)    # an undecodable row: its entity's events dead-lettered
    outcome = process_users(batch, rows, ctx)      # or process_items (user_batch.py, item_batch.py)
    <apply outcome>: dead letters, rekeys, table writes, outputs; then mark the events handled

so every rule about what an event changes (dedup, re-delivery, republish, refold, what is published and
forwarded) is here and in user_batch.py / item_batch.py, and is unit-tested without a broker
(tests/test_stream_processing.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from stream_app.errors import EventError
from stream_app.stream import events as ev
from stream_app.stream.codec import RowDecodeError
from stream_app.stream.state import EntityState, Side

log = logging.getLogger(__name__)

Kind = Literal["rating", "side", "request"]
OutputTopic = Literal["user_vectors", "item_vectors", "recommendations", "item_updates", "catalogue"]


@dataclass(frozen=True, eq=False)
class RawEvent:
    """One input event as the worker read it (`handle`: the worker's own event object, opaque here)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float | None = None  # broker timestamp, epoch seconds
    rekeyed: bool = False  # already sent again keyed by its id once (never rekeyed twice)
    handle: Any = None


class Parsed(NamedTuple):
    kind: Kind
    entity_id: str
    value: Any  # RatingEvent | UserEvent | ItemEvent | RecommendRequest | internal.Forwarded
    event: RawEvent


class Output(NamedTuple):
    """A message to publish: JSON `value` keyed by `key`; `sources`: the input events it answers (latency)."""

    topic: OutputTopic
    key: str
    value: Any
    sources: tuple[RawEvent, ...] = ()
    timestamp: float | None = None  # the record's timestamp (forwards keep their rating's)
    metric: str | None = None  # event-to-publish latency label (None: not measured)

    def payload(self) -> Any:
        """The JSON-ready value (events' dataclasses give their wire representation)."""
        return self.value.to_representation() if hasattr(self.value, "to_representation") else self.value


class Rekey(NamedTuple):
    event: RawEvent
    entity_id: str


@dataclass
class Outcome:
    """What a batch asks the worker to do, in this order: dead letters, rekeys, table writes, outputs."""

    dead_letters: list[tuple[RawEvent, EventError]] = field(default_factory=list)
    rekeys: list[Rekey] = field(default_factory=list)
    writes: dict[str, tuple[EntityState, RawEvent]] = field(default_factory=dict)  # row + an event of its entity
    outputs: list[Output] = field(default_factory=list)
    counts: list[tuple[str, str]] = field(default_factory=list)  # (topic, "ok" | "duplicate") per applied event


@dataclass
class Prepared:
    groups: dict[str, list[Parsed]]
    outcome: Outcome


class RateLimiter:
    """At most one on-rating top-N list per user every `interval` seconds (0: no limit)."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic, max_users: int = 200_000):
        self.interval, self.clock, self.max_users = float(interval), clock, max_users
        self._last: dict[str, float] = {}

    def allow(self, user_id: str) -> bool:
        if self.interval <= 0:
            return True
        now = self.clock()
        last = self._last.get(user_id)
        if last is not None and now - last < self.interval:
            return False
        if len(self._last) >= self.max_users:
            self._last = {u: t for u, t in self._last.items() if now - t < self.interval}
        self._last[user_id] = now
        return True


@dataclass
class Context:
    """What the processor needs from the worker: the service in use, the settings, metrics, partitioning."""

    service: Any  # FoldInService
    settings: Any  # Settings
    metrics: Any  # StreamMetrics
    home_partition: Callable[[str, str], int | None]  # (topic, entity id) -> the partition it belongs on
    limiter: RateLimiter = field(default_factory=lambda: RateLimiter(0.0))

    @property
    def model_version(self) -> str:
        return self.service.model_version


def prepare(events: list[RawEvent], parse: Callable[[RawEvent], tuple[Kind, str, Any]], ctx: Context,
            rekey_topics: frozenset[str] | set[str]) -> Prepared:
    """Validate a batch: bad events become dead letters, events on the wrong partition for their id (in
    `rekey_topics`, not already rekeyed) are sent again keyed by their id, the rest is grouped by entity."""
    out = Outcome()
    groups: dict[str, list[Parsed]] = {}
    for event in events:
        try:
            kind, entity_id, value = parse(event)
        except EventError as error:
            out.dead_letters.append((event, error))
            continue
        except Exception as exc:  # noqa: BLE001 (a parser bug must not stop the worker)
            log.exception("unexpected error parsing %s", event.topic)
            out.dead_letters.append((event, EventError(ev.PROCESSING_ERROR, repr(exc)[:300])))
            continue
        if event.topic in rekey_topics and not event.rekeyed \
                and event.partition != ctx.home_partition(event.topic, entity_id):
            out.rekeys.append(Rekey(event, entity_id))
            continue
        groups.setdefault(entity_id, []).append(Parsed(kind, entity_id, value, event))
    return Prepared(groups, out)


def read_rows(batch: Prepared, read: Callable[[str, RawEvent], EntityState | None]) -> dict[str, EntityState | None]:
    """Each entity's stored row (`read(entity id, one of its events)`). An entity whose row cannot be decoded
    leaves the batch: its events become processing_error dead letters (replayable once the row is repaired or
    deleted), the row stays as it is for inspection, and the rest of the batch goes on."""
    rows: dict[str, EntityState | None] = {}
    for entity_id, entries in list(batch.groups.items()):
        try:
            rows[entity_id] = read(entity_id, entries[0].event)
        except RowDecodeError as exc:
            log.error("stored row of %r cannot be decoded (%s): its %d events go to dead letters",
                      entity_id, exc, len(entries))
            del batch.groups[entity_id]
            error = EventError(ev.PROCESSING_ERROR, f"stored row of {entity_id!r} cannot be decoded: {exc}"[:300])
            batch.outcome.dead_letters.extend((p.event, error) for p in entries)
    return rows


def fold(ctx: Context, side: Side, states: dict[str, EntityState]) -> tuple[dict, set[str]]:
    """One batched fold-in; if it fails, entity by entity, so one poisoned entity fails alone."""
    if not states:
        return {}, set()
    started = time.perf_counter()
    failed: set[str] = set()
    try:
        vectors = ctx.service.fold_in(side, states)
    except Exception:
        log.exception("batched %s fold-in failed; retrying entity by entity", side)
        vectors = {}
        for key, state in states.items():
            try:
                vectors.update(ctx.service.fold_in(side, {key: state}))
            except Exception:
                log.exception("%s fold-in failed for %r", side, key)
                failed.add(key)
    ctx.metrics.foldin_seconds.labels(side=side).observe(time.perf_counter() - started)
    ctx.metrics.foldin_entities.labels(side=side).observe(len(states))
    return vectors, failed


def reject(out: Outcome, entries: list[Parsed], side: Side) -> None:
    out.dead_letters.extend((p.event, EventError(ev.PROCESSING_ERROR, f"{side} fold-in failed")) for p in entries)


def republish_duplicates(replay: dict[str, RawEvent], states: dict[str, EntityState],
                         dirty: dict[str, RawEvent]) -> list[str]:
    """Entities that got a re-delivered event and have a vector: their row is written and their vector
    published again (at-least-once outputs).

    A re-delivery means the worker that applied the event may have died after writing the table row and
    before its changelog record or outputs left: a kill -9 leaves the local RocksDB row ahead of the
    changelog, and a takeover finds the changelog ahead of the outputs. Dropping the duplicate silently
    would then leave the entity's last vector unpublished (or its changelog short) for good.
    """
    again = []
    for key, event in replay.items():
        if states[key].vector is not None:
            dirty.setdefault(key, event)
            again.append(key)
    return again


def vector_output(side: Side, entity_id: str, state: EntityState, model_version: str,
                  sources: tuple[RawEvent, ...]) -> Output:
    topic: OutputTopic = "user_vectors" if side == "user" else "item_vectors"
    return Output(topic, entity_id, ev.vector_update(side, entity_id, state.vector, state.n_ratings, model_version),
                  sources, metric=f"{side}_vector")

"""Small kafka-python helpers shared by the client tools (replay, recommend, tail), the demo, the tests and the
benchmarks.

    producer = json_producer(bootstrap_servers(settings))
    producer.send(settings.topic_ratings, {"event_id": "e1", ...}, key="7")
    with TopicReader(bootstrap, settings.topic_recommendations, start="end") as reader:
        ...  # trigger something
        record = reader.wait_for(lambda r: r.value.get("request_id") == rid, timeout=15)

Readers use no consumer group: they assign every partition of their topics themselves and seek, so they
start at once (no group join, no rebalance) and never disturb the worker's group. Partitions of a topic
that does not exist yet are picked up when it appears (read from their beginning: all of it is new).
Values are written as compact UTF-8 JSON, keys as UTF-8 strings: the plain-JSON contract of the topics.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from stream_app.errors import RecsysError
from stream_app.kafka_admin import bootstrap_from_url, create_topics

BEGINNING, END = "beginning", "end"
REFRESH_SECONDS = 1.0  # how often a reader looks for partitions of topics that do not exist yet


class WaitTimeout(RecsysError):
    """`wait_for` saw no matching record in time."""


def bootstrap_servers(source: Any) -> str:
    """`host:port[,host:port]` for kafka-python, from a Settings (its broker_url), a kafka:// URL or a bootstrap."""
    url = getattr(source, "broker_url", source)
    return bootstrap_from_url(str(url))


def encode_key(key: Any) -> bytes | None:
    return None if key is None else str(key).encode("utf-8")


def encode_value(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


class JsonProducer:
    """A KafkaProducer that sends plain-JSON values with string keys (serialized here, so that it works the
    same with kafka-python 2 and 3). `send` returns kafka-python's future."""

    def __init__(self, producer):
        self.producer = producer

    def send(self, topic: str, value: Any, key: Any = None):
        return self.producer.send(topic, value=encode_value(value), key=encode_key(key))

    def send_raw(self, topic: str, value: bytes | None, key: Any = None):
        """Send bytes as they are (None = a null value)."""
        return self.producer.send(topic, value=value, key=encode_key(key))

    def flush(self, timeout: float | None = None) -> None:
        self.producer.flush(timeout=timeout)

    def close(self, timeout: float | None = None) -> None:
        self.producer.close(timeout=timeout)

    def __enter__(self) -> JsonProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def json_producer(bootstrap: str, **options: Any) -> JsonProducer:
    """A producer of plain-JSON values and string keys: `json_producer(b).send(topic, {...}, key="7")`."""
    from kafka import KafkaProducer

    config: dict[str, Any] = {"client_id": "recsys-client", "linger_ms": 5, "acks": 1, "max_block_ms": 15_000}
    config.update(options)
    try:
        return JsonProducer(KafkaProducer(bootstrap_servers=bootstrap, **config))
    except Exception as exc:  # NoBrokersAvailable and friends
        raise RecsysError(f"cannot reach the Kafka broker at {bootstrap}: {exc}. Is it running? "
                          f"(`recsys broker --detach` starts one; RECSYS_BROKER_URL says where it is)") from None


def ensure_topics(settings, names: Iterable[str], timeout: float = 10.0) -> list[str]:
    """Create the topics that do not exist yet with the settings' partition count (what the worker expects);
    return the names created. Producing to a missing topic would let the broker auto-create it with its own
    partition count."""
    bootstrap = bootstrap_servers(settings)
    try:
        return create_topics(bootstrap, dict.fromkeys(names, settings.partitions),
                             replication_factor=settings.replication_factor, timeout=timeout)
    except RecsysError:
        raise
    except Exception as exc:
        raise RecsysError(f"cannot reach the Kafka broker at {bootstrap}: {exc}. Is it running? "
                          f"(`recsys broker --detach` starts one; RECSYS_BROKER_URL says where it is)") from None


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    timestamp: int  # ms, as the broker stored it
    key: str | None
    value: Any  # parsed JSON; the text (invalid UTF-8 replaced) when it is not JSON; None for a null value
    raw: bytes | None
    is_json: bool  # False: `value` is the payload as text, not parsed JSON


def decode_value(raw: bytes | None) -> tuple[Any, bool]:
    """(parsed JSON, True), or (the text, False) when the payload is not JSON; (None, True) for null."""
    if raw is None:
        return None, True
    text = raw.decode("utf-8", "replace")
    try:
        return json.loads(text), True
    except ValueError:
        return text, False


class TopicReader:
    """A group-less consumer of one or more topics, from their beginning or from their current end.

    `start="end"` fixes the end offsets when the reader is created, so that everything produced afterwards
    is read: create the reader *before* triggering what you wait for.
    """

    def __init__(self, bootstrap: str, topics: str | Iterable[str], start: str = BEGINNING, **options: Any):
        from kafka import KafkaConsumer

        if start not in (BEGINNING, END):
            raise ValueError(f"start must be {BEGINNING!r} or {END!r}, not {start!r}")
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        self.start = start
        config: dict[str, Any] = {"client_id": "recsys-reader", "group_id": None, "enable_auto_commit": False,
                                  "auto_offset_reset": "earliest", "request_timeout_ms": 10_000,
                                  "fetch_max_wait_ms": 100}
        config.update(options)
        try:
            self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, **config)
        except Exception as exc:
            raise RecsysError(f"cannot reach the Kafka broker at {bootstrap}: {exc}. Is it running? "
                              f"(`recsys broker --detach` starts one; RECSYS_BROKER_URL says where it is)") from None
        self._assigned: set = set()
        self._next_refresh = 0.0
        self._refresh(initial=True)

    # -- partitions
    def _refresh(self, initial: bool = False) -> None:
        """Assign partitions not assigned yet: at the start position on creation, from the beginning later."""
        from kafka import TopicPartition

        self._next_refresh = time.monotonic() + REFRESH_SECONDS
        found = set()
        for topic in self.topics:
            for p in self.consumer.partitions_for_topic(topic) or ():
                found.add(TopicPartition(topic, p))
        new = found - self._assigned
        if not new:
            return
        self._assigned |= new
        self.consumer.assign(sorted(self._assigned))
        if initial and self.start == END:
            self.consumer.seek_to_end(*new)
            for tp in new:
                self.consumer.position(tp)  # resolve the end offset now, not at the first poll
        else:
            self.consumer.seek_to_beginning(*new)
            for tp in new:
                self.consumer.position(tp)

    @property
    def complete(self) -> bool:
        """True once every topic of the reader has partitions assigned."""
        return {tp.topic for tp in self._assigned} >= set(self.topics)

    def end_offsets(self) -> dict:
        return self.consumer.end_offsets(sorted(self._assigned)) if self._assigned else {}

    def at_end(self) -> bool:
        """True when every assigned partition has been read up to its current end."""
        ends = self.end_offsets()
        return all(self.consumer.position(tp) >= end for tp, end in ends.items())

    # -- reading
    def poll(self, timeout: float = 0.5) -> list[Record]:
        """Records that arrived within `timeout` seconds (possibly none), in offset order per partition."""
        if time.monotonic() >= self._next_refresh:
            self._refresh()
        if not self._assigned:
            time.sleep(min(timeout, REFRESH_SECONDS))
            return []
        batches = self.consumer.poll(timeout_ms=max(0, int(timeout * 1000)))
        out = []
        for tp in sorted(batches):
            for m in batches[tp]:
                value, is_json = decode_value(m.value)
                key = None if m.key is None else m.key.decode("utf-8", "replace")
                out.append(Record(m.topic, m.partition, m.offset, m.timestamp, key, value, m.value, is_json))
        return out

    def records(self, timeout: float | None = None, idle: float | None = None) -> Iterator[Record]:
        """Yield records until `timeout` seconds in all, or `idle` seconds without a new record (None = never)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last = time.monotonic()
        while True:
            now = time.monotonic()
            wait = 0.5
            if deadline is not None:
                wait = min(wait, deadline - now)
            if idle is not None:
                wait = min(wait, last + idle - now)
            if wait <= 0:
                return
            batch = self.poll(wait)
            if batch:
                last = time.monotonic()
            yield from batch

    def read_available(self, timeout: float = 10.0) -> list[Record]:
        """Everything up to the current end of every partition (for topics read from the beginning)."""
        out: list[Record] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.complete and self.at_end():
                return out
            out.extend(self.poll(0.2))
        return out

    def wait_for(self, predicate: Callable[[Record], bool], timeout: float) -> Record:
        """The first record (from here on) for which `predicate(record)` is true; WaitTimeout after `timeout` s."""
        for record in self.records(timeout=timeout):
            if predicate(record):
                return record
        raise WaitTimeout(f"no matching record on {', '.join(self.topics)} in {timeout:g} s")

    def close(self) -> None:
        self.consumer.close()

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_for(bootstrap: str, topic: str, predicate: Callable[[Record], bool], timeout: float,
             start: str = BEGINNING) -> Record:
    """The first record of `topic` (from its beginning, or from now with start="end") matching `predicate`."""
    with TopicReader(bootstrap, topic, start=start) as reader:
        return reader.wait_for(predicate, timeout)


def read_table(bootstrap: str, topic: str, timeout: float = 30.0) -> dict:
    """The last row per key of a table's changelog topic (`<app_id>-users-changelog`, ...), decoded: what the
    table holds, {entity id: EntityState or None for a deleted row}. WaitTimeout if not read to its end in time."""
    from kafka import KafkaConsumer, TopicPartition

    from stream_app.stream.codec import decode_row

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)
        rows: dict = {}
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < ends[tp] for tp in parts):
            if time.monotonic() > deadline:
                raise WaitTimeout(f"{topic} not read to its end in {timeout:g} s")
            for records in consumer.poll(timeout_ms=200).values():
                for r in records:
                    rows[json.loads(r.key)] = r.value  # Faust writes table keys as JSON
        return {key: decode_row(raw) for key, raw in rows.items()}  # only the last row of each key
    finally:
        consumer.close()

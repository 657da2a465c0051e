"""Topic names, creation and the Faust settings derived from ours."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from stream_app.errors import RecsysError
from stream_app.settings import Settings
from stream_app.stream.web import FAUST_WEB_OPTIONS

REKEYED_HEADER = "recsys-rekeyed"


def internal_topic(settings: Settings) -> str:
    """Ratings forwarded from the user side to the item side, keyed by item id."""
    return f"{settings.app_id}-item-updates"


def catalogue_topic(settings: Settings) -> str:
    """Every item's vector and side data, compacted, read whole by every worker."""
    return f"{settings.app_id}-catalogue"


def input_topics(settings: Settings) -> dict[str, tuple[str, ...]]:
    """The agents' input topics: user side (keyed by user id), item side (keyed by item id)."""
    s = settings
    return {"user": (s.topic_ratings, s.topic_users, s.topic_requests), "item": (s.topic_items, internal_topic(s))}


def rekey_topics(settings: Settings) -> frozenset[str]:
    """The public input topics: an event there on the wrong partition for its id is sent again keyed by it."""
    s = settings
    return frozenset((s.topic_ratings, s.topic_users, s.topic_requests, s.topic_items))


def topic_partitions(settings: Settings) -> dict[str, int]:
    s = settings
    names = (s.topic_ratings, s.topic_users, s.topic_requests, s.topic_items, internal_topic(s),
             s.topic_user_vectors, s.topic_item_vectors, s.topic_recommendations, s.topic_dead_letters)
    return {name: s.partitions for name in names}


def prepare_topics(settings: Settings) -> None:
    """Create missing topics; refuse input topics whose partitions differ from the tables' (blocking)."""
    from kafka import KafkaAdminClient

    from stream_app.kafka_admin import bootstrap_from_url, create_topics

    s = settings
    bootstrap = bootstrap_from_url(s.broker_url)
    create_topics(bootstrap, topic_partitions(s), replication_factor=s.replication_factor)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id=f"{s.app_id}-setup")
    try:
        if catalogue_topic(s) not in admin.list_topics():
            from kafka.admin import NewTopic

            with contextlib.suppress(Exception):  # created meanwhile by another worker
                admin.create_topics([NewTopic(catalogue_topic(s), s.partitions, s.replication_factor,
                                              topic_configs={"cleanup.policy": "compact"})])
        described = admin.describe_topics([*input_topics(s)["user"], *input_topics(s)["item"]])
    finally:
        admin.close()
    for topic in described:
        n = len(topic.get("partitions") or ())
        if n and n != s.partitions:
            name = topic.get("name") or topic.get("topic")  # kafka-python 2.1+ says "name"
            raise RecsysError(f"topic {name!r} has {n} partitions but the tables have "
                              f"{s.partitions}: set RECSYS_PARTITIONS={n} (and a new RECSYS_APP_ID) or "
                              f"recreate the topic")


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
        # a few ms of linger: far fewer produce requests when a batch publishes a lot; batches of up to 512 KiB
        # (aiokafka's 16 KiB default holds one ~11 KB item row, and it keeps one open batch per partition: every
        # further row of that partition waited for the previous batch's round trip)
        return dict(producer_linger=0.005, producer_max_batch_size=512 * 1024)
    return dict(producer_max_batch_size=1)  # aiokafka always accepts the first record of a batch


def consumer_timeouts(session_timeout: float) -> dict[str, float]:
    """Faust's 60 s defaults would make every worker start wait 30 s on tansu, which answers a JoinGroup
    only after about half the session timeout. Heartbeats run in the consumer's own thread, so a long
    fold-in on the event loop does not miss them."""
    session = max(float(session_timeout), 1.0)
    return dict(broker_session_timeout=session, broker_rebalance_timeout=session,
                broker_heartbeat_interval=max(session / 6.0, 0.2), broker_request_timeout=max(30.0, session))


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

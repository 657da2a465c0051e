"""Rules 3 and 4 of stream_app/worker/delivery.py on the worker's own consumer class, never started (no broker):
which offset a commit of an input partition may reach, given what the agents acknowledged, and what a jump in
the fetched offsets does."""

from __future__ import annotations

import asyncio

import pytest
from faust.types import TP

from stream_app.worker.delivery import FastFetchApp

RATINGS = TP("ratings", 0)


@pytest.fixture()
def consumer():
    app = FastFetchApp("commit-rules", broker="kafka://127.0.0.1:1", store="memory://", web_enabled=False,
                       autodiscover=False)
    consumer = app.consumer
    consumer.guard([RATINGS.topic])
    return consumer


def acked(consumer, *offsets: int) -> None:
    consumer._acked[RATINGS].extend(offsets)


def test_a_commit_continues_from_the_last_commit_and_never_past_an_unhandled_event(consumer):
    consumer._committed_offset[RATINGS] = 10
    acked(consumer, 11, 12)  # 10 (the next to read) was not handled
    assert consumer._new_offset(RATINGS) is None
    acked(consumer, 10)
    assert consumer._new_offset(RATINGS) == 13


def test_a_never_committed_partition_commits_from_where_its_reading_began(consumer):
    consumer._reading_from[RATINGS] = 0  # set by the seek to the committed offsets (beginning: none committed)
    acked(consumer, 1, 2)
    assert consumer._new_offset(RATINGS) is None  # 0 was skipped
    acked(consumer, 0)
    assert consumer._new_offset(RATINGS) == 3


def test_acks_after_the_partition_was_revoked_commit_nothing(consumer):
    """Seen in a soak: Faust forgets a revoked partition's committed offset, an agent then finishes its batch and
    acks 434 while 423-433 were skipped; Faust would have committed 435 past them (the next owner starts there)."""
    consumer._committed_offset[RATINGS] = 423
    consumer._reading_from[RATINGS] = 360
    consumer._committed_offset.pop(RATINGS)  # what Faust's on_partitions_revoked does
    consumer._reading_from.pop(RATINGS)  # ... and ours
    acked(consumer, 434)
    assert consumer._new_offset(RATINGS) is None


def test_revocation_forgets_where_reading_began(consumer):
    consumer._reading_from[RATINGS] = 0
    consumer._on_partitions_revoked = _noop  # not a running app: only the consumer's own bookkeeping is tested
    asyncio.run(consumer.on_partitions_revoked({RATINGS}))
    assert RATINGS not in consumer._reading_from
    acked(consumer, 0, 1)
    assert consumer._new_offset(RATINGS) is None


async def _noop(revoked) -> None:
    return None


def test_other_topics_keep_fausts_rule(consumer):
    other = TP("users-changelog", 0)
    consumer._acked[other].extend([5, 6])
    assert consumer._new_offset(other) == 7


def test_a_jump_in_fetched_offsets_holds_the_commit_and_reads_the_partition_again_at_once(consumer):
    rereads = []
    consumer._reread_soon = rereads.append
    consumer._committed_offset[RATINGS] = 87
    consumer.flow_active = True
    asyncio.run(consumer._add_gap(RATINGS, 89, 90))  # Faust read 88, then 90: 89 was skipped
    assert rereads == [{RATINGS: 89}]
    acked(consumer, 87, 88, 90)
    assert consumer._new_offset(RATINGS) == 89  # not past 89
    consumer.flow_active = False  # a rebalance is on: its seek to the committed offset reads them again
    asyncio.run(consumer._add_gap(RATINGS, 95, 96))
    assert rereads == [{RATINGS: 89}]

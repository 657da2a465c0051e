"""Property-based test of the whole batch processor (no Kafka): any mix of valid, near-valid and hostile events,
re-deliveries included, through the user side and its forwards through the item side. Every event is applied
(ok or duplicate) or dead-lettered with a parsing reason, never a processing_error; every row written reads
back the same; every output is publishable JSON.
"""

from __future__ import annotations

import math

import orjson
import pytest
from fuzzing import dumps, events, examples, payloads, weighted
from hypothesis import event, given
from hypothesis import strategies as st
from stream_harness import tiny_recommender
from test_stream_processing import SETTINGS, Table

from stream_app.stream import events as ev
from stream_app.stream.codec import decode_row
from stream_app.stream.metrics import StreamMetrics
from stream_app.stream.processing import Context, RawEvent
from stream_app.stream.service import FoldInService

pytestmark = pytest.mark.timeout(300)  # a hang fails the test instead of stalling the suite

TOPICS = {"rating": SETTINGS.topic_ratings, "user": SETTINGS.topic_users, "request": SETTINGS.topic_requests,
          "item": SETTINGS.topic_items}
INTERNAL = "recsys-item-updates"


@pytest.fixture(scope="module")
def rec():
    return tiny_recommender()


def pooled(kind: str, users: list[str], items: list[str]) -> st.SearchStrategy[bytes]:
    """Events whose ids come from small pools (entities and event ids repeat: duplicates, one entity's many
    events in one batch), or anything a producer may write."""
    pool = {"user_id": st.sampled_from(users), "item_id": st.sampled_from(items),
            "event_id": st.sampled_from(["e1", "e2", "e3", 4]), "request_id": st.just("q")}
    fields = {key: pool[key] for key in ("event_id", "user_id", "item_id", "request_id")}
    same_ids = st.builds(lambda e, over: {**e, **{k: v for k, v in over.items() if k in e}}, events(kind),
                         st.fixed_dictionaries(fields))
    return weighted((4, same_ids.map(dumps)),
                    (1, payloads(kind)))


def batches(kinds: tuple[str, ...], users: list[str], items: list[str]):
    return st.lists(st.sampled_from(kinds).flatmap(
        lambda kind: pooled(kind, users, items).map(lambda raw: (TOPICS[kind], raw))), min_size=1, max_size=10)


def raw_events(pairs) -> list[RawEvent]:
    return [RawEvent(topic, 0, offset, None, raw, 1.7e9) for offset, (topic, raw) in enumerate(pairs)]


def run_checked(table: Table, raw: list[RawEvent], ctx: Context, side: str):
    out = table.run(raw, ctx, side)
    reasons = [error.reason for _, error in out.dead_letters]
    assert ev.PROCESSING_ERROR not in reasons, out.dead_letters
    assert set(reasons) <= set(ev.REASONS) and not out.rekeys
    assert len(out.dead_letters) + len(out.counts) == len(raw)  # each event applied, a duplicate or dead-lettered
    for o in out.outputs:
        value = o.payload()
        orjson.dumps(value)  # what the worker's JSON serializer does with it
        if o.topic in ("user_vectors", "item_vectors"):
            assert all(math.isfinite(x) for x in value["vector"]) and value["model_version"] == ctx.model_version
    for key, (state, _) in out.writes.items():
        assert decode_row(table[key]) == state
    event(f"{side} side: " + ("some applied" if out.counts else "all dead letters"))
    return out


USERS, ITEMS = ["alice", "bob", "7"], ["i1", "i2", "brand-new"]


@examples(30)
@given(data=st.data())
def test_any_batches_through_both_sides(rec, data):
    users = USERS + rec.ids["user"][:2]  # known users: fold-in over their training history
    items = ITEMS + rec.ids["item"][:2]
    ctx = Context(FoldInService.from_settings(rec, SETTINGS), SETTINGS, StreamMetrics(), lambda topic, key: 0)
    user_rows, item_rows = Table(), Table()
    first = raw_events(data.draw(batches(("rating", "user", "request"), users, items)))
    second = raw_events(data.draw(batches(("rating", "user", "request"), users, items)))
    forwards = []
    for batch in (first, second + first[: len(first) // 2]):  # the second batch re-delivers half the first
        out = run_checked(user_rows, batch, ctx, "user")
        forwards += [(INTERNAL, orjson.dumps(o.payload())) for o in out.outputs
                     if o.topic == "item_updates"]
    item_side = data.draw(st.lists(pooled("item", users, items).map(lambda raw: (TOPICS["item"], raw)), max_size=4))
    mixed = data.draw(st.permutations(forwards + forwards[:2] + item_side)) if forwards or item_side else []
    if mixed:
        run_checked(item_rows, raw_events(mixed), ctx, "item")

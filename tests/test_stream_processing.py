"""The pure batch processor: events and rows in, what to write, publish, forward and dead-letter out (no Kafka)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from stream_harness import tiny_recommender

from stream_app.errors import EventError
from stream_app.settings import Settings
from stream_app.stream import state as st
from stream_app.stream.codec import decode_row, encode_row
from stream_app.stream.item_batch import apply_catalogue_entry, catalogue_entry, parse_item_event, process_items
from stream_app.stream.metrics import StreamMetrics
from stream_app.stream.processing import Context, RateLimiter, RawEvent, prepare, read_rows
from stream_app.stream.service import FoldInService
from stream_app.stream.user_batch import parse_user_event, process_users
from stream_app.worker.topics import rekey_topics

SETTINGS = Settings(window_user=8, window_item=8, top_n=5)
REKEY = rekey_topics(SETTINGS)
_offsets = itertools.count()


@pytest.fixture(scope="module")
def rec():
    return tiny_recommender()


@pytest.fixture
def ctx(rec):
    return Context(FoldInService.from_settings(rec, SETTINGS), SETTINGS, StreamMetrics(), lambda topic, key: 0)


def event(topic: str, value: dict | bytes, partition: int = 0, rekeyed: bool = False) -> RawEvent:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return RawEvent(topic, partition, next(_offsets), None, raw, 1.7e9, rekeyed)


def rating(event_id: str, user: str, item: str, stars: float = 4, ts: float = 1.7e9) -> RawEvent:
    return event(SETTINGS.topic_ratings, {"event_id": event_id, "user_id": user, "item_id": item, "rating": stars,
                                          "ts": ts})


class Table(dict):
    """A dict of stored rows, written the way the worker writes them (through the codec)."""

    def run(self, events, ctx, side="user"):
        parse, process = (parse_user_event, process_users) if side == "user" else (parse_item_event, process_items)
        batch = prepare(events, lambda r: parse(r, ctx), ctx, REKEY)
        rows = {key: decode_row(self.get(key)) for key in batch.groups}
        out = process(batch, rows, ctx)
        for key, (state, _) in out.writes.items():
            self[key] = encode_row(state)
        return out


def topics(out) -> list[str]:
    return [o.topic for o in out.outputs]


def test_one_vector_and_one_list_per_user_per_batch_and_one_forward_per_rating(ctx):
    table = Table()
    out = table.run([rating("e1", "alice", "i1"), rating("e2", "alice", "i2"), rating("e3", "bob", "i1")], ctx)
    assert sorted(k for k, o in [(o.key, o) for o in out.outputs] if o.topic == "user_vectors") == ["alice", "bob"]
    assert sorted(o.key for o in out.outputs if o.topic == "recommendations") == ["alice", "bob"]
    forwards = [o for o in out.outputs if o.topic == "item_updates"]
    assert sorted((o.key, o.value.user_id) for o in forwards) == [("i1", "alice"), ("i1", "bob"), ("i2", "alice")]
    assert decode_row(table["alice"]).n_ratings == 2 and set(out.writes) == {"alice", "bob"}
    alice = next(o for o in out.outputs if o.topic == "user_vectors" and o.key == "alice")
    assert len(alice.sources) == 2 and alice.value.n_ratings == 2
    assert out.counts == [(SETTINGS.topic_ratings, "ok")] * 3 and not out.dead_letters


def test_a_duplicate_changes_nothing_but_republishes_and_forwards_again(ctx):
    table = Table()
    table.run([rating("e1", "alice", "i1")], ctx)
    before = table["alice"]
    out = table.run([rating("e1", "alice", "i1")], ctx)  # re-delivered: its rating is still in the window
    assert table["alice"] == before and out.counts == [(SETTINGS.topic_ratings, "duplicate")]
    assert set(out.writes) == {"alice"}  # the row is written again (its changelog record may have been lost)
    assert topics(out).count("user_vectors") == 1 and topics(out).count("item_updates") == 1
    forward = next(o for o in out.outputs if o.topic == "item_updates")
    assert forward.value.event_id == "e1"  # the item side drops it if it has it already


def test_a_duplicate_whose_rating_left_the_window_is_not_forwarded(ctx):
    table = Table()
    table.run([rating("old", "alice", "i0", ts=1.0)], ctx)
    table.run([rating(f"e{k}", "alice", f"i{k + 1}", ts=10.0 + k) for k in range(SETTINGS.window_user)], ctx)
    out = table.run([rating("old", "alice", "i0", ts=1.0)], ctx)
    assert "item_updates" not in topics(out) and topics(out).count("user_vectors") == 1


def test_bad_events_are_dead_lettered_and_misplaced_ones_rekeyed(ctx):
    ctx.home_partition = lambda topic, key: 1 if key == "elsewhere" else 0
    table = Table()
    out = table.run([event(SETTINGS.topic_ratings, b"{not json"), rating("e1", "elsewhere", "i1"),
                     event(SETTINGS.topic_ratings, {"event_id": "x", "user_id": "u", "item_id": "i", "rating": 99,
                                                    "ts": 1.7e9}),
                     event(SETTINGS.topic_ratings, {"event_id": "y", "user_id": "elsewhere", "item_id": "i",
                                                    "rating": 3, "ts": 1.7e9}, rekeyed=True)], ctx)
    assert [e.reason for _, e in out.dead_letters] == ["unparseable_json", "rating_out_of_range"]
    assert [(r.entity_id, r.event.value) for r in out.rekeys] == [("elsewhere", rating("e1", "elsewhere", "i1").value)]
    assert set(out.writes) == {"elsewhere"}  # the already rekeyed event is applied where it is


def test_requests_are_answered_and_do_not_write_rows(ctx):
    table = Table()
    out = table.run([event(SETTINGS.topic_requests, {"request_id": "q1", "user_id": "nobody", "n": 3})], ctx)
    (answer,) = out.outputs
    assert answer.topic == "recommendations" and answer.value.request_id == "q1" and len(answer.value.items) == 3
    assert not out.writes and not table


def test_rate_limited_lists_on_ratings_but_requests_always_answered(ctx):
    clock = iter([0.0, 1.0, 5.0]).__next__
    ctx.limiter = RateLimiter(3.0, clock=clock)
    table = Table()
    assert "recommendations" in topics(table.run([rating("e1", "alice", "i1")], ctx))  # t=0
    assert "recommendations" not in topics(table.run([rating("e2", "alice", "i2")], ctx))  # t=1: too soon
    out = table.run([rating("e3", "alice", "i3"),
                     event(SETTINGS.topic_requests, {"request_id": "q", "user_id": "alice"})], ctx)  # t=5
    assert [o.value.request_id for o in out.outputs if o.topic == "recommendations"] == [None, "q"]


def test_a_failed_fold_in_dead_letters_only_that_users_events(ctx, monkeypatch):
    original = ctx.service.fold_in

    def poisoned(side, states):
        if "poison" in states:
            raise ValueError("boom")
        return original(side, states)

    monkeypatch.setattr(ctx.service, "fold_in", poisoned)
    out = Table().run([rating("e1", "poison", "i1"), rating("e2", "alice", "i1")], ctx)
    assert [(e.value, err.reason) for e, err in out.dead_letters] == [(rating("e1", "poison", "i1").value,
                                                                       "processing_error")]
    assert set(out.writes) == {"alice"} and {o.key for o in out.outputs if o.topic == "user_vectors"} == {"alice"}


def test_rows_of_another_model_are_refolded_when_touched(ctx):
    table = Table()
    table.run([rating("e1", "alice", "i1")], ctx)
    row = decode_row(table["alice"])
    row.model_version = "older-model"
    table["alice"] = encode_row(row)
    out = table.run([event(SETTINGS.topic_requests, {"request_id": "q", "user_id": "alice"})], ctx)
    assert decode_row(table["alice"]).model_version == ctx.model_version and "user_vectors" in topics(out)


def test_the_item_side_applies_forwards_once_and_writes_one_catalogue_entry_per_item(ctx):
    users, items = Table(), Table()
    out = users.run([rating("e1", "alice", "i1"), rating("e2", "bob", "i1")], ctx)
    forwards = [event("app-item-updates", json.dumps(o.value.to_representation()).encode())
                for o in out.outputs if o.topic == "item_updates"]
    out = items.run(forwards + forwards[:1], ctx, side="item")
    assert [c for _, c in out.counts] == ["ok", "ok", "duplicate"]
    assert topics(out).count("item_vectors") == 1 and topics(out).count("catalogue") == 1
    row = decode_row(items["i1"])
    assert [e.other_id for e in row.window] == ["alice", "bob"] and row.n_ratings == 2
    assert np.allclose(row.window[0].vector, decode_row(users["alice"]).vector)
    entry = next(o.value for o in out.outputs if o.topic == "catalogue")
    assert entry == catalogue_entry(ctx.service, "i1", row) and entry["n_ratings"] == 2
    assert ctx.service.catalogue.index_of("i1") is not None


def test_item_side_data_of_a_rated_item_updates_the_catalogue_not_the_vector(ctx):
    users, items = Table(), Table()
    out = users.run([rating("e1", "alice", "i9")], ctx)
    forward = next(o for o in out.outputs if o.topic == "item_updates")
    items.run([event("app-item-updates", json.dumps(forward.value.to_representation()).encode())], ctx, side="item")
    vector = decode_row(items["i9"]).vector
    out = items.run([event(SETTINGS.topic_items, {"event_id": "s1", "item_id": "i9", "genres": ["Drama"]})], ctx,
                    side="item")
    assert topics(out) == ["catalogue"] and np.array_equal(decode_row(items["i9"]).vector, vector)
    assert decode_row(items["i9"]).side == {"genres": ["Drama"]}


def test_state_rows_survive_the_codec_between_batches(ctx):
    table = Table()
    table.run([rating(f"e{k}", "alice", f"i{k}", stars=1 + k % 5, ts=1.7e9 + k) for k in range(12)], ctx)
    row = decode_row(table["alice"])
    assert len(row.window) == SETTINGS.window_user and row.n_ratings == 12 and row.vector.dtype == np.float32
    assert st.in_window(row, "i11", [row.window[-1].stars, row.window[-1].thumbs], 1.7e9 + 11)


def test_an_undecodable_stored_row_dead_letters_only_its_entitys_events(ctx):
    table = Table()
    table.run([rating("e1", "alice", "i1")], ctx)
    table["bob"] = b"\xffRS\x01garbage"  # a corrupt row (bad disk, foreign writer): RowDecodeError
    events = [rating("e2", "bob", "i1"), rating("e3", "alice", "i2"), rating("e4", "bob", "i2")]
    batch = prepare(events, lambda r: parse_user_event(r, ctx), ctx, REKEY)
    rows = read_rows(batch, lambda key, event: decode_row(table.get(key)))
    out = process_users(batch, rows, ctx)
    assert [e for e, _ in out.dead_letters] == [events[0], events[2]]
    assert all(err.reason == "processing_error" and "stored row of 'bob' cannot be decoded" in err.detail
               for _, err in out.dead_letters)
    assert set(out.writes) == {"alice"} and table["bob"] == b"\xffRS\x01garbage"  # left for inspection


def test_catalogue_records_are_applied_checked_and_other_models_skipped(ctx, rec):
    items = Table()
    users = Table()
    out = users.run([rating("e1", "alice", "new-item")], ctx)
    forwards = [event("app-item-updates", json.dumps(o.value.to_representation()).encode())
                for o in out.outputs if o.topic == "item_updates"]
    entry = next(o.value for o in items.run(forwards, ctx, side="item").outputs if o.topic == "catalogue")
    other = FoldInService.from_settings(rec, SETTINGS)  # another worker: it has not seen the new item
    assert other.catalogue.index_of("new-item") is None
    assert apply_catalogue_entry(other, b"new-item", json.dumps(entry).encode())
    row = other.catalogue.index_of("new-item")
    assert np.array_equal(other.catalogue.vectors[row], st.unpack_vector(entry["vector"]))
    assert not apply_catalogue_entry(other, b"x", json.dumps({**entry, "model_version": "older@1"}).encode())
    assert other.catalogue.index_of("x") is None
    with pytest.raises(EventError):
        apply_catalogue_entry(other, b"y", json.dumps({**entry, "vector": st.pack_vector([1.0])}).encode())


def test_a_rating_delivered_late_takes_its_place_in_time_and_the_window_keeps_the_latest():
    # a partition re-read after a fault can apply an older rating after newer ones (seen in the chaos soak)
    state = st.new_state()
    for ts in (1.0, 2.0, 4.0, 5.0):
        assert st.add_rating(state, f"e{ts}", f"i{ts}", (0.5, None), ts, window=4)
    assert st.add_rating(state, "late", "i3", (0.5, None), 3.0, window=4)
    assert [e.ts for e in state.window] == [2.0, 3.0, 4.0, 5.0]
    assert st.add_rating(state, "older", "i0", (0.5, None), 0.5, window=4)  # older than the whole window
    assert [e.ts for e in state.window] == [2.0, 3.0, 4.0, 5.0] and state.n_ratings == 6

"""The item side of the batch processor: item side data and forwarded ratings; the catalogue. No Kafka here.

Rules (each unit-tested in tests/test_stream_processing.py):
- a forwarded rating not seen before is added to its item's window with the rater's vector and side data;
  the item is folded in once per batch, its vector published once per batch and its catalogue entry
  (`<app_id>-catalogue`, what every worker scores top-N lists over) written once per batch;
- side data of a rated item changes its catalogue features, not its vector; of an unrated item, it gives a
  new cold-start vector;
- duplicates change nothing, but an item that has a vector is written and published again
  (`processing.republish_duplicates`);
- a row computed by another model gets its raters' vectors from the new model and is re-folded.
"""

from __future__ import annotations

from collections.abc import Iterable

from stream_app.stream import events as ev
from stream_app.stream import lifecycle as lc
from stream_app.stream import state as st
from stream_app.stream.internal import parse_catalogue_entry, parse_forwarded
from stream_app.stream.processing import (
    Context,
    Kind,
    Outcome,
    Output,
    Prepared,
    RawEvent,
    fold,
    reject,
    republish_duplicates,
    vector_output,
)


def parse_item_event(event: RawEvent, ctx: Context) -> tuple[Kind, str, object]:
    if event.topic == ctx.settings.topic_items:
        item = ev.parse_item(event.value, ctx.settings.max_event_bytes)
        return "side", item.item_id, item
    update = parse_forwarded(event.value)  # internal: written by the user side
    return "rating", update.item_id, update


def process_items(batch: Prepared, rows: dict[str, st.EntityState | None], ctx: Context) -> Outcome:
    """Apply a prepared batch of item-side events to the items' rows (`rows`: as read from the table)."""
    s, svc, out = ctx.settings, ctx.service, batch.outcome
    states: dict[str, st.EntityState] = {}
    dirty: dict[str, RawEvent] = {}
    to_fold: dict[str, st.EntityState] = {}
    sources: dict[str, list[RawEvent]] = {}
    replay: dict[str, RawEvent] = {}
    side_only: list[str] = []
    for iid, entries in batch.groups.items():
        stored = rows.get(iid)
        state = stored if stored is not None else svc.initial_state("item", iid)
        states[iid] = state
        if lc.is_stale(state, svc.model_version):
            lc.refresh_item_window(state, svc.rec)
            to_fold[iid] = state
            dirty[iid] = entries[0].event
            ctx.metrics.refolds.labels(side="item").inc()
        side_changed = False
        for p in entries:
            v = p.value
            if p.kind == "rating":
                fresh = st.add_rating(state, v.event_id, v.user_id, v.rates, v.ts, s.window_item,
                                      vector=v.user_vector, features=v.user_features)
                if fresh:
                    to_fold[iid] = state
                    sources.setdefault(iid, []).append(p.event)
            else:
                fresh = st.update_side(state, v.event_id, v.side, s.window_item)
                side_changed = side_changed or fresh
                if fresh and not state.window:
                    to_fold[iid] = state
            if fresh:
                dirty[iid] = p.event
            else:
                replay[iid] = p.event
            out.counts.append((p.event.topic, "ok" if fresh else "duplicate"))
        if side_changed and iid not in to_fold:  # rated item: its vector stays, its side data changes
            svc.catalogue.upsert(iid, features=svc.features("item", iid, state))
            side_only.append(iid)
    vectors, failed = fold(ctx, "item", to_fold)
    for iid in failed:
        reject(out, batch.groups[iid], "item")
        dirty.pop(iid, None)
        replay.pop(iid, None)
    for iid, vector in vectors.items():
        st.set_vector(states[iid], vector, ctx.model_version)
    republish = republish_duplicates(replay, states, dirty)
    for iid, event in dirty.items():
        out.writes[iid] = (states[iid], event)
    for iid in dict.fromkeys([*vectors, *republish]):
        out.outputs.append(vector_output("item", iid, states[iid], ctx.model_version, tuple(sources.get(iid, ()))))
    for iid in dict.fromkeys([*vectors, *republish, *side_only]):
        if states[iid].vector is not None:
            out.outputs.append(Output("catalogue", iid, catalogue_entry(ctx.service, iid, states[iid])))
    ctx.metrics.catalogue_items.set(len(svc.catalogue))
    return out


def catalogue_entry(service, item_id: str, state: st.EntityState) -> dict:
    """An item as every worker's catalogue needs it (the `<app_id>-catalogue` topic's JSON value)."""
    return {"vector": st.pack_vector(state.vector),
            "features": [list(p) for p in st.to_sparse(service.features("item", item_id, state))],
            "n_ratings": int(state.n_ratings),
            "model_version": state.model_version}


def apply_catalogue_entry(service, key: bytes | None, raw: bytes | None) -> bool:
    """A catalogue record read back (another worker's item, or ours) into this worker's catalogue; False if
    it is another model's; EventError if it is malformed (internal.parse_catalogue_entry)."""
    entry = parse_catalogue_entry(key, raw, service.n_dim)
    if entry.model_version not in (None, service.model_version):
        return False  # another model's vector (before or after a swap): not comparable with ours
    features = st.to_dense([entry.features], service.schema.item_dim)[0]
    service.catalogue.upsert(entry.item_id, entry.vector, features, entry.n_ratings)
    return True


def restore_catalogue(service, rows: Iterable[tuple[str, st.EntityState | None]]) -> int:
    """Items of this worker's table partitions back into its catalogue (after a recovery); how many."""
    n = 0
    for iid, state in rows:
        if state is not None and state.vector is not None and not lc.is_stale(state, service.model_version):
            service.catalogue.upsert(iid, state.vector, service.features("item", iid, state), state.n_ratings)
            n += 1
    return n

"""The user side of the batch processor: ratings, user side data and recommend-requests. No Kafka here.

Rules (each unit-tested in tests/test_stream_processing.py):
- a rating not seen before is added to its user's window; the user is folded in once per batch and its new
  vector published once per batch, however many of its ratings the batch holds;
- each applied rating is forwarded to the item side (`item_updates`, keyed by item id) with the user's new
  vector; a re-delivered rating that is still in the window is forwarded again (the item side drops it if it
  has it), because the worker that applied it may have died before its forward left;
- any other duplicate changes nothing, but a user that has a vector gets its row written and its vector
  published again (`processing.republish_duplicates`);
- a row computed by another model is re-folded with the model in service (and written) when touched;
- top-N: one list per user per batch for its ratings (`recommend_on_rating`, at most one per
  `recommend_interval` seconds per user), one per recommend-request, all scored in one batched call;
- side data of a user with no ratings gives it a new cold-start vector.
"""

from __future__ import annotations

import time

from stream_app.stream import events as ev
from stream_app.stream import lifecycle as lc
from stream_app.stream import state as st
from stream_app.stream.processing import (
    Context,
    Kind,
    Outcome,
    Output,
    Parsed,
    Prepared,
    RawEvent,
    fold,
    reject,
    republish_duplicates,
    vector_output,
)
from stream_app.stream.service import Query


def parse_user_event(event: RawEvent, ctx: Context) -> tuple[Kind, str, object]:
    s = ctx.settings
    if event.topic == s.topic_ratings:
        rating = ev.parse_rating(event.value, ctx.service.schema, s.max_event_bytes)
        return "rating", rating.user_id, rating
    if event.topic == s.topic_users:
        user = ev.parse_user(event.value, s.max_event_bytes)
        return "side", user.user_id, user
    request = ev.parse_request(event.value, s.max_event_bytes, s.top_n)
    return "request", request.user_id, request


def process_users(batch: Prepared, rows: dict[str, st.EntityState | None], ctx: Context) -> Outcome:
    """Apply a prepared batch of user-side events to the users' rows (`rows`: as read from the table)."""
    s, svc, out = ctx.settings, ctx.service, batch.outcome
    states: dict[str, st.EntityState] = {}
    dirty: dict[str, RawEvent] = {}  # user id -> an event of that user (for the table write)
    to_fold: dict[str, st.EntityState] = {}
    applied: dict[str, list[Parsed]] = {}  # user id -> its fresh ratings
    redelivered: dict[str, list[Parsed]] = {}  # the same, for duplicates whose rating is in the window
    replay: dict[str, RawEvent] = {}  # user id -> a duplicate event of that user (see republish_duplicates)
    requests: list[Parsed] = []
    for uid, entries in batch.groups.items():
        stored = rows.get(uid)
        state = stored if stored is not None else svc.initial_state("user", uid)
        states[uid] = state
        if lc.is_stale(state, svc.model_version):  # computed by an older model: re-fold it now
            to_fold[uid] = state
            dirty[uid] = entries[0].event
            ctx.metrics.refolds.labels(side="user").inc()
        for p in entries:
            v = p.value
            if p.kind == "rating":
                fresh = st.add_rating(state, v.event_id, v.item_id, v.rates, v.ts, s.window_user)
                if fresh:
                    applied.setdefault(uid, []).append(p)
                    to_fold[uid] = state
                elif st.in_window(state, v.item_id, v.rates, v.ts):
                    redelivered.setdefault(uid, []).append(p)
            elif p.kind == "side":
                fresh = st.update_side(state, v.event_id, v.side, s.window_user)
                if fresh and not state.window:
                    to_fold[uid] = state  # no ratings: its cold-start vector follows its side data
            else:
                fresh = True
                requests.append(p)
            if fresh and p.kind != "request":
                dirty[uid] = p.event
            elif not fresh:
                replay[uid] = p.event
            out.counts.append((p.event.topic, "ok" if fresh else "duplicate"))
    vectors, failed = fold(ctx, "user", to_fold)
    for uid in failed:
        reject(out, batch.groups[uid], "user")
        for table in (dirty, applied, replay, redelivered):
            table.pop(uid, None)
        requests = [p for p in requests if p.entity_id != uid]
    for uid, vector in vectors.items():
        st.set_vector(states[uid], vector, ctx.model_version)
    republish = republish_duplicates(replay, states, dirty)
    for uid, event in dirty.items():
        out.writes[uid] = (states[uid], event)
    for uid in dict.fromkeys([*vectors, *republish]):
        sources = tuple(p.event for p in applied.get(uid, ()))
        out.outputs.append(vector_output("user", uid, states[uid], ctx.model_version, sources))
    forward(out, states, applied, redelivered, ctx)
    recommend(out, states, {**redelivered, **applied}, requests, ctx)
    return out


def forward(out: Outcome, states: dict[str, st.EntityState], applied: dict[str, list[Parsed]],
            redelivered: dict[str, list[Parsed]], ctx: Context) -> None:
    """Each applied (or re-delivered) rating to the item side, with the rater's vector and side data."""
    for uid in dict.fromkeys([*applied, *redelivered]):  # in batch order
        state = states.get(uid)
        if state is None or state.vector is None:
            continue
        packed = st.pack_vector(state.vector)
        features = [list(pair) for pair in ctx.service.rater_features(uid, state)]
        for p in applied.get(uid, []) + redelivered.get(uid, []):
            r = p.value
            update = ev.ItemUpdate(event_id=r.event_id, item_id=r.item_id, user_id=uid, rates=r.rates, ts=r.ts,
                                   user_vector=packed, user_features=features)
            # the rating's own broker timestamp travels on, for the event-to-publish latency of items
            out.outputs.append(Output("item_updates", r.item_id, update, timestamp=p.event.timestamp))


def recommend(out: Outcome, states: dict[str, st.EntityState], rated: dict[str, list[Parsed]],
              requests: list[Parsed], ctx: Context) -> None:
    """Top-N lists: one per user whose ratings this batch applied, one per request; one batched scoring."""
    s = ctx.settings
    queries: list[Query] = []
    meta: list[tuple[str, str | None, tuple[RawEvent, ...]]] = []
    if s.recommend_on_rating:
        for uid, ratings in rated.items():
            if uid in states and ctx.limiter.allow(uid):
                queries.append(Query(uid, states[uid], s.top_n, max(p.value.ts for p in ratings)))
                meta.append((uid, None, tuple(p.event for p in ratings)))
    now = time.time()
    for p in requests:
        queries.append(Query(p.entity_id, states.get(p.entity_id), p.value.n, now))
        meta.append((p.entity_id, p.value.request_id, (p.event,)))
    if not queries:
        return
    started = time.perf_counter()
    results = ctx.service.recommend_many(queries)
    ranks = [ctx.service.rank_scores(top) for top in results]  # what each list is ordered by
    ctx.metrics.recommend_seconds.observe(time.perf_counter() - started)
    for (uid, request_id, sources), top, rank in zip(meta, results, ranks, strict=True):
        value = ev.recommendations(uid, top, ctx.model_version, request_id=request_id, rank_scores=rank)
        out.outputs.append(Output("recommendations", uid, value, sources, metric="recommendations"))

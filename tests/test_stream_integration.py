"""The streaming worker end to end: `recsys worker` as a subprocess on the embedded tansu broker, real
Kafka clients (kafka-python) producing inputs and reading outputs. No mocks.

One worker serves the whole module (its topics have names unique to the module); the last tests stop
and restart it to check changelog recovery.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from stream_harness import (
    MAX_EVENT_BYTES,
    PARTITIONS,
    TOP_N,
    TS,
    Worker,
    known_user,
    last_vector,
    rating,
    serving_worker,
    tiny_artifact,
    wait_for_split,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return tiny_artifact(tmp_path_factory)


@pytest.fixture(scope="module")
def worker(kafka_broker, artifact, tmp_path_factory):
    with serving_worker(kafka_broker, artifact[0], tmp_path_factory.mktemp("worker")) as w:
        yield w


# ---------------------------------------------------------------------------------------------- tests


def test_ratings_give_vectors_and_recommendations(worker, artifact):
    rec = artifact[1]
    user, history = known_user(artifact)
    items = [rec.ids["item"][i] for i in (0, 1, 2)]
    for k, item in enumerate(items):
        worker.send("ratings", rating(f"r-{k}", user, item, stars=5 - k), key=user)
    vec = last_vector(worker, "user", user, min_ratings=history + 3)
    assert vec == {"user_id": user, "vector": vec["vector"], "n_ratings": history + 3,
                   "model_version": rec.model_version, "ts": vec["ts"]}
    assert len(vec["vector"]) == rec.n_dim and all(isinstance(x, float) for x in vec["vector"])
    item_counts = np.bincount(rec.history.item, minlength=len(rec.ids["item"]))
    for i, item in enumerate(items):
        ivec = last_vector(worker, "item", item, min_ratings=int(item_counts[i]) + 1)
        assert set(ivec) == {"item_id", "vector", "n_ratings", "model_version", "ts"}
        assert ivec["item_id"] == item and len(ivec["vector"]) == rec.n_dim
    worker.wait_for("recommendations", lambda k, v: k == user)
    worker.settle(0.5)  # one refreshed list per user per batch: the last one follows the last rating
    recs = [v for k, v in worker.received["recommendations"] if k == user][-1]
    assert set(recs) == {"user_id", "items", "model_version", "ts"}  # no request_id: not a reply
    assert len(recs["items"]) == TOP_N
    assert all(set(x) == {"item_id", "score", "rank_score"} for x in recs["items"])
    # ranked by rank_score = predicted stars + the popularity term (the first test: counts are the training ones)
    ranked = [x["rank_score"] for x in recs["items"]]
    assert ranked == sorted(ranked, reverse=True)
    expected = rec.rank_scores(np.array([x["score"] for x in recs["items"]]),
                               item_counts[[rec.index["item"][x["item_id"]] for x in recs["items"]]])
    assert np.allclose(ranked, expected, atol=2e-4)  # both rounded to 4 decimals on the wire
    rated = {rec.ids["item"][i] for i in rec.rated_items(rec.index["user"][user])} | set(items)
    assert not rated & {x["item_id"] for x in recs["items"]}, "recommended an item the user rated"


def test_new_user_and_new_item_get_vectors(worker, artifact):
    rec = artifact[1]
    worker.send("users", {"event_id": "u-new-1", "user_id": "newbie", "gender": "F", "age": 31,
                          "occupation": "artist"}, key="newbie")
    cold = last_vector(worker, "user", "newbie")
    assert cold["n_ratings"] == 0 and len(cold["vector"]) == rec.n_dim
    worker.send("items", {"event_id": "i-new-1", "item_id": "brand-new", "genres": ["Drama"], "year": 1999},
                key="brand-new")
    icold = last_vector(worker, "item", "brand-new")
    assert icold["n_ratings"] == 0
    worker.send("ratings", rating("new-r-1", "newbie", "brand-new", stars=5), key="newbie")
    assert last_vector(worker, "user", "newbie", min_ratings=1)["vector"] != cold["vector"]
    assert last_vector(worker, "item", "brand-new", min_ratings=1)["n_ratings"] == 1
    # ids never announced on users/items: the first rating creates both (integer ids become strings)
    worker.send("ratings", rating("new-r-2", 987654, "ghost-item", stars={"stars": 2, "thumbs": 0},
                                  ts="2024-05-01T10:00:00Z", context={"device": "tv"}), key="987654")
    assert last_vector(worker, "user", "987654", min_ratings=1)["n_ratings"] == 1
    assert last_vector(worker, "item", "ghost-item", min_ratings=1)["n_ratings"] == 1
    # the new item is in the catalogue: a fresh user can be recommended it
    worker.send("requests", {"request_id": "q-new", "user_id": "someone-else", "n": 1000}, key="someone-else")
    reply = worker.wait_for("recommendations", lambda k, v: v.get("request_id") == "q-new")[0][1]
    assert {"brand-new", "ghost-item"} <= {x["item_id"] for x in reply["items"]}
    assert len(reply["items"]) == len(rec.ids["item"]) + 2


def test_requests_are_answered_with_their_id(worker, artifact):
    user, _ = known_user(artifact, 1)
    worker.send("requests", {"request_id": "q-1", "user_id": user, "n": 3}, key=user)
    worker.send("requests", {"request_id": 77, "user_id": "nobody-at-all"}, key="nobody-at-all")
    reply = worker.wait_for("recommendations", lambda k, v: v.get("request_id") == "q-1")[0]
    assert reply[0] == user and reply[1]["user_id"] == user and len(reply[1]["items"]) == 3
    assert set(reply[1]) == {"user_id", "items", "model_version", "ts", "request_id"}
    cold = worker.wait_for("recommendations", lambda k, v: v.get("request_id") == "77")[0][1]
    assert cold["user_id"] == "nobody-at-all" and len(cold["items"]) == TOP_N


BAD_INPUTS = [  # (topic, payload, reason)
    ("ratings", b'{"event_id": "b1", "user_id": "bad-1", "item_id"', "unparseable_json"),
    ("ratings", b"\xff\xfe not utf-8", "unparseable_json"),
    ("ratings", b'{"a":' * 5000 + b"1" + b"}" * 5000, "oversized"),
    ("ratings", b"[" * 2000 + b"]" * 2000, "unparseable_json"),  # too deep: RecursionError
    ("ratings", b'["a", "list"]', "not_an_object"),
    ("ratings", b"", "unparseable_json"),
    ("ratings", json.dumps(rating("b2", "bad-2", "i", ts=None)).encode(), "missing_field"),
    ("ratings", json.dumps({"user_id": "bad-3", "item_id": "i", "rating": 3, "ts": TS}).encode(), "missing_field"),
    ("ratings", json.dumps(rating("b4", "bad-4", "i", stars="five")).encode(), "bad_type"),
    ("ratings", json.dumps(rating("b5", "bad-5", "i", context=[1, 2])).encode(), "bad_type"),
    ("ratings", json.dumps(rating("b6", True, "i")).encode(), "bad_id"),
    ("ratings", json.dumps(rating("b7", "bad-7", "x" * 300)).encode(), "bad_id"),
    ("ratings", json.dumps(rating("b8", "bad-8", "i", ts="last tuesday")).encode(), "bad_timestamp"),
    ("ratings", json.dumps(rating("b9", "bad-9", "i", ts=TS * 1000)).encode(), "bad_timestamp"),
    ("ratings", json.dumps(rating("b10", "bad-10", "i", stars=9)).encode(), "rating_out_of_range"),
    ("ratings", json.dumps(rating("b11", "bad-11", "i", stars={"stars": 4, "hearts": 2})).encode(), "unknown_rate"),
    ("ratings", b"x" * (MAX_EVENT_BYTES + 1), "oversized"),
    ("users", b'{"event_id": "bu", "user_id": "bad-u", "age": "old"}', "bad_type"),
    ("users", b"null", "not_an_object"),
    ("items", b'{"event_id": "bi", "genres": ["Drama"]}', "missing_field"),
    ("items", b'{"event_id": "bi2", "item_id": "bad-i", "year": "1999"}', "bad_type"),
    ("requests", b'{"request_id": "bq", "user_id": "bad-q", "n": 0}', "bad_type"),
    ("requests", b'{"user_id": "bad-q"}', "missing_field"),
]


def test_bad_input_goes_to_dead_letters_and_the_worker_keeps_going(worker):
    for topic, payload, _ in BAD_INPUTS:
        worker.send(topic, payload, key="bad")
    worker.send("ratings", rating("after-bad", "survivor", "survivor-item"), key="survivor")
    assert last_vector(worker, "user", "survivor", min_ratings=1)["n_ratings"] == 1
    letters = worker.wait_for("dead_letters", lambda k, v: True, count=len(BAD_INPUTS))
    assert len(letters) == len(BAD_INPUTS)
    by_source: dict[str, list] = {}
    for _, letter in letters:
        assert {"source_topic", "partition", "offset", "raw", "reason", "ts"} <= set(letter)
        by_source.setdefault(letter["source_topic"], []).append(letter)
    for name in ("ratings", "users", "items", "requests"):
        expected = [reason for topic, _, reason in BAD_INPUTS if topic == name]
        got = [letter["reason"] for letter in sorted(by_source[worker.topics[name]], key=lambda d: d["offset"])]
        assert got == expected, name
    oversized = next(d for d in letters if d[1]["reason"] == "oversized" and d[1]["raw"].startswith("xxx"))[1]
    assert "truncated" in oversized["raw"] and len(oversized["raw"]) < MAX_EVENT_BYTES + 100
    assert any(d[1]["raw"].startswith("\ufffd\ufffd not utf-8") for d in letters)
    text = worker.metrics_text()
    assert 'recsys_dead_letters_total{reason="unknown_rate"} 1.0' in text
    assert f'recsys_events_total{{outcome="dead_letter",topic="{worker.topics["ratings"]}"}}' in text


def test_duplicate_event_id_changes_nothing(worker):
    worker.send("ratings", rating("dup-1", "dupuser", "dup-item", stars=2), key="dupuser")
    first = last_vector(worker, "user", "dupuser", min_ratings=1)
    worker.send("ratings", rating("dup-1", "dupuser", "dup-item", stars=2), key="dupuser")
    worker.send("ratings", rating("dup-1", "dupuser", "other-item", stars=5), key="dupuser")  # same id, new body
    worker.send("ratings", rating("dup-2", "dupuser", "dup-item-2", stars=4), key="dupuser")
    second = last_vector(worker, "user", "dupuser", min_ratings=2)
    assert second["n_ratings"] == 2
    worker.settle(1.0)
    updates = [v for k, v in worker.received["user_vectors"] if k == "dupuser"]
    # a duplicate changes nothing; it publishes the current vector again (at-least-once outputs: the
    # worker that applied it first may have died before publishing)
    assert [v["n_ratings"] for v in updates] == sorted(v["n_ratings"] for v in updates)
    assert {v["n_ratings"] for v in updates} == {1, 2}, "a duplicate was applied"
    assert all(v["vector"] == first["vector"] for v in updates if v["n_ratings"] == 1)
    assert first["vector"] != second["vector"]
    item_updates = [v for k, v in worker.received["item_vectors"] if k == "dup-item"]
    assert {v["n_ratings"] for v in item_updates} == {1}
    assert len({tuple(v["vector"]) for v in item_updates}) == 1
    assert not [v for k, v in worker.received["item_vectors"] if k == "other-item"]
    text = worker.metrics_text()
    assert f'recsys_events_total{{outcome="duplicate",topic="{worker.topics["ratings"]}"}} 2.0' in text


def test_a_misrouted_event_is_rekeyed_and_processed(worker):
    worker.send("ratings", rating("nokey-1", "keyless-user", "keyless-item"), key=None)
    worker.send("ratings", rating("wrongkey-1", "keyless-user", "keyless-item-2"), key="some-other-key")
    assert last_vector(worker, "user", "keyless-user", min_ratings=2)["n_ratings"] == 2


def test_metrics_page_serves_the_metric_names(worker, artifact):
    text = worker.metrics_text()
    for name in ("recsys_events_total", "recsys_dead_letters_total", "recsys_foldin_batch_seconds_bucket",
                 "recsys_event_to_publish_seconds_bucket", "recsys_model_info", "recsys_batch_events_bucket",
                 "recsys_foldin_batch_entities_bucket", "recsys_catalogue_items", "recsys_recommend_seconds_count"):
        assert name in text, name
    assert f'recsys_model_info{{model_version="{artifact[1].model_version}"}} 1.0' in text
    assert 'recsys_foldin_batch_seconds_count{side="user"}' in text
    assert 'recsys_event_to_publish_seconds_count{output="item_vector"}' in text


def test_restart_keeps_windows_with_and_without_the_local_store(worker):
    import shutil

    worker.send("ratings", rating("keep-1", "keeper", "keep-item"), key="keeper")
    worker.send("ratings", rating("keep-2", "keeper", "keep-item-2"), key="keeper")
    assert last_vector(worker, "user", "keeper", min_ratings=2)["n_ratings"] == 2
    assert last_vector(worker, "item", "keep-item", min_ratings=1)["n_ratings"] == 1
    worker.settle(0.5)
    assert worker.stop() == 0
    worker.start()  # same store folder
    worker.send("ratings", rating("keep-2", "keeper", "keep-item-2"), key="keeper")  # still a duplicate
    worker.send("ratings", rating("keep-3", "keeper", "keep-item"), key="keeper")
    assert last_vector(worker, "user", "keeper", min_ratings=3)["n_ratings"] == 3
    assert last_vector(worker, "item", "keep-item", min_ratings=2)["n_ratings"] == 2
    assert worker.stop() == 0
    shutil.rmtree(worker.store)  # the local RocksDB store is gone: everything comes back from the changelogs
    worker.start()
    worker.send("ratings", rating("keep-3", "keeper", "keep-item"), key="keeper")  # still a duplicate
    worker.send("ratings", rating("keep-4", "keeper", "keep-item-3"), key="keeper")
    assert last_vector(worker, "user", "keeper", min_ratings=4)["n_ratings"] == 4
    assert last_vector(worker, "item", "keep-item", min_ratings=2)["n_ratings"] == 2
    assert last_vector(worker, "user", "dupuser", min_ratings=2)["n_ratings"] == 2
    worker.settle(1.0)
    counts = [v["n_ratings"] for k, v in worker.received["user_vectors"] if k == "keeper"]
    # duplicates re-publish the current vector (same n_ratings); none is applied twice
    assert counts == sorted(counts) and {2, 3, 4} <= set(counts) <= {1, 2, 3, 4}, f"applied twice? {counts}"
    # the catalogue came back too: the brand-new item of an earlier test is still recommended
    worker.send("requests", {"request_id": "q-after-restart", "user_id": "fresh", "n": 1000}, key="fresh")
    reply = worker.wait_for("recommendations", lambda k, v: v.get("request_id") == "q-after-restart")[0][1]
    assert "brand-new" in {x["item_id"] for x in reply["items"]}


def test_two_workers_share_partitions_tables_and_catalogue(worker, artifact, kafka_broker, tmp_path):
    other = Worker(kafka_broker, artifact[0], tmp_path, like=worker)
    try:
        other.start(alone=False)
        wait_for_split(worker, other)
        ratings = f'recsys_events_total{{outcome="ok",topic="{worker.topics["ratings"]}"}}'
        before = {"a": worker.metric(ratings), "b": other.metric(ratings)}
        items = [f"team-item-{k}" for k in range(8)]
        users = [f"team-user-{k}" for k in range(16)]
        for k, item in enumerate(items):
            worker.send("items", {"event_id": f"ti-{k}", "item_id": item, "genres": ["Comedy"]}, key=item)
        for k, user in enumerate(users):
            for j in (k % 8, (k + 3) % 8):
                worker.send("ratings", rating(f"tr-{k}-{j}", user, items[j], stars=1 + j % 5), key=user)
        for user in users:
            assert last_vector(worker, "user", user, min_ratings=2)["n_ratings"] == 2
        for item in items:
            last_vector(worker, "item", item, min_ratings=4)
        assert worker.metric(ratings) > before["a"] and other.metric(ratings) > before["b"], "one worker did it all"
        # every worker recommends every item, wherever its vector was computed
        for k, user in enumerate(users):
            worker.send("requests", {"request_id": f"team-q-{k}", "user_id": user, "n": 1000}, key=user)
        for k, _ in enumerate(users):
            reply = worker.wait_for("recommendations", lambda key, v, k=k: v.get("request_id") == f"team-q-{k}")[0][1]
            rated = {items[k % 8], items[(k + 3) % 8]}
            assert set(items) - rated <= {x["item_id"] for x in reply["items"]}, k
        assert other.stop() == 0
    finally:
        other.close()
    deadline = time.monotonic() + 60
    while worker.owned_partitions() != PARTITIONS:  # the survivor takes every partition back
        assert time.monotonic() < deadline, worker.log_tail()
        time.sleep(0.2)
    for k, user in enumerate(users):
        worker.send("ratings", rating(f"tr-{k}-late", user, items[(k + 5) % 8]), key=user)
    for user in users:  # the windows written by the other worker came back from the changelog
        assert last_vector(worker, "user", user, min_ratings=3)["n_ratings"] == 3

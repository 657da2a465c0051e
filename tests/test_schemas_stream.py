"""Real messages from a worker on the embedded tansu broker validate against the output schemas in schemas/.

`recsys worker` runs as a subprocess (tests/stream_harness.py); inputs that follow the input schemas, and a
few that break them, are produced with kafka-python; every message on every output topic is validated.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from stream_harness import OUTPUTS, TS, known_user, rating, serving_worker, tiny_artifact

pytestmark = pytest.mark.integration

SCHEMAS = Path(__file__).parents[1] / "schemas"
TOPIC_SCHEMA = {"user_vectors": "user-vectors", "item_vectors": "item-vectors",
                "recommendations": "recommendations", "dead_letters": "dead-letters"}


def validator(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads((SCHEMAS / f"{name}.schema.json").read_text()))


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return tiny_artifact(tmp_path_factory)


@pytest.fixture(scope="module")
def worker(kafka_broker, artifact, tmp_path_factory):
    with serving_worker(kafka_broker, artifact[0], tmp_path_factory.mktemp("worker")) as w:
        yield w


def test_every_output_message_matches_its_schema(worker, artifact):
    rec = artifact[1]
    user, _ = known_user(artifact)
    item = rec.ids["item"][0]
    inputs = {"ratings": validator("ratings"), "users": validator("users"), "items": validator("items"),
              "requests": validator("recommend-requests")}
    good = [
        ("users", {"event_id": "s-u1", "user_id": "schema-new-user", "gender": "F", "age": 31}, "schema-new-user"),
        ("items", {"event_id": "s-i1", "item_id": "schema-new-item", "title": "New (2024)", "year": 2024,
                   "genres": ["Drama"]}, "schema-new-item"),
        ("ratings", rating("s-r1", user, item, stars=5, ts=TS + 1), user),
        ("ratings", rating("s-r2", user, "schema-new-item", stars={"stars": 4, "thumbs": 1},
                           ts="2023-11-14T22:13:21Z", context={"device": "tv"}), user),
        ("ratings", rating("s-r3", "schema-new-user", item, stars={"thumbs": 0}, ts=TS + 3), "schema-new-user"),
        ("requests", {"request_id": "s-q1", "user_id": user, "n": 3}, user),
    ]
    bad = [
        ("ratings", {"event_id": "s-b1", "user_id": user, "item_id": item, "rating": 9, "ts": TS}, user),
        ("ratings", {"event_id": "s-b2", "user_id": user, "item_id": item, "rating": 4, "ts": TS * 1000}, user),
        ("users", {"event_id": "s-b3", "user_id": "u\u200bx"}, "ux"),
        ("requests", {"request_id": "s-b4", "user_id": user, "n": 0}, user),
    ]
    for topic, value, _ in good:
        assert inputs[topic].is_valid(value), value  # the producer side of the contract
    for topic, value, _ in bad:
        assert not inputs[topic].is_valid(value), value
    for topic, value, key in good + bad:
        worker.send(topic, value, key=key)
    worker.send("ratings", b"{not json", key=user)
    worker.send("items", b"[1, 2]", key=item)

    worker.wait_for("recommendations", lambda k, v: v.get("request_id") == "s-q1")
    worker.wait_for("user_vectors", lambda k, v: k == "schema-new-user" and v["n_ratings"] >= 1)
    worker.wait_for("item_vectors", lambda k, v: k == "schema-new-item" and v["n_ratings"] >= 1)
    letters = worker.wait_for("dead_letters", lambda k, v: True, count=len(bad) + 2)
    assert {v["reason"] for _, v in letters} >= {"rating_out_of_range", "bad_timestamp", "bad_id", "bad_type",
                                                 "unparseable_json", "not_an_object"}

    checked = {}
    for output in OUTPUTS:
        check = validator(TOPIC_SCHEMA[output])
        messages = worker.received[output]
        assert messages, f"no message on {output}"
        for _key, value in messages:
            errors = [e.message for e in check.iter_errors(value)]
            assert not errors, f"{output} message {value} does not match its schema: {errors}"
        checked[output] = len(messages)
    assert set(checked) == set(TOPIC_SCHEMA)

"""Client tools on the embedded broker: replay (counts, order, deterministic ids), tail, recommend."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter

import pytest

from stream_app.cli import main
from stream_app.clients import END, Record, TopicReader, WaitTimeout, json_producer, wait_for
from stream_app.commands.recommend import format_table
from stream_app.commands.replay import dataset_label, plan_events
from stream_app.commands.tail import format_record
from stream_app.data.registry import load_dataset

N_USERS, N_ITEMS = 12, 10


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _tiny():
    return load_dataset("synthetic", n_users=N_USERS, n_items=N_ITEMS, mean_ratings_per_user=4, seed=3)


@pytest.fixture
def topics(kafka_broker, monkeypatch):
    """Unique topic names for one test (in the environment: each command has only its own topics' flags), and
    the broker URL as flags."""
    names = {kind: _unique(kind) for kind in ("ratings", "users", "items", "requests", "recommendations")}
    for kind, name in names.items():
        monkeypatch.setenv(f"RECSYS_TOPIC_{kind.upper()}", name)
    return names, ["--broker-url", kafka_broker.url, "--partitions", "2"]


# ---------------------------------------------------------------------------------------------- no broker

def test_plan_orders_side_data_then_ratings_by_time_with_deterministic_ids():
    data = _tiny()
    label = dataset_label("synthetic", data, seed=3)
    assert label == f"synthetic-{N_USERS}x{N_ITEMS}-s3"
    events = plan_events(data, label, all_entities=True)
    kinds = [e.kind for e in events]
    assert kinds == ["users"] * N_USERS + ["items"] * N_ITEMS + ["ratings"] * len(data)
    ratings = [e.value for e in events if e.kind == "ratings"]
    assert [r["ts"] for r in ratings] == sorted(r["ts"] for r in ratings)
    assert all(r["event_id"] == f"{label}:r:{r['user_id']}:{r['item_id']}:{r['ts']}" for r in ratings)
    assert all(e.key == e.value["user_id"] for e in events if e.kind in ("ratings", "users"))
    assert all(e.key == e.value["item_id"] for e in events if e.kind == "items")
    assert events[0].value["event_id"] == f"{label}:u:{events[0].key}"
    assert isinstance(ratings[0]["rating"], int) and isinstance(ratings[0]["ts"], int)
    json.dumps([e.value for e in events], allow_nan=False)  # plain JSON
    assert [e.value for e in plan_events(_tiny(), label, all_entities=True)] == [e.value for e in events]

    sliced = plan_events(data, label, skip=3, limit=5)
    sliced_ratings = [e.value for e in sliced if e.kind == "ratings"]
    assert sliced_ratings == ratings[3:8]
    assert {e.key for e in sliced if e.kind == "users"} == {r["user_id"] for r in sliced_ratings}


def test_format_record_and_table():
    record = Record("t", 0, 5, 0, "7", {"a": 1, "b": [1, 2]}, b"", True)
    assert format_record(record) == '7\t{"a":1,"b":[1,2]}'
    assert format_record(record, pretty=True).startswith('7\t{\n  "a": 1')
    assert format_record(Record("t", 0, 5, 0, None, "not json", b"not json", False)) == "null\tnot json"
    # ranked by rank score (stars + popularity): the stars column may be out of order, and the table says why
    table = format_table([{"item_id": "42", "score": 3.25, "rank_score": 8.1}, {"item_id": "7", "score": 4.5,
                                                                               "rank_score": 6.0}], {"42": "Movie"})
    lines = table.splitlines()
    assert lines[0].startswith("ranked by rank score = predicted stars + popularity")
    assert lines[1].split() == ["rank", "item", "rank", "score", "stars", "title"]
    assert lines[2].split() == ["1", "42", "8.100", "3.25", "Movie"] and lines[3].split() == ["2", "7", "6.000", "4.50"]
    older = format_table([{"item_id": "42", "score": 4.5}])  # a reply from a worker without rank scores
    assert older.splitlines()[2].split() == ["1", "42", "-", "4.50"]


# ---------------------------------------------------------------------------------------------- broker

@pytest.mark.integration
def test_replay_produces_every_event_in_time_order(kafka_broker, topics, capsys):
    names, flags = topics
    args = ["replay", "--data", "synthetic", "--synthetic-users", str(N_USERS), "--synthetic-items", str(N_ITEMS),
            "--seed", "3", "--rate", "0", "--all-entities", "--quiet", *flags]
    data = load_dataset("synthetic", n_users=N_USERS, n_items=N_ITEMS, seed=3)
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"produced {N_USERS} users, {N_ITEMS} items, {len(data)} ratings" in out

    with TopicReader(kafka_broker.bootstrap, [names["users"], names["items"], names["ratings"]]) as reader:
        records = reader.read_available()
    by_topic = Counter(r.topic for r in records)
    assert by_topic == {names["users"]: N_USERS, names["items"]: N_ITEMS, names["ratings"]: len(data)}
    ratings = [r for r in records if r.topic == names["ratings"]]
    assert all(r.key == r.value["user_id"] for r in ratings)
    for partition in {r.partition for r in ratings}:  # per partition (= per user), in time order
        ts = [r.value["ts"] for r in sorted(ratings, key=lambda r: r.offset) if r.partition == partition]
        assert ts == sorted(ts)
    expected = {e.value["event_id"] for e in plan_events(data, dataset_label("synthetic", data, 3), all_entities=True)}
    assert {r.value["event_id"] for r in records} == expected

    # a re-run re-delivers the very same events (same ids), so the worker can drop them
    assert main([*args, "--limit", "5"]) == 0
    with TopicReader(kafka_broker.bootstrap, names["ratings"]) as reader:
        again = reader.read_available()
    counts = Counter(r.value["event_id"] for r in again)
    assert len(again) == len(data) + 5 and sorted(counts.values()).count(2) == 5


@pytest.mark.integration
def test_replay_paces_events(kafka_broker, topics, capsys):
    _, flags = topics
    started = time.perf_counter()
    assert main(["replay", "--data", "synthetic", "--synthetic-users", "10", "--synthetic-items", "10",
                 "--limit", "20", "--no-side-data", "--rate", "40", "--quiet", *flags]) == 0
    assert time.perf_counter() - started >= 19 / 40
    assert "20 ratings (20 events)" in capsys.readouterr().out


@pytest.mark.integration
def test_tail_prints_key_tab_json(kafka_broker, capsys):
    topic = _unique("tail")
    producer = json_producer(kafka_broker.bootstrap)
    for i in range(6):
        producer.send(topic, value={"i": i, "user_id": str(i % 2)}, key=str(i % 2))
    producer.flush()
    producer.close()
    with json_producer(kafka_broker.bootstrap) as raw:
        raw.send_raw(topic, b"not json {", key="raw").get(timeout=10)
    flags = ["--broker-url", kafka_broker.url]

    assert main(["tail", topic, "--from-beginning", *flags]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 7
    parsed = [line.split("\t", 1) for line in lines]
    assert sorted(int(json.loads(v)["i"]) for k, v in parsed if k != "raw") == list(range(6))
    assert all(json.loads(v)["user_id"] == k for k, v in parsed if k != "raw")
    assert ["raw", "not json {"] in parsed

    assert main(["tail", topic, "--from-beginning", "--key", "1", "--pretty", *flags]) == 0
    out = capsys.readouterr().out
    assert out.count("1\t{") == 3 and '\n  "i": 1,' in out

    assert main(["tail", topic, "--from-beginning", "--limit", "2", *flags]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2

    assert main(["tail", _unique("missing"), "--from-beginning", *flags]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.integration
def test_tail_follows_new_records(kafka_broker, capsys):
    topic = _unique("follow")
    producer = json_producer(kafka_broker.bootstrap)
    producer.send(topic, value={"old": True}, key="k").get(timeout=10)

    def later():
        time.sleep(0.5)
        producer.send(topic, value={"new": 1}, key="k").get(timeout=10)

    thread = threading.Thread(target=later)
    thread.start()
    try:
        assert main(["tail", topic, "--limit", "1", "--idle", "10", "--broker-url", kafka_broker.url]) == 0
    finally:
        thread.join()
        producer.close()
    assert capsys.readouterr().out == 'k\t{"new":1}\n'


@pytest.mark.integration
def test_reader_picks_up_a_topic_created_later(kafka_broker):
    topic = _unique("late")
    with TopicReader(kafka_broker.bootstrap, topic, start=END) as reader:
        assert not reader.complete
        producer = json_producer(kafka_broker.bootstrap)
        producer.send(topic, value={"x": 1}, key="a").get(timeout=10)
        producer.close()
        record = reader.wait_for(lambda r: r.value == {"x": 1}, timeout=10)
    assert record.key == "a"
    with pytest.raises(WaitTimeout):
        wait_for(kafka_broker.bootstrap, topic, lambda r: False, timeout=0.5)


@pytest.mark.integration
def test_recommend_times_out_clearly_without_a_worker(kafka_broker, topics, capsys):
    _, flags = topics
    started = time.perf_counter()
    assert main(["recommend", "--user", "1", "--timeout", "1", *flags]) == 2
    assert time.perf_counter() - started < 10
    err = capsys.readouterr().err
    assert "no reply in 1 s: is a worker running? `recsys worker`" in err


@pytest.mark.integration
def test_recommend_matches_its_own_request_id(kafka_broker, topics, capsys):
    """A stand-in responder (not a broker: real Kafka round trips) answers with a decoy first."""
    names, flags = topics
    stop = threading.Event()

    def responder():
        producer = json_producer(kafka_broker.bootstrap)
        with TopicReader(kafka_broker.bootstrap, names["requests"]) as reader:
            while not stop.is_set():
                for r in reader.poll(0.2):
                    user, rid = r.value["user_id"], r.value["request_id"]
                    base = {"user_id": user, "model_version": "m1", "ts": time.time()}
                    producer.send(names["recommendations"], key=user,
                                  value={**base, "items": [{"item_id": "x", "score": 1.0}], "request_id": "other"})
                    producer.send(names["recommendations"], key=user, value={**base, "items": [
                        {"item_id": str(i), "score": 5.0 - i / 10} for i in range(r.value["n"])], "request_id": rid})
                    producer.flush()
        producer.close()

    thread = threading.Thread(target=responder, daemon=True)
    thread.start()
    try:
        assert main(["recommend", "--user", "7", "--n", "3", *flags]) == 0
    finally:
        stop.set()
        thread.join(timeout=5)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("top-3 for user 7 (model m1")
    assert [line.split()[:4] for line in out[3:]] == [["1", "0", "-", "5.00"], ["2", "1", "-", "4.90"],
                                                      ["3", "2", "-", "4.80"]]  # a reply without rank scores

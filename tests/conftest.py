"""Shared pytest fixtures."""

from __future__ import annotations

import pytest

from stream_app.broker import EmbeddedBroker, tansu_binary
from stream_app.kafka_admin import BrokerError


def pytest_configure(config):
    # kafka-python loads its protocol schemas with deprecated importlib.resources calls
    for message in ("open_text is deprecated", "read_text is deprecated"):
        config.addinivalue_line("filterwarnings", f"ignore:{message}:DeprecationWarning")


@pytest.fixture
def tansu():
    """The tansu binary, or a skip saying why it is unavailable."""
    try:
        return tansu_binary()
    except BrokerError as exc:
        pytest.skip(f"embedded Kafka broker unavailable: {exc}")


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory):
    """An in-memory tansu broker on a free port for the whole session (`.url`, `.bootstrap`).

    Topics are shared by all tests of the session: use unique topic names.
    """
    try:
        tansu_binary()
    except BrokerError as exc:
        pytest.skip(f"embedded Kafka broker unavailable: {exc}")
    broker = EmbeddedBroker(log_path=tmp_path_factory.mktemp("kafka") / "tansu.log")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()

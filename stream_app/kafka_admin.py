"""Talking to any Kafka-compatible broker (the embedded tansu or Apache Kafka) with kafka-python: bootstrap
addresses from a Faust URL, reachability, cluster metadata and idempotent topic creation."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from typing import Any

from stream_app.errors import RecsysError


class BrokerError(RecsysError):
    """The embedded broker is missing, did not start, or is not reachable."""


def bootstrap_from_url(url: str) -> str:
    """`kafka://h1:p1;h2:p2` (Faust style) -> `h1:p1,h2:p2` (kafka-python/aiokafka style)."""
    servers = []
    for part in url.replace(";", ",").split(","):
        part = part.strip()
        if "://" in part:
            part = part.split("://", 1)[1]
        if part:
            servers.append(part.rstrip("/"))
    return ",".join(servers)


def tcp_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def cluster_metadata(bootstrap: str, timeout: float = 2.0) -> dict[str, Any]:
    """Ask the broker for its cluster description with a real Kafka client (raises if it does not answer)."""
    from kafka import KafkaAdminClient

    ms = max(int(timeout * 1000), 100)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="recsys-probe",
                             bootstrap_timeout_ms=ms, request_timeout_ms=ms)
    try:
        return admin.describe_cluster()
    finally:
        admin.close()


def is_reachable(bootstrap: str, timeout: float = 2.0) -> bool:
    """True if a Kafka client can fetch cluster metadata from `bootstrap`."""
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    if not tcp_open(host or "127.0.0.1", int(port), timeout=min(timeout, 1.0)):
        return False
    try:
        cluster_metadata(bootstrap, timeout=timeout)
    except Exception:
        return False
    return True


def create_topics(bootstrap: str, topics: Mapping[str, int], replication_factor: int = 1,
                  timeout: float = 10.0) -> list[str]:
    """Create the topics {name: partitions} that do not exist yet; return the names actually created.

    Idempotent: topics that already exist are left as they are (whatever their partition count).
    """
    from kafka import KafkaAdminClient
    from kafka.errors import for_code

    if not topics:
        return []
    ms = int(timeout * 1000)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="recsys-admin",
                             bootstrap_timeout_ms=ms, request_timeout_ms=ms)
    try:
        existing = set(admin.list_topics())
        wanted = {name: n for name, n in topics.items() if name not in existing}
        if not wanted:
            return []
        spec = {name: {"num_partitions": int(n), "replication_factor": replication_factor}
                for name, n in wanted.items()}
        response = admin.create_topics(spec, timeout_ms=ms, raise_errors=False)
        created = []
        for result in response["topics"]:
            code = result["error_code"]
            if code == 0:
                created.append(result["name"])
            elif code != 36:  # 36 = TOPIC_ALREADY_EXISTS (created by someone else meanwhile)
                error = for_code(code)
                raise BrokerError(f"cannot create topic {result['name']!r}: {error.__name__} "
                                  f"{result.get('error_message') or ''}".rstrip())
        return created
    finally:
        admin.close()

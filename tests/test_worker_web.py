"""The worker's web port serves /metrics, /healthz and /ready and nothing else (no Faust table, router or index
views), at RECSYS_WEB_BIND; /ready and recsys_consumer_lag reflect the consumer. A real `recsys worker` on the
embedded broker."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import pytest
from stream_harness import PARTITIONS, known_user, rating, serving_worker, tiny_artifact

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return tiny_artifact(tmp_path_factory)


@pytest.fixture(scope="module")
def worker(kafka_broker, artifact, tmp_path_factory):
    with serving_worker(kafka_broker, artifact[0], tmp_path_factory.mktemp("worker"),
                        RECSYS_WEB_BIND="127.0.0.1", RECSYS_LAG_INTERVAL="0.5") as w:
        yield w


def get(worker, path: str, method: str = "GET") -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{worker.port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_only_metrics_and_health_are_served(worker, artifact):
    user, _ = known_user(artifact)
    item = artifact[1].ids["item"][0]
    worker.send("ratings", rating("web-1", user, item), key=user)
    worker.wait_for("user_vectors", lambda k, v: k == user)  # the user is in the table now
    status, body = get(worker, "/metrics")
    assert status == 200 and "recsys_events_total" in body and "process_resident_memory_bytes" in body
    assert get(worker, "/healthz") == (200, "ok\n")
    for path in (f"/table/users/{user}/", f"/table/items/{item}/", "/table/users/", "/router/", "/router", "/",
                 "/graph/", "/stats/", "/assignment/", "/performance/", "/metrics/", "/no-such-page"):
        status, body = get(worker, path)
        assert status == 404, f"{path} answered {status}: {body[:200]}"
        assert user not in body
    assert get(worker, "/metrics", method="POST")[0] == 405
    assert get(worker, "/ready", method="DELETE")[0] == 405


def test_web_server_listens_on_the_bind_address_only(worker):
    listening = set()
    for line in open("/proc/net/tcp").read().splitlines()[1:]:  # noqa: SIM115
        local, state = line.split()[1], line.split()[3]
        address, port = local.split(":")
        if state == "0A" and int(port, 16) == worker.port:  # 0A: LISTEN
            listening.add(address)
    assert listening == {"0100007F"}  # 127.0.0.1, not 0.0.0.0 (00000000)


def test_ready_and_lag_reflect_the_consumer(worker):
    status, body = get(worker, "/ready")
    assert status == 200 and body.startswith("ready:"), body
    # the lag of every owned input partition, internal item-updates included, with topic and partition labels
    topics = {worker.topics["ratings"], worker.topics["users"], worker.topics["items"], worker.topics["requests"]}
    deadline = time.monotonic() + 20
    while True:
        text = worker.metrics_text()
        seen = {(line.split('topic="')[1].split('"')[0], line.split('partition="')[1].split('"')[0])
                for line in text.splitlines() if line.startswith("recsys_consumer_lag{")}
        if {t for t, _ in seen} >= topics or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert {(t, str(p)) for t in topics for p in range(PARTITIONS)} <= seen
    assert any(t.endswith("-item-updates") for t, _ in seen)
    assert worker.metric("recsys_ready") == 1.0

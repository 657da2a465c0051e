"""Retraining beside serving, against the real embedded broker (tansu): `recsys retrain --once` runs in its own
process on the same machine while a worker is kept saturated with ratings; the worker's model poller swaps the
new artifact in. Nothing is lost, the swap falls between batches, and the throughput cost is measured (run with
-s for the MEASURED line).

Saturated: the test keeps a backlog of ratings in front of the worker (sends a chunk whenever fewer than LOW are
waiting), so the rate at which the worker applies them is its capacity, before and while training runs.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from stream_harness import TINY, TS, Worker, rating
from test_stream_faults import check_every_rating_accounted_for

from stream_app.cli import main as recsys
from stream_app.core.artifacts import read_manifest
from stream_app.stream.lifecycle import read_pointer

pytestmark = pytest.mark.integration

WINDOW = 64
USERS = ITEMS = 300  # at most WINDOW ratings each: every stored window must hold all of an entity's ratings
LOW, CHUNK = 300, 300
BEFORE_SECONDS = 8.0  # saturated before the retrain starts
AFTER_SWAP = 200  # ratings sent after the swap was seen
TRAIN = {**TINY, "steps_per_round": 15, "seed": 2}  # a run of about ten seconds on one core


def retrain_args(artifacts: Path, config: dict) -> list[str]:
    """`recsys retrain --once` on the same synthetic data each time (data seed 0: the same feature schema, so a
    compatible model); the model's own seed comes with its config file (--seed would change the data too)."""
    path = artifacts.parent / f"config-{config['seed']}.json"
    path.write_text(json.dumps(config))
    return ["retrain", "--once", "--data", "synthetic", "--synthetic-users", "60", "--synthetic-items", "40",
            "--artifacts-dir", str(artifacts), "--quiet", "--config", str(path)]


def all_ratings() -> list[dict]:
    """USERS x WINDOW ratings, each with its own ts; each user and each item gets at most WINDOW of them."""
    users = [f"rbs-user-{k}" for k in range(USERS)]
    items = [f"rbs-item-{j}" for j in range(ITEMS)]
    return [rating(f"rbs-{n}", users[n % USERS], items[(n * 7 + n // USERS) % ITEMS], stars=1 + n % 5, ts=TS + n)
            for n in range(USERS * WINDOW)]


class Saturator:
    """Keeps LOW..LOW+CHUNK ratings waiting in front of the worker; samples its applied-ratings counter."""

    def __init__(self, worker: Worker, events: list[dict]):
        self.worker, self.events = worker, events
        self.series = f'recsys_events_total{{outcome="ok",topic="{worker.topics["ratings"]}"}}'
        self.base = worker.metric(self.series)
        self.sent = 0
        self.samples: list[tuple[float, float]] = []

    def step(self) -> float:
        applied = self.worker.metric(self.series) - self.base
        self.samples.append((time.monotonic(), applied))
        if self.sent - applied < LOW:
            self.send(CHUNK)
        time.sleep(0.05)
        return applied

    def send(self, n: int) -> None:
        chunk = self.events[self.sent:self.sent + n]
        assert chunk, "ran out of ratings: raise USERS and ITEMS (the worker is faster than planned)"
        for e in chunk:
            topic, key = self.worker.topics["ratings"], e["user_id"].encode()
            self.worker.producer.send(topic, value=json.dumps(e).encode(), key=key)
        self.worker.producer.flush()
        self.sent += len(chunk)

    def rate(self, start: float, end: float) -> float:
        """Ratings applied per second between two moments (the samples nearest inside them)."""
        inside = [(t, n) for t, n in self.samples if start <= t <= end]
        (t0, n0), (t1, n1) = inside[0], inside[-1]
        return (n1 - n0) / (t1 - t0)


def versions_by_partition(broker, topic: str) -> dict[int, list[str]]:
    """model_version of every message of an output topic, per partition, in offset order."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)
        out: dict[int, list[str]] = collections.defaultdict(list)
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < ends[tp] for tp in parts):
            assert time.monotonic() < deadline, f"{topic} not read to its end"
            for tp, records in consumer.poll(timeout_ms=200).items():
                out[tp.partition] += [json.loads(r.value)["model_version"] for r in records]
        return out
    finally:
        consumer.close()


def test_retrain_beside_serving_loses_nothing_and_swaps_between_batches(kafka_broker, tmp_path):
    artifacts = tmp_path / "artifacts"
    assert recsys(retrain_args(artifacts, {**TINY, "seed": 1})) == 0  # v1: what the worker starts with
    v1 = read_manifest(artifacts / read_pointer(artifacts))["model_version"]
    w = Worker(kafka_broker, artifacts, tmp_path / "worker")
    w.root.mkdir()
    w.env.update(RECSYS_WINDOW_USER=str(WINDOW), RECSYS_WINDOW_ITEM=str(WINDOW), RECSYS_MODEL_POLL_INTERVAL="0.3")
    events = all_ratings()
    trainer = None
    try:
        w.start()
        load = Saturator(w, events)
        load.send(USERS)  # warm-up: every user gets a vector of v1 (and most items)
        while load.step() < USERS:
            pass
        before = time.monotonic()
        while time.monotonic() < before + BEFORE_SECONDS:
            load.step()
        env = dict(w.env, RECSYS_TORCH_THREADS="1")  # one core for training, the other for the worker and broker
        log = tmp_path / "retrain.log"
        started = time.monotonic()
        trainer = subprocess.Popen([sys.executable, "-m", "stream_app.cli", *retrain_args(artifacts, TRAIN)],
                                   env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
        while trainer.poll() is None:
            load.step()
            assert time.monotonic() < started + 300, "retrain still running after 300 s"
        trained = time.monotonic()
        assert trainer.returncode == 0, log.read_text()
        v2 = read_manifest(artifacts / read_pointer(artifacts))["model_version"]
        assert v2 != v1
        swap = 'recsys_model_swaps_total{outcome="swapped"}'
        while w.metric(swap) < 1:
            load.step()
            assert time.monotonic() < trained + 60, f"no swap:\n{w.log_tail()}"
        swapped = time.monotonic()
        target = load.sent + AFTER_SWAP
        while load.sent < target:
            load.step()
        sent = events[:load.sent]

        counted = check_every_rating_accounted_for(w, kafka_broker, sent)  # nothing lost, nothing applied twice
        assert counted["ok"] == len(sent) and w.metric('recsys_model_swaps_total{outcome="refused"}') == 0
        assert w.metric(f'recsys_model_info{{model_version="{v2}"}}') == 1
        for side in ("user", "item"):
            # between batches: on every output partition the vectors of v1 all come before those of v2
            by_partition = versions_by_partition(kafka_broker, w.topics[f"{side}_vectors"])
            assert {v for versions in by_partition.values() for v in versions} == {v1, v2}, side
            for partition, versions in by_partition.items():
                if v2 in versions:
                    first = versions.index(v2)
                    assert set(versions[first:]) == {v2}, f"{side} partition {partition}: v1 after v2"
            for entity in {e[f"{side}_id"] for e in sent}:
                seen = [v for k, v in w.received[f"{side}_vectors"] if k == entity]
                counts = [v["n_ratings"] for v in seen]
                assert counts == sorted(counts), f"{side} {entity}: n_ratings went back: {counts}"
        last_users = {e["user_id"] for e in sent[-AFTER_SWAP:]}  # rated after the swap: their last vector is v2
        last = {k: v for k, v in w.received["user_vectors"] if k in last_users}
        assert {v["model_version"] for v in last.values()} == {v2}

        rate_before = load.rate(before, started)
        rate_during = load.rate(started, trained)
        train_line = next((x for x in log.read_text().splitlines() if x.startswith("retrain:")), "")
        pause = w.metric("recsys_model_swap_pause_seconds_sum")
        print(f"\nMEASURED retrain beside serving: {rate_before:.0f} ratings/s applied before the retrain, "
              f"{rate_during:.0f} ratings/s while it ran ({rate_during / rate_before:.0%}; "
              f"{trained - started:.1f} s, RECSYS_TORCH_THREADS=1, {len(os.sched_getaffinity(0))} CPUs); swap seen "
              f"{swapped - trained:.1f} s after the retrain exited, batches paused {pause * 1000:.1f} ms; "
              f"{len(sent)} ratings, all applied once ({counted['redelivered']:.0f} re-delivered); "
              f"{train_line.strip()}")
    finally:
        if trainer is not None and trainer.poll() is None:
            trainer.kill()
            trainer.wait(10)
        w.close()

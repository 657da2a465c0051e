"""Test harness for the streaming worker on the embedded tansu broker (shared by the integration and fault
tests): `recsys worker` as a subprocess, real Kafka clients (kafka-python) producing inputs and reading
every output topic. No mocks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from stream_app.broker import free_port

TINY = dict(n_dim=6, m_records=5, k_samples=8, hidden=24, predictor_hidden=24, rounds=2, steps_per_round=10,
            batch_size=128)
PARTITIONS = 4
MAX_EVENT_BYTES = 4096
TOP_N = 5
OUTPUTS = ("user_vectors", "item_vectors", "recommendations", "dead_letters")
INPUTS = ("ratings", "users", "items", "requests")
TS = 1_700_000_000


class Worker:
    """`recsys worker` in a subprocess, its topics, a producer and a reader of every output topic."""

    def __init__(self, broker, artifact_path: Path, root: Path, like: Worker | None = None):
        """like: another Worker of the same app (same topics and consumer group), with its own store."""
        self.broker, self.root = broker, root
        suffix = like.app_id.split("-")[-1] if like else uuid.uuid4().hex[:8]
        self.topics = {name: f"{name.replace('_', '-')}-{suffix}" for name in INPUTS + OUTPUTS}
        self.app_id = f"itest-{suffix}"
        self.env = dict(os.environ, RECSYS_BROKER_URL=broker.url, RECSYS_ARTIFACTS_DIR=str(artifact_path),
                        RECSYS_APP_ID=self.app_id, RECSYS_PARTITIONS=str(PARTITIONS),
                        RECSYS_MAX_EVENT_BYTES=str(MAX_EVENT_BYTES), RECSYS_TOP_N=str(TOP_N),
                        RECSYS_WINDOW_USER="8", RECSYS_WINDOW_ITEM="8", RECSYS_BATCH_TIMEOUT="0.02",
                        RECSYS_SESSION_TIMEOUT="2",  # tansu holds a group join for about half of it
                        RECSYS_COMMIT_STALL_TIMEOUT="5",
                        OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        for name, topic in self.topics.items():
            self.env[f"RECSYS_TOPIC_{name.upper()}"] = topic
        self.process: subprocess.Popen | None = None
        self.store = root / "store"
        self.port = 0
        self.starts = 0
        from kafka import KafkaConsumer, KafkaProducer

        self.producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
        self.consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest",
                                      enable_auto_commit=False, group_id=None)
        self.received: dict[str, list] = {name: [] for name in OUTPUTS}
        self._assigned = False

    # -- process
    def start(self, timeout: float = 60.0, alone: bool = True) -> None:
        """Start and wait for /metrics; alone: also wait until this worker owns every input partition."""
        self.starts += 1
        self.port = free_port()
        self.env["RECSYS_STORE_DIR"] = str(self.store)
        self.env["RECSYS_WEB_PORT"] = str(self.port)
        self.log = self.root / f"worker-{self.starts}.log"
        self.process = subprocess.Popen([sys.executable, "-m", "stream_app.cli", "worker", "--quiet"], env=self.env,
                                        stdout=open(self.log, "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
                                        start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # /metrics is served once table recovery is complete
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                owned = self.owned_partitions()
            except OSError:
                owned = -1
            if owned == PARTITIONS or (owned >= 0 and not alone):
                self.ensure_assigned()
                return
            time.sleep(0.2)
        raise AssertionError(f"worker not ready after {timeout} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 30.0) -> int:
        proc, self.process = self.process, None
        if proc is None:
            return 0
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            raise AssertionError(f"worker did not stop on SIGTERM within {timeout} s:\n{self.log_tail()}") from None

    def kill(self) -> None:
        """kill -9 the worker (and its process group): no shutdown, no commit, no flush."""
        proc, self.process = self.process, None
        if proc is not None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.root.glob("worker-*.log")))

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def metrics_text(self) -> str:
        # 10 s: on a loaded 2-core machine (load 10) the worker's loop answered later than 2 s mid-rebalance
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as response:
            return response.read().decode()

    def metric(self, series: str) -> float:
        """The value of one series, e.g. 'recsys_events_total{outcome="ok",topic="x"}' (0 if absent)."""
        for line in self.metrics_text().splitlines():
            if line.startswith(series + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def owned_partitions(self) -> int:
        return int(self.metric(f'recsys_assigned_partitions{{topic="{self.topics["ratings"]}"}}'))

    # -- kafka
    def ensure_assigned(self) -> None:
        if self._assigned:
            return
        from kafka import TopicPartition

        parts = [TopicPartition(self.topics[name], p) for name in OUTPUTS for p in range(PARTITIONS)]
        self.consumer.assign(parts)
        self.consumer.seek_to_beginning(*parts)
        self._assigned = True

    def send(self, input_name: str, value, key: str | bytes | None = None) -> None:
        raw = value if isinstance(value, bytes) else json.dumps(value).encode()
        if isinstance(key, str):
            key = key.encode()
        self.producer.send(self.topics[input_name], value=raw, key=key)
        self.producer.flush()

    def poll(self) -> None:
        names = {topic: name for name, topic in self.topics.items()}
        for records in self.consumer.poll(timeout_ms=100).values():
            for r in records:
                value = json.loads(r.value)
                assert "__faust" not in r.value.decode()
                self.received[names[r.topic]].append((r.key.decode(errors="replace") if r.key else None, value))

    def wait_for(self, output: str, predicate, timeout: float = 30.0, count: int = 1) -> list:
        """Messages of an output topic (key, value) matching predicate, once there are `count` of them."""
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            found = [(k, v) for k, v in self.received[output] if predicate(k, v)]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {output}; have {self.received[output][-5:]}\n"
                                     f"worker log:\n{self.log_tail()}")
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"worker died:\n{self.log_tail()}")

    def settle(self, seconds: float = 1.0) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.poll()

    def close(self) -> None:
        try:
            self.stop()
        finally:
            self.producer.close()
            self.consumer.close()


def rating(event_id, user, item, stars=4, ts=TS, **extra) -> dict:
    return {"event_id": event_id, "user_id": user, "item_id": item, "rating": stars, "ts": ts, **extra}


def wait_for_split(worker, joining, problem: str = "no rebalance", timeout: float = 60.0) -> None:
    """Until two workers of one group each own some partitions and together all of them."""
    deadline = time.monotonic() + timeout
    while not (0 < worker.owned_partitions() < PARTITIONS
               and worker.owned_partitions() + joining.owned_partitions() == PARTITIONS):
        assert time.monotonic() < deadline, f"{problem}:\n{joining.log_tail()}"
        time.sleep(0.2)


def last_vector(worker, side: str, entity: str, min_ratings: int = 0, timeout: float = 30.0) -> dict:
    found = worker.wait_for(f"{side}_vectors", lambda k, v: k == entity and v["n_ratings"] >= min_ratings,
                            timeout=timeout)
    return found[-1][1]


def known_user(artifact, k: int = 0) -> tuple[str, int]:
    rec = artifact[1]
    counts = np.bincount(rec.history.user, minlength=len(rec.ids["user"]))
    index = int(np.argsort(-counts, kind="stable")[k])
    return rec.ids["user"][index], int(counts[index])


def train_tiny(path: Path, seed: int | None = None, **over):
    """A tiny model trained on small synthetic data, saved at `path`; returns the loaded Recommender."""
    import torch

    from stream_app.core.artifacts import load_artifact, save_artifact
    from stream_app.core.config import ModelConfig
    from stream_app.core.training import Trainer
    from stream_app.data.features import FeatureSchema
    from stream_app.data.synthetic import make_synthetic

    torch.set_num_threads(1)
    data = make_synthetic(n_users=60, n_items=40, mean_ratings_per_user=12, seed=11)
    config = {**TINY, **over, **({} if seed is None else {"seed": seed})}
    rec, _ = Trainer(ModelConfig(**config), FeatureSchema.fit(data), "cpu", progress=False).fit(
        data, log=lambda *a: None)
    save_artifact(rec, path)
    return load_artifact(path)


def tiny_artifact(tmp_path_factory) -> tuple[Path, object]:
    """(path, Recommender) of a tiny model trained in a fresh temporary folder (module fixtures use it)."""
    path = tmp_path_factory.mktemp("model") / "tiny"
    return path, train_tiny(path)


@contextmanager
def serving_worker(broker, artifact_path: Path, folder: Path, **env: str) -> Iterator[Worker]:
    """A started worker serving `artifact_path` (extra RECSYS_* environment in `env`), closed on exit."""
    worker = Worker(broker, artifact_path, folder)
    worker.env.update(env)
    worker.start()
    try:
        yield worker
    finally:
        worker.close()


def tiny_recommender():
    """A tiny Recommender trained in memory on small synthetic data (the Kafka-free stream tests use it)."""
    import torch

    from stream_app.core.config import ModelConfig
    from stream_app.core.training import Trainer
    from stream_app.data.features import FeatureSchema
    from stream_app.data.synthetic import make_synthetic

    torch.set_num_threads(1)
    data = make_synthetic(n_users=60, n_items=40, mean_ratings_per_user=15, seed=3)
    model, _ = Trainer(ModelConfig(**TINY), FeatureSchema.fit(data), "cpu", progress=False).fit(
        data, log=lambda *a: None)
    return model

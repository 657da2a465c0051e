"""The chaos soak's workers and what it samples of them, from outside: `recsys worker` processes of one consumer
group (started, killed with SIGKILL, restarted on their old store) and a sampler thread that records, every
interval, each worker's input partitions, model, stall replays and RSS, and the group's committed offsets."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from procstat import cpu_s, machine_cpu_s, rss_mb  # noqa: E402 (bench/ is on sys.path when run as a script)

from stream_app.broker import free_port
from stream_app.commands.worker_process import Worker, metric_sum, read_metrics


class Slot:
    """One worker's place: its store folder outlives kills; each start is a new process (an incarnation)."""

    def __init__(self, name: str, root: Path, env: dict[str, str]):
        self.name, self.root, self.env = name, root, env
        self.root.mkdir(parents=True, exist_ok=True)
        self.worker: Worker | None = None
        self.incarnation = 0
        self.started_at = 0.0

    def start(self) -> None:
        self.incarnation += 1
        port = free_port()
        env = dict(self.env, RECSYS_STORE_DIR=str(self.root / "store"), RECSYS_WEB_PORT=str(port))
        log = self.root / f"worker-{self.incarnation}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen([sys.executable, "-m", "stream_app.cli", "worker", "--quiet"], env=env,
                                       stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        self.worker = Worker(process, log, port)
        self.started_at = time.time()

    def kill(self) -> None:
        """SIGKILL (the whole process group): no shutdown, no commit, no flush."""
        worker, self.worker = self.worker, None
        if worker is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.process.pid, signal.SIGKILL)
            worker.process.wait(10)

    def stop(self) -> None:
        worker, self.worker = self.worker, None
        if worker is not None:
            worker.stop()

    def check(self) -> None:
        """WorkerExited with the end of its log if the worker exited on its own."""
        if self.worker is not None:
            self.worker.check()

    def metrics(self) -> dict | None:
        worker = self.worker
        return None if worker is None else read_metrics(worker.web_port, timeout=1.0)

    def rss_mb(self) -> float | None:
        worker = self.worker
        return None if worker is None else rss_mb(worker.process.pid)

    def cpu_s(self) -> float | None:
        worker = self.worker
        return None if worker is None else cpu_s(worker.process.pid)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.root.glob("worker-*.log")))


def memory_mb(samples: dict | None) -> dict[str, float]:
    """Where a worker's memory is, by its own gauges (refreshed every 15 s), in MB: RocksDB memtables, block cache,
    table readers and write buffers, glibc heap in use and freed-but-kept; and its RocksDB databases (a count)."""
    mb = 1 / (1 << 20)
    return {"memtables": metric_sum(samples, "recsys_rocksdb_memory_bytes", kind="memtables") * mb,
            "block_cache": metric_sum(samples, "recsys_rocksdb_memory_bytes", kind="block_cache") * mb,
            "table_readers": metric_sum(samples, "recsys_rocksdb_memory_bytes", kind="table_readers") * mb,
            "write_buffers": metric_sum(samples, "recsys_rocksdb_memory_bytes", kind="write_buffers") * mb,
            "databases_tracked": metric_sum(samples, "recsys_rocksdb_databases", state="tracked"),
            "databases_open": metric_sum(samples, "recsys_rocksdb_databases", state="open"),
            "heap_in_use": metric_sum(samples, "recsys_heap_bytes", state="in_use") * mb,
            "heap_free": metric_sum(samples, "recsys_heap_bytes", state="free") * mb}


def model_of(samples: dict | None) -> str | None:
    """The model_version a worker serves, from its /metrics."""
    for labels, value in (samples or {}).get("recsys_model_info", ()):
        if value == 1:
            return labels.get("model_version")
    return None


class Sampler(threading.Thread):
    """Every `interval` s: per live worker its ratings partitions, model, replays (its counter since it started),
    RSS and CPU seconds; the broker's RSS and CPU, this process's and the whole machine's CPU; the group's
    committed offsets of both hops against their ends (lag). `latest` is the newest sample; `samples` all."""

    def __init__(self, bootstrap: str, group: str, topic: str, item_topic: str, partitions: int, slots: list[Slot],
                 ledger, interval: float = 1.0, broker_pid: int | None = None):
        super().__init__(daemon=True)
        from kafka import KafkaConsumer, TopicPartition

        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
        self.parts = [TopicPartition(topic, p) for p in range(partitions)]
        self.item_parts = [TopicPartition(item_topic, p) for p in range(partitions)]
        self.topic, self.slots, self.ledger, self.interval = topic, slots, ledger, interval
        self.broker_pid = broker_pid
        self.trainer_pid: int | None = None  # the retrain's process, once it runs
        self.samples: list[dict] = []
        self.latest: dict | None = None
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            started = time.monotonic()
            self.latest = self.sample()
            self.samples.append(self.latest)
            self.stopping.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def committed(self, parts) -> list[int | None]:
        out = []
        for tp in parts:  # the group's offsets, fetched without joining it
            try:
                out.append(self.consumer.committed(tp) or 0)
            except Exception:  # noqa: BLE001 (coordinator busy with a rebalance: no value this time)
                out.append(None)
        return out

    def sample(self) -> dict:
        now = time.time()
        ends = self.ledger.snapshot_ends()
        committed, item_committed = self.committed(self.parts), self.committed(self.item_parts)
        try:  # tansu counts a multi-record batch as one record here: the item lag may read a few records short
            item_ends = [self.consumer.end_offsets(self.item_parts)[tp] for tp in self.item_parts]
        except Exception:  # noqa: BLE001 (no answer this time)
            item_ends = None
        workers = {}
        for slot in self.slots:
            samples = slot.metrics()
            workers[slot.name] = None if samples is None else {
                "incarnation": slot.incarnation, "scraped_at": time.time(),
                "rss_mb": slot.rss_mb(), "cpu_s": slot.cpu_s(),
                "model": model_of(samples),
                "partitions": int(metric_sum(samples, "recsys_assigned_partitions", topic=self.topic)),
                "replays": metric_sum(samples, "recsys_partition_replays_total"),
                "memory_mb": memory_mb(samples)}
        ends = [ends.get(p, 0) for p in range(len(self.parts))]
        return {"t": now, "ends": ends, "committed": committed, "lag": lag(ends, committed),
                "item_ends": item_ends, "item_committed": item_committed, "item_lag": lag(item_ends, item_committed),
                "workers": workers, "broker_rss_mb": rss_mb(self.broker_pid), "broker_cpu_s": cpu_s(self.broker_pid),
                "trainer_cpu_s": cpu_s(self.trainer_pid), "soak_cpu_s": cpu_s(os.getpid()),
                "machine_cpu_s": machine_cpu_s()}

    def wait_for(self, condition, timeout: float, after: float = 0.0) -> float | None:
        """Seconds after `after` (a wall time) at which a sample taken after it first met condition(sample);
        None after `timeout` s."""
        seen = max(0, len(self.samples) - 5)  # a sample or two may predate this call and still count
        deadline = time.time() + timeout
        while time.time() < deadline:
            for sample in self.samples[seen:]:
                seen += 1
                if sample["t"] > after and condition(sample):
                    return sample["t"] - after
            time.sleep(0.1)
        return None

    def close(self) -> None:
        self.stopping.set()
        self.join(timeout=10)
        self.consumer.close()


def lag(ends: list[int] | None, committed: list[int | None]) -> int | None:
    """Events past the group's committed offsets, summed over partitions (None if an offset is unknown)."""
    if ends is None or None in committed:
        return None
    return sum(max(end - c, 0) for end, c in zip(ends, committed, strict=True))


def drained(sample: dict) -> bool:
    """Both hops have committed every event: the ratings (user side) and the forwards (item side)."""
    return sample["lag"] == 0 and sample["item_lag"] == 0


def caught_up(sample: dict, before: dict) -> bool:
    """Both hops have committed every event that was there at the time of the sample `before`."""
    def past(committed, ends):
        return ends is not None and None not in committed and all(
            c >= e for c, e in zip(committed, ends, strict=True))

    return past(sample["committed"], before["ends"]) and past(sample["item_committed"], before["item_ends"])


def owned(sample: dict) -> int:
    """Ratings partitions the live workers of a sample own together."""
    return sum(w["partitions"] for w in sample["workers"].values() if w)

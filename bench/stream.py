"""Streaming benchmark: the worker against a no-op Faust agent on one embedded tansu broker, plus the
fold-in and top-10 microbenchmarks.

    python bench/stream.py            # ~4-6 min on 2 busy cores
    python bench/stream.py --quick    # smaller: ~2-3 min
    python bench/stream.py --profile bench/results/stream_profile.svg   # py-spy on the rec-on worker
    python bench/stream.py --quick --kinds noop,rec-off@a9b2bca,rec-off,rec-on@a9b2bca,rec-on
                                      # the service code of an older revision side by side (before/after)

One run measures, side by side on the same broker and machine (compare the ratios, the machine is noisy):

- throughput (saturated): N ratings are produced to a fresh ratings topic, then a worker is started and
  the time from its first processed rating to the last is measured (the service: until the item side has
  also applied every rating). Workers: `noop` (a Faust app with the service's Faust settings and one
  agent that takes batches of the ratings topic and does nothing), `rec-off` and `rec-on` (the real
  `recsys worker` with RECSYS_RECOMMEND_ON_RATING off / on). Every Kafka message written per rating is
  counted afterwards by reading the run's topics (outputs, internal topic, changelogs).
- latency: then ratings are offered at fixed rates (each by a different user) and the time from the
  produce call (the event's ts) to the publish time of that user's output (the output record's timestamp,
  set by the worker's producer; recommendations for rec-on, user-vectors for rec-off) gives p50/p99, and
  the time until a consumer here sees the output is reported beside it.
- fold-in: vectors/s of Recommender.fold_in (frozen set encoder, K subsets) at batch sizes 1/16/64,
  64-rating windows, against the closed-form ALS fold-in (stream_app/baselines/als.py ALSMF).
- top-10 over the ~3.7K-item catalogue and over a synthetic 40 000-item one (trained items' vectors plus
  noise): FoldInService.recommend as served (exact scoring up to RECSYS_TOPN_EXACT_ITEMS items, two-stage
  above: core/candidates.py), the same with exact scoring, recall@10 of the served lists against the exact
  ones, and an MF dot product + argpartition.
- per worker: messages and bytes (keys + values) written per rating, by topic, and the worker's RSS after
  the drain.

The model is trained here (and cached in bench/.cache/) on synthetic data shaped like ML-1M (6040 users,
3706 items), for a few steps only with the default network sizes: quality is irrelevant, cost is not.
Results: bench/results/stream.json and stream.png.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads: one BLAS thread, as the worker

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results"
CACHE = ROOT / "bench" / ".cache"
N_USERS, N_ITEMS = 6040, 3706  # ML-1M
PARTITIONS = 4
INPUTS = ("ratings", "users", "items", "recommend-requests")  # not counted as messages written per rating
NOOP_FACTOR = 5  # the no-op drains this many times more ratings (else it is over in a fraction of a second)
# ModelConfig overrides: default network sizes (what serving costs), a few training steps (what the bench can afford)
MODEL = dict(rounds=2, steps_per_round=15, seed=0, residual_rank=32)  # every key is in the cache name
FULL = dict(ratings_per_user=20, drain=6000, loads=((100, 8.0), (500, 6.0), (1000, 4.0)), micro_repeats=30)
QUICK = dict(ratings_per_user=12, drain=2500, loads=((100, 5.0), (500, 3.0), (1000, 2.0)), micro_repeats=10)
BIG_CATALOGUE = 40_000  # items of the synthetic catalogue of the second top-10 micro


# ---------------------------------------------------------------------------------------------- artifact

def artifact(profile: dict, log=print) -> Path:
    """A tiny model trained on ML-1M-shaped synthetic data (cached by shape)."""
    from stream_app.core.artifacts import save_artifact, set_current
    from stream_app.core.config import ModelConfig
    from stream_app.core.training import Trainer
    from stream_app.data.features import FeatureSchema
    from stream_app.data.registry import load_dataset

    name = f"syn-{N_USERS}x{N_ITEMS}-r{profile['ratings_per_user']}-" + \
        "-".join(f"{k}{v}" for k, v in sorted(MODEL.items()))
    root = CACHE / "artifacts"
    if (root / name / "manifest.json").exists():
        set_current(root, name)
        return root
    import torch

    torch.set_num_threads(1)
    data = load_dataset("synthetic", n_users=N_USERS, n_items=N_ITEMS,
                        mean_ratings_per_user=profile["ratings_per_user"], seed=0)
    log(f"training a tiny model on synthetic {N_USERS} users x {N_ITEMS} items, {len(data)} ratings ...")
    started = time.perf_counter()
    trainer = Trainer(ModelConfig(**MODEL), FeatureSchema.fit(data), device="cpu", progress=False)
    rec, report = trainer.fit(data, log=lambda line: None)
    save_artifact(rec, root / name, metrics=report, data_name="synthetic-ml1m-shape", overwrite=True)
    set_current(root, name)
    log(f"  trained in {time.perf_counter() - started:.0f} s")
    return root


# ---------------------------------------------------------------------------------------------- micro

def timed(fn, repeats: int, warmup: int = 2) -> float:
    """Median seconds of one call."""
    for _ in range(warmup):
        fn()
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - started)
    return float(np.median(runs))


def micro(artifacts: Path, repeats: int) -> dict:
    from stream_app.baselines import ALSMF
    from stream_app.core.artifacts import load_artifact
    from stream_app.data.dataset import RatingData
    from stream_app.stream.service import FoldInService

    rec = load_artifact(artifacts)
    h = rec.history
    rng = np.random.default_rng(0)
    window = 64
    # fold-in of users from 64-rating windows of trained items
    sets, side, raters, stars = [], [], [], []
    for _ in range(64):
        items = rng.choice(len(rec.ids["item"]), window, replace=False)
        r = rng.integers(1, 6, window).astype(np.float32)
        sets.append(rec.records_from_ratings("user", items, r, 1.6e9 + rng.random(window) * 1e7))
        side.append(rec.features["user"][rng.integers(len(rec.ids["user"]))])
        raters.append(items)
        stars.append(r)
    side = np.stack(side)
    ours = {}
    for b in (1, 16, 64):
        sec = timed(lambda b=b: rec.fold_in("user", sets[:b], side[:b], entity_keys=list(range(b))), repeats)
        ours[b] = b / sec
    data = RatingData(name="bench", user=h.user, item=h.item, rating=h.rating, ts=h.ts,
                      user_ids=rec.ids["user"], item_ids=rec.ids["item"],
                      users=[{} for _ in rec.ids["user"]], items=[{} for _ in rec.ids["item"]], rating_scale=(1.0, 5.0))
    als = ALSMF(factors=rec.n_dim, iterations=2).fit(data)
    als_rate = {}
    for b in (1, 16, 64):
        def fold(b=b):
            for j in range(b):
                als.fold_in("user", 0, raters[j], stars[j])
        als_rate[b] = b / timed(fold, repeats)
    # top-10 over the catalogue, and over a synthetic 40 000-item one; recall@10 against exact scoring
    service = FoldInService(rec)
    users = [str(u) for u in rng.choice(rec.ids["user"], 32)]
    top10 = {"items": len(service.catalogue), **top10_micro(service, users, repeats)}
    grow_catalogue(service, BIG_CATALOGUE, rng)
    top10_big = {"items": len(service.catalogue), **top10_micro(service, users, repeats)}
    mf_users = iter(rng.integers(0, len(rec.ids["user"]), 100000))

    def mf_top():
        u = next(mf_users)
        scores = als.q @ als.p[u] + als.bi
        scores[rec.rated_items(u)] = -np.inf
        top = np.argpartition(-scores, 9)[:10]
        return top[np.argsort(-scores[top])]

    mf = timed(mf_top, repeats * 3)
    return {"foldin_vectors_per_s": {"ours": ours, "als": als_rate, "window": window,
                                     "k_samples": rec.config.k_samples, "m_records": rec.config.m_records},
            "top10_ms": {"ours": top10["ms"], "mf": mf * 1e3, "items": top10["items"], "exact": top10["exact_ms"],
                         "recall_at_10": top10["recall_at_10"], "two_stage": top10["two_stage"]},
            "top10_big_ms": {"ours": top10_big["ms"], "items": top10_big["items"], "exact": top10_big["exact_ms"],
                             "recall_at_10": top10_big["recall_at_10"], "two_stage": top10_big["two_stage"]}}


def top10_micro(service, users: list[str], repeats: int) -> dict:
    """Median ms of one user's top-10 as served (two-stage above the exact-scoring size) and with exact
    scoring of every item, and recall@10 of the served lists against the exact ones."""
    from stream_app.core.candidates import TwoStage, recall_at

    served = service.two_stage
    queries = iter(users * 1000)
    ms = timed(lambda: service.recommend(next(queries), None, 10, 1.6e9), repeats * 3) * 1e3
    lists = [service.recommend(u, None, 10, 1.6e9) for u in users]
    service.two_stage = TwoStage(exact_max=1 << 62)
    try:
        exact_ms = timed(lambda: service.recommend(next(queries), None, 10, 1.6e9), repeats) * 1e3
        exact = [service.recommend(u, None, 10, 1.6e9) for u in users]
    finally:
        service.two_stage = served
    return {"ms": ms, "exact_ms": exact_ms, "recall_at_10": recall_at(10, lists, exact),
            "two_stage": served.applies(len(service.catalogue))}


def grow_catalogue(service, size: int, rng) -> None:
    """Synthetic items up to `size`: trained items' vectors plus noise (30% of each dimension's spread),
    their side data and rating counts."""
    cat = service.catalogue
    vectors, features, counts = cat.vectors.copy(), cat.features.copy(), cat.counts.copy()
    spread = vectors.std(axis=0)
    for j, src in enumerate(rng.integers(len(vectors), size=max(size - len(vectors), 0))):
        noise = rng.normal(0, 0.3, vectors.shape[1]).astype(np.float32) * spread
        cat.upsert(f"synthetic-{j}", vectors[src] + noise, features[src], counts[src])


# ---------------------------------------------------------------------------------------------- stream

def noop_worker() -> None:
    """The no-op Faust app (run as a subprocess by this script): same Faust app class and settings, one agent that takes
    batches of the ratings topic and only counts them (served as JSON on /count)."""
    from faust.worker import Worker

    from stream_app.settings import Settings
    from stream_app.worker.delivery import FastFetchApp
    from stream_app.worker.topics import faust_config

    settings = Settings.from_env()
    config = dict(faust_config(settings), web_enabled=True, web_port=settings.web_port)  # Faust's web for /count
    app = FastFetchApp(settings.app_id, fetch_max_wait=settings.fetch_max_wait, **config)
    topic = app.topic(settings.topic_ratings, key_type=bytes, value_type=bytes, key_serializer="raw",
                      value_serializer="raw")
    count = {"events": 0}

    @app.agent(topic, name="noop")
    async def noop(stream):
        async for events in stream.take_events(settings.batch_size, within=settings.batch_timeout):
            count["events"] += len(events)

    @app.page("/count")
    async def page(web, request):
        return web.json(count)

    worker = Worker(app, loglevel="warning", quiet=True)
    worker.spinner = None  # as `recsys worker` does: Faust's spinner would turn every debug call into a record
    worker.execute_from_commandline()


def worker_topics(app_id: str) -> dict[str, str]:
    """Topics the worker names after its app id: the internal forward, the catalogue, the tables' changelogs."""
    from stream_app.settings import Settings
    from stream_app.worker.topics import catalogue_topic, internal_topic

    settings = Settings(app_id=app_id)
    return {"item-updates": internal_topic(settings), "catalogue": catalogue_topic(settings),
            **{f"{table}-changelog": f"{app_id}-{table}-changelog" for table in ("users", "items")}}  # Faust's naming


class Run:
    """One worker configuration on its own topics, app id and store."""

    def __init__(self, kind: str, broker, artifacts: Path, tmp: Path, tag: str):
        """kind: noop, rec-off or rec-on, then any number of +batch / +nobatch (RECSYS_PRODUCER_BATCHING on / off;
        default: the setting's default) or +SETTING=VALUE
        (RECSYS_SETTING=VALUE for this worker), then optionally @REV: the service code of git revision REV
        (see baseline())."""
        from stream_app.broker import free_port

        self.kind, self.broker, self.port = kind, broker, free_port()
        self.base, _, rev = kind.partition("@")
        self.base, *options = self.base.split("+")
        overrides = dict(option.split("=", 1) for option in options if "=" in option)
        source = str(ROOT) if not rev else os.pathsep.join(map(str, baseline(rev)))
        name = "-".join([self.base, *(re.sub(r"[^A-Za-z0-9]+", "_", option) for option in options)])
        self.prefix = f"{tag}-{rev}-{name}" if rev else f"{tag}-{name}"
        self.topics = {name: f"{self.prefix}-{name}" for name in
                       ("ratings", "users", "items", "recommend-requests", "user-vectors", "item-vectors",
                        "recommendations", "dead-letters")}
        self.internal_topics = worker_topics(self.prefix)
        self.env = dict(os.environ, PYTHONPATH=source, PYTHONUNBUFFERED="1",
                        RECSYS_BROKER_URL=broker.url, RECSYS_ARTIFACTS_DIR=str(artifacts),
                        RECSYS_STORE_DIR=str(tmp / f"stores-{self.prefix}"), RECSYS_WEB_PORT=str(self.port),
                        RECSYS_APP_ID=self.prefix, RECSYS_PARTITIONS=str(PARTITIONS),
                        RECSYS_RECOMMEND_ON_RATING="true" if self.base == "rec-on" else "false",
                        **({"RECSYS_PRODUCER_BATCHING": "true"} if "batch" in options else
                           {"RECSYS_PRODUCER_BATCHING": "false"} if "nobatch" in options else {}),
                        **{f"RECSYS_TOPIC_{k.upper().replace('-', '_').replace('RECOMMEND_REQUESTS', 'REQUESTS')}": v
                           for k, v in self.topics.items()},
                        **{f"RECSYS_{k.upper()}": v for k, v in overrides.items()})
        self.log_path = tmp / f"worker-{self.prefix}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--noop-worker"] if self.base == "noop" else \
            [sys.executable, "-m", "stream_app.cli", "worker", "--quiet", "--log-level", "warning"]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                            env=self.env, cwd=self.log_path.parent, start_new_session=True)

    def stop(self) -> None:
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def check(self) -> None:
        if self.process.poll() is not None:
            tail = self.log_path.read_text(errors="replace").splitlines()[-30:]
            raise RuntimeError(f"{self.kind} worker exited ({self.process.returncode}):\n" + "\n".join(tail))

    def progress(self) -> tuple[int, int]:
        """(ratings taken by the user side, ratings fully applied: item side too for the service)."""
        import urllib.request

        from stream_app.commands.worker_process import counted, read_metrics

        if self.base == "noop":
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/count", timeout=2) as response:
                    n = int(json.loads(response.read())["events"])
            except OSError:
                n = 0
            return n, n
        samples = read_metrics(self.port)
        users = int(counted(samples, self.topics["ratings"]))
        items = int(counted(samples, self.internal_topics["item-updates"]))
        return users, min(users, items)

    def batch_sizes(self) -> dict[str, float]:
        """Mean events per agent batch and entities per fold-in call so far (the worker's histograms)."""
        from stream_app.commands.worker_process import metric_sum, read_metrics

        if self.base == "noop":
            return {}
        samples = read_metrics(self.port)
        out = {}
        for name, label, values in (("recsys_batch_events", "agent", ("users", "items")),
                                    ("recsys_foldin_batch_entities", "side", ("user", "item"))):
            for v in values:
                count = metric_sum(samples, f"{name}_count", **{label: v})
                out[f"{name.split('_', 1)[1]}:{v}"] = metric_sum(samples, f"{name}_sum", **{label: v}) / count \
                    if count else float("nan")
        return out

    def rss_mb(self) -> float | None:
        """Resident memory of the worker process now (Linux)."""
        from procstat import rss_mb  # bench/ is on sys.path when run as a script

        return None if self.process is None else rss_mb(self.process.pid)

    def published(self, idle: float = 1.5) -> dict[str, tuple[int, int]]:
        """(records, bytes of keys and values) now in every topic of this run, counted by reading them all
        (tansu's end offsets count a multi-record batch as one record)."""
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(bootstrap_servers=self.broker.bootstrap, enable_auto_commit=False, group_id=None)
        try:
            # by name: another run's prefix may start with this one's (rec-off+x=1 and rec-off+x=1+y=2)
            own = {*self.topics.values(), *self.internal_topics.values()}
            topics = [t for t in consumer.topics() if t in own]
            parts = [TopicPartition(t, p) for t in topics for p in (consumer.partitions_for_topic(t) or ())]
            consumer.assign(parts)
            consumer.seek_to_beginning(*parts)
            out = {t: [0, 0] for t in topics}
            quiet_since = time.time()
            while time.time() - quiet_since < idle:
                batch = consumer.poll(timeout_ms=200, max_records=10000)
                for tp, records in batch.items():
                    out[tp.topic][0] += len(records)
                    out[tp.topic][1] += sum(len(r.key or b"") + len(r.value or b"") for r in records)
                if batch:
                    quiet_since = time.time()
            return {t[len(self.prefix) + 1:]: (n, size) for t, (n, size) in out.items()}
        finally:
            consumer.close()


def main_output(kind: str) -> str:
    """The output whose latency is reported: the top-N list with recommendations on, else the user vector."""
    return "recommendations" if kind.startswith("rec-on") else "user-vectors"


def baseline(rev: str) -> list[Path]:
    """PYTHONPATH entries that run the service code of git revision `rev` (its stream_app/, extracted once into
    bench/.cache/) with this venv, without orjson (which Faust would otherwise pick up) unless `rev` lists it."""
    commit = subprocess.run(["git", "rev-parse", "--short=10", rev], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.strip()
    tree = CACHE / f"baseline-{commit}"
    if not (tree / "stream_app").is_dir():
        tree.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", commit, "stream_app", "pyproject.toml"], cwd=ROOT,
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    paths = [tree]
    if "orjson" not in (tree / "pyproject.toml").read_text():
        stub = CACHE / "no-orjson"
        stub.mkdir(parents=True, exist_ok=True)
        (stub / "orjson.py").write_text('raise ImportError("orjson hidden: the baseline did not depend on it")\n')
        paths.insert(0, stub)
    return paths


def rating_events(rec_ids: dict, popularity: np.ndarray, n: int, rng: np.random.Generator, distinct_users: bool,
                  ts: float | None = None) -> list[dict]:
    users = rng.choice(len(rec_ids["user"]), n, replace=not distinct_users or n > len(rec_ids["user"]))
    items = rng.choice(len(rec_ids["item"]), n, p=popularity)
    stars = rng.integers(1, 6, n)
    now = time.time() if ts is None else ts
    return [{"event_id": uuid.uuid4().hex, "user_id": rec_ids["user"][u], "item_id": rec_ids["item"][i],
             "rating": int(s), "ts": now} for u, i, s in zip(users, items, stars, strict=True)]


def drain(run: Run, producer, events: list[dict], timeout: float, profile: str | None, log,
          broker_pid: int | None = None) -> dict:
    """Pre-produce the events, start the worker, time it from its first processed rating to the last; CPU time of
    the worker and of the broker over the same span (which of the two is the ceiling on these 2 cores)."""
    from procstat import cpu_s  # bench/ is on sys.path when run as a script

    for e in events:
        producer.send(run.topics["ratings"], e, key=e["user_id"])
    producer.flush()
    n = len(events)
    run.start()
    deadline = time.time() + timeout
    first = None
    spy = None
    while True:
        run.check()
        taken, done = run.progress()
        now = time.perf_counter()
        if first is None and taken > 0:
            first = (now, taken)
            cpu0 = (cpu_s(run.process.pid), cpu_s(broker_pid))
            if profile:
                spy = start_profile(run, profile, log)
        if done >= n:
            break
        if time.time() > deadline:
            raise RuntimeError(f"{run.kind}: {done}/{n} ratings after {timeout:.0f} s; see {run.log_path}")
        time.sleep(0.2)  # polling /metrics costs the worker CPU too
    if spy is not None:
        stop_profile(spy, log)
    elapsed = now - first[0]
    cpu1 = (cpu_s(run.process.pid), cpu_s(broker_pid))
    done_n = n - first[1]
    cpu_ms = {who: (b - a) * 1000 / done_n if a is not None and b is not None and done_n else None
              for who, a, b in zip(("worker", "broker"), cpu0, cpu1, strict=True)}
    rss = run.rss_mb()
    batches = run.batch_sizes()
    written = {k: v for k, v in run.published().items() if k not in INPUTS and not k.startswith("__")}
    return {"ratings": n, "first_batch": first[1], "seconds": elapsed,
            "ratings_per_s": (n - first[1]) / elapsed if elapsed > 0 else float("nan"),
            "messages": {k: c for k, (c, _) in written.items()},
            "messages_per_rating": {k: c / n for k, (c, _) in written.items()},
            "bytes_per_rating": {k: b / n for k, (_, b) in written.items()}, "worker_rss_mb": rss,
            "mean_batch": batches, "cpu_ms_per_rating": cpu_ms}


def start_profile(run: Run, out: str, log):
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    raw = str(Path(out).with_suffix(".txt"))
    log(f"  py-spy on pid {run.process.pid} -> {out} (+ collapsed stacks {raw})")
    procs = [subprocess.Popen([exe, "record", "--pid", str(run.process.pid), "-o", out, "--rate", "100",
                               "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)]
    procs.append(subprocess.Popen([exe, "record", "--pid", str(run.process.pid), "-o", raw, "--format", "raw",
                                   "--rate", "100", "--nonblocking"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.STDOUT))
    return procs


def stop_profile(procs, log) -> None:
    for p in procs:
        p.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            log("  py-spy did not stop in time")


class OutputWatcher(threading.Thread):
    """Reads output topics from their current end; per user id, the first output's publish time (the record's
    timestamp, set by the worker's producer when it sends) and when this consumer saw it.

    Latency is measured to the publish time: a consumer's own fetch wait is not the worker's (tansu holds a
    fetch for up to its max wait even when data is there, kafka-python's default being 500 ms); the arrival
    here is reported beside it, with a 10 ms fetch wait.
    """

    def __init__(self, bootstrap: str, topics: list[str]):
        super().__init__(daemon=True)
        from kafka import KafkaConsumer, TopicPartition

        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                      fetch_max_wait_ms=10)
        parts = [TopicPartition(t, p) for t in topics for p in (self.consumer.partitions_for_topic(t) or ())]
        self.consumer.assign(parts)
        self.consumer.seek_to_end(*parts)
        for tp in parts:
            self.consumer.position(tp)
        self.published: dict[str, dict[str, float]] = {t: {} for t in topics}
        self.seen: dict[str, dict[str, float]] = {t: {} for t in topics}
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            for tp, records in self.consumer.poll(timeout_ms=50).items():
                now = time.time()
                for r in records:
                    self.published[tp.topic].setdefault(r.key.decode(), r.timestamp / 1e3)
                    self.seen[tp.topic].setdefault(r.key.decode(), now)

    def close(self) -> None:
        self.stopping.set()
        self.join(timeout=5)
        self.consumer.close()


def latency(run: Run, producer, rec_ids, popularity, rate: float, duration: float, rng, log) -> dict:
    outputs = ["recommendations", "user-vectors"] if run.base == "rec-on" else ["user-vectors"]
    watcher = OutputWatcher(run.broker.bootstrap, [run.topics[t] for t in outputs])
    watcher.start()
    n = int(rate * duration)
    events = rating_events(rec_ids, popularity, n, rng, distinct_users=True)
    sent: dict[str, float] = {}
    start = time.time()
    for i, e in enumerate(events):
        due = start + i / rate
        wait = due - time.time()
        if wait > 0:
            time.sleep(wait)
        e["ts"] = time.time()
        sent[e["user_id"]] = e["ts"]
        producer.send(run.topics["ratings"], e, key=e["user_id"])
        if i % 50 == 49:
            producer.flush()
    producer.flush()
    offered = n / max(time.time() - start, 1e-9)
    # wait for the outputs: at most as long as the backlog could take at 50/s, plus 10 s
    deadline = time.time() + 10 + n / 50
    main = watcher.seen[run.topics[outputs[0]]]
    while time.time() < deadline and sum(u in main for u in sent) < n:
        run.check()
        time.sleep(0.1)
    watcher.close()
    out = {"offered_per_s": offered, "events": n}
    for t in outputs:
        published, seen = watcher.published[run.topics[t]], watcher.seen[run.topics[t]]
        out[t] = {**percentiles(published, sent), **percentiles(seen, sent, prefix="seen_")}
    return out


def percentiles(when: dict[str, float], sent: dict[str, float], prefix: str = "") -> dict:
    """p50/p99/max in ms of when[user] - sent[user] over the users with an output."""
    lat = np.array([when[u] - ts for u, ts in sent.items() if u in when]) * 1e3
    if not len(lat):
        return {f"{prefix}received": 0, f"{prefix}p50_ms": None, f"{prefix}p99_ms": None, f"{prefix}max_ms": None}
    return {f"{prefix}received": int(len(lat)), f"{prefix}p50_ms": float(np.percentile(lat, 50)),
            f"{prefix}p99_ms": float(np.percentile(lat, 99)), f"{prefix}max_ms": float(lat.max())}


def stream(artifacts: Path, profile: dict, kinds: list[str], profile_svg: str | None, profile_kind: str, log) -> dict:
    from stream_app.broker import EmbeddedBroker
    from stream_app.clients import json_producer
    from stream_app.core.artifacts import load_artifact
    from stream_app.kafka_admin import create_topics

    rec = load_artifact(artifacts)
    rec_ids = rec.ids
    popularity = np.bincount(rec.history.item, minlength=len(rec_ids["item"])).astype(np.float64) + 1.0
    popularity /= popularity.sum()
    del rec
    rng = np.random.default_rng(1)
    results = {}
    tmp = Path(tempfile.mkdtemp(prefix="recsys-bench-"))
    tag = f"b{int(time.time()) % 100000}"
    try:
        with EmbeddedBroker(log_path=tmp / "tansu.log") as broker:
            producer = json_producer(broker.bootstrap)
            try:
                for kind in kinds:
                    run = Run(kind, broker, artifacts, tmp, tag)
                    create_topics(broker.bootstrap, {run.topics["ratings"]: PARTITIONS})
                    n = profile["drain"] * (NOOP_FACTOR if run.base == "noop" else 1)
                    log(f"{kind}: {n} ratings pre-produced, draining ...")
                    events = rating_events(rec_ids, popularity, n, rng, distinct_users=False)
                    try:
                        res = {"drain": drain(run, producer, events, 600, profile_svg if kind == profile_kind else None,
                                              log, broker.pid)}
                        cpu = res["drain"]["cpu_ms_per_rating"]
                        log(f"  {res['drain']['ratings_per_s']:.0f} ratings/s "
                            f"({res['drain']['seconds']:.1f} s); messages/rating "
                            + ", ".join(f"{k} {v:.2f}" for k, v in res["drain"]["messages_per_rating"].items())
                            + f"; bytes/rating {sum(res['drain']['bytes_per_rating'].values()):.0f}"
                            + f"; worker RSS {fmt(res['drain']['worker_rss_mb'])} MB; mean batch "
                            + ", ".join(f"{k} {v:.1f}" for k, v in res["drain"]["mean_batch"].items())
                            + f"; CPU ms/rating worker {fmt(cpu['worker'], '.2f')}, broker {fmt(cpu['broker'], '.2f')}")
                        if run.base != "noop":
                            res["latency"] = {}
                            for rate, duration in profile["loads"]:
                                lat = latency(run, producer, rec_ids, popularity, rate, duration, rng, log)
                                res["latency"][str(rate)] = lat
                                main = lat[main_output(kind)]
                                log(f"  offered {lat['offered_per_s']:.0f}/s: published p50/p99 "
                                    f"{fmt(main['p50_ms'])}/{fmt(main['p99_ms'])} ms; seen by a consumer "
                                    f"{fmt(main['seen_p50_ms'])}/{fmt(main['seen_p99_ms'])} ms "
                                    f"({main['received']}/{lat['events']} outputs)")
                    finally:
                        run.stop()
                    results[kind] = res
            finally:
                producer.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return results


# ---------------------------------------------------------------------------------------------- report

def machine() -> dict:
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import torch

    return {"cpu": cpu, "cores": os.cpu_count(), "loadavg_at_start": os.getloadavg(),
            "python": platform.python_version(),
            "torch": torch.__version__, "platform": platform.platform(),
            "worker_threads": "numpy, OPENBLAS_NUM_THREADS=1 (the worker never imports torch)",
            "note": "machine shared with other jobs during the run: compare the ratios within one run"}


def git_commit() -> dict:
    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def fmt(x, spec=".0f") -> str:
    return "-" if x is None else format(x, spec)


def table(result: dict) -> str:
    lines = []
    s = result.get("stream", {})
    noop = s.get("noop", {}).get("drain", {}).get("ratings_per_s")
    if s:
        lines.append(f"{'worker':16} {'ratings/s':>10} {'x no-op':>8} {'msgs out/rating':>16} {'bytes/rating':>13} "
                     f"{'RSS MB':>7} {'CPU ms/rating w+b':>17}   event-to-publish p50/p99 ms by offered load")
        for kind, res in s.items():
            d = res["drain"]
            ratio = d["ratings_per_s"] / noop if noop else None
            outs = sum(d["messages_per_rating"].values())
            size = sum(d.get("bytes_per_rating", {}).values())
            cpu = d.get("cpu_ms_per_rating", {})
            cpu_text = f"{fmt(cpu.get('worker'), '.2f')}+{fmt(cpu.get('broker'), '.2f')}"
            lat = "  ".join(
                f"{k}/s: {fmt(v[m]['p50_ms'])}/{fmt(v[m]['p99_ms'])} ({v[m]['received']}/{v['events']})"
                for k, v in res.get("latency", {}).items()
                for m in [main_output(kind)])
            lines.append(f"{kind:16} {d['ratings_per_s']:10.0f} {fmt(ratio, '.3f'):>8} {outs:16.2f} {size:13.0f} "
                         f"{fmt(d.get('worker_rss_mb')):>7} {cpu_text:>17}   {lat}")
    m = result.get("micro")
    if m:
        f = m["foldin_vectors_per_s"]
        lines.append("fold-in vectors/s (64-rating windows): " + "  ".join(
            f"batch {b}: ours {f['ours'][b]:.0f} / ALS {f['als'][b]:.0f}" for b in f["ours"]))
        t = m["top10_ms"]
        lines.append(f"top-10 over {t['items']} items: ours {t['ours']:.2f} ms, MF dot+argpartition {t['mf']:.3f} ms")
        for t in (m["top10_ms"], m.get("top10_big_ms")):
            if t and "exact" in t:
                lines.append(f"top-10 over {t['items']} items: served {t['ours']:.2f} ms "
                             f"({'two-stage' if t['two_stage'] else 'exact'}), exact {t['exact']:.2f} ms, "
                             f"recall@10 vs exact {t['recall_at_10']:.3f}")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s, m = result.get("stream", {}), result.get("micro")
    rows = sum(len(v.get("latency", {})) for v in s.values())  # the latency panel has one row per kind and load
    fig, axes = plt.subplots(1, 2 * bool(s) + 2 * bool(m), figsize=(9 * (bool(s) + bool(m)), max(4, 0.35 * rows)),
                             squeeze=False)
    axes = list(axes[0])
    if s:
        throughput_plot(axes.pop(0), s)
        latency_plot(axes.pop(0), s)
    if m:
        micro_plots(axes.pop(0), axes.pop(0), m)
    fig.suptitle(f"{result['date']}  {result['git']['commit'][:10]}  {result['machine']['cpu']} "
                 f"({result['machine']['cores']} cores, shared)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def throughput_plot(ax, s: dict) -> None:
    kinds = list(s)[::-1]  # horizontal bars, first kind on top: long kind names stay readable
    colours = {"noop": "grey", "rec-off": "tab:blue", "rec-on": "tab:orange"}
    ax.barh(kinds, [s[k]["drain"]["ratings_per_s"] for k in kinds],
            color=[colours[k.split("@")[0].split("+")[0]] for k in kinds])
    ax.tick_params(axis="y", labelsize=7)
    ax.set_xscale("log")
    ax.set_title("saturated ratings/s per worker (log)")


def latency_plot(ax, s: dict) -> None:
    labels, p50, p99 = [], [], []
    for k in s:
        for rate, v in s[k].get("latency", {}).items():
            out = v[main_output(k)]
            labels.append(f"{k}  {rate}/s")
            p50.append(out["p50_ms"] or 0)
            p99.append(out["p99_ms"] or 0)
    y = np.arange(len(labels))[::-1]
    ax.barh(y + 0.2, p50, 0.4, label="p50")
    ax.barh(y - 0.2, p99, 0.4, label="p99")
    ax.axvline(100, color="red", lw=0.8, ls="--")
    ax.set_yticks(y, labels, fontsize=7)
    ax.set_xscale("log")
    ax.set_title("event-to-publish by offered load (ms, log)", fontsize=10)
    ax.legend(fontsize=8)


def micro_plots(foldin_ax, top10_ax, m: dict) -> None:
    f = m["foldin_vectors_per_s"]
    b = list(f["ours"])
    x = np.arange(len(b))
    foldin_ax.bar(x - 0.2, [f["ours"][k] for k in b], 0.4, label="ours (frozen encoder)")
    foldin_ax.bar(x + 0.2, [f["als"][k] for k in b], 0.4, label="ALS closed form")
    foldin_ax.set_xticks(x, [f"batch {k}" for k in b])
    foldin_ax.set_yscale("log")
    foldin_ax.set_title("fold-in vectors/s")
    foldin_ax.legend(fontsize=8)
    t = m["top10_ms"]
    top10_ax.bar(["ours", "MF dot"], [t["ours"], t["mf"]])
    top10_ax.axhline(2, color="red", lw=0.8, ls="--")
    top10_ax.set_title(f"top-10 over {t['items']} items (ms)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer ratings and shorter load phases")
    p.add_argument("--only", choices=["stream", "micro"], default=None)
    p.add_argument("--kinds", default="noop,rec-off,rec-on",
                   help="worker configurations, in order: noop, rec-off, rec-on, each optionally with +batch "
                        "(producer batching on, as on real Kafka), +SETTING=VALUE (e.g. rec-on+batch_timeout=0.01) "
                        "and @REV to run the service code of git revision REV (e.g. rec-on@a9b2bca) in the same run")
    p.add_argument("--profile", default=None, help="py-spy flame graph (SVG path) of one worker while it drains")
    p.add_argument("--profile-kind", default="rec-on", help="the worker --profile records (default rec-on)")
    p.add_argument("--out", default=str(RESULTS / "stream.json"))
    p.add_argument("--replot", action="store_true", help="only redraw the table and PNG of the --out JSON")
    p.add_argument("--noop-worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.noop_worker:
        noop_worker()
        return 0
    if args.replot:
        result = json.loads(Path(args.out).read_text())
        print(table(result))
        plot(result, Path(args.out).with_suffix(".png"))
        return 0
    profile = QUICK if args.quick else FULL

    def log(msg):
        print(msg, flush=True)

    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "git": git_commit(), "machine": machine(),
              "profile": "quick" if args.quick else "full",
              "settings": {**{k: v for k, v in profile.items() if k != "loads"},
                           "loads": [list(x) for x in profile["loads"]], "model": MODEL, "partitions": PARTITIONS,
                           "data": f"synthetic, {N_USERS} users x {N_ITEMS} items (ML-1M shape)"}}
    artifacts = artifact(profile, log)
    if args.only in (None, "micro"):
        log("microbenchmarks ...")
        result["micro"] = micro(artifacts, profile["micro_repeats"])
    if args.only in (None, "stream"):
        result["stream"] = stream(artifacts, profile, args.kinds.split(","), args.profile, args.profile_kind, log)
    print(table(result))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=float))
    plot(result, out.with_suffix(".png"))
    log(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

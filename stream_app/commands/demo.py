"""`recsys demo`: the whole product end to end on this machine, with no Docker and no download.

Starts an embedded Kafka-compatible broker (tansu) on a free port, trains a small model (on MovieLens
ml-100k when the mirror or the cache has it, else on synthetic data) into a temporary folder, starts a
stream worker (`recsys worker`), replays held-out rating events the model never saw, asks for one user's
top-10, sends a few new ratings by that user (5 stars for films of a genre it rarely watches, 1 star for
its current favourites) and shows the top-10 again: what entered, what left, how the scores moved.
Everything is stopped and removed at the end, also on Ctrl-C or error.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from stream_app.commands.common import show_progress
from stream_app.commands.demo_display import (
    ARROW,
    DEPTH,
    TOP,
    Steps,
    duration,
)
from stream_app.commands.demo_story import Story
from stream_app.commands.worker_process import Worker, counted, metric_sum, read_metrics
from stream_app.errors import RecsysError
from stream_app.settings import Settings, add_setting_flags, settings_from_args


@dataclass(frozen=True)
class Profile:
    """How big the demo is: data sizes, model hyperparameters (ModelConfig overrides), events replayed."""

    synthetic_users: int
    synthetic_items: int
    replay_ratings: int
    config: dict
    ml100k_config: dict = field(default_factory=dict)
    loved: int = 5  # new 5-star ratings
    hated: int = 3  # new 1-star ratings (of the current top items)


# Sized so that training takes about 30 s on 2 idle cores (synthetic 600x400 and ml-100k alike).
FULL = Profile(600, 400, 2000, dict(rounds=8, steps_per_round=60, k_samples=16, hidden=64, predictor_hidden=64))
QUICK = Profile(200, 150, 300, dict(rounds=4, steps_per_round=30, n_dim=16, k_samples=16, hidden=64,
                                    predictor_hidden=64, batch_size=256), loved=4, hated=2)


class DemoError(RecsysError):
    """A step of the demo failed; the message says which and why."""


def register(sub):
    p = sub.add_parser("demo", help="run everything end to end on an embedded broker (start here)",
                       description=__doc__.split(": ", 1)[1])
    p.add_argument("--quick", action="store_true", help="smaller everything (synthetic data, tiny model): for CI")
    p.add_argument("--data", default="auto", choices=["auto", "synthetic", "ml-100k"],
                   help="auto (default): ml-100k if the mirror or the cache has it (and not --quick), else synthetic")
    p.add_argument("--user", default=None, help="the user to follow (default: the most active one in the replay)")
    p.add_argument("--events", type=int, default=None, help="held-out ratings to replay (default 2000, quick 300)")
    p.add_argument("--rate", type=float, default=0.0, help="replay rate in events/s (default 0: as fast as possible)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads for training (default: torch's choice, 1 when the machine is busy)")
    p.add_argument("--timeout", type=float, default=120.0,
                   help="seconds to wait for the worker to start, and for it to process the replay")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (model, logs, stores)")
    add_setting_flags(p, "data", "device", "seed")  # its model and artifacts live in a temporary folder
    p.set_defaults(func=run)


# ---------------------------------------------------------------------------------------------- the demo

class Demo:
    def __init__(self, args, settings: Settings):
        self.args, self.base = args, settings
        self.profile = QUICK if args.quick else FULL
        self.started = time.perf_counter()
        self.tmp: Path | None = None
        self.broker = None
        self.worker: Worker | None = None
        self.producer = None
        self.settings: Settings = settings
        self.produced: Counter = Counter()  # topic -> events produced
        self.requests = 0
        self.steps = Steps(8)

    # ------------------------------------------------------------------------------------------ run
    def run(self) -> int:
        args, steps = self.args, self.steps
        data_name = self.choose_data()
        self.tmp = Path(tempfile.mkdtemp(prefix="recsys-demo-"))
        print(f"recsys demo{' --quick' if args.quick else ''}: data {data_name}, temporary folder {self.tmp}")

        with steps.step("start the embedded Kafka broker (tansu, in memory)", "broker") as out:
            self.start_broker()
            out["detail"] = f"listening on {self.broker.bootstrap}"

        with steps.step(f"train a model on {data_name}", "training") as out:
            split, rec, report = self.train(data_name)
            valid = report.get("valid_rmse_frozen") or (report["rounds"][-1].get("valid_rmse") if
                                                        report.get("rounds") else None)
            out["detail"] = (f"{len(split.train)} ratings, {split.train.n_users} users, {split.train.n_items} "
                             f"items; model {rec.model_version}" + (f", validation RMSE {valid:.3f}" if valid else "")
                             + f"; {self.threads} torch thread{'s' if self.threads > 1 else ''}")

        with steps.step("start the stream worker (recsys worker)", "worker start") as out:
            self.start_worker()
            probe_user = split.train.user_ids[int(split.train.user[0])] if len(split.train) else "1"
            reply = self.ask(probe_user, n=1, timeout=args.timeout)
            out["detail"] = f"pid {self.worker.process.pid}, answered a first request in {reply.seconds:.1f} s"

        held_out = split.test
        n_events = self.profile.replay_ratings if args.events is None else max(0, args.events)
        with steps.step(f"replay {min(n_events, len(held_out))} held-out ratings (+ side data) in time order",
                        "replay") as out:
            replayed = self.replay(held_out, data_name, n_events)
            out["detail"] = replayed.summary().removeprefix("produced ")

        with steps.step("wait for the worker to fold them in", "processing") as out:
            seconds = self.wait_processed(timeout=args.timeout)
            total = sum(self.produced[t] for t in self.input_topics())
            out["detail"] = f"{total} events in {seconds:.1f} s ({total / max(seconds, 1e-9):,.0f} events/s)"

        story = Story(split.train, self.replayed, self.settings.window_user, self.profile.loved, self.profile.hated)
        user = story.pick_user(args.user)
        with steps.step(f"ask for user {user}'s top-{TOP}", "request") as out:
            before = self.ask(user, n=DEPTH, timeout=30)
            out["detail"] = f"answered in {before.seconds * 1000:.0f} ms"
        story.print_user(user)
        print(story.table(before.items[:TOP]))

        with steps.step(f"user {user} rates {self.profile.loved + self.profile.hated} films", "new ratings") as out:
            plan = story.plan_ratings(user, before.items)
            story.print_plan(plan)
            self.send_ratings(user, plan)
            self.wait_processed(timeout=60, progress=False)
            out["detail"] = "the worker folded them in"

        with steps.step(f"ask for user {user}'s top-{TOP} again", "request") as out:
            after = self.ask(user, n=DEPTH, timeout=30)
            out["detail"] = f"answered in {after.seconds * 1000:.0f} ms"
        print(story.table(after.items[:TOP], before=before.items))
        story.print_changes(before.items, after.items, plan)

        print("summary")
        self.print_summary()
        return 0

    # ------------------------------------------------------------------------------------------ data
    def choose_data(self) -> str:
        from stream_app.data.registry import find_in_cache, find_in_mirror

        if self.args.data != "auto":
            return self.args.data
        if self.args.quick:
            return "synthetic"
        try:
            found = find_in_mirror("ml-100k", self.base) or find_in_cache("ml-100k", self.base)
        except RecsysError:
            found = None
        return "ml-100k" if found else "synthetic"

    def load_split(self, data_name: str):
        from stream_app.data.registry import load_dataset, load_split

        if data_name == "synthetic":
            data = load_dataset("synthetic", n_users=self.profile.synthetic_users,
                                n_items=self.profile.synthetic_items, seed=self.base.seed)
            return load_split("synthetic", "random", self.base, seed=self.base.seed, data=data)
        return load_split(data_name, None, self.base, seed=self.base.seed)

    # ------------------------------------------------------------------------------------------ steps
    def start_broker(self) -> None:
        from stream_app.broker import EmbeddedBroker

        self.broker = EmbeddedBroker(log_path=self.tmp / "tansu.log").start()
        self.settings = self.base.replace(broker_url=self.broker.url, artifacts_dir=str(self.tmp / "artifacts"),
                                          store_dir=str(self.tmp / "stores"))

    def train(self, data_name: str):
        import torch

        from stream_app.core.artifacts import read_manifest, save_artifact, set_current
        from stream_app.core.config import ModelConfig
        from stream_app.core.training import Trainer
        from stream_app.data.features import FeatureSchema

        self.threads = training_threads(self.args.threads)
        torch.set_num_threads(self.threads)
        split = self.load_split(data_name)
        overrides = self.profile.config if data_name == "synthetic" else {**self.profile.config,
                                                                           **self.profile.ml100k_config}
        config = ModelConfig(**{**overrides, "seed": self.base.seed})
        trainer = Trainer(config, FeatureSchema.fit(split.train), device=self.base.device, progress=show_progress())
        rec, report = trainer.fit(split.train, log=lambda line: None)
        name = f"demo-{data_name}"
        save_artifact(rec, Path(self.settings.artifacts_dir) / name, metrics=report,
                      data_name=f"{data_name}:{split.name}")
        set_current(self.settings.artifacts_dir, name)
        rec.model_version = read_manifest(Path(self.settings.artifacts_dir) / name)["model_version"]
        return split, rec, report

    def start_worker(self) -> None:
        from stream_app.broker import free_port

        port = free_port()
        self.settings = self.settings.replace(web_port=port)
        source_root = str(Path(__file__).resolve().parents[2])  # importable even when not pip-installed
        pythonpath = os.pathsep.join(p for p in (source_root, os.environ.get("PYTHONPATH", "")) if p)
        env = dict(os.environ, PYTHONPATH=pythonpath, RECSYS_BROKER_URL=self.settings.broker_url,
                   RECSYS_ARTIFACTS_DIR=self.settings.artifacts_dir, RECSYS_STORE_DIR=self.settings.store_dir,
                   RECSYS_WEB_PORT=str(port), RECSYS_SEED=str(self.settings.seed), PYTHONUNBUFFERED="1")
        log_path = self.tmp / "worker.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen([sys.executable, "-m", "stream_app.cli", "worker"], stdin=subprocess.DEVNULL,
                                       stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.tmp,
                                       start_new_session=True)
        self.worker = Worker(process, log_path, port)

    def ask(self, user: str, n: int, timeout: float):
        from stream_app.commands.recommend import NoReply, request_recommendations

        self.requests += 1
        try:
            return request_recommendations(self.settings, user, n=n, timeout=timeout, producer=self.get_producer(),
                                           check=self.worker.check)
        except NoReply:
            raise DemoError(f"the worker did not answer a request for user {user} in {timeout:g} s; the end of "
                            f"its log ({self.worker.log_path}):\n{self.worker.log_tail()}") from None

    def get_producer(self):
        from stream_app.clients import bootstrap_servers, json_producer

        if self.producer is None:
            self.producer = json_producer(bootstrap_servers(self.settings))
        return self.producer

    def input_topics(self) -> list[str]:
        s = self.settings
        return [s.topic_users, s.topic_items, s.topic_ratings]

    def replay(self, held_out, data_name: str, n_events: int):
        from stream_app.clients import ensure_topics
        from stream_app.commands.replay import dataset_label, plan_events, produce_events, topics_of

        label = dataset_label(data_name, held_out, self.settings.seed)
        events = plan_events(held_out, label, limit=n_events)
        self.replayed = [e.value for e in events if e.kind == "ratings"]
        topics = topics_of(self.settings)
        ensure_topics(self.settings, topics.values())
        stats = produce_events(self.get_producer(), events, topics, rate=self.args.rate, progress=show_progress())
        if stats.failed:
            raise DemoError(f"{stats.failed} events were not acknowledged by the broker: {stats.first_error}")
        for kind, n in stats.counts.items():
            self.produced[topics[kind]] += n
        return stats

    def internal_topic(self) -> str:
        try:
            from stream_app.worker.topics import internal_topic
        except ImportError:
            return f"{self.settings.app_id}-item-updates"
        return internal_topic(self.settings)

    def wait_processed(self, timeout: float, progress: bool | None = None) -> float:
        """Until the worker has counted every event produced so far, and the item side has taken every rating
        the user side applied (the forwarded item updates come after the user table write)."""
        from tqdm.auto import tqdm

        started = time.perf_counter()
        expected = {t: self.produced[t] for t in self.input_topics()}
        internal, ratings = self.internal_topic(), self.settings.topic_ratings
        goal = sum(expected.values())
        seen_metrics = False
        with tqdm(total=goal, unit="ev", desc="processed",
                  disable=not (show_progress() if progress is None else progress)) as bar:
            while True:
                self.worker.check()
                samples = read_metrics(self.worker.web_port)
                seen_metrics = seen_metrics or samples is not None
                done = sum(min(counted(samples, t), n) for t, n in expected.items())
                bar.update(int(done) - bar.n)
                applied = metric_sum(samples, "recsys_events_total", topic=ratings, outcome="ok")
                if samples is not None and done >= goal and counted(samples, internal) >= applied:
                    return time.perf_counter() - started
                if time.perf_counter() - started > timeout:
                    why = (f"{int(done)} of {goal} events counted" if seen_metrics
                           else f"its /metrics on port {self.worker.web_port} never answered")
                    raise DemoError(f"the worker did not process the events in {timeout:g} s ({why}); the end of "
                                    f"its log ({self.worker.log_path}):\n{self.worker.log_tail()}")
                time.sleep(0.25)

    def send_ratings(self, user: str, plan: dict[str, float]) -> None:
        producer, topic = self.get_producer(), self.settings.topic_ratings
        run_id, now = uuid.uuid4().hex[:8], int(time.time())
        for k, (item_id, stars) in enumerate(plan.items()):
            ts = now + k
            producer.send(topic, key=user, value={"event_id": f"demo-{run_id}:r:{user}:{item_id}:{ts}",
                                                  "user_id": user, "item_id": item_id, "rating": int(stars), "ts": ts})
        producer.flush()
        self.produced[topic] += len(plan)

    def print_summary(self) -> None:
        samples = read_metrics(self.worker.web_port)
        topics = self.settings
        produced = ", ".join(f"{self.produced[t]} {t}" for t in self.input_topics())
        print(f"      events produced: {produced}; {self.requests} recommendation requests")
        total = time.perf_counter() - self.started
        timings = ", ".join(f"{short} {duration(t)}" for short, t in self.steps.timings)
        print(f"      wall time so far {duration(total)}: {timings}")
        if samples is None:
            print("      (the worker's /metrics did not answer)")
            return
        outcomes = {o: int(metric_sum(samples, "recsys_events_total", outcome=o))
                    for o in ("ok", "duplicate", "dead_letter", "rekeyed")}
        published = {t: int(metric_sum(samples, "recsys_published_total", topic=t))
                     for t in (topics.topic_user_vectors, topics.topic_item_vectors, topics.topic_recommendations,
                               topics.topic_dead_letters)}
        print("      worker /metrics: input events " + ", ".join(f"{k} {v}" for k, v in outcomes.items())
              + "; published " + ", ".join(f"{v} {k}" for k, v in published.items()))
        calls = metric_sum(samples, "recsys_foldin_batch_seconds_count")
        if calls:
            mean = metric_sum(samples, "recsys_foldin_batch_seconds_sum") / calls
            entities = metric_sum(samples, "recsys_foldin_batch_entities_sum") / calls
            line = f"      fold-in: {int(calls)} batched calls, {entities:.1f} entities and {mean * 1000:.0f} ms each"
            n_lat = metric_sum(samples, "recsys_event_to_publish_seconds_count")
            if n_lat:
                lat = metric_sum(samples, "recsys_event_to_publish_seconds_sum") / n_lat
                line += f"; event {ARROW} published result {lat * 1000:.0f} ms on average"
            print(line)

    # ------------------------------------------------------------------------------------------ cleanup
    def close(self) -> None:
        notes = []
        if self.producer is not None:
            with contextlib.suppress(Exception):
                self.producer.close(timeout=5)
        if self.worker is not None:
            code = self.worker.stop()
            notes.append(f"worker stopped (exit code {code})")
        if self.broker is not None:
            self.broker.stop()
            notes.append("broker stopped")
        if self.tmp is not None:
            if self.args.keep:
                notes.append(f"kept {self.tmp}")
            else:
                shutil.rmtree(self.tmp, ignore_errors=True)
                notes.append("temporary folder removed")
        if notes:
            print(f"shut down: {', '.join(notes)} (total {duration(time.perf_counter() - self.started)})", flush=True)


def training_threads(requested: int | None) -> int:
    """--threads, else torch's default, but 1 on a busy machine: several torch threads competing for busy
    cores are several times slower than one."""
    if requested:
        return max(1, requested)
    import torch

    cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0] > cores / 2
    except OSError:
        busy = False
    return 1 if busy else torch.get_num_threads()


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def run(args) -> int:
    settings = settings_from_args(args)
    demo = Demo(args, settings)
    previous = None
    with contextlib.suppress(ValueError):  # not the main thread: no handler
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)  # a SIGTERM cleans up like Ctrl-C
    try:
        return demo.run()
    except KeyboardInterrupt:
        print("\ninterrupted: shutting down", file=sys.stderr, flush=True)
        raise
    finally:
        try:
            demo.close()
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

"""Chaos soak: 3 workers of one consumer group on the embedded broker, ratings offered at about half of the
measured capacity, a random worker killed with SIGKILL every 60-120 s and restarted, one retrain beside serving
whose model is swapped in midway; at the end, every rating must be in the final state exactly once.

    python bench/soak.py                                   # 20 minutes of load (>= 10 kills); ~30 min in all
    python bench/soak.py --minutes 2 --kill-every 30 45 --probe 800 --retrain-steps 30 --warmup 20
                                                           # the CI variant (tests/test_soak.py); ~4 min

Loopback only, bounded in time and count. What it checks and measures: docs/benchmarks.md (Chaos soak).
Writes --out (JSON) and the same name .png (lag, rates, RSS over time with kill and swap markers).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from soak_cluster import Sampler, Slot, caught_up, drained, owned  # noqa: E402 (bench/ is on sys.path when run as a script)
from soak_ledger import Ledger, Published, RatingSource, check_side, check_swap, publish_latency  # noqa: E402
from soak_report import plot, summarize, table  # noqa: E402

APP = "soak"
TOPICS = ("ratings", "users", "items", "recommend-requests", "user-vectors", "item-vectors", "recommendations",
          "dead-letters")  # the default names: the broker is the soak's own
MODEL = dict(n_dim=6, m_records=5, k_samples=8, hidden=24, predictor_hidden=24, batch_size=128, rounds=2)
OUTPUT_WAIT = 120.0  # reading the outputs back stops after this long without a new message (something is missing)
PROBE_SECONDS = 60.0  # the capacity probe's longest wait: bounded even on a crowded machine
DATA = ["--data", "synthetic", "--synthetic-users", "200", "--synthetic-items", "100"]


def recsys(*args: str) -> list[str]:
    return [sys.executable, "-m", "stream_app.cli", *args]


def train_command(steps: int, retrain: bool) -> list[str]:
    """`recsys train` (the first model) or `recsys retrain --once` (the swap): same data, schema and N."""
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in MODEL.items()]
    head = ["retrain", "--once"] if retrain else ["train"]
    return recsys(*head, *DATA, *flags, f"--steps-per-round={steps}", "--choose-on-validation=false", "--quiet")


def train_seconds(work: Path) -> float | None:
    """The training time `recsys retrain` reported (its process also loads data, evaluates and saves)."""
    match = re.search(r"trained in (\d+) s", (work / "retrain.log").read_text(errors="replace"))
    return float(match.group(1)) if match else None


def served_version(artifacts: Path) -> str:
    from stream_app.core.artifacts import read_manifest, resolve_artifact

    return read_manifest(resolve_artifact(artifacts))["model_version"]


class Soak:
    def __init__(self, args, broker, work: Path):
        from stream_app.clients import json_producer
        from stream_app.settings import Settings
        from stream_app.worker.topics import internal_topic

        self.args, self.broker, self.work = args, broker, work
        self.rng = random.Random(args.seed)
        self.artifacts = work / "artifacts"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")}  # nothing from the shell
        self.env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1",
                        RECSYS_BROKER_URL=broker.url, RECSYS_ARTIFACTS_DIR=str(self.artifacts), RECSYS_APP_ID=APP,
                        RECSYS_PARTITIONS=str(args.partitions), RECSYS_WEB_BIND="127.0.0.1",
                        RECSYS_MODEL_POLL_INTERVAL="2", **dict(kv.split("=", 1) for kv in args.worker_env))
        self.settings = Settings.from_env(self.env)
        self.item_topic = internal_topic(self.settings)
        self.slots = [Slot(f"w{k}", work / f"w{k}", self.env) for k in range(args.workers)]
        self.ledger = Ledger()
        self.source = RatingSource(args.seed, args.users, args.items, args.resend)
        self.producer = json_producer(broker.bootstrap)
        self.sampler: Sampler | None = None
        self.trainer: subprocess.Popen | None = None
        self.result: dict = {"kills": [], "swap": {}, "phases": {}}

    # -- set-up
    def setup(self) -> None:
        from stream_app.clients import ensure_topics

        started = time.time()
        subprocess.run(train_command(10, retrain=False), env=self.env, check=True, stdout=subprocess.DEVNULL)
        self.result["swap"]["old_version"] = served_version(self.artifacts)
        self.log(f"first model trained in {time.time() - started:.0f} s: {self.result['swap']['old_version']}")
        # item-updates too: the sampler reads it before a worker made it, and reading auto-creates it (4 partitions)
        ensure_topics(self.settings, (*TOPICS, self.item_topic))
        for slot in self.slots:
            slot.start()
        self.sampler = Sampler(self.broker.bootstrap, APP, "ratings", self.item_topic, self.args.partitions,
                               self.slots, self.ledger, self.args.sample_interval, self.broker.pid)
        self.sampler.start()
        ready = self.sampler.wait_for(lambda s: owned(s) == self.args.partitions and all(s["workers"].values()),
                                      timeout=180)
        self.check_workers()
        if ready is None:
            raise RuntimeError("the workers did not serve every partition within 180 s")
        shares = {name: w["partitions"] for name, w in self.sampler.latest["workers"].items()}
        self.log(f"{len(self.slots)} workers serving after {time.time() - started:.0f} s; ratings partitions {shares}")

    def check_workers(self) -> None:
        for slot in self.slots:
            slot.check()

    # -- load
    def send(self, resend: bool = True) -> None:
        event, again = self.source.next(resend)
        future = self.producer.send("ratings", event, key=event["user_id"])
        future.add_callback(self.ledger.acked)
        future.add_errback(self.ledger.failed)
        self.ledger.record(event, again)

    def probe(self) -> float:
        """Ratings/s the group sustains: a burst produced at once, counted by the item side (the last hop); the rate
        is taken over its second half (windows fill up and cost more: a fresh state flatters), for at most
        PROBE_SECONDS. The rest of the burst drains before the load starts."""
        from stream_app.commands.worker_process import counted

        n, started = self.args.probe, time.time()
        for _ in range(n):
            self.send(resend=False)
        self.producer.flush()
        done, half = 0.0, None
        while done < n and time.time() < started + PROBE_SECONDS:
            time.sleep(0.5)
            self.check_workers()
            done = sum(counted(slot.metrics(), self.item_topic) for slot in self.slots)
            if half is None and done >= n / 2:
                half = (time.time(), done)
        now = time.time()
        since, base = half if half is not None and now - half[0] > 5 else (started, 0.0)
        rest = self.sampler.wait_for(drained, self.args.drain_timeout, after=now)
        self.result["probe"] = {"ratings": n, "seconds": now - started, "counted": done,
                                "measured_from_s": since - started, "rest_drained_s": rest}
        return (done - base) / (now - since)

    def offer(self, rate: float, until: float) -> threading.Thread:
        def run():
            start, k = time.time(), 0
            while True:
                due = start + k / rate
                if due >= until:
                    break
                time.sleep(max(0.0, due - time.time()))
                self.send()
                k += 1
            self.producer.flush()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    # -- chaos
    def kill_and_recover(self, slot: Slot) -> dict:
        """SIGKILL one worker; time the takeover (survivors own every partition), the catch-up (the group
        committed everything produced before the kill), then restart it on its old store and time its rejoin."""
        parts = self.args.partitions
        latest = self.sampler.latest
        before = (latest["workers"].get(slot.name) or {}).get("partitions")
        at = time.time()
        slot.kill()
        moved = self.sampler.wait_for(lambda s: owned(s) == parts, 120, after=at)
        caught = self.sampler.wait_for(lambda s: caught_up(s, latest), 180, after=at)
        slot.start()
        restarted = time.time()
        # Faust's sticky assignment may leave the newcomer only standbys: rejoined = serving, all partitions owned
        rejoined = self.sampler.wait_for(lambda s: owned(s) == parts and s["workers"].get(slot.name), 180,
                                         after=restarted)
        got = (self.sampler.latest["workers"].get(slot.name) or {}).get("partitions")
        kill = {"t": at, "worker": slot.name, "partitions": before, "moved_s": moved, "caught_up_s": caught,
                "restarted_s": restarted - at, "rejoined_s": rejoined, "partitions_after": got}
        self.log(f"killed {slot.name} (owned {before}): partitions moved {fmt(moved)} s, caught up {fmt(caught)}"
                 f" s; restarted, serving {fmt(rejoined)} s later with {got} partitions")
        return kill

    def victim(self) -> Slot:
        """A random worker that owns ratings partitions (a kill is then a takeover), never the first one: it lives
        through the whole soak, so its RSS shows any growth that restarts would hide."""
        latest = self.sampler.latest["workers"]
        owners = [slot for slot in self.slots[1:] if (latest.get(slot.name) or {}).get("partitions")]
        return self.rng.choice(owners or self.slots[1:])

    def chaos(self, slot: Slot) -> threading.Thread:
        """kill_and_recover in a thread: the soak goes on (and the retrain starts on time) while it waits."""
        thread = threading.Thread(target=lambda: self.result["kills"].append(self.kill_and_recover(slot)),
                                  daemon=True)
        thread.start()
        return thread

    def retrain(self) -> None:
        self.log("retraining beside the workers ...")
        self.result["swap"]["retrain_started"] = time.time()
        with open(self.work / "retrain.log", "wb") as log:
            self.trainer = subprocess.Popen(train_command(self.args.retrain_steps, retrain=True), env=self.env,
                                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.sampler.trainer_pid = self.trainer.pid

    def follow_swap(self) -> bool:
        """Note when the retrain ends and when every worker serves its model; True while it trains."""
        swap, trainer = self.result["swap"], self.trainer
        if trainer is None:
            return False
        if "retrain_ended" not in swap:
            if trainer.poll() is None:
                return True
            now = time.time()
            swap.update(retrain_ended=now, retrain_rc=trainer.returncode, train_seconds=train_seconds(self.work))
            swap["new_version"] = served_version(self.artifacts) if trainer.returncode == 0 else None
            self.log(f"retrain exited {trainer.returncode} after {now - swap['retrain_started']:.0f} s")
        latest = self.sampler.latest["workers"].values()
        if swap.get("new_version") and "swapped_at" not in swap and all(
                w and w["model"] == swap["new_version"] for w in latest):
            # the last worker's scrape, not the sample's start: a worker may swap while the sample is taken
            swap["swapped_at"] = max(w["scraped_at"] for w in latest)
            self.log(f"every worker serves {swap['new_version']}")
        return False

    def run(self) -> None:
        a = self.args
        capacity = None if a.rate else self.probe()
        rate = a.rate or capacity * a.load
        self.result.update(capacity_per_s=capacity, rate_per_s=rate)
        self.log(f"capacity {fmt(capacity)} ratings/s; offering {rate:.0f}/s for {a.minutes:g} min")
        start = time.time()
        end, middle = start + a.minutes * 60, start + a.minutes * 30
        self.result["phases"] = {"load_start": start, "load_end": end}
        offer = self.offer(rate, end)
        killer = None
        next_kill = start + self.rng.uniform(*a.kill_every)
        while time.time() < end:
            self.check_workers()
            now = time.time()
            if self.trainer is None and now >= middle:
                self.retrain()
            training = self.follow_swap()
            busy = killer is not None and killer.is_alive()
            if now >= next_kill and not training and not busy:  # no kill while training: its cost stands alone
                killer = self.chaos(self.victim())
                next_kill = now + self.rng.uniform(*a.kill_every)
            time.sleep(0.2)
        offer.join()
        if self.follow_swap():
            self.log("the retrain was still running when the load ended: stopped, no swap under load")
            self.trainer.kill()
        if killer is not None:
            killer.join()
        done = self.sampler.wait_for(drained, a.drain_timeout, after=end)
        self.result["phases"]["drained_s"] = done
        self.log(f"offered {self.ledger.ratings} ratings (+{self.ledger.resent} re-sent); both hops drained "
                 f"{fmt(done)} s after the load ended")

    # -- the final state
    def read_outputs(self) -> dict[str, list[Published]]:
        """Every user-vectors and item-vectors message, until each entity's count is reached (or no progress)."""
        from stream_app.clients import TopicReader

        want = {"user": {k: len(v) for k, v in self.ledger.user_ts.items()},
                "item": {k: len(v) for k, v in self.ledger.item_ts.items()}}
        out: dict[str, list[Published]] = {"user": [], "item": []}
        most: dict[str, dict[str, int]] = {"user": {}, "item": {}}
        missing = sum(map(len, want.values()))
        with TopicReader(self.broker.bootstrap, ["user-vectors", "item-vectors"]) as reader:
            progress = time.time()
            while missing and time.time() - progress < OUTPUT_WAIT:  # the pipeline drained before this
                for r in reader.poll(0.5):
                    side = r.topic.split("-")[0]
                    n = r.value["n_ratings"]
                    out[side].append(Published(r.key, n, r.value["model_version"], r.timestamp / 1000))
                    old = most[side].get(r.key, 0)
                    if old < want[side].get(r.key, 0) <= n:
                        missing -= 1
                    most[side][r.key] = max(old, n)
                    progress = time.time()
            for _ in range(4):  # republished messages that came after the counts were reached
                for r in reader.poll(0.5):
                    out[r.topic.split("-")[0]].append(Published(r.key, r.value["n_ratings"], r.value["model_version"],
                                                                 r.timestamp / 1000))
        return out

    def verify(self) -> None:
        from soak_trace import trace_items

        from stream_app.clients import TopicReader, read_table

        published = self.read_outputs()
        for slot in self.slots:
            slot.stop()
        self.sampler.close()
        window = {"user": self.settings.window_user, "item": self.settings.window_item}
        expected = {"user": self.ledger.user_ts, "item": self.ledger.item_ts}
        checks = {}
        for side in ("user", "item"):
            table_rows = read_table(self.broker.bootstrap, f"{APP}-{side}s-changelog", timeout=900)
            checks[side] = check_side(side, expected[side], self.ledger.pair, published[side], table_rows,
                                      window[side])
        wrong = [key for key, *_ in checks["item"]["examples"].get("table_count", [])]
        try:  # a diagnosis: its own failure must not cost the run's result
            checks["item"]["trace"] = trace_items(self.broker.bootstrap, APP, wrong, expected["item"],
                                                  self.sampler.latest["committed"])
        except Exception as exc:  # noqa: BLE001
            checks["item"]["trace"] = {"error": repr(exc)}
        swap = self.result["swap"]
        checks["swap"] = {side: check_swap(expected[side], published[side], swap.get("new_version"),
                                           swap.get("swapped_at")) for side in ("user", "item")}
        with TopicReader(self.broker.bootstrap, "dead-letters") as reader:
            checks["dead_letters"] = len(reader.read_available(30))
        checks["send_errors"] = self.ledger.send_errors
        self.result["checks"] = checks
        self.result["latency"] = publish_latency(expected["user"], published["user"])  # reduced by summarize
        self.result["resent"] = self.ledger.resent
        self.result["windows_full_at"] = self.ledger.windows_full_at(window["user"], window["item"])
        self.result["logs"] = {slot.name: slot.logs() for slot in self.slots}

    def close(self) -> None:
        if self.trainer is not None and self.trainer.poll() is None:
            self.trainer.kill()
            self.trainer.wait()
        for slot in self.slots:
            slot.kill()
        if self.sampler is not None and self.sampler.is_alive():
            self.sampler.close()
        self.producer.close()

    @staticmethod
    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def fmt(x, spec=".1f") -> str:
    return "-" if x is None else format(x, spec)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=20.0, help="how long ratings are offered (default 20)")
    p.add_argument("--kill-every", type=float, nargs=2, default=(60.0, 120.0), metavar=("MIN", "MAX"),
                   help="seconds between two kills, drawn uniformly (default 60 120)")
    p.add_argument("--rate", type=float, default=None,
                   help="ratings/s to offer (default: --load x the probed capacity)")
    p.add_argument("--load", type=float, default=0.5, help="fraction of the probed capacity to offer (default 0.5)")
    p.add_argument("--probe", type=int, default=4000, help="ratings of the capacity probe (default 4000)")
    p.add_argument("--users", type=int, default=300)
    p.add_argument("--items", type=int, default=100)
    p.add_argument("--resend", type=float, default=0.02, help="fraction of sends that re-send a recent rating")
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--partitions", type=int, default=6,
                   help="partitions per topic (default 6: two per worker, also after a restart; Faust's sticky "
                        "assignment leaves a restarted worker none when some worker would own fewer than the rest)")
    p.add_argument("--retrain-steps", type=int, default=400, help="training steps per round of the retrain (2 rounds)")
    p.add_argument("--warmup", type=float, default=120.0,
                   help="seconds after the load starts (or a worker does) before its RSS growth counts (default 120)")
    p.add_argument("--sample-interval", type=float, default=1.0)
    p.add_argument("--drain-timeout", type=float, default=900.0,
                   help="longest wait for the pipeline to drain after the load, and for outputs (default 900)")
    p.add_argument("--worker-env", action="append", default=[], metavar="RECSYS_X=V", help="worker setting (repeat)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "issue15" / "soak.json"))
    p.add_argument("--keep", default=None, help="keep the work folder (logs, stores) here instead of a temporary one")
    p.add_argument("--replot", action="store_true", help="only redraw the table and PNG of the --out JSON")
    args = p.parse_args()
    # SIGTERM (kill, pkill) runs the cleanup too; without it the soak's workers and broker outlived it
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    out = Path(args.out)
    if args.replot:
        result = json.loads(out.read_text())
    else:
        result = soak(args)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1, default=float))
    print(table(result))
    plot(result, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0 if result["ok"] else 1


def soak(args) -> dict:
    from stream_app.broker import EmbeddedBroker

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="recsys-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        with EmbeddedBroker(log_path=work / "tansu.log") as broker:
            run = Soak(args, broker, work)
            try:
                run.setup()
                run.run()
                run.verify()
            finally:
                run.close()
        result = summarize(run.result, run.sampler.samples, vars(args), ROOT)
    except BaseException:
        print(f"soak failed; its work folder (worker logs, stores) is kept: {work}", file=sys.stderr, flush=True)
        raise
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return result


if __name__ == "__main__":
    sys.exit(main())

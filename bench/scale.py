"""Scale benchmark (issue 12, seed 003): memory and time of training and serving as the data grows.

    python bench/scale.py [--sizes 6040x3706,50000x10000,200000x40000] [--steps 40] [--quick]

For each size (synthetic data, about 40 ratings per user), in a child process of its own so that
its peak memory is its own (an address-space cap, --mem-cap-gb, kills only that child):
- generation: seconds and peak RSS;
- our model (default ModelConfig, one CPU thread): `--steps` gradient steps (after 2 untimed) are timed and seconds
  per epoch projected from them (an epoch = ceil(eligible ratings / batch size) steps, which is
  what epochs_per_round=1 trains per round); one refinement round (both sides) timed in full;
  fold-in vectors/s over --foldin-sample users and items (fold_in_dataset, as freezing does; the
  freeze of the whole model is projected from it: every entity folded in twice; the full run, default
  rounds of one epoch + refinement each then the freeze, is projected too); top-10 latency
  over the whole catalogue (Recommender.recommend_for, median of --topn-users users); peak RSS of
  the process (data included) and per rating;
- baselines, each in its own child: ALS-MF (one sweep timed, the 15-sweep fit projected; top-10 by
  the MF dot product over the catalogue) and I-AutoRec (one epoch over the ratings of a sample of
  items, all users: its network is n_users wide; the epoch projected to every item).

Numbers are wall-clock on a shared machine: the load average is recorded beside them. Writes
bench/results/scale.json and scale.png (peak bytes per rating, seconds per epoch).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZES = "6040x3706,50000x10000,200000x40000"
QUICK_SIZES = "300x200,600x300"
RESULTS = ROOT / "bench" / "results"
ALS_SWEEPS = 15  # ALSMF's default iterations
WARMUP_STEPS = 2  # untimed steps before the timed ones


# ---- memory ------------------------------------------------------------------------------------
def reset_peak() -> None:
    """Restart the kernel's peak-RSS counter of this process (VmHWM), so a phase reads its own peak."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_mib() -> float:
    """Peak RSS (MiB) since the last reset_peak (VmHWM), or of the whole process where /proc lacks it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def process_peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---- the measurements, each run inside a child ---------------------------------------------------
def generate(n_users: int, n_items: int, seed: int):
    from stream_app.data.synthetic import make_synthetic

    reset_peak()
    started = time.perf_counter()
    data = make_synthetic(n_users=n_users, n_items=n_items, seed=seed)
    return data, {"ratings": len(data), "seconds": time.perf_counter() - started, "peak_mib": peak_mib()}


def measure_ours(n_users: int, n_items: int, args) -> dict:
    import torch
    from tqdm.auto import tqdm

    from stream_app.core.bulk import fold_in_dataset
    from stream_app.core.config import ModelConfig
    from stream_app.core.foldin import SIDES
    from stream_app.core.freezing import frozen_recommender
    from stream_app.core.training import Trainer
    from stream_app.data.features import FeatureSchema

    data, gen = generate(n_users, n_items, args.seed)
    out = {"generate": gen}
    cfg = ModelConfig(rounds=1, seed=args.seed, **(QUICK_MODEL if args.quick else {}))
    trainer = Trainer(cfg, FeatureSchema.fit(data), "cpu", progress=False)
    reset_peak()
    started = time.perf_counter()
    _, _, td, state, eligible = trainer._prepare(data)
    out["prepare_seconds"] = time.perf_counter() - started
    steps_per_epoch = trainer.steps_per_round
    records = {side: td.records(side, state.tables) for side in SIDES}
    trainer.steps_per_round = WARMUP_STEPS  # first steps pay one-off costs (allocator, lazy init)
    trainer._train_round(td, records, eligible, tqdm(disable=True))
    trainer.steps_per_round = args.steps
    started = time.perf_counter()
    trainer._train_round(td, records, eligible, tqdm(disable=True))
    step_seconds = (time.perf_counter() - started) / args.steps
    started = time.perf_counter()
    for side in SIDES:
        trainer.refiner.refine(td, side, records[side], state.tables, trainer.loo, trainer._needs_loo())
    refine_seconds = time.perf_counter() - started
    out["train"] = {"eligible_ratings": len(eligible), "batch_size": cfg.batch_size,
                    "steps_per_epoch": steps_per_epoch, "steps_timed": args.steps, "seconds_per_step": step_seconds,
                    "seconds_per_epoch": step_seconds * steps_per_epoch, "epoch_projected": True,
                    "refinement_seconds": refine_seconds, "peak_mib": peak_mib(),
                    # a step samples subsets with [batch, train_k, widest group in the batch] random keys
                    "widest_group": {side: int(td.groups[side].count.max()) for side in SIDES}}
    del records
    rec = frozen_recommender(trainer.model, trainer.schema, data, td, state.tables)
    out["foldin"] = {side: foldin_rate(rec, data, side, args.foldin_sample, fold_in_dataset) for side in SIDES}
    n_entities = n_users + n_items
    per_second = {side: out["foldin"][side]["vectors_per_second"] for side in SIDES}
    out["foldin"]["freeze_seconds_projected"] = 2 * (n_users / per_second["user"] + n_items / per_second["item"])
    out["foldin"]["entities"] = n_entities
    rec.history = _history(data)
    out["top10"] = topn_latency(lambda u: rec.recommend_for(u, 10), n_users, args.topn_users)
    rounds = ModelConfig().rounds
    out["full_run_projected"] = {
        "rounds": rounds, "epochs_per_round": ModelConfig().epochs_per_round,
        "seconds": (rounds * (out["train"]["seconds_per_epoch"] + refine_seconds)
                    + out["foldin"]["freeze_seconds_projected"])}
    out["peak_mib"] = process_peak_mib()
    out["threads"] = torch.get_num_threads()
    return out


QUICK_MODEL = dict(n_dim=16, k_samples=16, hidden=64, predictor_hidden=64)


def _history(data):
    from stream_app.core.foldin import History

    return History(data.user, data.item, data.rating, data.ts)


def foldin_rate(rec, data, side: str, sample: int, fold_in_dataset) -> dict:
    """Fold-in vectors/s over the first `sample` entities of `side` (all their ratings)."""
    entity = data.user if side == "user" else data.item
    n = min(sample, rec.vectors[side].shape[0])
    part = data.subset(entity < n)
    started = time.perf_counter()
    fold_in_dataset(rec, part, side, prior=0.0)
    seconds = time.perf_counter() - started
    return {"entities": n, "ratings": len(part), "seconds": seconds, "vectors_per_second": n / seconds}


def topn_latency(recommend, n_users: int, users: int) -> dict:
    """Median and max milliseconds of one top-10 list over the catalogue (after one warm-up call)."""
    picks = np.random.default_rng(0).choice(n_users, size=min(users, n_users), replace=False)
    recommend(int(picks[0]))  # warm-up: builds the per-user rated-items index once
    times = []
    for u in picks:
        started = time.perf_counter()
        recommend(int(u))
        times.append(1000 * (time.perf_counter() - started))
    return {"users": len(times), "median_ms": float(np.median(times)), "max_ms": float(np.max(times))}


def measure_als(n_users: int, n_items: int, args) -> dict:
    from stream_app.baselines import ALSMF  # moves to stream_app.baselines.als

    data, gen = generate(n_users, n_items, args.seed)
    reset_peak()
    model = ALSMF(iterations=1, seed=args.seed).fit(data)
    sweep = model.train_seconds
    out = {"generate": gen, "seconds_per_sweep": sweep, "sweeps": ALS_SWEEPS,
           "fit_seconds_projected": sweep * ALS_SWEEPS, "seconds_per_epoch": sweep, "train_peak_mib": peak_mib()}

    def top10(u: int) -> np.ndarray:
        scores = model.q @ model.p[u] + model.bi
        top = np.argpartition(-scores, 9)[:10]
        return top[np.argsort(-scores[top])]

    out["top10"] = topn_latency(top10, n_users, args.topn_users)
    out["peak_mib"] = process_peak_mib()
    return out


def measure_autorec(n_users: int, n_items: int, args) -> dict:
    import torch

    from stream_app.baselines import IAutoRec  # moves to stream_app.baselines.autorec

    data, gen = generate(n_users, n_items, args.seed)
    sample = min(args.autorec_items, n_items)
    part = item_sample(data, sample)
    del data
    reset_peak()
    model = IAutoRec(epochs=1, seed=args.seed).fit(part)
    epoch = model.train_seconds * n_items / sample
    return {"generate": gen, "items_timed": sample, "ratings_timed": len(part), "fit_seconds": model.train_seconds,
            "seconds_per_epoch": epoch, "epoch_projected": sample < n_items, "epochs": IAutoRec().epochs,
            "fit_seconds_projected": epoch * IAutoRec().epochs, "train_peak_mib": peak_mib(),
            "peak_mib": process_peak_mib(), "threads": torch.get_num_threads()}


def item_sample(data, n: int):
    """The ratings of items 0..n-1 with every user kept (I-AutoRec's input is one entry per user)."""
    keep = data.item < n
    return replace(data.subset(keep), item_ids=data.item_ids[:n], items=data.items[:n])


MEASURES = {"ours": measure_ours, "als-mf": measure_als, "i-autorec": measure_autorec}


def child_main(spec: dict) -> None:
    """Run one measurement in this (child) process and print its JSON as the last line."""
    limit = int(spec["mem_cap_gb"] * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import torch

    torch.set_num_threads(1)
    args = argparse.Namespace(**spec["args"])
    result = MEASURES[spec["system"]](spec["users"], spec["items"], args)
    print(json.dumps(result))


def run_child(system: str, users: int, items: int, args) -> dict:
    plain = {k: v for k, v in vars(args).items() if k not in ("out", "child")}
    spec = {"system": system, "users": users, "items": items, "mem_cap_gb": args.mem_cap_gb, "args": plain}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                          env=env, timeout=args.child_timeout)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"skipped": f"child exited {proc.returncode} after {wall:.0f} s: {' | '.join(tail)}"}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["child_wall_seconds"] = wall
    return result


# ---- report ----------------------------------------------------------------------------------------
def parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for part in text.split(","):
        users, _, items = part.strip().lower().partition("x")
        sizes.append((int(users), int(items)))
    return sizes


def per_rating(mib: float | None, ratings: int) -> float | None:
    return None if mib is None else mib * 2**20 / ratings


def _fmt(x, spec: str) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def table(results: dict) -> str:
    head = (f"{'size':>15} {'ratings':>9} {'system':>10} {'peak MiB':>9} {'B/rating':>9} {'s/epoch':>9} "
            f"{'refine s':>9} {'fold-in/s':>9} {'top10 ms':>9} {'full run h':>10}")
    lines = [head, "-" * len(head)]
    for size, systems in results["sizes"].items():
        for name, r in systems.items():
            if "skipped" in r:
                lines.append(f"{size:>15} {'':>9} {name:>10} skipped: {r['skipped'][:80]}")
                continue
            ratings = r["generate"]["ratings"]
            epoch = r.get("train", r).get("seconds_per_epoch")
            foldin = r.get("foldin", {}).get("user", {}).get("vectors_per_second")
            full = r["full_run_projected"]["seconds"] if "full_run_projected" in r else r.get("fit_seconds_projected")
            hours = None if full is None else full / 3600
            lines.append(f"{size:>15} {ratings:>9} {name:>10} {_fmt(r['peak_mib'], '.0f'):>9} "
                         f"{_fmt(per_rating(r['peak_mib'], ratings), '.0f'):>9} {_fmt(epoch, '.1f'):>9} "
                         f"{_fmt(r.get('train', {}).get('refinement_seconds'), '.1f'):>9} {_fmt(foldin, '.0f'):>9} "
                         f"{_fmt(r.get('top10', {}).get('median_ms'), '.2f'):>9} {_fmt(hours, '.1f'):>10}")
    return "\n".join(lines)


def marginal_bytes_per_rating(results: dict, system: str = "ours") -> float | None:
    """(peak RSS difference) / (ratings difference) between the smallest and the largest size measured:
    bytes per rating without the fixed cost (interpreter, torch, the networks)."""
    done = [(r["generate"]["ratings"], r["peak_mib"]) for s in results["sizes"].values()
            if "skipped" not in (r := s.get(system, {"skipped": ""}))]
    if len(done) < 2:
        return None
    (n0, p0), (n1, p1) = min(done), max(done)
    return (p1 - p0) * 2**20 / (n1 - n0) if n1 > n0 else None


def plot(results: dict, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    sizes = list(results["sizes"])
    systems = sorted({name for s in results["sizes"].values() for name in s})
    width = 0.8 / max(1, len(systems))
    for k, name in enumerate(systems):
        peaks, epochs = [], []
        for size in sizes:
            r = results["sizes"][size].get(name, {"skipped": ""})
            ok = "skipped" not in r
            peaks.append(per_rating(r["peak_mib"], r["generate"]["ratings"]) if ok else 0.0)
            epochs.append(r.get("train", r).get("seconds_per_epoch", 0.0) if ok else 0.0)
        xs = np.arange(len(sizes)) + (k - (len(systems) - 1) / 2) * width
        axes[0].bar(xs, peaks, width, label=name)
        axes[1].bar(xs, epochs, width, label=name)
    for ax, label in zip(axes, ["peak RSS per rating (bytes)", "seconds per epoch (projected from timed steps)"],
                         strict=True):
        ax.set_xticks(np.arange(len(sizes)), sizes)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, axis="y")
        ax.legend()
    axes[1].set_yscale("log")
    axes[0].axhline(512, color="grey", linestyle="--", linewidth=1)
    quick = "QUICK RUN: " if results["quick"] else ""
    loads = [results["load_before"][0]] + [r["load_after"][0] for s in results["sizes"].values() for r in s.values()]
    fig.suptitle(f"{quick}scale, synthetic data, 1 torch thread; 1-min load average {min(loads):.1f}-{max(loads):.1f} "
                 f"on {results['cpus']} CPUs")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default=None, help=f"users x items, comma separated (default {SIZES})")
    parser.add_argument("--steps", type=int, default=None, help="gradient steps timed to project an epoch (40)")
    parser.add_argument("--systems", default="ours,als-mf,i-autorec")
    parser.add_argument("--foldin-sample", type=int, default=2000, help="users and items folded in to time fold-in")
    parser.add_argument("--topn-users", type=int, default=30)
    parser.add_argument("--autorec-items", type=int, default=1024, help="items whose ratings time an I-AutoRec epoch")
    parser.add_argument("--mem-cap-gb", type=float, default=12.0, help="address-space cap of each child")
    parser.add_argument("--child-timeout", type=float, default=3600.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny sizes and a tiny model: a smoke run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(json.loads(args.child))
        return {}
    args.sizes = args.sizes or (QUICK_SIZES if args.quick else SIZES)
    args.steps = args.steps or (3 if args.quick else 40)
    if args.quick:
        args.foldin_sample, args.topn_users, args.autorec_items = 50, 5, 64
    results = {"quick": args.quick, "argv": sys.argv[1:] if argv is None else argv, "load_before": os.getloadavg(),
               "cpus": os.cpu_count(), "python": platform.python_version(), "started": time.strftime("%F %T %Z"),
               "notes": "seconds_per_epoch of ours = seconds per timed step x steps per epoch (projected); "
                        "ALS: one sweep (its epoch), the 15-sweep fit projected; I-AutoRec: one epoch over a "
                        "sample of items projected to all items; peak_mib = the child's peak RSS, data included",
               "sizes": {}}
    prefix = "scale-quick" if args.quick else "scale"
    args.out.mkdir(parents=True, exist_ok=True)
    for users, items in parse_sizes(args.sizes):
        size = f"{users}x{items}"
        results["sizes"][size] = {}
        for system in args.systems.split(","):
            r = run_child(system, users, items, args)
            r["load_after"] = os.getloadavg()
            results["sizes"][size][system] = r
            print(f"{size} {system}: {json.dumps(r)}", flush=True)
            (args.out / f"{prefix}.json").write_text(json.dumps(results, indent=1))
    results["load_after"] = os.getloadavg()
    results["marginal_bytes_per_rating"] = {name: marginal_bytes_per_rating(results, name)
                                            for name in args.systems.split(",")}
    (args.out / f"{prefix}.json").write_text(json.dumps(results, indent=1))
    plot(results, args.out / f"{prefix}.png")
    print(("QUICK RUN\n" if args.quick else "") + table(results))
    print("marginal bytes per rating (smallest to largest size):",
          {k: _fmt(v, ".0f") for k, v in results["marginal_bytes_per_rating"].items()})
    return results


if __name__ == "__main__":
    main()

"""Model ablation: train several configs on one split, side by side; validation RMSE per round, the frozen
(served) validation RMSE, test RMSE and time. Choices are made on validation; test is reported only.

    python bench/ablation.py --run base='{"biases": false}' --run biases='{}' --json out.json --png out.png
    python bench/ablation.py --replot out.json --png out.png   # redraw from a JSON
    python bench/ablation.py --artifact wide=model_artifacts/A --artifact base=model_artifacts/B --json out.json

--artifact NAME=DIR collects a run already trained by `recsys train` (e.g. several trained side by side, one
torch thread each): its config (manifest.json) and its training_history.json.

Each run is one `Trainer.fit` of `ModelConfig(**json)` (defaults for the rest) with torch threads set by
--threads. Runs are sequential: wall times are comparable only on a quiet machine (the JSON records the
load average at the start and end of each run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="ml-100k")
    p.add_argument("--split", default="u1")
    p.add_argument("--run", action="append", default=[], metavar="NAME=JSON",
                   help="a config to train: NAME='{\"field\": value, ...}' (repeatable)")
    p.add_argument("--artifact", action="append", default=[], metavar="NAME=DIR",
                   help="collect an artifact trained by `recsys train` instead of training (repeatable)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default="bench/results/ablation.json")
    p.add_argument("--png", default="bench/results/ablation.png")
    p.add_argument("--replot", default=None, help="only redraw --png from this JSON")
    args = p.parse_args(argv)
    if args.replot:
        plot(json.loads(Path(args.replot).read_text()), args.png)
        return 0
    if not args.run and not args.artifact:
        p.error("give at least one --run NAME=JSON or --artifact NAME=DIR")
    results = {"data": args.data, "split": args.split, "threads": args.threads, "machine": platform.machine(),
               "hyperparameter_source": "the configs given; test ratings are reported, never used to choose",
               "runs": {}}
    for spec in args.artifact:
        name, _, folder = spec.partition("=")
        results["runs"][name] = collect_artifact(Path(folder))
        print(row(name, results["runs"][name]), flush=True)
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1))
    for spec in args.run:
        name, _, text = spec.partition("=")
        results["runs"][name] = train_one(args, json.loads(text or "{}"))
        print(row(name, results["runs"][name]), flush=True)
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1))
    plot(results, args.png)
    print(f"wrote {args.json} and {args.png}")
    return 0


def train_one(args, overrides: dict) -> dict:
    import torch

    from stream_app.core.bulk import rmse_of
    from stream_app.core.config import ModelConfig
    from stream_app.core.training import Trainer
    from stream_app.data.features import FeatureSchema
    from stream_app.data.registry import load_split
    from stream_app.settings import Settings

    torch.set_num_threads(args.threads)
    split = load_split(args.data, args.split, Settings.from_env(), seed=0)
    config = ModelConfig(**overrides)
    per_round: list[float | None] = []
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    rec, report = Trainer(config, FeatureSchema.fit(split.train), device="cpu", progress=False).fit(
        split.train, log=lambda line: None, on_round=lambda stats: per_round.append(stats.valid_rmse))
    seconds = time.perf_counter() - started
    return {"config": overrides, "valid_rmse_per_round": per_round,
            "valid_rmse_frozen": report.get("valid_rmse_frozen"),
            "test_rmse": rmse_of(rec, split.test) if len(split.test) else None, "train_seconds": seconds,
            "chosen": {k: report[k]["chosen"] for k in ("foldin_prior",) if k in report},
            "load_average": [load_before, os.getloadavg()[0]]}


def collect_artifact(folder: Path) -> dict:
    """A run trained by `recsys train`, in train_one's shape (config: all of it but the values chosen on validation
    at the end of training)."""
    manifest = json.loads((folder / "manifest.json").read_text())
    history = json.loads((folder / "training_history.json").read_text())
    chosen = ("foldin_prior", "popularity_weight")  # written back after training: not what was asked for
    return {"config": {k: v for k, v in manifest["config"].items() if k not in chosen}, "artifact": str(folder),
            "model_version": manifest["model_version"],
            "valid_rmse_per_round": [r["valid_rmse"] for r in history["rounds"]],
            "valid_rmse_frozen": history.get("valid_rmse_frozen"),
            "test_rmse": (history.get("test") or {}).get("rmse"), "train_seconds": history["train_seconds"],
            "torch_threads": history.get("torch_threads"),
            "chosen": {k: history[k]["chosen"] for k in chosen if isinstance(history.get(k), dict)},
            "load_average": None}


def row(name: str, r: dict) -> str:
    test = "-" if r["test_rmse"] is None else f"{r['test_rmse']:.4f}"
    load = "" if not r.get("load_average") else f"  load {r['load_average'][0]:.1f}->{r['load_average'][1]:.1f}"
    return f"{name:24s} valid(frozen) {r['valid_rmse_frozen']:.4f}  test {test}  {r['train_seconds']:.0f} s{load}"


def plot(results: dict, out: str) -> None:
    from stream_app.evaluation.plots import plot_lines

    series = {}
    for name, r in results["runs"].items():
        ys, frozen = r["valid_rmse_per_round"], r["valid_rmse_frozen"]
        label = f"{name} (frozen {frozen:.4f})" if frozen is not None else f"{name} (unfinished)"
        series[label] = (list(range(1, len(ys) + 1)), ys)
    plot_lines(series, out, "round", "validation RMSE (stars)",
               f"ablation on {results['data']} {results['split']}: validation RMSE per round", marker=".")


if __name__ == "__main__":
    raise SystemExit(main())

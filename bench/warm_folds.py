"""Summarise `recsys evaluate --protocol warm --json` runs of several splits (e.g. ML-100K u1..u5): per-fold RMSE of
every system, mean and sample standard deviation; writes JSON + PNG and prints the table.

    python bench/warm_folds.py warm-u1.json warm-u2.json ... --json folds.json --png folds.png
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def summarise(runs: list[dict]) -> dict:
    """{"splits": [...], "systems": {name: {"per_split": {split: rmse}, "mean", "sd"}}} (systems in every run)."""
    splits = [r["split"] for r in runs]
    names = [n for n in runs[0]["systems"] if all(n in r["systems"] for r in runs)]
    systems = {}
    for name in names:
        values = [r["systems"][name]["rmse"] for r in runs]
        systems[name] = {"per_split": dict(zip(splits, values, strict=True)), "mean": statistics.fmean(values),
                         "sd": statistics.stdev(values) if len(values) > 1 else 0.0}
    return {"data": runs[0].get("data"), "splits": splits, "systems": systems,
            "model_versions": {r["split"]: r["systems"].get("aevec", {}).get("model_version") for r in runs},
            "hyperparameter_source": sorted({r.get("hyperparameter_source", "?") for r in runs})}


def table(summary: dict) -> str:
    head = "| system | " + " | ".join(summary["splits"]) + " | mean (sd) |"
    lines = [head, "|" + "---|" * (len(summary["splits"]) + 2)]
    for name, s in summary["systems"].items():
        cells = " | ".join(f"{v:.4f}" for v in s["per_split"].values())
        lines.append(f"| {name} | {cells} | {s['mean']:.4f} ({s['sd']:.4f}) |")
    return "\n".join(lines)


def plot(summary: dict, out: Path) -> None:
    from stream_app.evaluation.plots import plot_lines

    series = {f"{name} (mean {s['mean']:.4f})": (summary["splits"], list(s["per_split"].values()))
              for name, s in summary["systems"].items()}
    plot_lines(series, out, "split", "test RMSE (stars)", f"warm RMSE per split ({summary['data']})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="JSON files written by `recsys evaluate --protocol warm --json`")
    p.add_argument("--json", required=True)
    p.add_argument("--png", required=True)
    args = p.parse_args(argv)
    summary = summarise([json.loads(Path(f).read_text()) for f in args.runs])
    Path(args.json).write_text(json.dumps(summary, indent=1))
    plot(summary, Path(args.png))
    print(table(summary))
    print(f"wrote {args.json} and {args.png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

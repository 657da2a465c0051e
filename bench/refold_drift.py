"""Iterated fold-in: refold every user and item from the training ratings, again and again, with the frozen
encoders and the other side's *current* vectors (what a long-running stream does as vectors are recomputed
from vectors that were themselves recomputed), and report the test RMSE and how far the vectors move.

    python bench/refold_drift.py --artifact DIR --data ml-100k --split u1 --passes 3 --json F --png F
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def drift(rec, split, passes: int) -> list[dict]:
    """Per pass (0 = as stored): test RMSE, and per side the move of the codes since the previous pass: the norm of
    the mean move (a common translation) and the RMS move of each vector."""
    from stream_app.core.bulk import rmse_of
    from stream_app.core.freezing import fold_in_all

    n = rec.config.n_dim
    prev = {s: rec.vectors[s][:, :n].copy() for s in rec.vectors}
    rows = [{"pass": 0, "test_rmse": rmse_of(rec, split.test)}]
    for p in range(1, passes + 1):
        fold_in_all(rec, split.train)
        row = {"pass": p, "test_rmse": rmse_of(rec, split.test)}
        for s in ("user", "item"):
            move = rec.vectors[s][:, :n] - prev[s]
            row[f"{s}_mean_move"] = float(np.linalg.norm(move.mean(axis=0)))
            row[f"{s}_rms_move"] = float(np.sqrt((move ** 2).sum(axis=1).mean()))
            prev[s] = rec.vectors[s][:, :n].copy()
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    from stream_app.core.artifacts import load_artifact
    from stream_app.data.registry import load_split
    from stream_app.evaluation.plots import plot_lines

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--artifact", required=True)
    p.add_argument("--data", default="ml-100k")
    p.add_argument("--split", default="u1")
    p.add_argument("--passes", type=int, default=3)
    p.add_argument("--json", required=True)
    p.add_argument("--png", required=True)
    args = p.parse_args(argv)
    rec = load_artifact(args.artifact)
    rows = drift(rec, load_split(args.data, args.split), args.passes)
    out = {"artifact": str(args.artifact), "model_version": rec.model_version, "data": args.data, "split": args.split,
           "passes": rows}
    Path(args.json).write_text(json.dumps(out, indent=1))
    passes = [r["pass"] for r in rows]
    plot_lines({"test RMSE": (passes, [r["test_rmse"] for r in rows])}, Path(args.png), "full refold passes",
               "test RMSE (stars)", f"iterated fold-in ({args.data} {args.split})")
    print("| pass | test RMSE | user mean move | user RMS move | item mean move | item RMS move |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        moves = " | ".join(f"{r.get(k, float('nan')):.4f}" for k in
                           ("user_mean_move", "user_rms_move", "item_mean_move", "item_rms_move"))
        print(f"| {r['pass']} | {r['test_rmse']:.4f} | {moves} |")
    print(f"wrote {args.json} and {args.png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

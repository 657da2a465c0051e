"""PNG plots people look at instead of reading numbers (matplotlib, headless): training curves,
and each protocol's result (fold-in: RMSE vs k; prequential: running RMSE)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from stream_app.evaluation.protocols.foldin import at_k  # noqa: E402


def plot_training(report: dict, out: str | Path, title: str = "") -> Path:
    """Train/validation RMSE and reconstruction loss per round, plus convergence and spread."""
    rounds = report.get("rounds", [])
    x = [r["round"] for r in rounds]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot(x, [r["train_rmse"] for r in rounds], label="train RMSE")
    if any(r["valid_rmse"] is not None for r in rounds):
        ax1.plot(x, [r["valid_rmse"] for r in rounds], label="validation RMSE")
    if "test" in report:
        ax1.axhline(report["test"]["rmse"], color="k", ls=":", label=f"test RMSE {report['test']['rmse']:.4f}")
    ax1.set_xlabel("round")
    ax1.set_ylabel("RMSE (stars)")
    recon = ax1.twinx()
    recon.plot(x, [r["recon_loss"] for r in rounds], color="tab:gray", alpha=0.5, label="reconstruction")
    recon.set_ylabel("reconstruction loss")
    ax1.legend(loc="upper right")
    for side, style in (("user", "-"), ("item", "--")):
        ax2.plot(x, [r["convergence"][side] for r in rounds], style, color="tab:blue", label=f"{side} move/norm")
        ax2.plot(x, [r["spread"][side] for r in rounds], style, color="tab:orange", label=f"{side} spread")
    ax2.set_xlabel("round")
    ax2.set_title("ID refinement: convergence and spread")
    ax2.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return Path(out)


def plot_lines(series: dict[str, tuple[list, list]], out: str | Path, xlabel: str, ylabel: str,
               title: str = "", logx: bool = False, marker: str = "o") -> Path:
    """One line per system: series[name] = (xs, ys)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, (xs, ys) in series.items():
        ax.plot(xs, ys, marker=marker or None, label=name)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return Path(out)


def plot_protocol(result: dict, out) -> None:
    """Fold-in: RMSE vs k for every system; prequential: running RMSE; others: nothing to plot."""
    proto, systems = result["protocol"], result["systems"]
    if proto.startswith("foldin"):
        series = {}
        for name, by_k in systems.items():
            ks = sorted(int(k) for k in by_k)
            series[name] = (ks, [at_k(by_k, k)["rmse"] for k in ks])
        side = proto.split("-")[1].rstrip("s")
        plot_lines(series, out, f"revealed ratings per held-out {side}", "RMSE on the rest",
                   f"fold-in of new {side}s" + (" (quick)" if result.get("quick") else ""))
    elif proto == "prequential":
        series = {name: (m["curve"]["n"], m["curve"]["rmse"]) for name, m in systems.items()}
        plot_lines(series, out, "ratings streamed (time order)", "running RMSE",
                   "prequential: predict, then update" + (" (quick)" if result.get("quick") else ""), marker="")

"""The chaos soak's report: what bench/soak.py measured, reduced to the JSON it writes (timeline, kills, swap and
retrain cost, RSS growth, replays, verdict), the table it prints and the PNG it draws."""

from __future__ import annotations

import collections
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np

BIN = 10.0  # seconds per latency bin of the timeline
SETTLE = 10.0  # seconds after a restarted worker owns partitions again before the group counts as steady


def summarize(raw: dict, samples: list[dict], args: dict, root: Path) -> dict:
    """The JSON of one run: times relative to the start of the offered load."""
    sent, delay = raw.pop("latency")
    logs = raw.pop("logs")
    t0, t_end = raw["phases"]["load_start"], raw["phases"]["load_end"]
    loaded = sent >= t0  # the probe's burst waits in a queue by design: not a latency
    swap, kills = raw["swap"], raw["kills"]
    disturbed = [(k["t"], k["t"] + k["restarted_s"] + (k["rejoined_s"] or 60.0) + SETTLE) for k in kills]
    training = (swap.get("retrain_started", np.inf), swap.get("retrain_ended", t_end))

    def steady(t):
        return t0 <= t <= t_end and not any(a <= t <= b for a, b in disturbed) and not training[0] <= t <= training[1]

    def retraining(t):
        return training[0] <= t <= training[1] and not any(a <= t <= b for a, b in disturbed)

    for k in kills:  # the ratings a takeover holds up: sent before the survivors owned every partition
        held = (sent >= k["t"] - 60) & (sent < k["t"] + (k["moved_s"] or 0.0))
        k["published_s"] = float((sent[held] + delay[held]).max() - k["t"]) if held.any() else None
        k["t"] -= t0
    for key in ("retrain_started", "retrain_ended", "swapped_at"):
        if swap.get(key) is not None:
            swap[key] -= t0
    checks = raw["checks"]
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "git": git(root), "machine": machine(),
              "args": args, **{k: v for k, v in raw.items() if k not in ("phases", "windows_full_at")},
              "phases": {"load_s": t_end - t0, "drained_s": raw["phases"]["drained_s"]},
              "steady": window(samples, sent, delay, steady), "retraining": window(samples, sent, delay, retraining),
              "latency": {**percentiles(delay[loaded]), "bins": latency_bins(sent[loaded] - t0, delay[loaded])},
              "rss": {**rss_growth(samples, args["warmup"], t0, raw.get("windows_full_at")),
                      "broker_mb": broker_rss(samples, t0)},
              "replays": replays(samples, logs),
              "timeline": timeline(samples, t0)}
    result["failures"] = verdict(checks, result)
    result["ok"] = not result["failures"]
    return result


def verdict(checks: dict, result: dict) -> list[str]:
    """The checks that failed (none: the soak passed)."""
    failed = []
    for side in ("user", "item"):
        c, swap = checks[side], checks["swap"][side]
        failed += [f"{side}s: {name} {c[name]}" for name in ("lost", "double_counted", "table_count_wrong",
                                                              "window_wrong", "last_published_wrong",
                                                              "published_above_wrong") if c[name]]
        if not swap["swapped"] or not swap["rated_after_swap"]:
            failed.append(f"{side}s: no swap under load")
        failed += [f"{side}s: {name} {swap[name]}" for name in ("old_after_swap", "stale_last") if swap[name]]
    failed += [f"{name} {checks[name]}" for name in ("dead_letters", "send_errors") if checks[name]]
    if result["phases"]["drained_s"] is None:
        failed.append("not drained")
    return failed


def _after_full(rss: dict) -> list[str]:
    full = rss.get("after_full")
    if not full:
        return []
    return [f"RSS growth after every window was full ({fmt(rss['windows_full_s'], '.0f')} s): never-killed worker "
            f"{fmt((full.get('witness') or {}).get('growth_pct'))}%; any worker process: max "
            f"{fmt(full['max_growth_pct'])}%, median {fmt(full['median_growth_pct'])}% over {len(full['measured'])}"]


def percentiles(delay: np.ndarray) -> dict:
    if not len(delay):
        return {"n": 0, "p50_s": None, "p99_s": None, "max_s": None}
    return {"n": int(len(delay)), "p50_s": float(np.percentile(delay, 50)), "p99_s": float(np.percentile(delay, 99)),
            "max_s": float(delay.max())}


def latency_bins(rel_sent: np.ndarray, delay: np.ndarray) -> list[list[float]]:
    """[bin start, p50, p99] of event-to-publish per BIN seconds of send time."""
    out = []
    for start in np.arange(0.0, float(rel_sent.max(initial=0.0)) + BIN, BIN):
        inside = delay[(rel_sent >= start) & (rel_sent < start + BIN)]
        if len(inside):
            out.append([float(start), float(np.percentile(inside, 50)), float(np.percentile(inside, 99))])
    return out


def window(samples: list[dict], sent: np.ndarray, delay: np.ndarray, inside) -> dict:
    """Offered and committed ratings/s, lag (mean, max) and event-to-publish over the samples (and the ratings
    sent) for which inside(t) holds."""
    seconds = offered = committed = 0.0
    lags, item_lags = [], []
    used = collections.defaultdict(float)
    for a, b in zip(samples, samples[1:], strict=False):
        if inside(a["t"]) and inside(b["t"]) and None not in a["committed"] + b["committed"]:
            seconds += b["t"] - a["t"]
            offered += sum(b["ends"]) - sum(a["ends"])
            committed += sum(b["committed"]) - sum(a["committed"])
            lags.append(b["lag"])
            for k, v in cores(a, b).items():
                used[k] += (v or 0.0) * (b["t"] - a["t"])
            if b["item_lag"] is not None:
                item_lags.append(b["item_lag"])
    mask = np.fromiter((inside(t) for t in sent), bool, len(sent))
    return {"seconds": seconds, "offered_per_s": offered / seconds if seconds else None,
            "committed_per_s": committed / seconds if seconds else None,
            "lag_mean": float(np.mean(lags)) if lags else None, "lag_max": int(max(lags)) if lags else None,
            "item_lag_mean": float(np.mean(item_lags)) if item_lags else None,
            "item_lag_max": int(max(item_lags)) if item_lags else None,
            "cores": {k: v / seconds for k, v in used.items()} if seconds else {},
            "latency": percentiles(delay[mask])}


def rss_growth(samples: list[dict], warmup: float, t0: float, full_at: float | None = None) -> dict:
    """Per worker process (slot, incarnation) living at least 2 x warmup under load: RSS at its end against its RSS
    `warmup` s after it started or the load did, whichever came last. `witness`: the never-killed first worker.
    `after_full`: the same, from the first sample after every entity's window was full (`full_at`, when the state
    stopped growing by design), for processes warmed up by then and alive at least a second after it."""
    lives = collections.defaultdict(list)
    for s in samples:
        for name, w in s["workers"].items():
            if w and w["rss_mb"]:
                lives[f"{name}#{w['incarnation']}"].append((s["t"], w["rss_mb"], w.get("memory_mb") or {}))
    result = {"warmup_s": warmup, "processes": len(lives), **_growth(lives, t0, lambda start: start + warmup, warmup),
              "peak_mb": max((rss for points in lives.values() for _, rss, _ in points), default=None),
              "windows_full_s": None if full_at is None else full_at - t0}
    if full_at is not None:
        result["after_full"] = _growth(lives, t0, lambda start: max(start + warmup, full_at), 1.0)
    return result


def _growth(lives: dict, t0: float, base_at, min_after: float) -> dict:
    """RSS growth of each life alive `min_after` s past its base sample (at `base_at(start)`), and their summary."""
    growth = {}
    for life, points in lives.items():
        start, end = max(points[0][0], t0), points[-1][0]
        at = base_at(start)
        if end - at < min_after:
            continue
        base_t, base, parts = next((t, rss, parts) for t, rss, parts in points if t >= at)
        growth[life] = {"life_s": end - start, "base_t": base_t, "warm_mb": base, "end_mb": points[-1][1],
                        "growth_pct": 100.0 * (points[-1][1] - base) / base,
                        "warm_parts_mb": parts, "end_parts_mb": points[-1][2]}
    values = [g["growth_pct"] for g in growth.values()]
    return {"measured": growth, "witness": growth.get("w0#1"),
            "max_growth_pct": max(values) if values else None,
            "median_growth_pct": float(np.median(values)) if values else None,
            "longest": max(growth, key=lambda k: growth[k]["life_s"]) if growth else None}


def broker_rss(samples: list[dict], t0: float) -> tuple[float | None, float | None]:
    """The broker's RSS when the load started and at the end (it keeps every topic in memory)."""
    known = [s for s in samples if s.get("broker_rss_mb")]
    start = next((s["broker_rss_mb"] for s in known if s["t"] >= t0), None)
    return start, known[-1]["broker_rss_mb"] if known else None


def replays(samples: list[dict], logs: dict[str, str]) -> dict:
    """Stall replays: the metric (each process's counter, last sampled value) and the workers' log lines."""
    last: dict[str, float] = {}
    for s in samples:
        for name, w in s["workers"].items():
            if w:
                last[f"{name}#{w['incarnation']}"] = w["replays"]
    text = "\n".join(logs.values())
    return {"metric_total": sum(last.values()), "log_lines": text.count("commits stalled at"),
            "fetch_skips_logged": text.count("skipped by the fetch"), "swaps_logged": text.count("model swapped:")}


def timeline(samples: list[dict], t0: float) -> list[dict]:
    return [{"t": round(s["t"] - t0, 2), "lag": s["lag"], "item_lag": s["item_lag"], "sent": sum(s["ends"]),
             "committed": None if None in s["committed"] else sum(s["committed"]),
             "partition_lag": {"ratings": [None if c is None else e - c for e, c in zip(s["ends"], s["committed"],
                                                                                         strict=True)],
                               "item-updates": [None if c is None or s["item_ends"] is None else e - c for e, c in
                                                zip(s["item_ends"] or s["item_committed"], s["item_committed"],
                                                    strict=True)]},
             "rss": {k: w and w["rss_mb"] for k, w in s["workers"].items()}, "broker_rss": s.get("broker_rss_mb"),
             "memory": {k: w and w.get("memory_mb") for k, w in s["workers"].items()},
             "partitions": {k: w and w["partitions"] for k, w in s["workers"].items()},
             "cores": cores(a, s)} for a, s in zip(samples[:1] + samples[:-1], samples, strict=True)]


def cores(a: dict, b: dict) -> dict[str, float | None]:
    """CPU cores used between two samples: the workers (processes alive in both), the broker, the retrain, this
    script, and every other process of the machine (other jobs on a shared machine)."""
    dt = b["t"] - a["t"]
    if dt <= 0:
        return {}

    def rate(x, y):
        return None if x is None or y is None else max(y - x, 0.0) / dt

    workers = sum(rate(wa["cpu_s"], wb["cpu_s"]) or 0.0 for name, wb in b["workers"].items()
                  for wa in [a["workers"].get(name)] if wa and wb and wa["incarnation"] == wb["incarnation"])
    out = {"workers": workers, **{k: rate(a.get(f"{k}_cpu_s"), b.get(f"{k}_cpu_s"))
                                  for k in ("broker", "trainer", "soak")}}
    busy, _ = (y - x for x, y in zip(a["machine_cpu_s"], b["machine_cpu_s"], strict=True))
    out["machine"] = busy / dt
    out["others"] = max(out["machine"] - sum(v or 0.0 for k, v in out.items() if k != "machine"), 0.0)
    return out


def git(root: Path) -> dict:
    def run(*args):
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True).stdout.strip()

    return {"commit": run("rev-parse", "HEAD"), "dirty": bool(run("status", "--porcelain", "--untracked-files=no"))}


def machine() -> dict:
    return {"cores": os.cpu_count(), "loadavg_at_end": os.getloadavg(), "python": platform.python_version(),
            "platform": platform.platform()}


def fmt(x, spec=".1f") -> str:
    return "-" if x is None else format(x, spec)


def spread(values: list) -> str:
    values = [v for v in values if v is not None]
    return f"median {np.median(values):.1f} / max {max(values):.1f}" if values else "-"


def table(r: dict) -> str:
    c, a, k = r["checks"], r["args"], r["kills"]
    broker = r["rss"].get("broker_mb") or (None, None)
    u, i = c["user"], c["item"]
    swap, sw = r["swap"], c["swap"]
    lines = [
        f"chaos soak: {a['minutes']:g} min, {a['workers']} workers, {a['partitions']} partitions; capacity "
        f"{fmt(r['capacity_per_s'], '.0f')}/s, offered {r['rate_per_s']:.0f}/s; "
        f"verdict: {'OK' if r['ok'] else 'FAILED: ' + '; '.join(r.get('failures', []))}",
        f"ratings {u['ratings']} (+{r['resent']} re-sent) by {u['entities']} users on {i['entities']} items; "
        f"drained {fmt(r['phases']['drained_s'])} s after the load",
        f"lost {u['lost'] + i['lost']} (users {u['lost']}, items {i['lost']}); double-counted "
        f"{u['double_counted'] + i['double_counted']} (users {u['double_counted']}, items {i['double_counted']}); "
        f"wrong windows {u['window_wrong']}/{i['window_wrong']}; counts above the sent {u['published_above_wrong']}/"
        f"{i['published_above_wrong']}; dead letters {c['dead_letters']}",
        f"last vector published with every rating: users {u['entities'] - u['last_published_wrong']}/{u['entities']}, "
        f"items {i['entities'] - i['last_published_wrong']}/{i['entities']}",
        f"swap {swap.get('old_version')} -> {swap.get('new_version')}: retrain {fmt(swap.get('retrain_started'))}.."
        f"{fmt(swap.get('retrain_ended'))} s, every worker on it at {fmt(swap.get('swapped_at'))} s; old-version "
        f"messages after it {sw['user']['old_after_swap']}/{sw['item']['old_after_swap']}; last message not of it "
        f"{sw['user']['stale_last']}/{sw['item']['stale_last']} (users/items)",
        f"kills {len(k)}: partitions moved {spread([x['moved_s'] for x in k])} s; caught up "
        f"{spread([x['caught_up_s'] for x in k])} s; every rating sent until they moved published "
        f"{spread([x.get('published_s') for x in k])} s after the kill; restarted worker serving in a settled group "
        f"{spread([x['rejoined_s'] for x in k])} s after its restart, owning partitions again "
        f"{sum(1 for x in k if x['partitions_after'])} of {len(k)} times",
        f"stall replays {r['replays']['metric_total']:.0f} (metric) / {r['replays']['log_lines']} (logs); fetch "
        f"skips logged {r['replays']['fetch_skips_logged']}",
        f"RSS growth after {r['rss']['warmup_s']:.0f} s warm-up: never-killed worker "
        f"{fmt((r['rss'].get('witness') or {}).get('growth_pct'))}%; any worker process: max "
        f"{fmt(r['rss']['max_growth_pct'])}%, median {fmt(r['rss']['median_growth_pct'])}% over "
        f"{len(r['rss']['measured'])} of {r['rss']['processes']} "
        f"worker processes; peak {fmt(r['rss']['peak_mb'], '.0f')} MB; broker {fmt(broker[0], '.0f')} -> "
        f"{fmt(broker[1], '.0f')} MB",
        *_after_full(r["rss"]),
        f"event-to-publish (user vectors): p50 {fmt(r['latency']['p50_s'], '.3f')} s, p99 "
        f"{fmt(r['latency']['p99_s'], '.2f')} s, max {fmt(r['latency']['max_s'], '.1f')} s",
    ]
    steady = r["steady"]
    if steady["offered_per_s"] and steady["committed_per_s"] < 0.95 * steady["offered_per_s"]:
        lines.append(f"WARNING: overloaded: in the steady state the group committed only "
                     f"{steady['committed_per_s'] / steady['offered_per_s']:.0%} of the offered ratings (the probe "
                     f"flattered, or other jobs took the CPU): lag and latency grew all along; try --rate")
    for name in ("steady", "retraining"):
        w = r[name]
        used = w.get("cores") or {}
        lines.append(f"{name:10}: CPU cores: workers {fmt(used.get('workers'), '.2f')}, broker "
                     f"{fmt(used.get('broker'), '.2f')}, retrain {fmt(used.get('trainer'), '.2f')}, this script "
                     f"{fmt(used.get('soak'), '.2f')}, other jobs {fmt(used.get('others'), '.2f')} "
                     f"(of {os.cpu_count()})")
        lines.append(f"{name:10}: {w['seconds']:.0f} s, offered {fmt(w['offered_per_s'], '.0f')}/s, committed "
                     f"{fmt(w['committed_per_s'], '.0f')}/s, lag mean/max ratings {fmt(w['lag_mean'], '.0f')}/"
                     f"{fmt(w['lag_max'], '.0f')} item-updates {fmt(w.get('item_lag_mean'), '.0f')}/"
                     f"{fmt(w.get('item_lag_max'), '.0f')}, event-to-publish p50 {fmt(w['latency']['p50_s'], '.3f')} s "
                     f"p99 {fmt(w['latency']['p99_s'], '.2f')} s")
    return "\n".join(lines)


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tl = r["timeline"]
    t = np.array([s["t"] for s in tl])
    fig, axes = plt.subplots(5, 1, figsize=(11, 12), sharex=True)
    for key, label in (("lag", "ratings"), ("item_lag", "item-updates")):
        axes[0].plot(t, [np.nan if s.get(key) is None else s[key] for s in tl], lw=0.8, label=label)
    axes[0].set_ylabel("consumer lag (events)")
    axes[0].legend(fontsize=8)
    for key, label in (("sent", "offered"), ("committed", "committed")):
        v = np.array([np.nan if s[key] is None else s[key] for s in tl], float)
        rate = np.gradient(v, t) if len(t) > 1 else v
        axes[1].plot(t, np.convolve(np.nan_to_num(rate), np.ones(5) / 5, "same"), lw=0.8, label=label)
    axes[1].set_ylabel("ratings/s (5-sample mean)")
    axes[1].legend(fontsize=8)
    for name in tl[0]["rss"] if tl else ():
        axes[2].plot(t, [np.nan if s["rss"].get(name) is None else s["rss"][name] for s in tl], lw=0.8, label=name)
    parts = [(s["memory"] or {}).get("w0") or {} for s in tl] if tl and "memory" in tl[0] else []
    if any(parts):  # where the never-killed worker's memory is, by its own gauges
        axes[2].plot(t, [p.get("heap_in_use", np.nan) for p in parts], lw=0.8, ls="--", color="C0",
                     label="w0 glibc heap in use")
        axes[2].plot(t, [p.get("memtables", np.nan) + p.get("block_cache", np.nan) for p in parts], lw=0.8,
                     ls="-.", color="C0", label="w0 RocksDB memtables + cache")
    for at, what in ((r["rss"]["warmup_s"], "warm-up"), (r["rss"].get("windows_full_s"), "windows full")):
        if at is not None:
            axes[2].axvline(at, color="grey", lw=0.8, ls=":")
            axes[2].annotate(what, (at, 0.02), xycoords=("data", "axes fraction"), fontsize=7, color="grey")
    axes[2].set_ylabel("worker RSS (MB)")
    axes[2].legend(fontsize=7, loc="center left", ncol=2)
    broker = axes[2].twinx()  # the broker keeps every topic in memory: its own scale
    broker.plot(t, [np.nan if s.get("broker_rss") is None else s["broker_rss"] for s in tl], lw=0.8, ls=":",
                color="grey")
    broker.set_ylabel("broker RSS (MB, dotted)", fontsize=8)
    bins = np.array(r["latency"]["bins"]).reshape(-1, 3)
    axes[3].semilogy(bins[:, 0], bins[:, 1], lw=0.8, label="p50")
    axes[3].semilogy(bins[:, 0], bins[:, 2], lw=0.8, label="p99")
    axes[3].set_ylabel(f"event-to-publish (s), per {BIN:.0f} s")
    axes[3].legend(fontsize=8)
    for key in ("workers", "broker", "trainer", "others"):
        v = np.array([np.nan if s.get("cores", {}).get(key) is None else s["cores"][key] for s in tl], float)
        axes[4].plot(t, np.convolve(np.nan_to_num(v), np.ones(5) / 5, "same"), lw=0.8, label=key)
    axes[4].set_ylabel("CPU cores (5-sample mean)")
    axes[4].legend(fontsize=8)
    axes[4].set_xlabel("seconds since the load started")
    swap = r["swap"]
    for ax in axes:
        for k in r["kills"]:
            ax.axvline(k["t"], color="red", lw=0.7, ls="--")
        if swap.get("retrain_started") is not None:
            ax.axvspan(swap["retrain_started"], swap.get("retrain_ended") or t[-1], color="orange", alpha=0.15)
        if swap.get("swapped_at") is not None:
            ax.axvline(swap["swapped_at"], color="green", lw=1.2)
    fig.suptitle(f"chaos soak {r['date']} {r['git']['commit'][:10]}: kills (red), retrain (orange), every worker "
                 f"on the new model (green); {'OK' if r['ok'] else 'FAILED'}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

"""Repeat the kill -9 fault tests: pass/fail, stall replays, takeover and kill-to-final-vector times per run.

    python bench/kill9_repeat.py --runs 50                  # the campaign of issue 15: ~1.5 h on a quiet machine
    python bench/kill9_repeat.py --runs 5 --tests standby   # restart, standby, no-standby (comma-separated)

One pytest session runs every selected test `--runs` times (RECSYS_KILL9_RUNS parametrizes them; the broker and
the trained models are shared), in the order pytest collects them: the restart test N times, then the two-worker
test alternating standby / no-standby. Each run appends its numbers to a JSON-lines file
(RECSYS_KILL9_RECORD, written by tests/test_stream_faults.py); pass/fail comes from pytest's JUnit XML, so a
run that fails early still counts. Writes OUT/kill9.json, OUT/kill9.png and OUT/pytest.log and prints a table;
the workers' logs of every run stay in a /tmp/kill9-* folder (pytest's --basetemp; its path is in the JSON).

Per run: takeover_s (two workers: kill -> the survivor owns every partition; restart: the restarted worker's
start -> it owns every partition), final_vector_s (kill -> the last user or item vector carrying its final
n_ratings was published), last_sent_s (kill -> the last rating sent; the final vectors cannot come before it),
replays (rule 7's commit-stall replays: must be 0), rereads (rule 9's immediate re-reads), load1 (the machine's
1-minute load average at the end of the run: the times follow it). The restart test's times include the
worker's start (it restarts once every rating was sent): they are not takeover times.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST_FILE = "tests/test_stream_faults.py"
SELECT = {"restart": "kill_9_mid_stream", "standby": "two_workers and standby and not no-standby",
          "no-standby": "two_workers and no-standby"}
NUMBERS = ("takeover_s", "final_vector_s", "last_sent_s", "replays", "rereads", "redelivered", "load1")


def kind(test_id: str) -> str:
    """restart, standby or no-standby, from a pytest node id or JUnit test name."""
    if "mid_stream" in test_id:
        return "restart"
    return "no-standby" if "no-standby" in test_id else "standby"


def run_pytest(runs: int, tests: list[str], workdir: Path, log_path: Path, extra: list[str]) -> tuple[Path, Path]:
    """Run the selected tests `runs` times each in one session; returns (junit xml, records jsonl)."""
    junit, records = workdir / "junit.xml", workdir / "runs.jsonl"
    select = " or ".join(f"({SELECT[t]})" for t in tests)
    cmd = [sys.executable, "-m", "pytest", TEST_FILE, "-k", f"kill_9 and ({select})", "-s", "-q", "-rA",
           "-p", "no:cacheprovider", f"--junitxml={junit}", f"--basetemp={workdir / 'pytest'}", *extra]
    env = dict(os.environ, RECSYS_KILL9_RUNS=str(runs), RECSYS_KILL9_RECORD=str(records),
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    print("$", " ".join(cmd), flush=True)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:  # shown as it comes (a campaign is long) and kept
            log.write(line)
            if line.startswith(("MEASURED", "FAILED", "ERROR")) or " passed" in line or " failed" in line:
                print(line.rstrip()[:200], flush=True)
        proc.wait()
    return junit, records


def collect(junit: Path, records: Path) -> list[dict]:
    """One row per test run: its kind, run number, outcome, failure message and recorded numbers."""
    recorded = {}
    if records.exists():
        for line in records.read_text().splitlines():
            rec = json.loads(line)
            recorded[rec["test"].split("::", 1)[1]] = rec
    rows = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = case.get("name")
        problem = next((child for child in case if child.tag in ("failure", "error", "skipped")), None)
        outcome = "passed" if problem is None else {"failure": "failed"}.get(problem.tag, problem.tag)
        rec = recorded.get(name, {})
        rows.append({"test": kind(name), "run": rec.get("run", _run_number(name)), "outcome": outcome,
                     "seconds": float(case.get("time", 0)),
                     "message": None if problem is None else (problem.get("message") or "")[:300],
                     **{k: rec.get(k) for k in NUMBERS}})
    return rows


def _run_number(name: str) -> int:
    marker = name.find("[run")
    return int(name[marker + 4:].split("-")[0].rstrip("]")) if marker >= 0 else 1


def summarize(rows: list[dict]) -> dict[str, dict]:
    out = {}
    for test in SELECT:
        mine = [r for r in rows if r["test"] == test]
        if not mine:
            continue
        summary = {"runs": len(mine), "passed": sum(r["outcome"] == "passed" for r in mine),
                   "runs_with_replays": sum(bool(r["replays"]) for r in mine),
                   "replays": sum(r["replays"] or 0 for r in mine),
                   "runs_with_rereads": sum(bool(r["rereads"]) for r in mine),
                   "final_vector_within_5s": sum(r["final_vector_s"] is not None and r["final_vector_s"] <= 5
                                                 for r in mine)}
        for key in ("takeover_s", "final_vector_s", "last_sent_s"):
            values = [r[key] for r in mine if r[key] is not None]
            if values:
                summary[key] = {"min": min(values), "median": statistics.median(values), "max": max(values)}
        out[test] = summary
    return out


def table(rows: list[dict], summary: dict[str, dict]) -> str:
    def num(value, fmt="{:.1f}"):
        return "-" if value is None else fmt.format(value)

    lines = [f"{'test':<11} {'run':>3}  {'outcome':<7} {'takeover s':>10} {'final vec s':>11} {'last sent s':>11} "
             f"{'replays':>7} {'rereads':>7} {'redeliv.':>8} {'load':>5}"]
    for r in rows:
        lines.append(f"{r['test']:<11} {r['run']:>3}  {r['outcome']:<7} {num(r['takeover_s']):>10} "
                     f"{num(r['final_vector_s']):>11} {num(r['last_sent_s']):>11} {num(r['replays'], '{:.0f}'):>7} "
                     f"{num(r['rereads'], '{:.0f}'):>7} {num(r['redelivered'], '{:.0f}'):>8} {num(r['load1']):>5}")
    lines.append("")
    for test, s in summary.items():
        spans = "; ".join(f"{key} {v['min']:.1f}/{v['median']:.1f}/{v['max']:.1f}"
                          for key in ("takeover_s", "final_vector_s", "last_sent_s") if (v := s.get(key)))
        lines.append(f"{test}: {s['passed']}/{s['runs']} passed, {s['replays']:.0f} stall replays in "
                     f"{s['runs_with_replays']} runs, re-reads in {s['runs_with_rereads']} runs, final vectors "
                     f"within 5 s of the kill in {s['final_vector_within_5s']}; min/median/max: {spans}")
    for r in rows:
        if r["message"]:
            lines.append(f"{r['test']} run {r['run']} {r['outcome']}: {r['message']}")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharex=True)
    for ax, key, title in ((axes[0], "takeover_s", "takeover (s)"), (axes[1], "final_vector_s",
                                                                     "kill -> last final vector (s)")):
        for test, marker in zip(SELECT, ("o", "s", "^"), strict=True):
            mine = [r for r in rows if r["test"] == test and r[key] is not None]
            if mine:
                ax.plot([r["run"] for r in mine], [r[key] for r in mine], marker, label=test, alpha=0.8)
        bad = [r for r in rows if r[key] is not None and (r["outcome"] != "passed" or r["replays"])]
        if bad:
            ax.plot([r["run"] for r in bad], [r[key] for r in bad], "x", color="red", markersize=10,
                    label="failed or replayed")
        ax.set_title(title)
        ax.set_xlabel("run")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    axes[1].axhline(5, color="grey", linestyle="--", linewidth=1)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5, help="runs of each test (default 5)")
    p.add_argument("--tests", default="restart,standby,no-standby", help="comma-separated: restart, standby, "
                   "no-standby")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "issue15")
    p.add_argument("pytest_args", nargs="*", help="passed on to pytest (after --)")
    args = p.parse_args(argv)
    tests = [t.strip() for t in args.tests.split(",") if t.strip()]
    unknown = set(tests) - set(SELECT)
    if unknown or args.runs < 1:
        p.error(f"unknown tests {sorted(unknown)} (choose from {list(SELECT)}) or --runs < 1")
    args.out.mkdir(parents=True, exist_ok=True)
    started, load_before = time.time(), os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="kill9-"))  # kept: the workers' logs of each run
    junit, records = run_pytest(args.runs, tests, workdir, args.out / "pytest.log", args.pytest_args)
    if not junit.exists():
        print("pytest wrote no report: see", args.out / "pytest.log")
        return 2
    rows = collect(junit, records)
    summary = summarize(rows)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    result = {"command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
              "runs_per_test": args.runs, "tests": tests, "commit": commit.stdout.strip(),
              "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
              "duration_s": round(time.time() - started, 1), "machine": platform.platform(),
              "cpus": os.cpu_count(), "load_before": load_before, "load_after": os.getloadavg(),
              "logs": str(workdir),
              "summary": summary, "runs": rows}
    (args.out / "kill9.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(rows, args.out / "kill9.png")
    print(table(rows, summary))
    print(f"\nwrote {args.out / 'kill9.json'}, {args.out / 'kill9.png'} ({result['duration_s'] / 60:.1f} min)")
    ok = all(r["outcome"] == "passed" and not r["replays"] for r in rows)
    return 0 if ok and rows else 1


if __name__ == "__main__":
    sys.exit(main())

"""`recsys demo --quick` end to end (embedded broker, training, a real worker), and its clean shutdown."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stream_app.commands.worker_process import Worker, WorkerExited, counted, metric_sum

DEMO = [sys.executable, "-m", "stream_app.cli", "demo", "--quick", "--threads", "1"]




def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    for name in ("RECSYS_BROKER_URL", "RECSYS_ARTIFACTS_DIR", "RECSYS_STORE_DIR", "RECSYS_WEB_PORT"):
        env.pop(name, None)
    return env


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def test_dead_worker_is_reported_with_its_log(tmp_path):
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-c", "print('model not found: boom'); raise SystemExit(3)"],
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    worker = Worker(process, log, web_port=1)
    process.wait(timeout=30)
    with pytest.raises(WorkerExited, match=r"(?s)the worker exited \(code 3\).*model not found: boom"):
        worker.check()
    assert worker.stop() == 3


def test_metric_helpers():
    samples = {"recsys_events_total": [({"topic": "ratings", "outcome": "ok"}, 5.0),
                                       ({"topic": "ratings", "outcome": "duplicate"}, 2.0),
                                       ({"topic": "ratings", "outcome": "rekeyed"}, 4.0),
                                       ({"topic": "users", "outcome": "ok"}, 1.0)]}
    assert counted(samples, "ratings") == 7.0
    assert metric_sum(samples, "recsys_events_total", outcome="ok") == 6.0
    assert counted(None, "ratings") == 0.0


@pytest.mark.integration
@pytest.mark.slow
def test_quick_demo_end_to_end(tansu, tmp_path):
    started = time.perf_counter()
    done = subprocess.run(DEMO, capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=600)
    took = time.perf_counter() - started
    out = done.stdout
    assert done.returncode == 0, f"demo failed ({took:.0f} s):\n{out[-4000:]}\n{done.stderr[-4000:]}"
    assert "[8/8] ask for user" in out and "top-10 again" in out
    tables = re.findall(r"(?m)^\s+rank\s+item\s+stars.*$\n((?:\s+\d+\s+\S+\s+\d+\.\d+.*\n){10})", out)
    assert len(tables) == 2, out  # a full top-10 before and after the new ratings
    assert "change" in out and "entered the top-10:" in out
    assert re.search(r"rated 1★ now|rated 1 stars now", out)  # the 1-star favourites left the list
    assert "worker /metrics: input events ok" in out
    assert "shut down: worker stopped (exit code 0), broker stopped, temporary folder removed" in out
    tmp = re.search(r"temporary folder (\S+)", out).group(1)
    assert not Path(tmp).exists()


@pytest.mark.integration
@pytest.mark.slow
def test_demo_cleans_up_when_interrupted(tansu, tmp_path):
    process = subprocess.Popen(DEMO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(),
                               cwd=tmp_path, start_new_session=True)
    lines, worker_pid = [], None
    try:
        for line in process.stdout:
            lines.append(line)
            match = re.search(r"✓ .*: pid (\d+), answered", line)
            if match:
                worker_pid = int(match.group(1))
                process.send_signal(signal.SIGTERM)  # as a Ctrl-C would, right after the worker is up
                break
        rest = process.communicate(timeout=120)[0]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    out = "".join(lines) + rest
    assert worker_pid is not None, out
    assert process.returncode == 130, out
    assert "interrupted: shutting down" in out
    assert "worker stopped" in out and "broker stopped" in out and "temporary folder removed" in out
    assert not _pid_alive(worker_pid)
    assert not Path(re.search(r"temporary folder (\S+)", out).group(1)).exists()

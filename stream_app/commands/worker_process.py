"""A worker process seen from outside: its /metrics read and summed, its exit noticed, its process group stopped.

Used by `recsys demo`, bench/stream.py, the chaos soak (bench/soak_cluster.py) and the tests; nothing here
imports Faust or the worker's code.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from stream_app.errors import RecsysError


class WorkerExited(RecsysError):
    """The worker process ended on its own (its log's end is in the message)."""


def read_metrics(port: int, timeout: float = 2.0) -> dict[str, list[tuple[dict, float]]] | None:
    """The worker's /metrics as {sample name: [(labels, value)]}, or None if it does not answer."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as response:
            text = response.read().decode("utf-8", "replace")
    except OSError:
        return None
    samples: dict[str, list[tuple[dict, float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return samples


def metric_sum(samples: dict | None, name: str, **labels) -> float:
    if not samples:
        return 0.0
    return sum(v for lab, v in samples.get(name, ()) if all(lab.get(k) == w for k, w in labels.items()))


def counted(samples: dict | None, topic: str) -> float:
    """Input events of `topic` the worker has dealt with (ok, duplicate or dead-lettered; rekeyed ones come back)."""
    return sum(metric_sum(samples, "recsys_events_total", topic=topic, outcome=o)
               for o in ("ok", "duplicate", "dead_letter"))


@dataclass
class Worker:
    process: subprocess.Popen
    log_path: Path
    web_port: int

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:])

    def check(self) -> None:
        """Raise WorkerExited with the end of the worker's log if it has exited."""
        code = self.process.poll()
        if code is not None:
            raise WorkerExited(f"the worker exited (code {code}); the end of its log ({self.log_path}):\n"
                            f"{self.log_tail()}")

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM its process group, SIGKILL after `timeout` s; returns the exit code."""
        proc = self.process
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        return proc.returncode

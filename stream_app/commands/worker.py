"""`recsys worker`: run the Faust streaming worker (the same app as `faust -A stream_app.worker.app worker`)."""

from __future__ import annotations

import errno
import os
import socket

from stream_app.errors import ServiceError
from stream_app.settings import add_setting_flags, settings_from_args

BROKER_PROBE_SECONDS = 5.0


def register(sub):
    p = sub.add_parser("worker", help="run the streaming worker (fold-in, vectors, recommendations, /metrics)",
                       description="Run the Faust worker: reads ratings, users, items and recommend-requests, "
                                   "publishes user-vectors, item-vectors, recommendations and dead-letters, and "
                                   "serves Prometheus metrics on http://localhost:WEB_PORT/metrics. "
                                   "Stops cleanly on SIGTERM or Ctrl-C.")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                   help="worker log level (default info)")
    p.add_argument("--quiet", action="store_true", help="no startup banner")
    add_setting_flags(p, "stream", "model")
    p.set_defaults(func=run)


def run(args) -> int:
    settings = settings_from_args(args)
    check_web_port(settings.web_port)  # before the slow imports: a clear line at once
    check_broker(settings.broker_url)
    from stream_app.worker import memory

    memory.limit_arenas(settings.malloc_arenas)  # before the imports below start threads
    memory.fix_mmap_threshold(settings.malloc_mmap_threshold_kb)
    # One BLAS thread, read when numpy loads: a worker's matrices are small, and it shares the cores with the
    # other workers and a retrain (several threads competing for busy cores are several times slower).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

    from faust.worker import Worker

    from stream_app.worker.app import create_app

    app = create_app(settings)
    memory.freeze_startup_objects()  # a takeover's rebalance then no longer walks them (Faust's gc.collect())
    print(f"serving model {app.runtime.model_version} from {settings.artifacts_dir} on {settings.broker_url}; "
          f"metrics on http://localhost:{settings.web_port}/metrics", flush=True)
    worker = Worker(app, loglevel=args.log_level, quiet=args.quiet)
    # Faust's terminal spinner (kept at levels >= warning) sets the root logger to DEBUG, so every debug call
    # of aiokafka and Faust built a log record: ~6% of a busy worker's time.
    worker.spinner = None
    worker.execute_from_commandline()  # returns by SystemExit once the worker has stopped
    return 0


def check_web_port(port: int, host: str = "0.0.0.0") -> None:
    """ServiceError if the worker's web port cannot be bound (e.g. a second worker on this host)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the web server does
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise ServiceError(f"cannot bind the worker's web port {port} ({exc.strerror}): set RECSYS_WEB_PORT "
                                   "(or --web-port) to another port") from None
            raise ServiceError(f"port {port} is already in use (another worker on this host?): give each worker its "
                               "own RECSYS_WEB_PORT (or --web-port) and RECSYS_STORE_DIR (or --store-dir)") from None


def check_broker(broker_url: str, timeout: float = BROKER_PROBE_SECONDS) -> None:
    """ServiceError if no Kafka broker answers at `broker_url`."""
    from stream_app.kafka_admin import bootstrap_from_url, is_reachable

    bootstrap = bootstrap_from_url(broker_url)
    if not is_reachable(bootstrap, timeout=timeout):
        raise ServiceError(f"no Kafka broker answers at {bootstrap}: start one (`recsys broker --detach`) or set "
                           "RECSYS_BROKER_URL (or --broker-url) to a running one")

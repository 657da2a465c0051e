"""`recsys worker`: run the Faust streaming worker (the same app as `faust -A stream_app.worker.app worker`)."""

from __future__ import annotations

from stream_app.settings import add_setting_flags, settings_from_args


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
    from faust.worker import Worker

    from stream_app.worker.app import create_app

    settings = settings_from_args(args)
    app = create_app(settings)
    print(f"serving model {app.runtime.model_version} from {settings.artifacts_dir} on {settings.broker_url}; "
          f"metrics on http://localhost:{settings.web_port}/metrics", flush=True)
    worker = Worker(app, loglevel=args.log_level, quiet=args.quiet)
    worker.execute_from_commandline()  # returns by SystemExit once the worker has stopped
    return 0

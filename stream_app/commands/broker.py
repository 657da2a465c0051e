"""`recsys broker`: run the embedded Kafka-compatible broker (tansu, in-memory) for development."""

from __future__ import annotations

import signal
import threading

from stream_app import broker as embedded
from stream_app import kafka_admin
from stream_app.settings import Settings


def register(sub):
    p = sub.add_parser("broker", help="run an embedded in-memory Kafka broker (tansu) for development",
                       description="Run an in-memory Kafka-compatible broker (tansu) on 127.0.0.1. "
                                   "Runs in the foreground until Ctrl-C unless --detach is given. "
                                   "All topics and data are lost when it stops.")
    p.add_argument("--port", type=int, default=None,
                   help="port to listen on (default: RECSYS_BROKER_PORT, 9092)")
    action = p.add_mutually_exclusive_group()
    action.add_argument("--detach", action="store_true", help="start it in the background and return")
    action.add_argument("--stop", action="store_true", help="stop the broker started with --detach")
    action.add_argument("--status", action="store_true", help="say whether a detached broker runs")
    p.set_defaults(func=run)


def _print_address(bootstrap: str, url: str) -> None:
    print(f"bootstrap: {bootstrap}")
    print(f"export RECSYS_BROKER_URL={url}")


def run(args):
    settings = Settings.from_env()
    port = args.port if args.port is not None else settings.broker_port
    path = embedded.state_file(settings.data_cache)

    if args.status:
        state = embedded.read_state(path)
        if state is None:
            print("no detached broker is running")
            return 1
        reachable = kafka_admin.is_reachable(state["bootstrap"])
        print(f"broker running (pid {state['pid']}), {'answering' if reachable else 'NOT answering'} "
              f"on {state['bootstrap']}; log: {state['log']}")
        _print_address(state["bootstrap"], state["url"])
        return 0 if reachable else 1

    if args.stop:
        state = embedded.stop_detached(path)
        if state is None:
            print("no detached broker was running")
        else:
            print(f"stopped broker pid {state['pid']} on {state['bootstrap']}")
        return 0

    if args.detach:
        state = embedded.start_detached(port=port, path=path)
        print(f"broker started in the background (pid {state['pid']}); log: {state['log']}")
        _print_address(state["bootstrap"], state["url"])
        print("stop it with: recsys broker --stop")
        return 0

    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with embedded.EmbeddedBroker(port=port, log_path="-") as broker:
            _print_address(broker.bootstrap, broker.url)
            print("in-memory broker running; Ctrl-C stops it (and loses all data)", flush=True)
            try:
                while not stop.is_set() and broker.is_running():
                    stop.wait(0.5)
            except KeyboardInterrupt:
                pass
            if not broker.is_running() and not stop.is_set():
                print(f"broker exited with code {broker.process.returncode}")
                return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    print("broker stopped")
    return 0

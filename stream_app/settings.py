"""One settings object for the whole product: defaults < environment (RECSYS_*) < CLI flags.

Every field is documented here once; `recsys settings` prints the table that the README shows.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from stream_app.errors import UsageError

ENV_PREFIX = "RECSYS_"


def _setting(default: Any, doc: str, group: str) -> Any:
    return field(default=default, metadata={"doc": doc, "group": group})


@dataclass
class Settings:
    # data
    data_cache: str = _setting(
        str(Path.home() / ".cache" / "recsys"), "where `recsys data download` stores datasets", "data"
    )
    data_mirror: str = _setting(
        "", "folder or file:// URL holding MovieLens folders or zips, used instead of GroupLens", "data"
    )
    # model / training
    artifacts_dir: str = _setting("model_artifacts", "folder of versioned model artifacts", "model")
    device: str = _setting("auto", "torch device for training: auto, cpu or cuda", "model")
    seed: int = _setting(0, "random seed (training, fold-in sampling, demo)", "model")
    torch_threads: int = _setting(
        0, "torch threads of a training run (0 = auto: the CPUs this process may use; `recsys retrain`, which "
        "runs beside serving, leaves one of them to the workers). Two torch processes that each take every core "
        "slow each other down several times over", "model")
    # kafka / stream
    broker_url: str = _setting("kafka://127.0.0.1:9092", "Kafka bootstrap server(s)", "stream")
    app_id: str = _setting("recsys", "Faust application id (consumer group, changelog prefix)", "stream")
    partitions: int = _setting(4, "partitions of input topics and tables", "stream")
    replication_factor: int = _setting(1, "replication factor of topics the app creates", "stream")
    topic_ratings: str = _setting("ratings", "input: rating events", "stream")
    topic_users: str = _setting("users", "input: user create/update events", "stream")
    topic_items: str = _setting("items", "input: item create/update events", "stream")
    topic_requests: str = _setting("recommend-requests", "input: recommendation requests", "stream")
    topic_user_vectors: str = _setting("user-vectors", "output: updated user vectors", "stream")
    topic_item_vectors: str = _setting("item-vectors", "output: updated item vectors", "stream")
    topic_recommendations: str = _setting("recommendations", "output: top-N lists", "stream")
    topic_dead_letters: str = _setting("dead-letters", "output: rejected input with a reason", "stream")
    window_user: int = _setting(64, "recent ratings kept per user for fold-in", "stream")
    window_item: int = _setting(64, "recent ratings kept per item for fold-in", "stream")
    top_n: int = _setting(10, "default length of recommendation lists", "stream")
    recommend_on_rating: bool = _setting(True, "publish a fresh top-N after each rating of a user", "stream")
    recommend_interval: float = _setting(
        0.0, "at least this many seconds between two top-N lists published for one user's ratings (0 = one after "
        "every batch that applied ratings of the user; recommend-requests are always answered)", "stream")
    topn_exact_items: int = _setting(
        2000, "catalogues of at most this many items are scored exactly for top-N lists; larger ones in two "
        "stages: a dot-product candidate score over every item, the full predictor on TOPN_CANDIDATES of them",
        "stream")
    topn_candidates: int = _setting(128, "items re-ranked with the full predictor in two-stage top-N", "stream")
    batch_size: int = _setting(256, "events folded in per encoder call (stream.take)", "stream")
    batch_timeout: float = _setting(
        0.01, "seconds to wait for a batch to fill (a busy worker fills its batches anyway; this bounds the wait "
        "at low load)", "stream")
    fetch_max_wait: float = _setting(
        0.02, "seconds a worker's fetch request may wait for new events: tansu holds every fetch this long even "
        "when events are there, so each hop of the pipeline can add up to it; Kafka answers as soon as there are "
        "events, so there a larger value (e.g. 0.5) only saves idle requests", "stream")
    max_event_bytes: int = _setting(65536, "larger payloads go to dead-letters", "stream")
    store_dir: str = _setting("stores", "RocksDB table store folder", "stream")
    web_port: int = _setting(6066, "worker web port: serves /metrics, /healthz and /ready, nothing else", "stream")
    web_bind: str = _setting(
        "0.0.0.0", "address the worker's web server listens on (0.0.0.0: every interface, as Prometheus and "
        "Kubernetes probes need in a pod; 127.0.0.1: this host only)", "stream")
    session_timeout: float = _setting(
        6.0, "worker consumer-group session timeout (s): a dead worker's partitions move after this long; "
        "tansu also holds every group join for about half of it", "stream")
    standby_replicas: int = _setting(
        1, "table standby replicas: other workers that keep a copy of each table partition up to date from its "
        "changelog, so a dead worker's partitions move without a full changelog replay (0 = none; useful only "
        "with two or more workers)", "stream")
    producer_batching: bool = _setting(
        True, "let the worker's producer put several records of a partition in one batch (a few ms of linger: far "
        "fewer produce requests); tables still recover exactly on tansu, whose end offsets count a batch as one "
        "record (stream_app/worker/delivery.py, rule 0); off: one record per batch", "stream")
    model_poll_interval: float = _setting(
        5.0, "seconds between two checks of ARTIFACTS_DIR/current by a worker; a new model is loaded, checked and "
        "swapped in between batches (0 = never)", "stream")
    commit_stall_timeout: float = _setting(
        15.0, "seconds an input partition's committed offset may stay put while the partition has events past "
        "it before the worker reads the partition again from that offset (Faust can drop a fetched event around "
        "a rebalance; re-read events are dropped by event_id; 0 = never)", "stream")
    lag_interval: float = _setting(
        5.0, "seconds between two samples of the consumer lag of the input partitions a worker owns (end offset "
        "minus committed offset, `recsys_consumer_lag`) and of their commit stalls (for /ready); 0 = never",
        "stream")
    ready_stall_timeout: float = _setting(
        120.0, "/ready answers 503 once an input partition's committed offset has stayed put this many seconds "
        "while events wait past it (sampled every LAG_INTERVAL; 0 = stalls never make a worker unready)", "stream")
    log_offsets: bool = _setting(
        False, "log every seek, assignment and commit of an input partition, with the offsets handled since the "
        "last commit (at INFO, logger stream_app.offsets): to trace where an event went", "stream")
    memory_trim_interval: float = _setting(
        60.0, "seconds between two hand-backs of a worker's freed heap memory to the system (glibc malloc_trim: "
        "RSS otherwise keeps the high-water mark of every takeover and burst; 0 = never)", "stream")
    malloc_arenas: int = _setting(
        2, "heaps glibc may give a worker's threads (mallopt M_ARENA_MAX; each heap keeps its own freed memory, "
        "so fewer heaps keep RSS near what is used; 0 = glibc's default of 8 per core)", "stream")
    malloc_mmap_threshold_kb: int = _setting(
        128, "allocations of this many KiB or more get their own mapping, handed back when freed (mallopt "
        "M_MMAP_THRESHOLD, fixed; 0 = glibc's default, which rises with the largest block freed, so that a "
        "recovery's buffers later come from the heap and leave holes RSS keeps)", "stream")
    rocksdb_memtable_mb: int = _setting(
        8, "MB of RocksDB memtables all of a worker's table partitions share (standbys included): past ~90% the "
        "partition being written flushes to disk", "stream")
    rocksdb_cache_mb: int = _setting(
        2, "MB of the one RocksDB block cache all of a worker's table partitions share (the decoded-row caches "
        "above it serve the hot rows)", "stream")
    broker_port: int = _setting(9092, "port of the embedded tansu broker (`recsys broker`)", "stream")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is not None:
                values[f.name] = _parse(f.type, raw, f.name)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def _parse(type_name: Any, raw: str, name: str) -> Any:
    kind = type_name if isinstance(type_name, str) else type_name.__name__
    try:
        if kind == "bool":
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        raise UsageError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a valid {kind}: fix or unset it") from None
    return raw


def add_setting_flags(parser: argparse.ArgumentParser, *names: str) -> None:
    """Add `--some-setting` flags (default None = keep env/default) for the named settings and every setting of
    the named groups (data, model, stream): only those the command uses, so that its --help stays short."""
    unknown = set(names) - {f.name for f in fields(Settings)} - {f.metadata["group"] for f in fields(Settings)}
    if unknown:
        raise ValueError(f"not a setting or group of settings: {sorted(unknown)}")
    group = parser.add_argument_group("settings (flag > RECSYS_<NAME> environment variable > default; "
                                      "`recsys settings` lists them all)")
    for f in fields(Settings):
        if f.name not in names and f.metadata["group"] not in names:
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = f.type if isinstance(f.type, str) else f.type.__name__
        if kind == "bool":
            group.add_argument(flag, dest=f.name, default=None, action=argparse.BooleanOptionalAction,
                               help=f.metadata["doc"])
        else:
            conv = {"int": int, "float": float}.get(kind, str)
            group.add_argument(flag, dest=f.name, default=None, type=conv, help=f.metadata["doc"])


def settings_from_args(args: argparse.Namespace) -> Settings:
    names = {f.name for f in fields(Settings)}
    return Settings.from_env(**{k: v for k, v in vars(args).items() if k in names})


def settings_table() -> str:
    """Markdown table of all settings, for the README and `recsys settings`."""
    rows = ["| env var | flag | default | meaning |", "|---|---|---|---|"]
    for f in fields(Settings):
        default = f.default if f.name != "data_cache" else "~/.cache/recsys"
        rows.append(f"| `{ENV_PREFIX}{f.name.upper()}` | `--{f.name.replace('_', '-')}` | `{default}` "
                    f"| {f.metadata['doc']} |")
    return "\n".join(rows)

"""Model lifecycle in a worker: follow `ARTIFACTS_DIR/current`, load and check a new model off the event
loop, swap it in between batches, re-fold stale entities lazily. No Kafka here.

- `ModelWatcher.poll()` reads the pointer (a file naming the active version folder, rewritten atomically by
  `recsys train`/`recsys retrain` via `artifacts.set_current`). A new name is loaded and verified in a
  thread (`asyncio.to_thread`: checksums, then `check_compatible` against the model in service). A
  refused artifact is logged and counted once (outcome "refused"); the worker keeps its model and tries
  again only when the pointer names another folder, or the same folder was rewritten.
- `BatchGate`: every batch runs inside `gate.batch()`; `gate.exclusive()` waits until no batch is
  running and holds new ones back while the service object is replaced, so a swap happens strictly
  between batches: an event is processed entirely by the old model or entirely by the new one, and the
  Kafka consumer keeps its position (nothing is dropped or read twice).
- Stale state: an entity whose stored `model_version` differs from the model in service is re-folded
  from its stored window with the new encoders the next time it is touched (`is_stale`,
  `refresh_item_window`), so every vector published after a swap carries the new model_version.
- `swap_catalogue`: the new service starts from the new artifact's item vectors; streamed items it does
  not know are carried over with their side data and their cold-start vector under the new model until
  they are re-folded.

Compatibility: a new model must keep N (vector size), the feature schema and the rate/context widths of
the model in service, because the stored windows hold encoded side data and (item side) packed vectors.
A model that changes them needs a fresh deployment (a new RECSYS_APP_ID): it is refused here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np

from stream_app.core.artifacts import CURRENT, MANIFEST, load_artifact
from stream_app.errors import ArtifactError
from stream_app.stream.state import EntityState, to_dense

log = logging.getLogger(__name__)

SWAPPED, REFUSED = "swapped", "refused"


class BatchGate:
    """Many batches at once, or one exclusive section (a model swap) with no batch running."""

    def __init__(self) -> None:
        self._active = 0
        self._closed = False
        self._cond = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def batch(self) -> AsyncIterator[None]:
        async with self._cond:
            await self._cond.wait_for(lambda: not self._closed)
            self._active += 1
        try:
            yield
        finally:
            async with self._cond:
                self._active -= 1
                self._cond.notify_all()

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        async with self._cond:
            await self._cond.wait_for(lambda: not self._closed)
            self._closed = True
            await self._cond.wait_for(lambda: self._active == 0)
        try:
            yield
        finally:
            async with self._cond:
                self._closed = False
                self._cond.notify_all()


def read_pointer(artifacts_dir: str | Path) -> str | None:
    """The folder name in ARTIFACTS_DIR/current, or None (no pointer: ARTIFACTS_DIR is a model folder)."""
    pointer = Path(artifacts_dir) / CURRENT
    try:
        name = pointer.read_text().strip()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    return name or None


def check_compatible(old, new) -> None:
    """Raise ArtifactError if `new` cannot replace `old` under the same stored state."""
    if new.n_dim != old.n_dim:
        raise ArtifactError(f"vector size {new.n_dim} differs from the served model's {old.n_dim}")
    if new.schema.to_dict() != old.schema.to_dict():
        raise ArtifactError("feature schema differs from the served model's (stored windows hold encoded side data)")
    widths = [(s.user_dim, s.item_dim, s.context_dim, s.rates_dim) for s in (old.schema, new.schema)]
    if widths[0] != widths[1]:
        raise ArtifactError(f"feature widths {widths[1]} differ from the served model's {widths[0]}")
    probe = np.concatenate([new.cold_vector("user", {}), new.cold_vector("item", {})])
    if not np.all(np.isfinite(probe)):
        raise ArtifactError("the model gives non-finite cold-start vectors")


class ModelWatcher:
    """Follows ARTIFACTS_DIR/current; `poll()` returns a verified new Recommender, or None."""

    def __init__(self, artifacts_dir: str | Path, served, metrics=None,
                 loader: Callable = load_artifact):
        self.dir = Path(artifacts_dir)
        self.served = served
        self.metrics = metrics
        self.loader = loader
        self.current = read_pointer(self.dir)
        self._refused: tuple[str, float] | None = None
        self.last_load_seconds: float | None = None
        self._pending_name: str | None = None

    def _stamp(self, name: str) -> float:
        try:
            return (self.dir / name / MANIFEST).stat().st_mtime
        except OSError:
            return 0.0

    def pending(self) -> str | None:
        """The pointer's name if it names a model not served and not already refused as it is now."""
        name = read_pointer(self.dir)
        if name is None or name == self.current:
            return None
        if self._refused == (name, self._stamp(name)):
            return None
        return name

    def load(self, name: str):
        """Load and check one artifact (blocking: run it in a thread)."""
        rec = self.loader(self.dir / name)
        if rec.model_version == self.served.model_version:
            return None  # the pointer names (a copy of) the model in service
        check_compatible(self.served, rec)
        return rec

    async def poll(self):
        name = self.pending()
        if name is None:
            return None
        started = time.perf_counter()
        try:
            rec = await asyncio.to_thread(self.load, name)
        except Exception as exc:  # noqa: BLE001 (any failure: keep serving the old model)
            self._refused = (name, self._stamp(name))
            self._observe_load(time.perf_counter() - started)
            self.count(REFUSED)
            log.error("model %r refused, keeping %s: %s", name, self.served.model_version, exc)
            return None
        self._observe_load(time.perf_counter() - started)
        if rec is None:
            self.current = name
            return None
        log.info("model %r (%s) loaded and checked in %.3f s", name, rec.model_version, self.last_load_seconds)
        self._pending_name = name
        return rec

    def accepted(self, rec) -> None:
        """Call once `rec` is in service."""
        self.current = self._pending_name or self.current
        self.served = rec
        self._refused = None
        self.count(SWAPPED)

    def count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.model_swaps.labels(outcome=outcome).inc()

    def _observe_load(self, seconds: float) -> None:
        self.last_load_seconds = seconds
        if self.metrics is not None:
            self.metrics.model_load_seconds.observe(seconds)


def is_stale(state: EntityState | None, model_version: str) -> bool:
    """A stored state whose vector was computed by another model (None: never computed, not stale)."""
    return state is not None and state.model_version not in (None, model_version)


def refresh_item_window(state: EntityState, rec) -> None:
    """Rater vectors in an item window are the old model's: replace each with the new model's view of the
    rater (its trained vector if the new artifact knows it, else its cold-start vector from the stored
    side data), so the re-fold reads only new-model vectors."""
    win = state.window
    if not win:
        return
    unknown = []
    for j, entry in enumerate(win):
        index = rec.index["user"].get(entry.other_id)
        if index is not None:
            win[j] = entry._replace(vector=np.asarray(rec.vectors["user"][index], np.float32))
        else:
            unknown.append(j)
    if unknown:
        cold = rec.cold_vectors("user", to_dense([win[j].features for j in unknown], rec.schema.user_dim))
        for row, j in enumerate(unknown):
            win[j] = win[j]._replace(vector=cold[row].astype(np.float32))


def swap_catalogue(old_service, new_service) -> int:
    """Carry streamed items the new artifact does not know into the new service's catalogue (side data kept,
    cold-start vector of the new model until re-folded). Returns how many were carried over."""
    old, new = old_service.catalogue, new_service.catalogue
    extra = [(i, row) for row, i in enumerate(old.ids) if i not in new]
    if not extra:
        return 0
    feats = np.stack([old.features[row] for _, row in extra]).astype(np.float32)
    cold = new_service.rec.cold_vectors("item", feats)
    for (item_id, row), vector, f in zip(extra, cold, feats, strict=True):
        new.upsert(item_id, vector, f, old.counts[row])
    return len(extra)

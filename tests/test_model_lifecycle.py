"""Model lifecycle without Kafka: the `current` pointer, loading and refusing models, the batch gate,
stale-state re-fold and the catalogue carried over a swap (stream/lifecycle.py)."""

from __future__ import annotations

import asyncio
import shutil

import numpy as np
import pytest
import torch

from stream_app.core.artifacts import WEIGHTS, load_artifact, save_artifact, set_current
from stream_app.core.config import ModelConfig
from stream_app.core.training import Trainer
from stream_app.data.features import FeatureSchema
from stream_app.data.synthetic import make_synthetic
from stream_app.stream import lifecycle as lc
from stream_app.stream import state as st
from stream_app.stream.metrics import StreamMetrics
from stream_app.stream.service import FoldInService

TINY = dict(n_dim=6, m_records=5, k_samples=8, hidden=24, predictor_hidden=24, rounds=2, steps_per_round=10,
            batch_size=128)


def train(data, **over):
    torch.set_num_threads(1)
    config = ModelConfig(**{**TINY, **over})
    rec, _ = Trainer(config, FeatureSchema.fit(data), "cpu", progress=False).fit(data, log=lambda *a: None)
    return rec


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """ARTIFACTS_DIR with v1 (current), v2 (same data, another seed) and v-small (N=4: incompatible)."""
    root = tmp_path_factory.mktemp("artifacts")
    data = make_synthetic(n_users=50, n_items=30, mean_ratings_per_user=10, seed=5)
    save_artifact(train(data, seed=1), root / "v1")
    save_artifact(train(data, seed=2), root / "v2")
    save_artifact(train(data, seed=3, n_dim=4), root / "v-small")
    set_current(root, "v1")
    return root


@pytest.fixture
def artifacts(models, tmp_path):
    root = tmp_path / "artifacts"
    shutil.copytree(models, root)
    return root


def swaps(metrics: StreamMetrics, outcome: str) -> float:
    return metrics.registry.get_sample_value("recsys_model_swaps_total", {"outcome": outcome}) or 0.0


def services(artifacts) -> tuple[FoldInService, FoldInService]:
    return tuple(FoldInService(load_artifact(artifacts / name), 8, 8) for name in ("v1", "v2"))


def test_watcher_follows_the_pointer_and_loads_a_new_model(artifacts):
    served = load_artifact(artifacts)
    metrics = StreamMetrics()
    watcher = lc.ModelWatcher(artifacts, served, metrics)
    assert watcher.current == "v1" and asyncio.run(watcher.poll()) is None
    set_current(artifacts, "v2")
    new = asyncio.run(watcher.poll())
    assert new is not None and new.model_version == load_artifact(artifacts / "v2").model_version
    assert new.model_version != served.model_version
    watcher.accepted(new)
    assert watcher.current == "v2" and swaps(metrics, "swapped") == 1
    assert asyncio.run(watcher.poll()) is None  # nothing new
    assert metrics.registry.get_sample_value("recsys_model_load_seconds_count") == 1


def test_pointer_written_atomically_names_the_folder(artifacts):
    set_current(artifacts, "v2")
    assert (artifacts / "current").read_text() == "v2\n" and lc.read_pointer(artifacts) == "v2"
    assert not list(artifacts.glob(".current*"))  # the temp file was renamed, not left behind
    assert lc.read_pointer(artifacts / "v1") is None  # a model folder has no pointer


@pytest.mark.parametrize("breakage", ["tampered", "missing-folder", "incompatible", "not-json"])
def test_a_broken_or_incompatible_model_is_refused_once_and_the_old_one_kept(artifacts, breakage, caplog):
    served = load_artifact(artifacts)
    metrics = StreamMetrics()
    watcher = lc.ModelWatcher(artifacts, served, metrics)
    if breakage == "tampered":
        shutil.copytree(artifacts / "v2", artifacts / "bad")
        with open(artifacts / "bad" / WEIGHTS, "r+b") as f:
            f.seek(100)
            f.write(b"\x00\x01\x02")
        name = "bad"
    elif breakage == "incompatible":
        name = "v-small"
    elif breakage == "not-json":
        shutil.copytree(artifacts / "v2", artifacts / "bad")
        (artifacts / "bad" / "manifest.json").write_text("{not json")
        name = "bad"
    else:
        name = "nowhere"
    (artifacts / "current").write_text(name + "\n")
    with caplog.at_level("ERROR"):
        assert asyncio.run(watcher.poll()) is None
    assert swaps(metrics, "refused") == 1 and swaps(metrics, "swapped") == 0
    assert f"model {name!r} refused" in caplog.text
    assert watcher.current == "v1" and watcher.served is served
    assert asyncio.run(watcher.poll()) is None and swaps(metrics, "refused") == 1  # not retried every poll
    set_current(artifacts, "v2")  # a good model afterwards is taken
    assert asyncio.run(watcher.poll()).model_version != served.model_version


def test_incompatible_reason_names_the_difference(artifacts):
    small = load_artifact(artifacts / "v-small")  # N=4, plus the bias and the residual factor
    with pytest.raises(Exception, match=f"vector size {small.n_dim} differs"):
        lc.check_compatible(load_artifact(artifacts / "v1"), small)


def test_gate_swaps_only_between_batches():
    order: list[str] = []

    async def scenario():
        gate = lc.BatchGate()
        started = asyncio.Event()

        async def batch(name: str, hold: float):
            async with gate.batch():
                order.append(f"{name} start")
                started.set()
                await asyncio.sleep(hold)
                order.append(f"{name} end")

        async def swap():
            await started.wait()
            async with gate.exclusive():
                order.append("swap start")
                await asyncio.sleep(0.01)
                order.append("swap end")

        first = asyncio.create_task(batch("b1", 0.05))
        swapper = asyncio.create_task(swap())
        await asyncio.sleep(0.01)
        second = asyncio.create_task(batch("b2", 0))  # arrives while the swap waits: runs after it
        await asyncio.gather(first, swapper, second)

    asyncio.run(scenario())
    assert order == ["b1 start", "b1 end", "swap start", "swap end", "b2 start", "b2 end"]


def test_stale_states_are_refolded_with_the_new_model(artifacts):
    old, new = services(artifacts)
    uid = old.rec.ids["user"][0]
    state = old.initial_state("user", uid)
    assert state.model_version == old.model_version
    assert not lc.is_stale(state, old.model_version) and lc.is_stale(state, new.model_version)
    assert not lc.is_stale(st.new_state(), new.model_version)  # never computed: nothing stale
    vector = new.fold_in("user", {uid: state})[uid]
    st.set_vector(state, vector, new.model_version)
    assert not lc.is_stale(state, new.model_version)
    assert not np.allclose(state.vector, old.initial_state("user", uid).vector)


def test_item_window_rater_vectors_come_from_the_new_model(artifacts):
    old, new = services(artifacts)
    iid = old.rec.ids["item"][0]
    state = old.initial_state("item", iid)
    feats = old.features("user", "stranger", st.EntityState(side={"gender": "F"}))
    st.add_rating(state, "e-new", "stranger", [0.5, 1.0], 1.7e9, 8, vector=np.ones(old.n_dim),
                  features=st.to_sparse(feats))
    lc.refresh_item_window(state, new.rec)
    for entry in state.window[:-1]:
        index = new.rec.index["user"][entry.other_id]
        assert np.allclose(entry.vector, new.rec.vectors["user"][index])
    cold = new.rec.cold_vectors("user", np.asarray(feats).reshape(1, -1))[0]
    assert np.allclose(state.window[-1].vector, cold, atol=1e-6)


def test_catalogue_after_a_swap_has_new_vectors_and_keeps_streamed_items(artifacts):
    old, new = services(artifacts)
    feats = old.schema.encode_item({"genres": ["Comedy"]})
    old.catalogue.upsert("streamed-item", np.full(old.n_dim, 9.0, np.float32), feats)
    assert lc.swap_catalogue(old, new) == 1
    row = new.catalogue.index_of("streamed-item")
    assert row is not None and np.allclose(new.catalogue.features[row], feats)
    assert np.allclose(new.catalogue.vectors[row], new.rec.cold_vector("item", {"genres": ["Comedy"]}), atol=1e-6)
    known = new.rec.ids["item"][0]
    assert np.allclose(new.catalogue.vectors[new.catalogue.index_of(known)], new.rec.vectors["item"][0])
    assert len(new.catalogue) == len(new.rec.ids["item"]) + 1

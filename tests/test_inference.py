"""The numpy inference (core/inference.py) computes what the trained torch modules compute, for every
architecture option, and the serving constants as docs/method.md writes them; an artifact loads and serves
without importing torch."""

from __future__ import annotations

import ast
import subprocess
import sys

import numpy as np
import pytest
import torch

from stream_app.core.config import ModelConfig
from stream_app.core.inference import FrozenNetworks, seeded_positions
from stream_app.core.model import AEVecModel

DIMS = dict(user=5, item=7, context=3, rates=2)
VARIANTS = {
    "set-mlp": dict(),
    "set-linear-2phi": dict(rho="linear", phi_layers=2),
    "concat": dict(encoder="concat"),
    "no-biases-no-dot": dict(biases=False, dot_head=False),
    "dropout-0": dict(dropout=0.0),
}


def random_model(**over) -> AEVecModel:
    """A model with random weights and random serving constants (breathing, cold start, global mean)."""
    torch.manual_seed(0)
    # the torch modules know nothing of the residual factor (fitted after training): off unless asked for
    config = ModelConfig(n_dim=6, m_records=4, k_samples=5, hidden=16, predictor_hidden=12,
                         **{"residual_rank": 0, **over})
    model = AEVecModel(config, DIMS["user"], DIMS["item"], DIMS["context"], DIMS["rates"]).eval()
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            buffer.copy_(torch.randn_like(buffer) * 0.3 + (torch.eye(6) if name.endswith("whiten") else 0))
    return model


def reference_cold(model: AEVecModel, side: str, data: np.ndarray) -> np.ndarray:
    """Cold start, written out: [data, 1] @ the side's regression weights."""
    weights = getattr(model, f"{side}_cold").numpy()
    return np.concatenate([data, np.ones((len(data), 1), np.float32)], axis=1) @ weights


def reference_fold_in(model: AEVecModel, side: str, records: np.ndarray, count: np.ndarray, seeds: list[int],
                      cold: np.ndarray, prior: float) -> np.ndarray:
    """The reference: the torch modules' own forward and breathing, then the bias and the shrinkage written
    out entity by entity (docs/method.md)."""
    cfg = model.config
    start = np.cumsum(count) - count
    pos, mask = seeded_positions(count, cfg.k_samples, cfg.m_records, seeds)
    index = torch.from_numpy(start[:, None, None] + pos)
    with torch.no_grad():
        codes = model.encoder(side)(torch.from_numpy(records)[index], torch.from_numpy(mask))
        vectors = model.to_vector(side, codes.mean(dim=1)).numpy()
    out = []
    for b, n in enumerate(count):
        shrunk = (n * vectors[b] + prior * cold[b, :cfg.n_dim]) / (n + prior)
        if cfg.biases:
            own = records[start[b]:start[b] + n]
            residual = own[:, -DIMS["rates"]] - float(model.predictor.global_mean) - own[:, model.vector_dim - 1]
            shrunk = np.append(shrunk, (residual.sum() + cfg.bias_reg * cold[b, -1]) / (n + cfg.bias_reg))
        out.append(shrunk)
    return np.stack(out)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_numpy_networks_compute_what_the_torch_modules_compute(variant):
    model = random_model(**VARIANTS[variant])
    net = FrozenNetworks.from_torch(model)
    rng = np.random.default_rng(1)
    v = model.vector_dim
    for side, other in (("user", "item"), ("item", "user")):
        count = np.array([1, 3, 9], np.int64)  # fewer than M (filler slots), and more
        records = rng.normal(size=(int(count.sum()), v + DIMS[other] + DIMS["context"] + DIMS["rates"]))
        records = records.astype(np.float32)
        data = rng.normal(size=(3, DIMS[side])).astype(np.float32)
        cold = reference_cold(model, side, data)
        np.testing.assert_allclose(net.cold_vectors(side, data), cold, rtol=1e-5, atol=1e-5)
        seeds = [11, 12, 13]
        expected = reference_fold_in(model, side, records, count, seeds, cold, prior=2.0)
        got = net.fold_in(side, records, np.cumsum(count) - count, count, seeds, cold, prior=2.0)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)

    users, items = 3, 11
    user_vec, item_vec = rng.normal(size=(users, v)), rng.normal(size=(items, v))
    user_data, item_data = rng.normal(size=(users, DIMS["user"])), rng.normal(size=(items, DIMS["item"]))
    context = rng.normal(size=(users, DIMS["context"]))
    f32 = [a.astype(np.float32) for a in (user_vec, user_data, item_vec, item_data, context)]
    t = [torch.from_numpy(a) for a in f32]
    pairs = [np.repeat(f32[0], items, 0), np.repeat(f32[1], items, 0), np.tile(f32[2], (users, 1)),
             np.tile(f32[3], (users, 1)), np.repeat(f32[4], items, 0)]
    with torch.no_grad():
        forward = model.predictor(*(torch.from_numpy(a) for a in pairs)).numpy()
        scored = model.predictor.score_items(model.predictor.item_part(t[2], t[3]), t[2], t[0], t[1], t[4]).numpy()
    np.testing.assert_allclose(net.predictor(*pairs), forward, rtol=1e-4, atol=1e-5)
    numpy_scored = net.predictor.score_items(net.predictor.item_part(f32[2], f32[3]), f32[2], f32[0], f32[1], f32[4])
    np.testing.assert_allclose(numpy_scored, scored, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(numpy_scored.reshape(-1, DIMS["rates"]), forward, rtol=1e-4, atol=1e-5)
    owner, rows = np.array([2, 0, 2, 1]), np.array([10, 3, 0, 3])  # any pairs, users repeated
    part = net.predictor.item_part(f32[2], f32[3])
    paired = net.predictor.score_pairs(part[rows], f32[2][rows], f32[0], f32[1], f32[4], owner)
    np.testing.assert_allclose(paired, forward.reshape(users, items, -1)[owner, rows], rtol=1e-4, atol=1e-5)


def test_networks_share_the_trained_models_memory():
    """Freezing changes buffers in place after the recommender is built: the numpy side must see it."""
    model = random_model()
    net = FrozenNetworks.from_torch(model)
    data = np.ones((1, DIMS["user"]), np.float32)
    before = net.cold_vectors("user", data).copy()
    with torch.no_grad():
        model.user_cold.add_(1.0)
        model.predictor.global_mean.fill_(0.25)
    assert np.allclose(net.cold_vectors("user", data), before + DIMS["user"] + 1)
    assert float(net.predictor.global_mean) == 0.25


def test_weights_of_the_wrong_shape_are_refused_when_loaded():
    state = {k: v.detach().numpy().copy() for k, v in random_model().state_dict().items()}
    state["item_encoder.phi.0.weight"] = state["item_encoder.phi.0.weight"][:, :-1]  # one input column short
    with pytest.raises(ValueError):
        FrozenNetworks(random_model().config, DIMS, state)
    del state["predictor.heads.bias"]
    with pytest.raises(KeyError):
        FrozenNetworks(random_model().config, DIMS, state)


def test_a_loaded_artifact_serves_without_importing_torch(tmp_path):
    from stream_harness import train_tiny

    rec = train_tiny(tmp_path / "tiny")
    code = ("import sys, numpy as np\n"
            "from stream_app.settings import Settings\n"
            "from stream_app.worker.app import create_app\n"
            f"app = create_app(Settings(artifacts_dir={str(tmp_path / 'tiny')!r}))\n"
            "rec = app.runtime.service.rec\n"
            "v = rec.vector_for_user([rec.ids['item'][0]], [4.0], [1.7e9], user_id=rec.ids['user'][0])\n"
            "print(rec.recommend(v, rec.features['user'][0], n=3))\n"
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))[:5]\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    v = rec.vector_for_user([rec.ids["item"][0]], [4.0], [1.7e9], user_id=rec.ids["user"][0])
    served = ast.literal_eval(done.stdout.strip())
    here = rec.recommend(v, rec.features["user"][0], n=3)
    assert [i for i, _ in served] == [i for i, _ in here]
    np.testing.assert_allclose([s for _, s in served], [s for _, s in here], rtol=1e-5)

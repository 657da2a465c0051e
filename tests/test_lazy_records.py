"""Training gathers records per step (LazyRecords) instead of materialising every record of every
rating: the steps and the refinement must see exactly the records the materialised table held."""

import pytest
import torch

from stream_app.core.config import ModelConfig
from stream_app.core.foldin import SIDES, other
from stream_app.core.training import Trainer
from stream_app.core.training_data import TrainingData
from stream_app.data.features import FeatureSchema
from stream_app.data.synthetic import make_synthetic

TINY = dict(n_dim=6, m_records=5, k_samples=8, hidden=24, predictor_hidden=24, rounds=1, steps_per_round=2,
            batch_size=64, valid_fraction=0.0)


@pytest.fixture(scope="module")
def data():
    return make_synthetic(n_users=50, n_items=40, mean_ratings_per_user=15, seed=3)


def setup(data, **overrides):
    cfg = ModelConfig(**{**TINY, **overrides})
    schema = FeatureSchema.fit(data)
    trainer = Trainer(cfg, schema, "cpu", progress=False)
    td = TrainingData(data, schema, trainer.device, cfg.seed, cfg.bias_reg)
    tables = trainer._initial_state(td).tables
    trainer._set_schedule(len(td.rates))
    return trainer, td, tables


def materialised(td: TrainingData, side: str, tables: dict) -> torch.Tensor:
    """Every record of `side` in group order, built all at once (what training held before)."""
    o, rows = other(side), td.groups[side].rows
    e = td.entity[o][rows]
    return torch.cat([tables[o][e], td.biases.bias[o][e].unsqueeze(1), td.features[o][e],
                      td.context[rows], td.rates[rows]], dim=1)


def twice(trainer: Trainer, run):
    """run() from the same random state with the lazy and with the materialised records."""
    state = trainer.generator.get_state()
    torch.manual_seed(0)  # dropout
    lazy = run("lazy")
    trainer.generator.set_state(state)
    torch.manual_seed(0)
    return lazy, run("full")


@pytest.mark.parametrize("side", SIDES)
def test_lazy_records_are_the_materialised_ones_for_any_index_shape(data, side):
    _, td, tables = setup(data)
    full, lazy = materialised(td, side, tables), td.records(side, tables)
    assert len(lazy) == len(full) == len(data)
    assert torch.equal(lazy[torch.arange(len(full))], full)
    index = torch.randint(len(full), (3, 4, 5))
    assert torch.equal(lazy[index], full[index])


def test_records_keep_the_round_start_vectors_while_refinement_moves_the_tables(data):
    _, td, tables = setup(data)
    lazy = td.records("user", tables)
    before = lazy[torch.arange(len(lazy))]
    tables["item"] += 1.0
    assert torch.equal(lazy[torch.arange(len(lazy))], before)


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("encoder", ["set", "concat"])
def test_refinement_targets_and_leave_one_out_match_the_materialised_records(data, encoder, side):
    trainer, td, tables = setup(data, encoder=encoder)
    trainer.model.eval()
    records = {"lazy": td.records(side, tables), "full": materialised(td, side, tables)}
    with torch.no_grad():  # a small budget: several chunks
        lazy, full = twice(trainer, lambda kind: trainer.refiner.targets(td, side, records[kind], budget=4000))
    for a, b in zip(lazy, full, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("objective", "phi_layers"), [("joint", 2), ("joint", 1), ("reconstruct", 2)])
def test_training_steps_see_the_materialised_records(data, objective, phi_layers):
    trainer, td, tables = setup(data, objective=objective, phi_layers=phi_layers)
    records = {"lazy": {s: td.records(s, tables) for s in SIDES},
               "full": {s: materialised(td, s, tables) for s in SIDES}}
    rows = torch.arange(10)
    entity = td.entity["user"][rows]
    lazy, full = twice(trainer, lambda kind: trainer._encode_subsets(td, "user", records[kind]["user"],
                                                                     entity, rows))
    (lazy_codes, *lazy_rest), (full_codes, *full_rest) = lazy, full  # the codes: the first layer is split
    torch.testing.assert_close(lazy_codes, full_codes, rtol=1e-5, atol=1e-6)
    for a, b in zip(lazy_rest, full_rest, strict=True):  # index and mask
        assert torch.equal(a, b)
    if objective == "reconstruct":
        initial = {k: v.clone() for k, v in trainer.model.state_dict().items()}

        def step(kind):
            trainer.model.load_state_dict(initial)
            return trainer._reconstruction_step(td, records[kind])

        lazy_loss, full_loss = twice(trainer, step)
        assert torch.equal(lazy_loss, full_loss)


def test_leave_one_out_vectors_are_kept_only_when_a_step_uses_them(data):
    plain = Trainer(ModelConfig(**TINY), FeatureSchema.fit(data), "cpu", progress=False)
    plain.fit(data, log=lambda *_: None)
    assert plain.loo == {}
    calibrated = Trainer(ModelConfig(**TINY, calibrate_weight=0.5), FeatureSchema.fit(data), "cpu", progress=False)
    calibrated.fit(data, log=lambda *_: None)
    shapes = {side: tuple(v.shape) for side, v in calibrated.loo.items()}
    assert shapes == {side: (len(data), TINY["n_dim"]) for side in SIDES}


@pytest.mark.parametrize("side", SIDES)
def test_the_decoder_loss_from_projected_tables_is_the_loss_on_gathered_records(data, side):
    trainer, td, tables = setup(data)
    lazy, full = td.records(side, tables), materialised(td, side, tables)
    index = torch.randint(len(full), (7, 2, 5))
    mask = torch.rand(7, 2, 5) < 0.8
    code = torch.randn(7, 2, TINY["n_dim"])
    decoder = trainer.model.decoder(side)
    torch.testing.assert_close(decoder.loss_lazy(code, lazy, index, mask), decoder.loss(code, full[index], mask))
    encoder = trainer.model.encoder(side).eval()
    torch.testing.assert_close(encoder.encode_lazy(lazy, index, mask), encoder(full[index], mask))

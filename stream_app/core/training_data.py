"""What training reads, derived once from the ratings: entity groups, features, rating rows, records
gathered on demand (LazyRecords), and the closed-form entity biases."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from stream_app.core.foldin import SIDES, other
from stream_app.core.records import Groups, LazyRecords
from stream_app.data.dataset import RatingData


class TrainingData:
    """Tensors derived once from RatingData and the feature schema."""

    def __init__(self, data: RatingData, schema, device: torch.device, seed: int = 0, bias_reg: float | None = None):
        self.data = data
        t = lambda a: torch.as_tensor(np.asarray(a), device=device)  # noqa: E731
        self.entity = {"user": t(data.user), "item": t(data.item)}
        self.features = {"user": t(schema.user_matrix(data)).float(), "item": t(schema.item_matrix(data)).float()}
        # The rating's own part of its records, [context, rates] per rating row; context and rates are views.
        self.row_part = t(np.concatenate([schema.encode_context(data.ts), schema.encode_rates(data.rating)],
                                         axis=1)).float()
        self.context, self.rates = self.row_part[:, :schema.context_dim], self.row_part[:, schema.context_dim:]
        # Shuffled inside each group, so that the first c positions of a group are a random pool.
        rng = np.random.default_rng(seed)
        self.groups = {"user": Groups.build(data.user, data.n_users, rng),
                       "item": Groups.build(data.item, data.n_items, rng)}
        self.size = {"user": data.n_users, "item": data.n_items}
        for g in self.groups.values():
            g.rows = g.rows.to(device)
        self.biases = None if bias_reg is None else EntityBiases.fit(self, bias_reg)

    def records(self, side: str, tables: dict) -> LazyRecords:
        """Flat records of `side`'s entities in group order, [other side's ID vector, (its bias), its data,
        context, rates], gathered per step. The other side's part is copied from `tables` now (entities
        x width), so refining the vectors in place does not change this round's records."""
        o = other(side)
        bias = [] if self.biases is None else [self.biases.bias[o].unsqueeze(1)]
        entity_part = torch.cat([tables[o], *bias, self.features[o]], dim=1)
        return LazyRecords(self.groups[side].rows, self.entity[o], entity_part, self.row_part)

    def vectors(self, side: str, codes: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """ID vectors from codes: with biases, the bias appended, leaving out rating `rows` when given
        (a prediction target must not be in the bias that predicts it) or the full one per entity."""
        if self.biases is None:
            return codes
        bias = self.biases.bias[side] if rows is None else \
            self.biases.leave_out(side, self.entity[side][rows], rows)
        return torch.cat([codes, bias.unsqueeze(1)], dim=1)


@dataclass
class EntityBiases:
    """Closed-form biases on the [-1, 1] star scale: a few alternating ridge solves of
    star = mean + b_user + b_item, the formula serving folds a bias in with (inference.FrozenNetworks.fold_bias)."""

    mean: float
    bias: dict  # side -> [n] tensor
    total: dict  # side -> [n] sum of the entity's residuals star - mean - other bias
    count: dict  # side -> [n] ratings
    residual: dict  # side -> [n_ratings] star - mean - other side's bias, per rating row
    reg: float

    @classmethod
    def fit(cls, td: TrainingData, reg: float, sweeps: int = 8) -> EntityBiases:
        stars = torch.nan_to_num(td.rates[:, 0])
        mean = float(stars.mean())
        bias = {side: torch.zeros(td.size[side], device=stars.device) for side in SIDES}
        count = {side: torch.bincount(td.entity[side], minlength=td.size[side]).to(stars.dtype) for side in SIDES}
        total, residual = {}, {}
        for _ in range(sweeps):
            for side in SIDES:
                o = other(side)
                residual[side] = stars - mean - bias[o][td.entity[o]]
                total[side] = torch.zeros_like(bias[side]).index_add_(0, td.entity[side], residual[side])
                bias[side] = total[side] / (count[side] + reg)
        return cls(mean, bias, total, count, residual, reg)

    def leave_out(self, side: str, entity: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The bias of `side` entity[j] computed without its rating rows[j]."""
        return (self.total[side][entity] - self.residual[side][rows]) / \
            (self.count[side][entity] - 1 + self.reg).clamp(min=1e-6)

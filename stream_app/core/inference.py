"""The frozen networks in numpy: what serving runs (fold-in, cold start, prediction, top-N scoring).

Training builds and trains the torch modules of model.py/networks.py; an artifact stores their weights.
Serving only ever runs them forward, so it reads the same weights into numpy arrays and never imports
torch: a worker (re)starts without torch's import, and small batches skip torch's per-operation cost
(measured in bench/results/issue15/README.md and bench/results/README.md).
`FrozenNetworks.from_torch` shares the trained model's memory, so in-place changes made while freezing
(breathing, cold-start regressions, global mean) are seen. tests/test_inference.py checks every method
against the torch modules.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from stream_app.core.config import ModelConfig
from stream_app.core.residual import ridge_by_owner

SIDES = ("user", "item")
GATHER_FLOATS = 1 << 22  # floats gathered at once when pooling subsets (16 MB)


@dataclass(frozen=True)
class Dense:
    """A torch `mlp()` run forward at eval time: Linear layers, ReLU between them, then `last` (dropout is off)."""

    layers: tuple[tuple[np.ndarray, np.ndarray | None], ...]
    last: Literal["relu", "tanh"] | None

    @classmethod
    def read(cls, state: dict[str, np.ndarray], prefix: str, last: Literal["relu", "tanh"] | None) -> Dense:
        """The Linear layers under `prefix` (e.g. "user_encoder.phi."), in their Sequential order."""
        names = (k[len(prefix):] for k in state if k.startswith(prefix))
        found = sorted(int(n.split(".")[0]) for n in names if n.endswith(".weight") and n.split(".")[0].isdigit())
        if not found:
            raise KeyError(f"no layers under {prefix!r}")
        return cls(tuple((state[f"{prefix}{i}.weight"], state.get(f"{prefix}{i}.bias")) for i in found), last)

    def __call__(self, x: np.ndarray, skip_first: bool = False) -> np.ndarray:
        """skip_first: x is already the first layer's output before its activation."""
        for j, (w, b) in enumerate(self.layers):
            if not (skip_first and j == 0):
                x = x @ w.T
                if b is not None:
                    x += b
            if j < len(self.layers) - 1 or self.last == "relu":
                np.maximum(x, 0.0, out=x)
            elif self.last == "tanh":
                np.tanh(x, out=x)
        return x


@dataclass(frozen=True)
class Encoder:
    kind: Literal["set", "concat"]
    m: int
    phi: Dense | None  # set: per record
    rho: Dense  # set: after pooling; concat: the whole network

    def codes(self, records: np.ndarray, index: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Codes [B, K, N] of the subsets records[index] ([B, K, M] rows; mask False = filler slot)."""
        b, k, m = index.shape
        if self.kind == "concat":
            return self.rho(records[index].reshape(b, k, -1))
        flat = index.reshape(-1)
        if flat.size < len(records):  # embed each record used once
            rows, flat = np.unique(flat, return_inverse=True)
            table = self.phi(records[rows])
        else:
            table = self.phi(records)
        weight = mask.reshape(b * k, m).astype(np.float32)
        count = weight.sum(-1, keepdims=True)
        weight /= np.maximum(count, 1.0)
        flat = flat.reshape(b * k, m)
        mean = np.empty((b * k, table.shape[1]), np.float32)
        step = max(1, GATHER_FLOATS // (m * table.shape[1]))
        for s in range(0, b * k, step):
            mean[s:s + step] = np.matmul(weight[s:s + step, None, :], table[flat[s:s + step]])[:, 0]
        fullness = np.log1p(count) / math.log1p(self.m)
        return self.rho(np.concatenate([mean, fullness], axis=1)).reshape(b, k, -1)


@dataclass(frozen=True)
class Predictor:
    n_dim: int
    blocks: tuple[int, ...]  # widths of the first layer's input blocks: u, i, u*i, user data, item data, context
    body: Dense
    heads: Dense
    dot: np.ndarray | None  # [n_rates, N]
    global_mean: np.ndarray | None  # 0-d, with biases (a view: freezing sets it in place)
    factor_at: int | None = None  # where the residual factor starts in a vector (core/residual.py), if any

    def __call__(self, user_vec, user_data, item_vec, item_data, context) -> np.ndarray:
        """[B, n_rates] raw outputs (stars on [-1, 1] unclamped, thumbs logit)."""
        n = self.n_dim
        u, i = user_vec[:, :n], item_vec[:, :n]
        out = self.heads(self.body(np.concatenate([u, i, u * i, user_data, item_data, context], axis=1)))
        if self.dot is not None:
            out += (u * i) @ self.dot.T
        if self.global_mean is not None:
            out[:, 0] += self.global_mean + user_vec[:, n] + item_vec[:, n]
        if self.factor_at is not None:
            out[:, 0] += np.einsum("ij,ij->i", user_vec[:, self.factor_at:], item_vec[:, self.factor_at:])
        return out

    def _first(self) -> list[np.ndarray]:
        w = self.body.layers[0][0]
        return np.split(w, np.cumsum(self.blocks)[:-1], axis=1)

    def item_part(self, item_vec: np.ndarray, item_data: np.ndarray) -> np.ndarray:
        """[n_items, hidden]: the items' share of the first layer, bias included."""
        _, w_i, _, _, w_id, _ = self._first()
        return item_vec[:, :self.n_dim] @ w_i.T + item_data @ w_id.T + self.body.layers[0][1]

    def score_items(self, item_part, item_vec, user_vec, user_data, context) -> np.ndarray:
        """[B, n_items, n_rates]: __call__ of every (user b, item) pair; the first layer is linear in each block."""
        w_u, _, w_ui, w_ud, _, w_c = self._first()
        n = self.n_dim
        u, i = user_vec[:, :n], item_vec[:, :n]
        user_part = u @ w_u.T + user_data @ w_ud.T + context @ w_c.T  # [B, hidden]
        hidden = np.matmul(i, (w_ui[None] * u[:, None, :]).transpose(0, 2, 1))  # [B, n_items, hidden]
        hidden += item_part
        hidden += user_part[:, None, :]
        out = self.heads(self.body(hidden, skip_first=True))
        if self.dot is not None:
            out += np.matmul(i, (self.dot[None] * u[:, None, :]).transpose(0, 2, 1))
        if self.global_mean is not None:
            out[..., 0] += self.global_mean + user_vec[:, n, None] + item_vec[None, :, n]
        if self.factor_at is not None:
            out[..., 0] += user_vec[:, self.factor_at:] @ item_vec[:, self.factor_at:].T
        return out

    def score_pairs(self, item_part, item_vec, user_vec, user_data, context, owner) -> np.ndarray:
        """[P, n_rates]: __call__ of P (user owner[p], item p) pairs, item_part/item_vec given per pair (rows of
        item_part()), each user's share of the first layer computed once."""
        w_u, _, w_ui, w_ud, _, w_c = self._first()
        n = self.n_dim
        u, i = user_vec[:, :n], item_vec[:, :n]
        user_part = u @ w_u.T + user_data @ w_ud.T + context @ w_c.T  # [B, hidden]
        inter = u[owner] * i
        hidden = inter @ w_ui.T
        hidden += item_part
        hidden += user_part[owner]
        out = self.heads(self.body(hidden, skip_first=True))
        if self.dot is not None:
            out += inter @ self.dot.T
        if self.global_mean is not None:
            out[:, 0] += self.global_mean + user_vec[owner, n] + item_vec[:, n]
        if self.factor_at is not None:
            out[:, 0] += np.einsum("ij,ij->i", user_vec[owner, self.factor_at:], item_vec[:, self.factor_at:])
        return out


class FrozenNetworks:
    """The encoders, predictor and serving constants of one trained model, as numpy arrays."""

    def __init__(self, config: ModelConfig, dims: dict[str, int], state: dict[str, np.ndarray]):
        self.config, self.dims, self.state = config, dict(dims), state
        self.factor_at = config.n_dim + (1 if config.biases else 0)  # ID vector = [code, bias, residual factor]
        self.vector_dim = self.factor_at + config.residual_rank
        self.encoders = {side: self._encoder(side) for side in SIDES}
        body = Dense.read(state, "predictor.body.", "relu")
        blocks = (config.n_dim,) * 3 + (dims["user"], dims["item"], dims["context"])
        heads = Dense(((state["predictor.heads.weight"], state["predictor.heads.bias"]),), None)
        self.predictor = Predictor(config.n_dim, blocks, body, heads, state.get("predictor.dot.weight"),
                                   state["predictor.global_mean"] if config.biases else None,
                                   self.factor_at if config.residual_rank else None)
        self._check()

    def _check(self) -> None:
        """ValueError (or KeyError) unless every network accepts inputs of the artifact's widths: one dummy
        entity and one dummy pair run forward (a torch load_state_dict's shape check, without torch)."""
        d, v = self.dims, self.vector_dim
        for side, other in (("user", "item"), ("item", "user")):
            records = np.zeros((1, v + d[other] + d["context"] + d["rates"]), np.float32)
            cold = self.cold_vectors(side, np.zeros((1, d[side]), np.float32))
            out = self.fold_in(side, records, np.zeros(1, np.int64), np.ones(1, np.int64), [0], cold,
                               data=np.zeros((1, d[side]), np.float32))
            if out.shape != (1, v):
                raise ValueError(f"{side} vectors come out {out.shape[1]} wide, not {v}")
        zeros = [np.zeros((1, w), np.float32) for w in (v, d["user"], v, d["item"], d["context"])]
        if self.predictor(*zeros).shape != (1, d["rates"]):
            raise ValueError(f"the predictor does not give {d['rates']} outputs")

    @classmethod
    def from_torch(cls, model) -> FrozenNetworks:
        """The networks of a torch AEVecModel (on the CPU), sharing its memory."""
        state = {k: v.detach().numpy() for k, v in model.state_dict(keep_vars=True).items()}
        return cls(model.config, model.dims, state)

    def _encoder(self, side: str) -> Encoder:
        p, cfg = f"{side}_encoder.", self.config
        if cfg.encoder == "concat":
            net = self._skip_factors(Dense.read(self.state, p + "net.", "tanh"), cfg.m_records)
            return Encoder("concat", cfg.m_records, None, net)
        rho = Dense.read(self.state, p + "rho.1.", "tanh" if cfg.rho == "mlp" else None)
        return Encoder("set", cfg.m_records, self._skip_factors(Dense.read(self.state, p + "phi.", "relu"), 1), rho)

    def _skip_factors(self, net: Dense, records: int) -> Dense:
        """`net` taking `records` records whose vectors carry the residual factor: zero weights for its columns
        (the encoders were trained before the factors existed, and are not changed by them)."""
        r = self.config.residual_rank
        if not r:
            return net
        (w, b), rest = net.layers[0], net.layers[1:]
        w = w.reshape(w.shape[0], records, -1)
        zeros = np.zeros((w.shape[0], records, r), w.dtype)
        w = np.concatenate([w[..., :self.factor_at], zeros, w[..., self.factor_at:]], axis=2).reshape(len(w), -1)
        return Dense(((w, b), *rest), net.last)

    def cold_vectors(self, side: str, data: np.ndarray) -> np.ndarray:
        """Cold start: the ridge regression from side data to the trained vectors."""
        weights = self.state[f"{side}_cold"]  # [code, bias] only: a cold entity's residual factor is zero
        out = data @ weights[:-1] + weights[-1]
        return np.pad(out, ((0, 0), (0, self.vector_dim - out.shape[1]))) if self.config.residual_rank else out

    def to_vector(self, side: str, mean_code: np.ndarray) -> np.ndarray:
        """The breathing-corrected ID vector of an entity from the mean of its codes."""
        center = self.state[f"{side}_center"]
        return center + (mean_code - self.state[f"{side}_offset"] - center) @ self.state[f"{side}_whiten"]

    def fold_bias(self, records: np.ndarray, count: np.ndarray) -> np.ndarray:
        """Biases [B] of B entities from their records (flat, in entity order, count[b] each):
        sum(star - mean - other side's bias) / (n + bias_reg), one ridge step of the bias model.

        A record is [other side's vector ([code, bias, factor]: its bias at n_dim), other data, context, rates];
        the scaled star is the first rate."""
        residual = (records[:, -self.dims["rates"]] - self.predictor.global_mean
                    - records[:, self.config.n_dim])
        owner = np.repeat(np.arange(len(count)), count)
        total = np.bincount(owner, weights=residual, minlength=len(count)).astype(np.float32)
        return total / np.maximum(count + self.config.bias_reg, 1e-12)

    def shrink_to_cold(self, vectors: np.ndarray, cold: np.ndarray, count: np.ndarray,
                       prior: float | None = None) -> np.ndarray:
        """(n * code + c * cold) / (n + c): the cold-start vector weighs as c pseudo-ratings.

        With biases, the bias component (from fold_bias, shrunk toward 0) moves to
        (sum of residuals + bias_reg * cold bias) / (n + bias_reg), its ridge estimate around the cold one.
        A residual factor is left as it is (its ridge solve already shrinks it toward zero)."""
        c = self.config.foldin_prior if prior is None else prior
        n = count.astype(np.float32)[:, None]
        out = cold + n / np.maximum(n + c, 1e-12) * (vectors - cold)  # weight 0 with no ratings, even when c = 0
        if self.config.biases:
            r, b = self.config.bias_reg, self.config.n_dim
            out[:, b] = vectors[:, b] + r * cold[:, b] / np.maximum(n[:, 0] + r, 1e-12)
        out[:, self.factor_at:] = vectors[:, self.factor_at:]
        return out.astype(np.float32, copy=False)

    def fold_in(self, side: str, records: np.ndarray, start: np.ndarray, count: np.ndarray, seeds: list[int],
                cold: np.ndarray, prior: float | None = None, data: np.ndarray | None = None) -> np.ndarray:
        """Vectors [B, vector_dim] of B entities with count > 0 from their flat records (CSR), seeded sampling.
        data: the entities' encoded side data [B, dim] (needed by the residual factor's solve)."""
        encoder = self.encoders[side]
        pos, mask = seeded_positions(count, self.config.k_samples, encoder.m, seeds)
        index = np.minimum(start[:, None, None] + pos, max(len(records) - 1, 0))
        parts = [self.to_vector(side, encoder.codes(records, index, mask).mean(axis=1))]
        if self.config.biases:
            parts.append(self.fold_bias(records, count)[:, None])
        if self.config.residual_rank:
            parts.append(np.zeros((len(count), self.config.residual_rank), np.float32))
        vectors = self.shrink_to_cold(np.concatenate(parts, axis=1), cold, count, prior)
        if self.config.residual_rank:
            vectors[:, self.factor_at:] = self.fold_factors(side, records, start, count, vectors, data)
        return vectors

    def fold_factors(self, side: str, records: np.ndarray, start: np.ndarray, count: np.ndarray,
                     vectors: np.ndarray, data: np.ndarray) -> np.ndarray:
        """Residual factors [B, r]: per entity, the ridge solve of its ratings' residuals (scaled star minus the
        network's output for its [code, bias] vector) against the other side's factors in its records."""
        if data is None:
            raise ValueError("folding in a residual factor needs the entities' side data")
        owner = np.repeat(np.arange(len(count)), count)
        rows = np.repeat(start - (np.cumsum(count) - count), count) + np.arange(int(count.sum()))
        rec, v, d = records[rows], self.vector_dim, self.dims
        width = d["item" if side == "user" else "user"]
        other_vec, other_data = rec[:, :v], rec[:, v:v + width]
        context = rec[:, v + width:v + width + d["context"]]
        own = vectors[owner]
        own[:, self.factor_at:] = 0.0
        out = (self.predictor(own, data[owner], other_vec, other_data, context) if side == "user"
               else self.predictor(other_vec, other_data, own, data[owner], context))
        residual = rec[:, -d["rates"]] - out[:, 0]
        return ridge_by_owner(owner, other_vec[:, self.factor_at:], residual, len(count), self.config.residual_reg)


PATTERNS = 256  # subset patterns drawn per window size; an entity uses the one its seed picks
BANK_MAX = 128  # counts up to this use the banks (serving windows); longer histories draw their own


def seeded_positions(count: np.ndarray, k: int, m: int, seeds: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """k subsets of m distinct positions (fewer than m ratings: all of them, the rest drawn with replacement,
    mask False) for each entity; entity b's subsets depend only on seeds[b] and its count, so a vector folded
    in alone or in any batch, in any process, is the same.

    Each entity's k subsets are independent uniform draws. Up to BANK_MAX ratings they come from a bank of
    PATTERNS draws per count (`subset_patterns`): one lookup per entity instead of k sorts."""
    count = np.asarray(count, np.int64).reshape(-1)
    pos = np.zeros((len(count), k, m), np.int64)
    mask = np.zeros((len(count), k, m), bool)
    for row, (n, seed) in enumerate(zip(count.tolist(), seeds, strict=True)):
        if 0 < n <= BANK_MAX:
            bank, bank_mask = subset_patterns(n, k, m)
            pos[row], mask[row] = bank[seed % PATTERNS], bank_mask
        elif n > BANK_MAX:
            rng = np.random.default_rng(seed)
            pos[row] = np.argsort(rng.random((k, n)), axis=1)[:, :m]
            mask[row] = True
    return pos, mask


@functools.lru_cache(maxsize=BANK_MAX)
def subset_patterns(n: int, k: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """PATTERNS x k subsets of min(n, m) distinct positions out of n, padded to m with positions drawn with
    replacement (mask False), from a generator seeded by (n, k, m) alone: the same in every process."""
    rng = np.random.default_rng([n, k, m])
    take = min(n, m)
    pos = np.argsort(rng.random((PATTERNS, k, n)), axis=2)[:, :, :take]
    if take < m:
        pos = np.concatenate([pos, rng.integers(0, n, size=(PATTERNS, k, m - take))], axis=2)
    mask = np.zeros((k, m), bool)
    mask[:, :take] = True
    pos = pos.astype(np.uint8)  # n <= BANK_MAX: 64 KB a bank at k 32, m 8
    pos.setflags(write=False)
    mask.setflags(write=False)
    return pos, mask


def pack_record_sets(sets: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flatten per-entity record arrays [n_b, D] into (records float32, start, count)."""
    count = np.array([len(s) for s in sets], dtype=np.int64)
    start = np.cumsum(count) - count
    dim = next((s.shape[1] for s in sets if len(s)), 0)
    flat = np.concatenate([s for s in sets if len(s)]) if count.sum() else np.zeros((0, dim))
    return np.asarray(flat, np.float32), start, count

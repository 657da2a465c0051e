"""The networks: record autoencoders (fixed-M concatenation or set encoder) and the predictor.

A record is one rating seen from one entity: [other side's ID vector, other side's data,
rating data (context), rates]. An encoder maps M records of one entity to its N-dim code.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def mlp(sizes: list[int], dropout: float = 0.0, last_activation: nn.Module | None = None) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
            if dropout:
                layers.append(nn.Dropout(dropout))
    if last_activation is not None:
        layers.append(last_activation)
    return nn.Sequential(*layers)


class ConcatEncoder(nn.Module):
    """The seeds' encoder: M records concatenated in a random order -> MLP -> code.

    Slots beyond an entity's rating count are filled by sampling with replacement (the rule for
    entities with fewer than M ratings), so `mask` is not used here.
    """

    def __init__(self, record_dim: int, m: int, hidden: int, n_dim: int, dropout: float, phi_layers: int = 2,
                 rho: str = "mlp"):
        super().__init__()
        self.m = m
        self.net = mlp([m * record_dim, hidden, hidden, n_dim], dropout, nn.Tanh())

    def forward(self, records: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.net(records.flatten(-2))


class SetEncoder(nn.Module):
    """Permutation-invariant encoder: rho(masked mean of phi(record)), plus the record count."""

    def __init__(self, record_dim: int, m: int, hidden: int, n_dim: int, dropout: float, phi_layers: int = 2,
                 rho: str = "mlp"):
        super().__init__()
        self.m = m
        # No dropout per record: it costs more than the rest of the step on CPU, and the random
        # subsets already regularise; dropout acts after pooling.
        self.phi = mlp([record_dim] + [hidden] * phi_layers, 0.0, nn.ReLU())
        # "linear": the code is affine in the pooled mean, so the mean of K codes is the code of all K subsets'
        # records pooled together: an entity's vector keeps sharpening with its history instead of averaging
        # what each M-subset alone can say.
        sizes = [hidden + 1, n_dim] if rho == "linear" else [hidden + 1, hidden, n_dim]
        self.rho = nn.Sequential(nn.Dropout(dropout), mlp(sizes, 0.0, None if rho == "linear" else nn.Tanh()))

    def embed(self, records: torch.Tensor) -> torch.Tensor:
        return self.phi(records)

    def pool(self, embedded: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weight = mask.to(embedded.dtype).unsqueeze(-1)
        count = weight.sum(-2)
        return self._code((embedded * weight).sum(-2) / count.clamp(min=1.0), count)

    def _code(self, mean: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        fullness = torch.log1p(count) / math.log1p(self.m)  # lets the code know how much it saw
        return self.rho(torch.cat([mean, fullness], dim=-1))

    def forward(self, records: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.pool(self.embed(records), mask)

    def encode_lazy(self, records, index: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """forward(records[index], mask) for a LazyRecords: the first layer from its projected tables."""
        first = self.phi[0]
        return self.pool(self.phi[1:](records.first_layer(first.weight, first.bias, index)), mask)

    def pool_rows(self, records: torch.Tensor, index: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """pool(embed(records[index]), mask) for index/mask [B, K, M] without building the [B, K, M, hidden]
        tensor: each record used is embedded once, then every subset is a weighted sum (embedding_bag)."""
        b, k, m = index.shape
        flat = index.reshape(-1)
        if flat.numel() < records.shape[0]:
            rows, flat = torch.unique(flat, return_inverse=True)
            table = self.embed(records[rows])
        else:
            table = self.embed(records)
        weight = mask.to(table.dtype)
        count = weight.sum(-1, keepdim=True)  # [B, K, 1]
        weight = (weight / count.clamp(min=1.0)).reshape(b * k, m)
        mean = F.embedding_bag(flat.reshape(b * k, m), table, per_sample_weights=weight, mode="sum")
        return self._code(mean.view(b, k, -1), count)


class ConcatDecoder(nn.Module):
    """The seeds' decoder: code -> all M records (input and target are the same records)."""

    def __init__(self, record_dim: int, m: int, hidden: int, n_dim: int, dropout: float, rates_dim: int):
        super().__init__()
        self.m, self.record_dim = m, record_dim
        self.net = mlp([n_dim, hidden, hidden, m * record_dim], dropout)

    def loss(self, code: torch.Tensor, records: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        recon = self.net(code).view(*records.shape)
        return ((recon - records) ** 2).mean()


class ConditionedDecoder(nn.Module):
    """Set-mode decoder: reconstructs each record's rates from the code and the record's key
    (the other side's vector, its data and the context), so record order does not matter."""

    def __init__(self, record_dim: int, m: int, hidden: int, n_dim: int, dropout: float, rates_dim: int):
        super().__init__()
        self.rates_dim = rates_dim
        key_dim = record_dim - rates_dim
        self.net = mlp([n_dim + key_dim, hidden, rates_dim])

    def loss(self, code: torch.Tensor, records: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        key, rates = records[..., : -self.rates_dim], records[..., -self.rates_dim :]
        code = code.unsqueeze(-2).expand(*key.shape[:-1], code.shape[-1])
        recon = self.net(torch.cat([code, key], dim=-1))
        return self._masked_mse(recon, rates, mask)

    def loss_lazy(self, code: torch.Tensor, records, index: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """loss(code, records[index], mask) for a LazyRecords: the first layer from its projected tables, and the
        code's share of it computed once per subset."""
        first = self.net[0]
        w_code, w_key = first.weight.split([code.shape[-1], first.weight.shape[1] - code.shape[-1]], dim=1)
        hidden = records.first_layer(w_key, first.bias, index) + (code @ w_code.T).unsqueeze(-2)
        return self._masked_mse(self.net[1:](hidden), records.tail(index, self.rates_dim), mask)

    def _masked_mse(self, recon: torch.Tensor, rates: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weight = mask.to(recon.dtype).unsqueeze(-1)
        return (((recon - rates) ** 2) * weight).sum() / (weight.sum() * self.rates_dim).clamp(min=1.0)


ENCODER_CLASSES = {"set": SetEncoder, "concat": ConcatEncoder}
DECODER_CLASSES = {"set": ConditionedDecoder, "concat": ConcatDecoder}


class Predictor(nn.Module):
    """f(user vector, user data, item vector, item data, rating data) -> one output per rate.

    Output 0 is the star rating scaled to [-1, 1]; output 1 the thumbs-up logit. The elementwise
    product of the two vectors is given explicitly: MLPs learn dot-product interactions poorly.
    """

    def __init__(self, n_dim: int, user_dim: int, item_dim: int, context_dim: int, hidden: int,
                 dropout: float, n_rates: int, biases: bool = False, dot_head: bool = False):
        super().__init__()
        self.n_dim, self.biases = n_dim, biases
        # A weighted dot product of the two vectors added to the outputs, beside the network (as NeuMF's GMF part).
        self.dot = nn.Linear(n_dim, n_rates, bias=False) if dot_head else None
        if self.dot is not None:
            nn.init.zeros_(self.dot.weight)
        # Star output = mean + user bias + item bias + network (all on the [-1, 1] scale); vectors then
        # carry the bias as their last component. The mean is set from the data, not trained.
        if biases:
            self.register_buffer("global_mean", torch.zeros(()))
        in_dim = 3 * n_dim + user_dim + item_dim + context_dim
        self.blocks = [n_dim, n_dim, n_dim, user_dim, item_dim, context_dim]  # input blocks of forward()
        self.body = mlp([in_dim, hidden, hidden // 2], dropout, nn.ReLU())
        self.heads = nn.Linear(hidden // 2, n_rates)

    def forward(self, user_vec, user_data, item_vec, item_data, context) -> torch.Tensor:
        n = self.n_dim
        u, i = user_vec[..., :n], item_vec[..., :n]
        out = self.heads(self.body(torch.cat([u, i, u * i, user_data, item_data, context], dim=-1)))
        if self.dot is not None:
            out = out + self.dot(u * i)
        return self._add_biases(out, user_vec[..., n], item_vec[..., n]) if self.biases else out

    def _add_biases(self, out: torch.Tensor, user_bias: torch.Tensor, item_bias: torch.Tensor) -> torch.Tensor:
        stars = out[..., :1] + (self.global_mean + user_bias + item_bias).unsqueeze(-1)
        return torch.cat([stars, out[..., 1:]], dim=-1)

    # Scoring many items for a few users (top-N). The first layer is linear in each input block:
    # W [u, i, u*i, ud, id, c] + b = (W_i i + W_id id + b)   item part: once per catalogue change
    #                              + (W_u u + W_ud ud + W_c c)  user part: once per user
    #                              + (W_ui * u) i               interaction: [n_items, N] x [N, hidden] per user
    def _first_blocks(self) -> list[torch.Tensor]:
        return list(torch.split(self.body[0].weight, self.blocks, dim=1))

    def item_part(self, item_vec: torch.Tensor, item_data: torch.Tensor) -> torch.Tensor:
        """[n_items, hidden]: the items' share of the first layer, bias included."""
        _, w_i, _, _, w_id, _ = self._first_blocks()
        return torch.addmm(self.body[0].bias, item_vec[:, :self.n_dim], w_i.T).addmm_(item_data, w_id.T)

    def score_items(self, item_part: torch.Tensor, item_vec: torch.Tensor, user_vec: torch.Tensor,
                    user_data: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """[B, n_items, n_rates]: forward() of every (user b, item) pair, from item_part() of the items."""
        w_u, _, w_ui, w_ud, _, w_c = self._first_blocks()
        n = self.n_dim
        u, i = user_vec[:, :n], item_vec[:, :n]
        user_part = u @ w_u.T + user_data @ w_ud.T + context @ w_c.T  # [B, hidden]
        inter = torch.matmul(i, (w_ui.unsqueeze(0) * u.unsqueeze(1)).transpose(1, 2))
        hidden = torch.relu_(inter.add_(item_part).add_(user_part.unsqueeze(1)))
        for layer in list(self.body)[2:]:
            hidden = layer(hidden)
        out = self.heads(hidden)
        if self.dot is not None:  # [n_items, N] x [B, N, n_rates]
            out = out + torch.matmul(i, (self.dot.weight.unsqueeze(0) * u.unsqueeze(1)).transpose(1, 2))
        if not self.biases:
            return out
        return self._add_biases(out, user_vec[:, n].unsqueeze(1), item_vec[:, n].unsqueeze(0))

"""The trained networks as one torch module: two record autoencoders and the predictor."""

from __future__ import annotations

import torch
from torch import nn

from stream_app.core.config import ModelConfig
from stream_app.core.networks import DECODER_CLASSES, ENCODER_CLASSES, Predictor


class AEVecModel(nn.Module):
    """User-space AE (encodes a user from records of the items it rated), item-space AE (encodes
    an item from records of its raters), the predictor, and the frozen serving constants: the
    breathing offsets and the side-data -> vector cold-start regressions."""

    def __init__(self, config: ModelConfig, user_dim: int, item_dim: int, context_dim: int, rates_dim: int):
        super().__init__()
        self.config = config
        self.dims = {"user": user_dim, "item": item_dim, "context": context_dim, "rates": rates_dim}
        n, m, h, p = config.n_dim, config.m_records, config.hidden, config.dropout
        self.vector_dim = n + (1 if config.biases else 0)  # ID vector = [code, bias]: what records carry
        user_record = self.vector_dim + item_dim + context_dim + rates_dim
        item_record = self.vector_dim + user_dim + context_dim + rates_dim
        enc, dec = ENCODER_CLASSES[config.encoder], DECODER_CLASSES[config.encoder]
        self.user_encoder = enc(user_record, m, h, n, p, config.phi_layers, config.rho)
        self.item_encoder = enc(item_record, m, h, n, p, config.phi_layers, config.rho)
        self.user_decoder = dec(user_record, m, h, n, p, rates_dim)
        self.item_decoder = dec(item_record, m, h, n, p, rates_dim)
        self.predictor = Predictor(n, user_dim, item_dim, context_dim, config.predictor_hidden, p, rates_dim,
                                   config.biases, config.dot_head)
        # Breathing correction, frozen at training time: vector = center + (code - offset - center) @ whiten.
        # offset is the common drift of all codes; whiten (identity unless config.whiten) keeps the
        # dimensions decorrelated and of equal spread, so refinement cannot collapse onto a few directions.
        for side in ("user", "item"):
            self.register_buffer(f"{side}_offset", torch.zeros(n))
            self.register_buffer(f"{side}_center", torch.zeros(n))
            self.register_buffer(f"{side}_whiten", torch.eye(n))
        self.register_buffer("user_cold", torch.zeros(user_dim + 1, self.vector_dim))
        self.register_buffer("item_cold", torch.zeros(item_dim + 1, self.vector_dim))

    def encoder(self, side: str) -> nn.Module:
        return self.user_encoder if side == "user" else self.item_encoder

    def decoder(self, side: str) -> nn.Module:
        return self.user_decoder if side == "user" else self.item_decoder

    def offset(self, side: str) -> torch.Tensor:
        return getattr(self, f"{side}_offset")

    def to_vector(self, side: str, mean_code: torch.Tensor) -> torch.Tensor:
        """The breathing-corrected ID vector of an entity from the mean of its codes."""
        center = getattr(self, f"{side}_center")
        return center + (mean_code - self.offset(side) - center) @ getattr(self, f"{side}_whiten")

    def set_breathing(self, side: str, offset: torch.Tensor, center: torch.Tensor, whiten: torch.Tensor) -> None:
        self.offset(side).copy_(offset)
        getattr(self, f"{side}_center").copy_(center)
        getattr(self, f"{side}_whiten").copy_(whiten)

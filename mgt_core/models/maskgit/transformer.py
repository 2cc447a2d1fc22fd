"""MaskGIT v1 transformer (valeoai MaskGIT-pytorch v1 ``Network/transformer.py``, models.md section 7).

A BERT-style encoder: image tokens plus one class token appended last share ``tok_emb``
(codes, mask id = codebook size, 1000 class ids from codebook+1, then the "no class" id used
for the unconditional branch); logits are tied to ``tok_emb`` plus a per-position ``bias``.
Attribute names are the checkpoint keys, so ``model_state_dict`` (minus ``module.``) loads strictly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import MGTInputError, MGTLoadError
from ..config_io import int_config
from ..layers import SquareTokenGrid


@dataclass(frozen=True)
class MaskGITConfig:
    """Constructor values of the official ``MaskTransformer``; ``input_size`` is the token grid side
    (the official ``f_factor`` argument: 16 at 256 px, 32 at 512 px)."""

    input_size: int = 16
    hidden_dim: int = 768
    depth: int = 24
    heads: int = 16
    mlp_dim: int = 3072
    codebook_size: int = 1024
    nclass: int = 1000

    @classmethod
    def from_dict(cls, config: dict, source: str = "transformer/config.json") -> MaskGITConfig:
        values = dict(config)
        if "f_factor" in values and "input_size" not in values:
            values["input_size"] = values.pop("f_factor")
        return int_config(cls, values, source, "MaskGIT v1", "maskgit-v1", ignore=("f_factor",))

    def to_dict(self) -> dict:
        return {"family": "maskgit-v1", **asdict(self)}

    def validate(self, source: str = "config") -> None:
        if min(asdict(self).values()) < 1:
            raise MGTLoadError(f"{source}: every MaskGIT v1 config value must be >= 1, got {asdict(self)}")
        if self.hidden_dim % self.heads:
            raise MGTLoadError(f"{source}: hidden_dim {self.hidden_dim} is not divisible by heads {self.heads}")

    @property
    def mask_id(self) -> int:
        return self.codebook_size

    @property
    def null_class(self) -> int:
        """Embedding row of the dropped class (the unconditional branch)."""
        return self.codebook_size + 1 + self.nclass

    @property
    def vocab(self) -> int:
        return self.codebook_size + 1 + self.nclass + 1

    @property
    def seq_len(self) -> int:
        return self.input_size**2 + 1


class SelfAttention(nn.Module):
    """Holds ``mha`` (``nn.MultiheadAttention``, batch-first, with biases) as the reference does."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.mha = nn.MultiheadAttention(dim, heads, batch_first=True, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mha(x, x, x, need_weights=False)[0]


class MLP(nn.Module):
    """``net.0`` Linear, ``net.1`` GELU (exact), ``net.2`` dropout slot, ``net.3`` Linear."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Identity(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PreNorm(nn.Module):
    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.norm = nn.LayerNorm(dim)  # eps 1e-5, the reference's default
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.norm(x))


class Encoder(nn.Module):
    def __init__(self, cfg: MaskGITConfig):
        super().__init__()
        d = cfg.hidden_dim
        self.layers = nn.ModuleList(
            nn.ModuleList([PreNorm(d, SelfAttention(d, cfg.heads)), PreNorm(d, MLP(d, cfg.mlp_dim))])
            for _ in range(cfg.depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attn, ff in self.layers:
            x = x + attn(x)
            x = x + ff(x)
        return x


class MaskGITTransformer(SquareTokenGrid, nn.Module):
    """tokens [B, S, S] (mask = ``codebook_size``) + class ids -> logits [B, S*S, codebook_size + 1]."""

    def __init__(self, config: MaskGITConfig):
        super().__init__()
        self.config = config
        d, c = config.hidden_dim, config
        self.tok_emb = nn.Embedding(c.vocab, d)
        self.pos_emb = nn.Parameter(torch.zeros(1, c.seq_len, d))
        # dropout slots (1, 5) have no parameters; Identity keeps the key indices of the reference
        self.first_layer = nn.Sequential(
            nn.LayerNorm(d, eps=1e-12), nn.Identity(), nn.Linear(d, d), nn.GELU(),
            nn.LayerNorm(d, eps=1e-12), nn.Identity(), nn.Linear(d, d),
        )
        self.transformer = Encoder(config)
        self.last_layer = nn.Sequential(
            nn.LayerNorm(d, eps=1e-12), nn.Identity(), nn.Linear(d, d), nn.GELU(), nn.LayerNorm(d, eps=1e-12)
        )
        self.bias = nn.Parameter(torch.zeros(c.seq_len, c.vocab))

    @classmethod
    def from_config(cls, config: dict | MaskGITConfig) -> MaskGITTransformer:
        """Build from a config dict or :class:`MaskGITConfig`; works under ``torch.device("meta")``."""
        return cls(MaskGITConfig.from_dict(config) if isinstance(config, dict) else config)

    def class_tokens(self, labels: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        """Class ids [B] -> ``tok_emb`` rows: label + codebook + 1, or the null class where ``drop``."""
        c = self.config
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= c.nclass):
            raise MGTInputError(f"class labels must lie in [0, {c.nclass - 1}], got {labels.tolist()}")
        tokens = labels.to(self.device, torch.long) + c.codebook_size + 1
        if drop is not None:
            tokens = torch.where(drop.to(self.device), torch.full_like(tokens, c.null_class), tokens)
        return tokens

    def forward(self, tokens: torch.Tensor, labels: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        """tokens [B, S, S] or [B, S*S]; labels [B]; drop [B] bool (True: unconditional).

        Returns fp logits [B, S*S, codebook_size + 1] (codes, then the mask id), as the reference.
        """
        c = self.config
        b = tokens.shape[0]
        flat = tokens.reshape(b, -1).to(self.device, torch.long)
        if flat.shape[1] != c.input_size**2:
            raise MGTInputError(
                f"this MaskGIT model takes a {c.input_size}x{c.input_size} token grid, got {list(tokens.shape[1:])}"
            )
        if labels.shape != (b,):
            raise MGTInputError(f"expected {b} class labels, got shape {list(labels.shape)}")
        seq = torch.cat([flat, self.class_tokens(labels, drop)[:, None]], dim=1)
        x = self.tok_emb(seq) + self.pos_emb
        x = self.last_layer(self.transformer(self.first_layer(x)))
        n = c.input_size**2
        # only the image rows and the code/mask columns are ever used: slice before the matmul
        logits = F.linear(x[:, :n], self.tok_emb.weight[: c.codebook_size + 1]) + self.bias[:n, : c.codebook_size + 1]
        return logits

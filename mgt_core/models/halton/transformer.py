"""Halton-MaskGIT v2 transformer (valeoai Halton-MaskGIT ``Network/transformer.py``, models.md section 8).

A DiT-style encoder: the class is a conditioning vector (``cls_emb``, row ``nclass`` = dropped)
that drives adaLN shift/scale/gate in every block and in the final norm; RMSNorm + QK-norm,
SwiGLU, one register token appended after the image tokens, head tied to ``tok_emb``.
Attribute names are the checkpoint keys (``head.weight`` is the same Parameter as ``tok_emb.weight``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import MGTInputError, MGTLoadError
from ..config_io import int_config
from ..layers import SquareTokenGrid

SIZES = {  # published sizes: (hidden_dim, depth, heads); xlarge exists in the trainer without weights
    "tiny": (384, 6, 6), "small": (512, 12, 6), "base": (768, 12, 12), "large": (1024, 24, 16), "xlarge": (1152, 28, 16),
}


@dataclass(frozen=True)
class HaltonConfig:
    """Constructor values of the official ``Transformer`` (``mlp_dim`` = 4 x hidden in every release)."""

    input_size: int = 16
    hidden_dim: int = 768
    depth: int = 12
    heads: int = 12
    mlp_dim: int = 3072
    codebook_size: int = 16384
    nclass: int = 1000
    register: int = 1
    proj: int = 1

    @classmethod
    def from_dict(cls, config: dict, source: str = "transformer/config.json") -> HaltonConfig:
        return int_config(cls, config, source, "Halton-MaskGIT", "halton", ignore=("size",))

    @classmethod
    def of_size(cls, size: str, input_size: int = 16, **overrides) -> HaltonConfig:
        """A published size name (tiny/small/base/large/xlarge) at grid side ``input_size`` (16: 256 px, 24: 384 px)."""
        if size not in SIZES:
            raise MGTInputError(f"unknown Halton-MaskGIT size {size!r}; expected one of {', '.join(SIZES)}")
        d, depth, heads = SIZES[size]
        return cls(input_size=input_size, hidden_dim=d, depth=depth, heads=heads, mlp_dim=4 * d, **overrides)

    def to_dict(self) -> dict:
        return {"family": "halton", **asdict(self)}

    def validate(self, source: str = "config") -> None:
        values = asdict(self)
        if min(v for k, v in values.items() if k != "register") < 1 or self.register < 0:
            raise MGTLoadError(f"{source}: Halton-MaskGIT config values must be >= 1 (register >= 0), got {values}")
        if self.proj != 1:
            raise MGTLoadError(f"{source}: proj={self.proj} (patchified input) is not supported; published models use proj=1")

    @property
    def head_dim(self) -> int:
        return self.hidden_dim // self.heads

    @property
    def attn_dim(self) -> int:
        """heads x head_dim: 510 for ``small`` (6 x 85), else hidden_dim."""
        return self.heads * self.head_dim

    @property
    def ff_dim(self) -> int:
        """SwiGLU width: 2/3 of mlp_dim rounded up to a multiple of 256."""
        h = int(2 * self.mlp_dim / 3)
        return 256 * math.ceil(h / 256)

    @property
    def mask_id(self) -> int:
        return self.codebook_size

    @property
    def null_class(self) -> int:
        return self.nclass


class RMSNorm(nn.Module):
    """Halton's RMSNorm: normalise in fp32, cast back to the input dtype, then weight and bias."""

    def __init__(self, dim: int, weight: bool = True, bias: bool = False, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if weight else None
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = x.float()
        out = (f * torch.rsqrt(f.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x)
        if self.weight is not None:
            out = self.weight * out
        if self.bias is not None:
            out = out + self.bias
        return out


class Attention(nn.Module):
    def __init__(self, cfg: HaltonConfig):
        super().__init__()
        d, a = cfg.hidden_dim, cfg.attn_dim
        self.heads, self.head_dim = cfg.heads, cfg.head_dim
        self.wq, self.wk, self.wv = (nn.Linear(d, a, bias=False) for _ in range(3))
        self.wo = nn.Linear(a, d, bias=False)
        self.q_norm, self.k_norm = RMSNorm(a, weight=False), RMSNorm(a, weight=False)  # weightless: no keys

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        v = self.wv(x)
        q, k = self.q_norm(self.wq(x)).to(v.dtype), self.k_norm(self.wk(x)).to(v.dtype)  # QK-norm over the full width
        q, k, v = (t.view(b, n, self.heads, self.head_dim).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.wo(out.transpose(1, 2).reshape(b, n, -1))


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w1, self.w3 = nn.Linear(dim, hidden, bias=False), nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class Block(nn.Module):
    def __init__(self, cfg: HaltonConfig):
        super().__init__()
        d = cfg.hidden_dim
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))
        self.ln1, self.attn = RMSNorm(d), Attention(cfg)
        self.ln2, self.ff = RMSNorm(d), SwiGLU(d, cfg.ff_dim)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.mlp(cond).chunk(6, dim=1)
        x = x + gate1[:, None] * self.attn(_modulate(self.ln1(x), shift1, scale1))
        return x + gate2[:, None] * self.ff(_modulate(self.ln2(x), shift2, scale2))


class Encoder(nn.Module):
    def __init__(self, cfg: HaltonConfig):
        super().__init__()
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        for block in self.layers:
            x = block(x, cond)
        return x


class AdaNorm(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.norm_final = RMSNorm(d, weight=True, bias=True)
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        shift, scale = self.mlp(cond).chunk(2, dim=1)
        return _modulate(self.norm_final(x), shift, scale)


class HaltonTransformer(SquareTokenGrid, nn.Module):
    """tokens [B, S, S] (mask = ``codebook_size``) + class ids -> logits [B, S*S, codebook_size + 1]."""

    def __init__(self, config: HaltonConfig):
        super().__init__()
        self.config = config
        c, d = config, config.hidden_dim
        self.cls_emb = nn.Embedding(c.nclass + 1, d)
        self.tok_emb = nn.Embedding(c.codebook_size + 1, d)
        self.pos_emb = nn.Embedding(c.input_size**2, d)
        self.transformer = Encoder(config)
        self.last_norm = AdaNorm(d)
        self.head = nn.Linear(d, c.codebook_size + 1)
        self.head.weight = self.tok_emb.weight  # tied, as the reference (both keys are in the files)
        if c.register > 0:
            self.reg_tokens = nn.Embedding(c.register, d)

    @classmethod
    def from_config(cls, config: dict | HaltonConfig) -> HaltonTransformer:
        """Build from a config dict or :class:`HaltonConfig`; works under ``torch.device("meta")``."""
        return cls(HaltonConfig.from_dict(config) if isinstance(config, dict) else config)

    def tie_weights(self) -> None:
        """Re-tie the head after ``load_state_dict(assign=True)`` replaced one of the two Parameters."""
        self.head.weight = self.tok_emb.weight

    def forward(self, tokens: torch.Tensor, labels: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        """tokens [B, S, S] or [B, S*S]; labels [B]; drop [B] bool (True: unconditional).

        Returns logits [B, S*S, codebook_size + 1] (the last column is the mask id, as the reference).
        """
        c = self.config
        b = tokens.shape[0]
        flat = tokens.reshape(b, -1).to(self.device, torch.long)
        n = flat.shape[1]
        if n != c.input_size**2:
            raise MGTInputError(
                f"this Halton-MaskGIT model takes a {c.input_size}x{c.input_size} token grid, got {list(tokens.shape[1:])}"
            )
        if labels.shape != (b,):
            raise MGTInputError(f"expected {b} class labels, got shape {list(labels.shape)}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= c.nclass):
            raise MGTInputError(f"class labels must lie in [0, {c.nclass - 1}], got {labels.tolist()}")
        y = labels.to(self.device, torch.long)
        if drop is not None:
            y = torch.where(drop.to(self.device), torch.full_like(y, c.null_class), y)
        cond = self.cls_emb(y)
        x = self.tok_emb(flat) + self.pos_emb.weight[None, :n]
        if c.register > 0:
            x = torch.cat([x, self.reg_tokens.weight[None].expand(b, -1, -1)], dim=1)
        x = self.transformer(x, cond)[:, :n]
        return self.head(self.last_norm(x, cond))

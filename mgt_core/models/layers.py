"""Building blocks shared by the model families.

Numerics follow the reference implementations where parity matters (RMSNorm cast order,
sinusoid layout, RoPE in fp32); each function says which rule it keeps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class SquareTokenGrid:
    """Mixin for class-conditional MGTs with a token embedding ``tok_emb`` and a square ``input_size``
    grid: what the sampler and the loaders read off the model (dtype, device, mask id, grid)."""

    @property
    def dtype(self) -> torch.dtype:
        return self.tok_emb.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.tok_emb.weight.device

    @property
    def mask_id(self) -> int:
        return self.config.mask_id

    @property
    def grid(self) -> tuple[int, int]:
        return self.config.input_size, self.config.input_size


class RMSNorm(nn.Module):
    """RMSNorm with the reference cast order: variance in fp32, scale the input, then cast to a
    half-precision weight's dtype before multiplying by it (fp32 weights keep the fp32 product)."""

    def __init__(self, dim: int, eps: float = 1e-6, affine: bool = True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        input_dtype = x.dtype
        variance = x.to(torch.float32).pow(2).mean(-1, keepdim=True)
        x = x * torch.rsqrt(variance + self.eps)
        if self.weight is None:
            return x.to(input_dtype)
        if self.weight.dtype in (torch.float16, torch.bfloat16):
            x = x.to(self.weight.dtype)
        return x * self.weight


class ChannelRMSNorm(RMSNorm):
    """RMSNorm over the channel axis of an NCHW map (applied channel-last, as the reference)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def sinusoidal_embedding(values: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """[cos, sin] sinusoid of each value (flip_sin_to_cos, no frequency shift), computed in fp32."""
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=values.device) / half
    angles = values.reshape(-1, 1).float() * torch.exp(exponent)[None, :]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


class MLPEmbedding(nn.Module):
    """linear_1 -> SiLU -> linear_2 (the key layout of timestep/text/cond embedders)."""

    def __init__(self, in_dim: int, dim: int, bias: bool = True):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim, bias=bias)
        self.linear_2 = nn.Linear(dim, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class GELUProjection(nn.Module):
    """Linear then tanh-approximated GELU; named ``proj`` so the key is ``net.0.proj``."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.proj = nn.Linear(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.proj(x), approximate="tanh")


class FeedForward(nn.Module):
    """``net.0.proj`` (D->4D) + GELU-tanh, ``net.1`` (parameter-free dropout slot), ``net.2`` (4D->D)."""

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.ModuleList([GELUProjection(dim, dim * mult), nn.Identity(), nn.Linear(dim * mult, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


def rope_tables(ids: torch.Tensor, axes_dims: Sequence[int], theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [S, sum(axes_dims)] for integer position ids [S, n_axes].

    Angles are computed in float64 and stored as float32; each frequency's cos/sin is repeated
    twice (interleaved) so the tables line up with (x_2k, x_2k+1) pairs.
    """
    pos = ids.to(torch.float64)
    cos_parts, sin_parts = [], []
    for axis, d in enumerate(axes_dims):
        freqs = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.float64, device=ids.device)[: d // 2] / d))
        angles = torch.outer(pos[:, axis], freqs)
        cos_parts.append(angles.cos().repeat_interleave(2, dim=1).float())
        sin_parts.append(angles.sin().repeat_interleave(2, dim=1).float())
    return torch.cat(cos_parts, dim=-1), torch.cat(sin_parts, dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x_2k, x_2k+1) of x [B, H, S, D] in fp32 and cast back.

    ``cos``/``sin`` broadcast against x: [S, D] for a shared table or [B, 1, S, D] per batch row.
    """
    real, imag = x.unflatten(-1, (-1, 2)).unbind(-1)
    rotated = torch.stack((-imag, real), dim=-1).flatten(-2)
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)

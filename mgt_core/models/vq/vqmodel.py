"""VQ image tokenizer with the diffusers ``VQModel`` key layout (aMUSEd / Meissonic ``vqvae/``).

decode: token ids [B, h, w] -> image [B, 3, H, W] in [0, 1] (the decoder output is already in
[0, 1]; we only clamp). encode: image in [0, 1] -> nearest codebook ids, for img2img and
inpainting. ``decode_tiled`` bounds peak memory at large sizes: the low-resolution trunk runs
whole, the high-resolution head runs tile by tile with a halo wider than its receptive field,
and every GroupNorm of the head uses whole-image statistics gathered in a first pass over the
tiles, so the tiled image matches the whole-image decode closely instead of drifting per tile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import MGTInputError, MGTLoadError


@dataclass(frozen=True)
class VQConfig:
    in_channels: int = 3
    out_channels: int = 3
    block_out_channels: tuple[int, ...] = (128, 256, 256, 512, 768)
    layers_per_block: int = 2
    latent_channels: int = 64
    num_vq_embeddings: int = 8192
    norm_num_groups: int = 32
    vq_embed_dim: int | None = None
    mid_block_add_attention: bool = False
    down_block_types: tuple[str, ...] = field(default=())
    up_block_types: tuple[str, ...] = field(default=())

    @classmethod
    def from_dict(cls, config: dict, source: str = "vqvae/config.json") -> VQConfig:
        if "num_vq_embeddings" not in config or "block_out_channels" not in config:
            raise MGTLoadError(f"{source}: missing num_vq_embeddings/block_out_channels; is this a VQModel config?")
        if config.get("norm_type", "group") != "group":
            raise MGTLoadError(f"{source}: norm_type {config['norm_type']!r} is not supported (only 'group')")
        if config.get("act_fn", "silu") != "silu":
            raise MGTLoadError(f"{source}: act_fn {config['act_fn']!r} is not supported (only 'silu')")
        names = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in config.items() if k in names}
        for k in ("block_out_channels", "down_block_types", "up_block_types"):
            if k in values:
                values[k] = tuple(values[k])
        values.setdefault("mid_block_add_attention", True)  # the diffusers default when the key is absent
        cfg = cls(**values)
        n = len(cfg.block_out_channels)
        for k, want in (("down_block_types", "DownEncoderBlock2D"), ("up_block_types", "UpDecoderBlock2D")):
            got = getattr(cfg, k)
            if got and (len(got) != n or any(t != want for t in got)):
                raise MGTLoadError(f"{source}: {k} must be {n} x {want!r}, got {list(got)}")
        bad = [c for c in cfg.block_out_channels if c % cfg.norm_num_groups]
        if bad:
            raise MGTLoadError(f"{source}: block_out_channels {bad} not divisible by norm_num_groups {cfg.norm_num_groups}")
        return cfg

    @property
    def embed_dim(self) -> int:
        return self.vq_embed_dim or self.latent_channels

    @property
    def factor(self) -> int:
        """Pixels per token along each axis: 2^(levels - 1)."""
        return 2 ** (len(self.block_out_channels) - 1)


class GroupNorm(nn.GroupNorm):
    """GroupNorm that a tiled decode can feed with whole-image statistics (see ``_TileContext``)."""

    tile_context: _TileContext | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ctx = self.tile_context
        return super().forward(x) if ctx is None else ctx.norm(self, x)


def _norm(channels: int, groups: int) -> GroupNorm:
    return GroupNorm(groups, channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int, groups: int):
        super().__init__()
        self.norm1 = _norm(cin, groups)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = _norm(cout, groups)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        if cin != cout:
            self.conv_shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        skip = self.conv_shortcut(x) if hasattr(self, "conv_shortcut") else x
        return skip + h


class SpatialAttention(nn.Module):
    """Single-head self-attention over pixels (only when ``mid_block_add_attention``)."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.group_norm = _norm(channels, groups)
        self.to_q, self.to_k, self.to_v = (nn.Linear(channels, channels) for _ in range(3))
        self.to_out = nn.ModuleList([nn.Linear(channels, channels), nn.Identity()])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        n = self.group_norm(x).flatten(2).transpose(1, 2)
        q, k, v = (f(n)[:, None] for f in (self.to_q, self.to_k, self.to_v))
        out = F.scaled_dot_product_attention(q, k, v)[:, 0]
        return x + self.to_out[0](out).transpose(1, 2).reshape(b, c, h, w)


class MidBlock(nn.Module):
    def __init__(self, channels: int, groups: int, attention: bool):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(channels, channels, groups) for _ in range(2)])
        if attention:
            self.attentions = nn.ModuleList([SpatialAttention(channels, groups)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.resnets[0](x)
        if hasattr(self, "attentions"):
            x = self.attentions[0](x)
        return self.resnets[1](x)


class ConvLayer(nn.Module):
    """Holds ``conv`` so keys read ``downsamplers.0.conv`` / ``upsamplers.0.conv``."""

    def __init__(self, channels: int, down: bool):
        super().__init__()
        self.down = down
        self.conv = nn.Conv2d(channels, channels, 3, stride=2 if down else 1, padding=0 if down else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.down:
            return self.conv(F.pad(x, (0, 1, 0, 1)))
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class CodingBlock(nn.Module):
    """A down-encoder or up-decoder block: resnets, then an optional resampler."""

    def __init__(self, cin: int, cout: int, layers: int, groups: int, resample: str | None):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(cin if i == 0 else cout, cout, groups) for i in range(layers)])
        if resample == "down":
            self.downsamplers = nn.ModuleList([ConvLayer(cout, down=True)])
        elif resample == "up":
            self.upsamplers = nn.ModuleList([ConvLayer(cout, down=False)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for r in self.resnets:
            x = r(x)
        for s in getattr(self, "downsamplers", ()) or getattr(self, "upsamplers", ()):
            x = s(x)
        return x


class Encoder(nn.Module):
    def __init__(self, cfg: VQConfig):
        super().__init__()
        ch, g = cfg.block_out_channels, cfg.norm_num_groups
        self.conv_in = nn.Conv2d(cfg.in_channels, ch[0], 3, padding=1)
        self.down_blocks = nn.ModuleList(
            CodingBlock(ch[max(i - 1, 0)], ch[i], cfg.layers_per_block, g, "down" if i < len(ch) - 1 else None)
            for i in range(len(ch))
        )
        self.mid_block = MidBlock(ch[-1], g, cfg.mid_block_add_attention)
        self.conv_norm_out = _norm(ch[-1], g)
        self.conv_out = nn.Conv2d(ch[-1], cfg.latent_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for blk in self.down_blocks:
            x = blk(x)
        return self.conv_out(F.silu(self.conv_norm_out(self.mid_block(x))))


class Decoder(nn.Module):
    def __init__(self, cfg: VQConfig):
        super().__init__()
        rev, g = tuple(reversed(cfg.block_out_channels)), cfg.norm_num_groups
        self.conv_in = nn.Conv2d(cfg.latent_channels, rev[0], 3, padding=1)
        self.mid_block = MidBlock(rev[0], g, cfg.mid_block_add_attention)
        self.up_blocks = nn.ModuleList(
            CodingBlock(rev[max(i - 1, 0)], rev[i], cfg.layers_per_block + 1, g, "up" if i < len(rev) - 1 else None)
            for i in range(len(rev))
        )
        self.conv_norm_out = _norm(rev[-1], g)
        self.conv_out = nn.Conv2d(rev[-1], cfg.out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.mid_block(self.conv_in(z))
        for blk in self.up_blocks:
            x = blk(x)
        return self.finish(x)

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(F.silu(self.conv_norm_out(x)))

    def split(self, n_head: int) -> tuple[list, list[list]]:
        """The decoder as a low-resolution trunk and ``n_head`` high-resolution stages.

        Each stage starts with the previous block's upsampler, so the map handed from one stage
        to the next is stored at the lower resolution. Returns (trunk layers, stages' layers).
        """
        n_head = max(1, min(n_head, len(self.up_blocks)))
        trunk: list = [self.conv_in, self.mid_block]
        stages: list[list] = []
        pending: list = []
        for i, blk in enumerate(self.up_blocks):
            layers = [*pending, *blk.resnets]
            pending = list(getattr(blk, "upsamplers", ()))
            if i < len(self.up_blocks) - n_head:
                trunk += layers
            else:
                stages.append(layers)
        stages[-1] += [*pending, self.finish]
        return trunk, stages


def _stage_scale_and_radius(layers: list) -> tuple[int, float]:
    """Output/input scale of a stage and how far (in input pixels) an output pixel sees."""
    scale, radius = 1, 0.0
    for layer in layers:
        if isinstance(layer, ConvLayer):
            scale *= 2
            radius += 1 / scale
        elif isinstance(layer, ResnetBlock):
            radius += 2 / scale
        else:  # finish: one 3x3 conv
            radius += 1 / scale
    return scale, radius


class VectorQuantizer(nn.Module):
    def __init__(self, n: int, dim: int):
        super().__init__()
        self.embedding = nn.Embedding(n, dim)

    @torch.no_grad()
    def nearest(self, z: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        """Index of the nearest codebook vector for each pixel of z [B, C, h, w] (L2, chunked)."""
        b, c, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, c).float()
        book = self.embedding.weight.float()
        book_sq = (book * book).sum(1)
        out = torch.empty(flat.shape[0], dtype=torch.int64, device=z.device)
        for i in range(0, flat.shape[0], chunk):
            part = flat[i : i + chunk]
            dist = book_sq[None, :] - 2 * part @ book.T  # |z|^2 is constant per row
            out[i : i + chunk] = dist.argmin(1)
        return out.reshape(b, h, w)


class VQModel(nn.Module):
    """diffusers-layout VQ model: ``encoder``, ``quant_conv``, ``quantize``, ``post_quant_conv``, ``decoder``."""

    def __init__(self, config: VQConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.quant_conv = nn.Conv2d(config.latent_channels, config.embed_dim, 1)
        self.quantize = VectorQuantizer(config.num_vq_embeddings, config.embed_dim)
        self.post_quant_conv = nn.Conv2d(config.embed_dim, config.latent_channels, 1)
        self.decoder = Decoder(config)

    @classmethod
    def from_config(cls, config: dict | VQConfig) -> VQModel:
        """Build from ``vqvae/config.json``; works under ``torch.device("meta")``."""
        return cls(VQConfig.from_dict(config) if isinstance(config, dict) else config)

    @property
    def dtype(self) -> torch.dtype:
        return self.post_quant_conv.weight.dtype

    @property
    def factor(self) -> int:
        return self.config.factor

    def _check_dtype(self) -> None:
        if self.dtype == torch.float16:
            raise MGTInputError(
                "VQ decode/encode in float16 produces NaNs with these weights; use float32 or bfloat16 for the VQ model"
            )

    def _latents(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.ndim != 3:
            raise MGTInputError(f"token ids must be [batch, height, width], got shape {list(ids.shape)}")
        n = self.config.num_vq_embeddings
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= n):
            raise MGTInputError(
                f"token ids must lie in [0, {n - 1}] (codebook size {n}); found {int(ids.min())}..{int(ids.max())} "
                "(a masked token left in the grid?)"
            )
        z = self.quantize.embedding(ids.to(self.quantize.embedding.weight.device)).permute(0, 3, 1, 2)
        return self.post_quant_conv(z.to(self.dtype))

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids [B, h, w] -> image [B, 3, h*f, w*f] in [0, 1] (model dtype)."""
        self._check_dtype()
        return self.decoder(self._latents(ids)).clamp(0, 1)

    def decode_tiled(self, ids: torch.Tensor, tile: int = 256, head_blocks: int = 3) -> torch.Tensor:
        """Lower-memory decode, equal to :meth:`decode` up to float rounding.

        The low-resolution trunk runs whole; each of the last ``head_blocks`` up blocks runs in
        tiles of about ``tile`` output pixels with a halo wider than its receptive field, and
        only its low-resolution output is kept. GroupNorm needs whole-map statistics, which no
        tile has: every GroupNorm of a stage gets exact ones from a pass over the tiles that
        stops right after it. Costs a few stage runs more than :meth:`decode`.
        """
        self._check_dtype()
        trunk, stages = self.decoder.split(head_blocks)
        x = self._latents(ids)
        for layer in trunk:
            x = layer(x)
        for layers in stages:
            x = _run_stage_tiled(layers, x, tile)
        return x.clamp(0, 1)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Image [B, 3, H, W] in [0, 1] -> token ids [B, H/f, W/f]."""
        self._check_dtype()
        f = self.factor
        if images.ndim != 4 or images.shape[1] != self.config.in_channels:
            raise MGTInputError(f"images must be [batch, {self.config.in_channels}, H, W], got {list(images.shape)}")
        if images.shape[2] % f or images.shape[3] % f:
            raise MGTInputError(f"image size {images.shape[3]}x{images.shape[2]} must be divisible by {f} to encode")
        z = self.quant_conv(self.encoder(images.to(self.dtype)))
        return self.quantize.nearest(z)


def _run_stage(layers: list, x: torch.Tensor) -> torch.Tensor:
    for layer in layers:
        x = layer(x)
    return x


def _run_stage_tiled(layers: list, x: torch.Tensor, tile: int) -> torch.Tensor:
    """Run one stage over x tile by tile, with exact whole-map GroupNorm statistics."""
    scale, radius = _stage_scale_and_radius(layers)
    t, halo = max(1, tile // scale), math.ceil(radius) + 1
    h, w = x.shape[2:]
    if h <= t and w <= t:  # one tile holds the whole map: nothing to gain
        return _run_stage(layers, x)
    norms = [m for layer in layers if isinstance(layer, nn.Module) for m in layer.modules() if isinstance(m, GroupNorm)]
    if layers[-1] is not None and not isinstance(layers[-1], nn.Module):  # the decoder's finish step
        norms.append(layers[-1].__self__.conv_norm_out)
    ctx = _TileContext()
    for m in norms:
        m.tile_context = ctx
    out = None
    try:
        for target in [*norms, None]:  # a statistics pass per GroupNorm, then the output pass
            ctx.target = target
            for y0 in range(0, h, t):
                for x0 in range(0, w, t):
                    y1, x1 = min(y0 + t, h), min(x0 + t, w)
                    py0, px0, py1, px1 = max(0, y0 - halo), max(0, x0 - halo), min(h, y1 + halo), min(w, x1 + halo)
                    ctx.set_tile((y0 - py0, y1 - py0, x0 - px0, x1 - px0), py1 - py0)
                    try:
                        y = _run_stage(layers, x[:, :, py0:py1, px0:px1])
                    except _StopPass:
                        continue
                    if out is None:
                        out = y.new_empty(x.shape[0], y.shape[1], h * scale, w * scale)
                    s = scale
                    out[:, :, y0 * s : y1 * s, x0 * s : x1 * s] = y[
                        :, :, (y0 - py0) * s : (y1 - py0) * s, (x0 - px0) * s : (x1 - px0) * s
                    ]
            ctx.finish_target()
    finally:
        for m in norms:
            m.tile_context = None
    return out


class _StopPass(Exception):
    """Ends a statistics pass over a tile once its target GroupNorm has seen its input."""


class _TileContext:
    """Per-decode state for tiled GroupNorm: exact whole-image statistics, one norm per pass.

    In the pass for ``target`` every earlier norm already has final statistics; the target adds
    the sum and sum of squares of its input over the tile's interior (the halo belongs to the
    neighbouring tiles), then the tile's computation stops.
    """

    def __init__(self):
        self.stats: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.target: GroupNorm | None = None
        self.acc: list = [0.0, 0.0, 0]
        self.box = (0, 0, 0, 0)
        self.tile_h = 1

    def set_tile(self, box: tuple[int, int, int, int], tile_h: int) -> None:
        self.box, self.tile_h = box, tile_h

    def finish_target(self) -> None:
        if self.target is not None:
            s, q, n = self.acc
            mean = s / n
            self.stats[id(self.target)] = (mean.float(), (q / n - mean * mean).clamp_min(0).float())
        self.acc = [0.0, 0.0, 0]

    def norm(self, m: GroupNorm, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        g = m.num_groups
        if m is self.target:
            s = h // self.tile_h
            y0, y1, x0, x1 = (v * s for v in self.box)
            inner = x[:, :, y0:y1, x0:x1].float().reshape(b, g, -1)
            var, mean = torch.var_mean(inner, dim=2, correction=0)
            n = inner.shape[2]
            self.acc[0] = self.acc[0] + mean.double() * n
            self.acc[1] = self.acc[1] + (var.double() + mean.double() ** 2) * n
            self.acc[2] += n
            raise _StopPass
        mean, var = self.stats[id(m)]
        inv = torch.rsqrt(var + m.eps).repeat_interleave(c // g, dim=1)  # [b, c]
        scale = m.weight.float() * inv
        shift = m.bias.float() - mean.repeat_interleave(c // g, dim=1) * scale
        return torch.addcmul(shift[:, :, None, None], x.float(), scale[:, :, None, None]).to(x.dtype)

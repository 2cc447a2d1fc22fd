"""The convolutional VQGAN of the MaskGIT families, in two key layouts.

taming-transformers' VQGAN (MaskGIT v1, ``last.ckpt``) and LlamaGen's VQ-16 (Halton-MaskGIT,
``vq_ds16_c2i.pt``) are the same network: GroupNorm(32, eps 1e-6) + swish ResNet blocks,
single-head 1x1-conv attention, nearest-2x + conv up-sampling, asymmetric-pad stride-2 down-sampling.
They differ in container names and in the quantizer (LlamaGen l2-normalises the codebook at
lookup and keeps a ``codebook_used`` buffer). One :class:`VQGAN` builds either layout, so the
module's state-dict keys are the released file's keys (models.md sections 7 and 8).

decode: ids [B, h, w] -> image [B, 3, H, W] in [0, 1] (the decoder emits [-1, 1]; we map and clamp).
encode: image in [0, 1] -> nearest codebook ids [B, h, w].
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import MGTInputError, MGTLoadError
from ..config_io import known_fields

LAYOUTS = ("taming", "llamagen")


@dataclass(frozen=True)
class VQGANConfig:
    """Network shape. ``attn_resolutions``/``resolution`` follow taming's rule (attention where the
    feature map has one of these sizes, counted from ``resolution``); LlamaGen puts it at the lowest
    level, which is the same place for its 5-level VQ-16."""

    layout: str = "taming"
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    z_channels: int = 256
    embed_dim: int = 256
    n_embed: int = 1024
    attn_resolutions: tuple[int, ...] = (16,)
    resolution: int = 256
    in_channels: int = 3
    out_ch: int = 3
    l2_norm: bool = False
    codebook_used: int = 0  # length of LlamaGen's ``quantize.codebook_used`` buffer (0: none)
    norm_groups: int = 32
    """GroupNorm groups (both releases: 32); 0 = no statistics, only the per-channel scale and shift (the
    built-in maskgit-demo: any GroupNorm normalises over the whole image, so a small decoder's colours drift
    with the image's other content). Same keys and shapes either way."""

    @classmethod
    def from_dict(cls, config: dict, source: str = "vq/config.json") -> VQGANConfig:
        """Our flat config, a taming ``model.yaml`` ``params`` dict (with ``ddconfig``), or LlamaGen ``ModelArgs`` values."""
        if "ddconfig" in config:  # taming model.yaml -> model.params
            dd = config["ddconfig"]
            if dd.get("double_z"):
                raise MGTLoadError(f"{source}: double_z=true is a KL autoencoder, not a VQGAN")
            config = {
                "layout": "taming", "ch": dd["ch"], "ch_mult": dd["ch_mult"], "num_res_blocks": dd["num_res_blocks"],
                "z_channels": dd["z_channels"], "embed_dim": config["embed_dim"], "n_embed": config["n_embed"],
                "attn_resolutions": dd.get("attn_resolutions", []), "resolution": dd["resolution"],
                "in_channels": dd.get("in_channels", 3), "out_ch": dd.get("out_ch", 3),
            }
        elif "codebook_embed_dim" in config:  # LlamaGen ModelArgs
            enc, dec = config.get("encoder_ch_mult", [1, 1, 2, 2, 4]), config.get("decoder_ch_mult", [1, 1, 2, 2, 4])
            if list(enc) != list(dec):
                raise MGTLoadError(f"{source}: encoder_ch_mult {enc} != decoder_ch_mult {dec} is not supported")
            config = llamagen_vq(config.get("codebook_size", 16384), config["codebook_embed_dim"], list(dec),
                                 config.get("z_channels", 256), bool(config.get("codebook_l2_norm", True)),
                                 65536 if config.get("codebook_show_usage", True) else 0)
        values = known_fields(cls, config, source, "VQGAN")
        for k in ("ch_mult", "attn_resolutions"):
            if k in values:
                values[k] = tuple(int(v) for v in values[k])
        try:
            cfg = cls(**values)
        except TypeError as e:
            raise MGTLoadError(f"{source}: bad VQGAN config ({e})") from None
        cfg.validate(source)
        return cfg

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ch_mult"], d["attn_resolutions"] = list(self.ch_mult), list(self.attn_resolutions)
        if self.norm_groups == 32:
            del d["norm_groups"]  # the releases' value: configs stay as they were
        return d

    def validate(self, source: str = "config") -> None:
        if self.layout not in LAYOUTS:
            raise MGTLoadError(f"{source}: layout {self.layout!r} is not one of {LAYOUTS}")
        if not self.ch_mult or min(self.ch_mult) < 1:
            raise MGTLoadError(f"{source}: ch_mult {list(self.ch_mult)} must be a non-empty list of positive ints")
        if self.norm_groups < 0:
            raise MGTLoadError(f"{source}: norm_groups {self.norm_groups} must be >= 0 (GroupNorm groups; 0 = affine only)")
        bad = [self.ch * m for m in self.ch_mult if self.norm_groups and (self.ch * m) % self.norm_groups]
        if bad:
            raise MGTLoadError(f"{source}: channels {bad} are not multiples of {self.norm_groups} (GroupNorm groups)")

    @property
    def factor(self) -> int:
        """Pixels per token along each axis."""
        return 2 ** (len(self.ch_mult) - 1)

    def attention_levels(self) -> set[int]:
        """Levels (0 = full resolution) with attention blocks after their ResNet blocks."""
        levels = len(self.ch_mult)
        if self.layout == "llamagen":
            return {levels - 1}
        return {i for i in range(levels) if self.resolution // 2**i in self.attn_resolutions}


def taming_vq(n_embed: int = 1024, embed_dim: int = 256, ch: int = 128, ch_mult=(1, 1, 2, 2, 4),
              z_channels: int = 256, attn_resolutions=(16,), resolution: int = 256, num_res_blocks: int = 2) -> dict:
    return {"layout": "taming", "ch": ch, "ch_mult": list(ch_mult), "num_res_blocks": num_res_blocks,
            "z_channels": z_channels, "embed_dim": embed_dim, "n_embed": n_embed,
            "attn_resolutions": list(attn_resolutions), "resolution": resolution, "l2_norm": False, "codebook_used": 0}


def llamagen_vq(codebook_size: int = 16384, embed_dim: int = 8, ch_mult=(1, 1, 2, 2, 4), z_channels: int = 256,
                l2_norm: bool = True, codebook_used: int = 65536) -> dict:
    """LlamaGen's ``VQ_models['VQ-16']`` (ch 128 and 2 ResNet blocks are fixed there)."""
    return {"layout": "llamagen", "ch": 128, "ch_mult": list(ch_mult), "num_res_blocks": 2,
            "z_channels": z_channels, "embed_dim": embed_dim, "n_embed": codebook_size, "attn_resolutions": [],
            "resolution": 256, "l2_norm": l2_norm, "codebook_used": codebook_used}


class _GroupNorm(nn.GroupNorm):
    """GroupNorm; with ``num_groups`` 0 only its affine part (``norm_groups: 0``, same keys and shapes)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.num_groups == 0:
            return x * self.weight[:, None, None] + self.bias[:, None, None]
        return super().forward(x)


def _norm(c: int) -> nn.GroupNorm:
    return _GroupNorm(32, c, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = _norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class AttnBlock(nn.Module):
    """Single-head attention over pixels with 1x1-conv q/k/v/proj_out (scale 1/sqrt(C))."""

    def __init__(self, c: int):
        super().__init__()
        self.norm = _norm(c)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        n = self.norm(x)
        q, k, v = (f(n).reshape(b, 1, c, h * w).transpose(2, 3) for f in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v).transpose(2, 3).reshape(b, c, h, w)
        return x + self.proj_out(out)


class Resample(nn.Module):
    """``conv`` after nearest-2x (up) or after (0,1,0,1) zero padding with stride 2 (down)."""

    def __init__(self, c: int, down: bool):
        super().__init__()
        self.down = down
        self.conv = nn.Conv2d(c, c, 3, stride=2 if down else 1, padding=0 if down else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.down:
            return self.conv(F.pad(x, (0, 1, 0, 1)))
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _level(layout: str, blocks: list[nn.Module], attns: list[nn.Module], resample: nn.Module | None) -> nn.Module:
    """One resolution level: taming names its lists ``block``/``attn``, LlamaGen ``res``/``attn``."""
    m = nn.Module()
    setattr(m, "block" if layout == "taming" else "res", nn.ModuleList(blocks))
    m.attn = nn.ModuleList(attns)
    if resample is not None:
        setattr(m, "downsample" if resample.down else "upsample", resample)
    return m


def _mid(layout: str, c: int) -> nn.Module:
    if layout == "taming":
        m = nn.Module()
        m.block_1, m.attn_1, m.block_2 = ResnetBlock(c, c), AttnBlock(c), ResnetBlock(c, c)
        return m
    return nn.ModuleList([ResnetBlock(c, c), AttnBlock(c), ResnetBlock(c, c)])


def _mid_layers(mid: nn.Module) -> list[nn.Module]:
    return list(mid) if isinstance(mid, nn.ModuleList) else [mid.block_1, mid.attn_1, mid.block_2]


def _run_level(level: nn.Module, x: torch.Tensor) -> torch.Tensor:
    blocks = level.block if hasattr(level, "block") else level.res
    for i, blk in enumerate(blocks):
        x = blk(x)
        if len(level.attn):
            x = level.attn[i](x)
    for name in ("downsample", "upsample"):
        if hasattr(level, name):
            x = getattr(level, name)(x)
    return x


class Encoder(nn.Module):
    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        n, attn = len(cfg.ch_mult), cfg.attention_levels()
        mult = (1, *cfg.ch_mult)
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, padding=1)
        levels = []
        for i in range(n):
            cin, cout = cfg.ch * mult[i], cfg.ch * mult[i + 1]
            blocks = [ResnetBlock(cin if j == 0 else cout, cout) for j in range(cfg.num_res_blocks)]
            attns = [AttnBlock(cout) for _ in range(cfg.num_res_blocks)] if i in attn else []
            levels.append(_level(cfg.layout, blocks, attns, Resample(cout, down=True) if i < n - 1 else None))
        setattr(self, "down" if cfg.layout == "taming" else "conv_blocks", nn.ModuleList(levels))
        c = cfg.ch * cfg.ch_mult[-1]
        self.mid = _mid(cfg.layout, c)
        self.norm_out = _norm(c)
        self.conv_out = nn.Conv2d(c, cfg.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for level in self.down if hasattr(self, "down") else self.conv_blocks:
            x = _run_level(level, x)
        for layer in _mid_layers(self.mid):
            x = layer(x)
        return self.conv_out(F.silu(self.norm_out(x)))


class Decoder(nn.Module):
    """Runs from the lowest level up. taming indexes ``up`` by level (``up.4`` runs first);
    LlamaGen indexes ``conv_blocks`` in execution order (``conv_blocks.0`` is the lowest level)."""

    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        n, attn = len(cfg.ch_mult), cfg.attention_levels()
        c = cfg.ch * cfg.ch_mult[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, c, 3, padding=1)
        self.mid = _mid(cfg.layout, c)
        by_level: dict[int, nn.Module] = {}
        for i in reversed(range(n)):
            cout = cfg.ch * cfg.ch_mult[i]
            blocks = [ResnetBlock(c if j == 0 else cout, cout) for j in range(cfg.num_res_blocks + 1)]
            attns = [AttnBlock(cout) for _ in range(cfg.num_res_blocks + 1)] if i in attn else []
            by_level[i] = _level(cfg.layout, blocks, attns, Resample(cout, down=False) if i > 0 else None)
            c = cout
        if cfg.layout == "taming":
            self.up = nn.ModuleList(by_level[i] for i in range(n))
        else:
            self.conv_blocks = nn.ModuleList(by_level[i] for i in reversed(range(n)))
        self.norm_out = _norm(c)
        self.conv_out = nn.Conv2d(c, cfg.out_ch, 3, padding=1)

    def levels(self) -> list[nn.Module]:
        """Levels in execution order (lowest resolution first)."""
        return list(reversed(self.up)) if hasattr(self, "up") else list(self.conv_blocks)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(z)
        for layer in _mid_layers(self.mid):
            x = layer(x)
        for level in self.levels():
            x = _run_level(level, x)
        return self.conv_out(F.silu(self.norm_out(x)))


class Quantizer(nn.Module):
    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        self.l2_norm = cfg.l2_norm
        self.embedding = nn.Embedding(cfg.n_embed, cfg.embed_dim)
        if cfg.codebook_used:  # training statistics in LlamaGen's files: loaded so keys match, never used
            self.register_buffer("codebook_used", torch.zeros(cfg.codebook_used))

    def codebook(self) -> torch.Tensor:
        w = self.embedding.weight
        return F.normalize(w, p=2, dim=-1) if self.l2_norm else w

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [B, h, w] -> latents [B, C, h, w]."""
        return F.embedding(ids, self.codebook()).permute(0, 3, 1, 2)

    @torch.no_grad()
    def nearest(self, z: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        """Nearest codebook index per pixel of z [B, C, h, w] (z normalised too when the codebook is)."""
        b, c, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, c).float()
        if self.l2_norm:
            flat = F.normalize(flat, p=2, dim=-1)
        book = self.codebook().float()
        book_sq = (book * book).sum(1)
        out = torch.empty(flat.shape[0], dtype=torch.int64, device=z.device)
        for i in range(0, flat.shape[0], chunk):
            out[i : i + chunk] = (book_sq[None] - 2 * flat[i : i + chunk] @ book.T).argmin(1)
        return out.reshape(b, h, w)


class VQGAN(nn.Module):
    """``encoder``, ``quant_conv``, ``quantize``, ``post_quant_conv``, ``decoder`` (both layouts)."""

    def __init__(self, config: VQGANConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.quant_conv = nn.Conv2d(config.z_channels, config.embed_dim, 1)
        self.quantize = Quantizer(config)
        self.post_quant_conv = nn.Conv2d(config.embed_dim, config.z_channels, 1)
        self.decoder = Decoder(config)
        if config.norm_groups != 32:
            for m in self.modules():
                if isinstance(m, nn.GroupNorm):
                    m.num_groups = config.norm_groups

    @classmethod
    def from_config(cls, config: dict | VQGANConfig) -> VQGAN:
        """Build from a config dict (see :meth:`VQGANConfig.from_dict`); works under ``torch.device("meta")``."""
        return cls(VQGANConfig.from_dict(config) if isinstance(config, dict) else config)

    @property
    def dtype(self) -> torch.dtype:
        return self.post_quant_conv.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.post_quant_conv.weight.device

    @property
    def factor(self) -> int:
        return self.config.factor

    @property
    def codebook_size(self) -> int:
        return self.config.n_embed

    def _check_ids(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.ndim != 3:
            raise MGTInputError(f"token ids must be [batch, height, width], got shape {list(ids.shape)}")
        n = self.config.n_embed
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= n):
            raise MGTInputError(
                f"token ids must lie in [0, {n - 1}] (codebook size {n}); found {int(ids.min())}..{int(ids.max())} "
                "(a masked token left in the grid? the reference samplers clamp to the codebook first)"
            )
        return ids.to(self.device)

    def decode_raw(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [B, h, w] -> the decoder's output in about [-1, 1] (the reference ``decode_code``)."""
        z = self.quantize.lookup(self._check_ids(ids)).to(self.dtype)
        return self.decoder(self.post_quant_conv(z))

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [B, h, w] -> image [B, 3, h*f, w*f] in [0, 1] (model dtype)."""
        return ((self.decode_raw(ids) + 1) / 2).clamp(0, 1)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Image [B, 3, H, W] in [0, 1] -> token ids [B, H/f, W/f]."""
        f = self.factor
        if images.ndim != 4 or images.shape[1] != self.config.in_channels:
            raise MGTInputError(f"images must be [batch, {self.config.in_channels}, H, W], got {list(images.shape)}")
        if images.shape[2] % f or images.shape[3] % f:
            raise MGTInputError(f"image size {images.shape[3]}x{images.shape[2]} must be divisible by {f} to encode")
        x = images.to(device=self.device, dtype=self.dtype) * 2 - 1
        return self.quantize.nearest(self.quant_conv(self.encoder(x)))

"""Meissonic / Monetico transformer: a Flux-style MMDiT wrapped in aMUSEd-style token I/O.

Attribute names are the checkpoint keys (models.md section 3), so the published
``transformer/diffusion_pytorch_model*.safetensors`` files load with ``strict=True``.
RoPE ids come from the actual transformer grid, so any size divisible by the VQ factor
(times 2 with down-sampling) works, including non-square ones.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import MGTInputError, MGTLoadError
from ..layers import (
    ChannelRMSNorm,
    FeedForward,
    MLPEmbedding,
    RMSNorm,
    apply_rope,
    rope_tables,
    sinusoidal_embedding,
)

MICRO_COND_DIM = 256  # sinusoid width of each of the 5 micro-conditions (fixed in the model)
NUM_MICRO_CONDS = 5


@dataclass(frozen=True)
class MeissonicConfig:
    """The ``transformer/config.json`` values that shape the network (others are ignored)."""

    num_layers: int = 14
    num_single_layers: int = 28
    num_attention_heads: int = 8
    attention_head_dim: int = 128
    joint_attention_dim: int = 1024
    pooled_projection_dim: int = 1024
    axes_dims_rope: tuple[int, ...] = (16, 56, 56)
    vocab_size: int = 8256
    codebook_size: int = 8192
    downsample: bool = True
    upsample: bool = True

    @classmethod
    def from_dict(cls, config: dict, source: str = "config.json") -> MeissonicConfig:
        if config.get("guidance_embeds"):
            raise MGTLoadError(f"{source}: guidance_embeds=true is not a Meissonic/Monetico checkpoint")
        missing = [k for k in ("axes_dims_rope", "codebook_size", "vocab_size") if k not in config]
        if missing:
            raise MGTLoadError(f"{source}: missing {', '.join(missing)}; is this a Meissonic transformer config?")
        values = {f.name: config[f.name] for f in fields(cls) if f.name in config}
        values["axes_dims_rope"] = tuple(int(v) for v in values["axes_dims_rope"])
        cfg = cls(**values)
        cfg.validate(source)
        return cfg

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @property
    def mask_token_id(self) -> int:
        return self.vocab_size - 1

    @property
    def grid_factor(self) -> int:
        """VQ tokens per transformer token along each axis."""
        return 2 if self.downsample else 1

    def validate(self, source: str = "config") -> None:
        problems = []
        if self.pooled_projection_dim != self.inner_dim:
            problems.append(
                f"pooled_projection_dim ({self.pooled_projection_dim}) must equal heads*head_dim ({self.inner_dim})"
            )
        if sum(self.axes_dims_rope) != self.attention_head_dim or any(d % 2 for d in self.axes_dims_rope):
            problems.append(f"axes_dims_rope {list(self.axes_dims_rope)} must be even and sum to {self.attention_head_dim}")
        if self.codebook_size >= self.vocab_size:
            problems.append(f"codebook_size ({self.codebook_size}) must be < vocab_size ({self.vocab_size})")
        if self.downsample != self.upsample:
            problems.append("downsample and upsample must agree")
        if problems:
            raise MGTLoadError(f"{source}: " + "; ".join(problems))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["axes_dims_rope"] = list(self.axes_dims_rope)
        return d


class AdaLayerNormZero(nn.Module):
    """Modulation ``linear`` (D -> n*D) of SiLU(temb); the LayerNorm itself has no parameters."""

    def __init__(self, dim: int, chunks: int):
        super().__init__()
        self.linear = nn.Linear(dim, chunks * dim)
        self.chunks = chunks

    def forward(self, temb: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.linear(F.silu(temb)).chunk(self.chunks, dim=1)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], eps=1e-6) * (1 + scale[:, None]) + shift[:, None]


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(1, 2).flatten(2)


class JointAttention(nn.Module):
    """Dual-stream attention over the sequence [text; image] with per-head QK RMSNorm and RoPE."""

    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        self.heads = heads
        self.to_q, self.to_k, self.to_v = (nn.Linear(dim, dim) for _ in range(3))
        self.add_q_proj, self.add_k_proj, self.add_v_proj = (nn.Linear(dim, dim) for _ in range(3))
        self.norm_q, self.norm_k = RMSNorm(head_dim), RMSNorm(head_dim)
        self.norm_added_q, self.norm_added_k = RMSNorm(head_dim), RMSNorm(head_dim)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Identity()])
        self.to_add_out = nn.Linear(dim, dim)

    def forward(self, img: torch.Tensor, txt: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]):
        h = self.heads
        q = torch.cat([self.norm_added_q(_heads(self.add_q_proj(txt), h)), self.norm_q(_heads(self.to_q(img), h))], 2)
        k = torch.cat([self.norm_added_k(_heads(self.add_k_proj(txt), h)), self.norm_k(_heads(self.to_k(img), h))], 2)
        v = torch.cat([_heads(self.add_v_proj(txt), h), _heads(self.to_v(img), h)], 2)
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        out = _merge_heads(F.scaled_dot_product_attention(q, k, v)).to(q.dtype)
        n_txt = txt.shape[1]
        return self.to_out[0](out[:, n_txt:]), self.to_add_out(out[:, :n_txt])


class SingleAttention(nn.Module):
    """Single-stream attention (no output projection: ``proj_out`` of the block follows)."""

    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        self.heads = heads
        self.to_q, self.to_k, self.to_v = (nn.Linear(dim, dim) for _ in range(3))
        self.norm_q, self.norm_k = RMSNorm(head_dim), RMSNorm(head_dim)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        h = self.heads
        q = apply_rope(self.norm_q(_heads(self.to_q(x), h)), *rope)
        k = apply_rope(self.norm_k(_heads(self.to_k(x), h)), *rope)
        v = _heads(self.to_v(x), h)
        return _merge_heads(F.scaled_dot_product_attention(q, k, v)).to(q.dtype)


def _clip_fp16(x: torch.Tensor) -> torch.Tensor:
    return x.clip(-65504, 65504) if x.dtype == torch.float16 else x


class DualStreamBlock(nn.Module):
    """``transformer_blocks.i``: separate image/text weights, joint attention."""

    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        self.norm1 = AdaLayerNormZero(dim, 6)
        self.norm1_context = AdaLayerNormZero(dim, 6)
        self.attn = JointAttention(dim, heads, head_dim)
        self.ff = FeedForward(dim)
        self.ff_context = FeedForward(dim)

    def forward(self, img, txt, temb, rope):
        shift, scale, gate, shift_mlp, scale_mlp, gate_mlp = self.norm1(temb)
        c_shift, c_scale, c_gate, c_shift_mlp, c_scale_mlp, c_gate_mlp = self.norm1_context(temb)
        a_img, a_txt = self.attn(modulate(img, shift, scale), modulate(txt, c_shift, c_scale), rope)
        img = img + gate[:, None] * a_img
        img = img + gate_mlp[:, None] * self.ff(modulate(img, shift_mlp, scale_mlp))
        txt = txt + c_gate[:, None] * a_txt
        txt = txt + c_gate_mlp[:, None] * self.ff_context(modulate(txt, c_shift_mlp, c_scale_mlp))
        return img, _clip_fp16(txt)


class SingleStreamBlock(nn.Module):
    """``single_transformer_blocks.j``: one stream, parallel attention and MLP."""

    def __init__(self, dim: int, heads: int, head_dim: int, mlp_ratio: int = 4):
        super().__init__()
        self.norm = AdaLayerNormZero(dim, 3)
        self.proj_mlp = nn.Linear(dim, dim * mlp_ratio)
        self.attn = SingleAttention(dim, heads, head_dim)
        self.proj_out = nn.Linear(dim * (1 + mlp_ratio), dim)

    def forward(self, x, temb, rope):
        shift, scale, gate = self.norm(temb)
        n = modulate(x, shift, scale)
        mlp = F.gelu(self.proj_mlp(n), approximate="tanh")
        x = x + gate[:, None] * self.proj_out(torch.cat([self.attn(n, rope), mlp], dim=2))
        return _clip_fp16(x)


class TimeTextEmbedding(nn.Module):
    def __init__(self, dim: int, pooled_dim: int):
        super().__init__()
        self.timestep_embedder = MLPEmbedding(MICRO_COND_DIM, dim)
        self.text_embedder = MLPEmbedding(pooled_dim, dim)

    def forward(self, timestep: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        t = sinusoidal_embedding(timestep, MICRO_COND_DIM).to(pooled.dtype)
        return self.timestep_embedder(t) + self.text_embedder(pooled)


class TokenEmbedding(nn.Module):
    """``embed``: token ids [B, h, w] -> embedding -> RMSNorm -> 1x1 conv -> [B, D, h, w]."""

    def __init__(self, vocab_size: int, dim: int):
        super().__init__()
        self.embeddings = nn.Embedding(vocab_size, dim)
        self.layer_norm = RMSNorm(dim)
        self.conv = nn.Conv2d(dim, dim, kernel_size=1, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.conv(self.layer_norm(self.embeddings(ids)).permute(0, 3, 1, 2))


class Downsample(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.norm = ChannelRMSNorm(dim)
        self.conv = nn.Conv2d(dim, dim, kernel_size=2, stride=2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(self.norm(x), (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.norm = ChannelRMSNorm(dim)
        self.conv = nn.ConvTranspose2d(dim, dim, kernel_size=2, stride=2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.norm(x))


class ResampleBlock(nn.Module):
    """``down_block`` / ``up_block``: holds ``downsample`` or ``upsample`` when the config enables
    it (Meissonic), nothing otherwise (Monetico), so the keys match either checkpoint."""

    def __init__(self, dim: int, enabled: bool, name: str):
        super().__init__()
        self.name = name
        if enabled:
            setattr(self, name, Downsample(dim) if name == "downsample" else Upsample(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layer = getattr(self, self.name, None)
        return x if layer is None else layer(x)


class MLMHead(nn.Module):
    """``mlm_layer``: 1x1 conv -> channel RMSNorm -> 1x1 conv to codebook logits."""

    def __init__(self, dim: int, codebook_size: int):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, kernel_size=1, bias=False)
        self.layer_norm = ChannelRMSNorm(dim)
        self.conv2 = nn.Conv2d(dim, codebook_size, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.layer_norm(self.conv1(x)))


class MeissonicTransformer(nn.Module):
    """Token grid + text conditioning -> codebook logits [B, K, h, w]."""

    def __init__(self, config: MeissonicConfig):
        super().__init__()
        config.validate()
        self.config = config
        d, heads, hd = config.inner_dim, config.num_attention_heads, config.attention_head_dim
        self.time_text_embed = TimeTextEmbedding(d, config.pooled_projection_dim)
        self.context_embedder = nn.Linear(config.joint_attention_dim, d)
        self.encoder_proj_layer_norm = RMSNorm(d)
        self.transformer_blocks = nn.ModuleList(DualStreamBlock(d, heads, hd) for _ in range(config.num_layers))
        self.single_transformer_blocks = nn.ModuleList(
            SingleStreamBlock(d, heads, hd) for _ in range(config.num_single_layers)
        )
        self.embed = TokenEmbedding(config.vocab_size, d)
        self.mlm_layer = MLMHead(d, config.codebook_size)
        self.cond_embed = MLPEmbedding(NUM_MICRO_CONDS * MICRO_COND_DIM + config.pooled_projection_dim, d, bias=False)
        self.project_to_hidden_norm = RMSNorm(d)
        self.project_to_hidden = nn.Linear(d, d, bias=False)
        self.project_from_hidden_norm = RMSNorm(d)
        self.project_from_hidden = nn.Linear(d, d, bias=False)
        self.down_block = ResampleBlock(d, config.downsample, "downsample")
        self.up_block = ResampleBlock(d, config.upsample, "upsample")
        self._rope_cache: tuple[tuple, tuple[torch.Tensor, torch.Tensor]] | None = None
        self._mgt_compiler = None  # a RegionCompiler runs the blocks compiled (mgt_core.accel.compile)

    @classmethod
    def from_config(cls, config: dict | MeissonicConfig) -> MeissonicTransformer:
        """Build from a ``config.json`` dict; works under ``torch.device("meta")``."""
        if isinstance(config, dict):
            config = MeissonicConfig.from_dict(config)
        return cls(config)

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.embeddings.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.embed.embeddings.weight.device

    @property
    def mask_token_id(self) -> int:
        return self.config.mask_token_id

    def check_grid(self, height: int, width: int) -> None:
        """Token grids must split evenly into transformer tokens."""
        f = self.config.grid_factor
        if height < f or width < f or height % f or width % f:
            raise MGTInputError(
                f"token grid {height}x{width} must be divisible by {f} for this model "
                f"({'with' if f == 2 else 'without'} 2x2 down-sampling)"
            )

    def rope(self, grid_h: int, grid_w: int, text_len: int, device: torch.device):
        """cos/sin tables for [text; image] on the transformer grid; cached per shape and device. Tables
        made in inference mode cannot enter autograd, so outside it they are rebuilt (training after a preview)."""
        key = (grid_h, grid_w, text_len, str(device))
        stale = self._rope_cache is not None and self._rope_cache[1][0].is_inference()
        if self._rope_cache is None or self._rope_cache[0] != key or (stale and not torch.is_inference_mode_enabled()):
            ids = torch.zeros(text_len + grid_h * grid_w, 3, dtype=torch.int64)
            rows, cols = torch.meshgrid(torch.arange(grid_h), torch.arange(grid_w), indexing="ij")
            ids[text_len:, 1] = rows.reshape(-1)
            ids[text_len:, 2] = cols.reshape(-1)
            cos, sin = rope_tables(ids, self.config.axes_dims_rope)
            self._rope_cache = (key, (cos.to(device), sin.to(device)))
        return self._rope_cache[1]

    def _run_block(self, block: nn.Module, *args):
        """A block's forward, compiled when :func:`~mgt_core.accel.compile.enable_compile` is on."""
        compiler = self._mgt_compiler
        if compiler is None:
            return block(*args)
        return compiler(type(block).forward, block, *args)

    def forward(
        self,
        tokens: torch.Tensor,
        text_hidden: torch.Tensor,
        pooled: torch.Tensor,
        timestep: torch.Tensor | int,
        micro_conds: torch.Tensor,
    ) -> torch.Tensor:
        """tokens [B, h, w] (mask = vocab_size - 1), text_hidden [B, Lt, joint_dim], pooled [B, P],
        timestep: the step value t (T-1 ... 0), micro_conds [B, 5] = (width, height, crop_top,
        crop_left, aesthetic). Returns logits [B, codebook_size, h, w]."""
        b = tokens.shape[0]
        self.check_grid(tokens.shape[1], tokens.shape[2])
        micro = sinusoidal_embedding(micro_conds.reshape(-1), MICRO_COND_DIM).reshape(b, -1)
        cond = torch.cat([pooled, micro], dim=1).to(self.dtype)
        cond = self.cond_embed(cond).to(text_hidden.dtype)

        x = self.down_block(self.embed(tokens))
        _, c, gh, gw = x.shape
        img = self.project_to_hidden(self.project_to_hidden_norm(x.permute(0, 2, 3, 1).reshape(b, gh * gw, c)))
        txt = self.encoder_proj_layer_norm(self.context_embedder(text_hidden))

        if isinstance(timestep, torch.Tensor):
            t = timestep.to(img.device).reshape(-1)
        else:  # filled on the device: a host scalar copied over would stall the GPU queue
            t = torch.full((1,), timestep, device=img.device)
        temb = self.time_text_embed(t.to(img.dtype) * 1000, cond)
        rope = self.rope(gh, gw, txt.shape[1], img.device)

        run = self._run_block
        for block in self.transformer_blocks:
            img, txt = run(block, img, txt, temb, rope)
        n_txt = txt.shape[1]
        x = torch.cat([txt, img], dim=1)
        for block in self.single_transformer_blocks:
            x = run(block, x, temb, rope)
        img = self.project_from_hidden(self.project_from_hidden_norm(x[:, n_txt:]))
        img = img.reshape(b, gh, gw, c).permute(0, 3, 1, 2)
        return self.mlm_layer(self.up_block(img))

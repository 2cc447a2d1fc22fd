"""TomeMGT: token merging in the transformer blocks (design-choices.md section 10), with its FIX list.

How it works, per model call (one forward pass):

* the image tokens of a block input are split into 2x2 windows of the real transformer grid; one
  random position per complete window is a destination (dst), every other token a source (src);
* each src token finds its most similar dst (cosine of the block's input hidden states); the r =
  int(N * ratio) src tokens with the best matches are averaged into their dst, the rest are kept;
* attention and MLP of the image stream run on the N - r merged tokens and their outputs are copied
  back (unmerge) before the residual add. RoPE cos/sin are merged the same way, per batch row, and
  broadcast as [B, 1, S, D] so the CFG batch works (FIX 1).

The matching is recomputed at blocks 0, reuse, 2*reuse, ... of every forward and lives only for that
forward (FIX 3): nothing drifts across steps or images. The dst choice of a matching comes from a
fresh CPU generator seeded by (generation seed, timestep, stream, block group), never from the
sampler's generator, so it is reproducible whatever ran before (FIX 4) and identical on any device.
The generation seed and step count come from :func:`tome_generation`, which the pipeline enters once
per generation.

Beyond the reference (both off by default until measured): merging in the single-stream blocks
(``single_stream``) and a step window (``window``: the fraction of sampling progress where merging
is on; step i of T has progress i / T and the model receives t = T - 1 - i).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import MGTInputError
from ..models.meissonic.transformer import (
    DualStreamBlock,
    MeissonicTransformer,
    SingleStreamBlock,
    _clip_fp16,
    modulate,
)
from .compile import EAGER_REGION

MAX_RATIO = 0.75
"""At most 3 of the 4 tokens of a 2x2 window can merge into its dst."""


@dataclass(frozen=True)
class TomeConfig:
    """Everything that decides the merging besides the generation seed and step count."""

    ratio: float = 0.25
    sx: int = 2
    sy: int = 2
    reuse: int = 5
    single_stream: bool = False
    single_ratio: float | None = None  # ratio in the single-stream blocks; None = ``ratio``
    window: tuple[float, float] = (0.0, 1.0)  # [start, end) of sampling progress where merging is on
    seed: int = 0  # generation seed used outside :func:`tome_generation`

    def __post_init__(self):
        for name in ("ratio", "single_ratio"):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= MAX_RATIO:
                raise MGTInputError(
                    f"TomeMGT {name} must lie in [0, {MAX_RATIO}] (at most 3 of the 4 tokens of a 2x2 window "
                    f"can merge into it), got {value!r}"
                )
        if not (isinstance(self.sx, int) and isinstance(self.sy, int)) or self.sx < 1 or self.sy < 1 or self.sx * self.sy < 2:
            raise MGTInputError(f"TomeMGT window strides sx, sy must be integers >= 1 with sx*sy >= 2, got {self.sx}, {self.sy}")
        if not isinstance(self.reuse, int) or self.reuse < 1:
            raise MGTInputError(f"TomeMGT reuse (blocks per matching) must be an integer >= 1, got {self.reuse!r}")
        w = tuple(float(v) for v in self.window)
        if len(w) != 2 or not 0.0 <= w[0] < w[1] <= 1.0:
            raise MGTInputError(f"TomeMGT window must be (start, end) with 0 <= start < end <= 1, got {self.window!r}")
        object.__setattr__(self, "window", w)

    @property
    def single(self) -> float:
        return self.ratio if self.single_ratio is None else float(self.single_ratio)

    @property
    def windowed(self) -> bool:
        return self.window != (0.0, 1.0)


# ----------------------------------------------------------------------------------------------
# Bipartite soft matching


def merge_count(n: int, grid: tuple[int, int], ratio: float, sx: int = 2, sy: int = 2) -> tuple[int, int]:
    """(r merged tokens, number of dst tokens) for N = gh*gw image tokens: r = min(int(N * ratio), #src)."""
    gh, gw = grid
    nd = (gh // sy) * (gw // sx)
    if nd == 0:
        return 0, 0
    return min(int(n * ratio), n - nd), nd


def dst_positions(grid: tuple[int, int], sx: int, sy: int, generator: torch.Generator) -> torch.Tensor:
    """One random position per complete sy x sx window (row-major token index); leftovers stay src."""
    gh, gw = grid
    hs, ws = gh // sy, gw // sx
    choice = torch.randint(sx * sy, (hs, ws), generator=generator)
    rows = torch.arange(hs)[:, None] * sy + choice // sx
    cols = torch.arange(ws)[None, :] * sx + choice % sx
    return (rows * gw + cols).reshape(-1)


def merge_rows(x: torch.Tensor, gather: torch.Tensor, merged: torch.Tensor, target: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """[B, N, C] -> [B, N - r, C]: gather the kept and dst rows, add the merged src rows into their dst,
    divide by the member count. Pure tensor ops with fixed shapes (no sync, compile friendly)."""
    b, _, c = x.shape
    flat = x.reshape(-1, c)
    out = torch.index_add(flat.index_select(0, gather), 0, target, flat.index_select(0, merged))
    return (out / count.to(out.dtype)).view(b, -1, c)


def unmerge_rows(y: torch.Tensor, inverse: torch.Tensor, n: int) -> torch.Tensor:
    """[B, N - r, C] -> [B, N, C]: every position takes its row of the merged layout (one gather)."""
    b, _, c = y.shape
    return y.reshape(-1, c).index_select(0, inverse).view(b, n, c)


class Matching:
    """One bipartite matching: ``merge`` [B, N, C] -> [B, N - r, C] and ``unmerge`` back to [B, N, C].

    Merged layout: the kept src tokens (best-match rank order) then the dst tokens; each dst row is
    the mean of itself and the src tokens merged into it. Unmerge copies a dst row to its merged src.
    ``keep``, ``merged`` [B, *] are token positions and ``target`` [B, r] the index (into ``dst``) of
    each merged token's dst. Everything runs on flat [B * N, C] row indices built once per matching:
    merge is two gathers, one index_add and a divide; unmerge is one gather (``inverse`` maps every
    position to its merged row), all without host syncs.
    """

    def __init__(self, n: int, dst: torch.Tensor, keep: torch.Tensor, merged: torch.Tensor, target: torch.Tensor):
        self.n, self.dst, self.keep, self.merged, self.target = n, dst, keep, merged, target
        b, nd, k, r = keep.shape[0], dst.shape[0], keep.shape[1], merged.shape[1]
        dev = dst.device
        m = n - r
        rows = torch.arange(b, device=dev)[:, None]
        dst_b = dst[None].expand(b, -1)
        self.gather = (torch.cat([keep, dst_b], dim=1) + rows * n).reshape(-1)
        self.src_rows = (merged + rows * n).reshape(-1)
        self.target_rows = (target + k + rows * m).reshape(-1)  # rows of the [B * (N - r), C] merged layout
        self.count = torch.ones(b * m, device=dev).index_add_(0, self.target_rows, torch.ones(b * r, device=dev))[:, None]
        inverse = torch.empty(b, n, dtype=torch.long, device=dev)
        inverse.scatter_(1, keep, torch.arange(k, device=dev).expand(b, -1))
        inverse.scatter_(1, dst_b, torch.arange(k, k + nd, device=dev).expand(b, -1))
        inverse.scatter_(1, merged, target + k)
        self.inverse = (inverse + rows * m).reshape(-1)

    @property
    def r(self) -> int:
        return self.merged.shape[1]

    @property
    def merged_len(self) -> int:
        return self.n - self.r

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """(gather, src_rows, target_rows, count, inverse): what the compiled block bodies take."""
        return self.gather, self.src_rows, self.target_rows, self.count, self.inverse

    def merge(self, x: torch.Tensor) -> torch.Tensor:
        return merge_rows(x, self.gather, self.src_rows, self.target_rows, self.count)

    def unmerge(self, y: torch.Tensor) -> torch.Tensor:
        return unmerge_rows(y, self.inverse, self.n)


def partition(grid: tuple[int, int], sx: int, sy: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(dst, src) token positions on the CPU: one random dst per complete window, every other token src."""
    n = grid[0] * grid[1]
    dst = dst_positions(grid, sx, sy, generator)
    is_dst = torch.zeros(n, dtype=torch.bool)
    is_dst[dst] = True
    return dst, (~is_dst).nonzero()[:, 0]


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU tensor on ``device`` without stalling it: an accelerator copy goes from pinned memory
    asynchronously (a pageable host-to-device copy waits for the device queue to drain)."""
    if device.type == "cpu":
        return t
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device, non_blocking=True)  # other devices: the backend decides (a blocking copy where it must)


def match(metric: torch.Tensor, dst: torch.Tensor, src: torch.Tensor, r: int) -> tuple[torch.Tensor, ...]:
    """(keep, merged, target) of a matching: cosine scores in fp32, the r best-matched src merge.
    A stable sort ranks them, so ties break the same on every device."""
    x = F.normalize(metric.float(), dim=-1)
    scores = x.index_select(1, src) @ x.index_select(1, dst).transpose(1, 2)  # [B, #src, #dst]
    best, best_dst = scores.max(dim=-1)
    order = torch.sort(best, dim=-1, descending=True, stable=True).indices
    merged = order[:, :r]
    return src[order[:, r:]], src[merged], best_dst.gather(1, merged)


@torch.no_grad()
def bipartite_matching(
    metric: torch.Tensor, grid: tuple[int, int], ratio: float, generator: torch.Generator | None, sx: int = 2, sy: int = 2,
    parts: tuple[torch.Tensor, torch.Tensor] | None = None, run=None,
) -> Matching | None:
    """Match the image tokens ``metric`` [B, N, C] on ``grid`` (gh, gw); None when nothing merges.

    Matching is per batch row (uncond and cond rows merge differently); the dst partition is shared.
    ``parts``: the (dst, src) positions already on the metric's device (else drawn from ``generator``);
    ``run``: how to call :func:`match` (a compiler, or None for a plain call).
    """
    b, n, _ = metric.shape
    if n != grid[0] * grid[1]:
        raise MGTInputError(f"TomeMGT: {n} image tokens do not fill a {grid[0]}x{grid[1]} grid")
    r, _ = merge_count(n, grid, ratio, sx, sy)
    if r <= 0:
        return None
    if parts is None:
        dst, src = (to_device(v, metric.device) for v in partition(grid, sx, sy, generator))
    else:
        dst, src = parts
    keep, merged, target = match(metric, dst, src, r) if run is None else run(match, metric, dst, src, r)
    return Matching(n, dst, keep, merged, target)


# ----------------------------------------------------------------------------------------------
# Per-model state: the config, the generation seed/steps, and the state of the forward in progress


def _mix_seed(*parts: int | str) -> int:
    """A 63-bit generator seed from the parts (stable across runs and platforms)."""
    digest = hashlib.blake2b(":".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class _Pass:
    """State of one forward: grid, text length, step value and the matchings/merged RoPE computed so far."""

    def __init__(self, runtime: _Runtime, grid: tuple[int, int], n_txt: int, t: int):
        self.rt, self.grid, self.n_txt, self.t = runtime, grid, n_txt, t
        self.matchings: dict[tuple[str, int], Matching | None] = {}
        self.ropes: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def matching(self, stream: str, index: int, img: torch.Tensor) -> tuple[tuple[str, int], Matching | None]:
        cfg = self.rt.config
        key = (stream, index // cfg.reuse)
        if key not in self.matchings:  # the first block of each group of ``reuse`` blocks
            ratio = cfg.ratio if stream == "dual" else cfg.single
            parts = self.rt.parts(self.t, stream, key[1], self.grid, img.device)
            self.matchings[key] = bipartite_matching(img, self.grid, ratio, None, cfg.sx, cfg.sy, parts=parts)
        return key, self.matchings[key]

    def rope(self, key, m: Matching, rope: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, 1, S', D] cos/sin: text rows as they are, image rows merged like the tokens (mean of members)."""
        if key not in self.ropes:
            b, nt = m.keep.shape[0], self.n_txt
            out = []
            for table in rope:
                txt = table[:nt].expand(b, -1, -1)
                img = m.merge(table[nt:].expand(b, -1, -1))
                out.append(torch.cat([txt, img], dim=1)[:, None])
            self.ropes[key] = (out[0], out[1])
        return self.ropes[key]


class _Runtime:
    """Shared by the patched root and blocks. Holds the config, the generation seed/steps, the
    dst/src partitions drawn so far (on the device, reused by every forward at the same step value:
    CFG, Z-Sampling), and during a forward that forward's :class:`_Pass` and compiler."""

    MAX_PARTS = 4096

    def __init__(self, config: TomeConfig):
        self.config = config
        self.seed: int = config.seed
        self.steps: int | None = None
        self.current: _Pass | None = None
        self.run = None  # the model's RegionCompiler during a forward (None: eager)
        self._parts: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def parts(self, t: int, stream: str, group: int, grid: tuple[int, int], device: torch.device):
        """(dst, src) on ``device`` for this seed, step value, stream and block group (FIX 4: a fresh
        CPU generator per key, so identical on every device and whatever ran before)."""
        key = (self.seed, t, stream, group, grid, str(device))
        if key not in self._parts:
            if len(self._parts) >= self.MAX_PARTS:
                self._parts.clear()
            cfg = self.config
            gen = torch.Generator().manual_seed(_mix_seed(self.seed, t, stream, group))
            self._parts[key] = tuple(to_device(v, device) for v in partition(grid, cfg.sx, cfg.sy, gen))
        return self._parts[key]

    def call(self, fn, *args):
        return fn(*args) if self.run is None else self.run(fn, *args)

    def progress(self, t: int) -> float:
        if self.steps is None:
            raise MGTInputError(
                "TomeMGT step window needs the number of sampling steps: wrap each generation in "
                "tome_generation(model, seed=..., steps=T)"
            )
        return min(max((self.steps - 1 - t) / self.steps, 0.0), 1.0)

    def active(self, t: int) -> bool:
        cfg = self.config
        if cfg.ratio == 0 and not (cfg.single_stream and cfg.single > 0):
            return False
        if cfg.windowed:
            start, end = cfg.window
            return start <= self.progress(t) < end
        return True


def _timestep_value(timestep) -> int:
    if isinstance(timestep, torch.Tensor):
        return int(timestep.reshape(-1)[0].item())
    return int(timestep)


# ----------------------------------------------------------------------------------------------
# Patched forwards (installed by swapping the instance's class to a subclass; removed by swapping back).
# The block forwards run eagerly (they hold the per-forward Python state) and call pure bodies,
# which the model's compiler compiles when compiled inference is on.


def _root_forward(self, tokens, text_hidden, pooled, timestep, micro_conds):
    rt: _Runtime = self._tome
    f = self.config.grid_factor
    t = _timestep_value(timestep)
    grid = (tokens.shape[1] // f, tokens.shape[2] // f)
    rt.current = _Pass(rt, grid, text_hidden.shape[1], t) if rt.active(t) else None
    rt.run = self._mgt_compiler
    try:
        return self._tome_parent.forward(self, tokens, text_hidden, pooled, timestep, micro_conds)
    finally:
        rt.current = rt.run = None


def _dual_body(block, img, txt, temb, rope, gather, src_rows, target_rows, count, inverse):
    """DualStreamBlock.forward with the image stream's attention and MLP on the merged tokens."""
    n = img.shape[1]

    def merge(v):
        return merge_rows(v, gather, src_rows, target_rows, count)

    shift, scale, gate, shift_mlp, scale_mlp, gate_mlp = block.norm1(temb)
    c_shift, c_scale, c_gate, c_shift_mlp, c_scale_mlp, c_gate_mlp = block.norm1_context(temb)
    a_img, a_txt = block.attn(merge(modulate(img, shift, scale)), modulate(txt, c_shift, c_scale), rope)
    img = img + unmerge_rows(gate[:, None] * a_img, inverse, n)
    img = img + unmerge_rows(gate_mlp[:, None] * block.ff(merge(modulate(img, shift_mlp, scale_mlp))), inverse, n)
    txt = txt + c_gate[:, None] * a_txt
    txt = txt + c_gate_mlp[:, None] * block.ff_context(modulate(txt, c_shift_mlp, c_scale_mlp))
    return img, _clip_fp16(txt)


def _single_body(block, x, temb, rope, gather, src_rows, target_rows, count, inverse):
    """SingleStreamBlock.forward with the image rows merged (text rows as they are)."""
    nt = x.shape[1] - inverse.shape[0] // x.shape[0]
    shift, scale, gate = block.norm(temb)
    h = modulate(x, shift, scale)
    h = torch.cat([h[:, :nt], merge_rows(h[:, nt:], gather, src_rows, target_rows, count)], dim=1)
    mlp = F.gelu(block.proj_mlp(h), approximate="tanh")
    out = gate[:, None] * block.proj_out(torch.cat([block.attn(h, rope), mlp], dim=2))
    x = x + torch.cat([out[:, :nt], unmerge_rows(out[:, nt:], inverse, x.shape[1] - nt)], dim=1)
    return _clip_fp16(x)


def _dual_forward(self, img, txt, temb, rope):
    rt: _Runtime = self._tome
    p = rt.current
    key, m = p.matching("dual", self._tome_index, img) if p is not None and rt.config.ratio > 0 else (None, None)
    if m is None:
        return rt.call(self._tome_parent.forward, self, img, txt, temb, rope)
    return rt.call(_dual_body, self, img, txt, temb, p.rope(key, m, rope), *m.tensors())


def _single_forward(self, x, temb, rope):
    rt: _Runtime = self._tome
    p, cfg = rt.current, rt.config
    m = None
    if p is not None and cfg.single_stream and cfg.single > 0:
        key, m = p.matching("single", self._tome_index, x[:, p.n_txt :])
    if m is None:
        return rt.call(self._tome_parent.forward, self, x, temb, rope)
    return rt.call(_single_body, self, x, temb, p.rope(key, m, rope), *m.tensors())


for _fn in (_dual_forward, _single_forward):
    setattr(_fn, EAGER_REGION, True)


_PATCHED: dict[type, type] = {}


def _patched_class(cls: type, forward) -> type:
    if cls not in _PATCHED:
        _PATCHED[cls] = type(f"Tome{cls.__name__}", (cls,), {"forward": forward, "_tome_parent": cls})
    return _PATCHED[cls]


def is_tome_applied(model: nn.Module) -> bool:
    return isinstance(getattr(model, "_tome", None), _Runtime)


def apply_tome(
    model: MeissonicTransformer,
    ratio: float = 0.25,
    *,
    seed: int = 0,
    sx: int = 2,
    sy: int = 2,
    reuse: int = 5,
    single_stream: bool = False,
    single_ratio: float | None = None,
    window: tuple[float, float] = (0.0, 1.0),
) -> MeissonicTransformer:
    """Patch ``model`` in place (re-applying replaces the settings) and return it.

    Patch a :func:`~mgt_core.accel.context.shared_clone` when the caller's model must stay untouched.
    """
    config = TomeConfig(ratio, sx, sy, reuse, single_stream, single_ratio, window, int(seed))
    if not isinstance(model, MeissonicTransformer):
        raise MGTInputError(f"TomeMGT patches a MeissonicTransformer, got {type(model).__name__}")
    remove_tome(model)
    runtime = _Runtime(config)
    model._tome = runtime
    model.__class__ = _patched_class(type(model), _root_forward)
    for blocks, cls, forward in (
        (model.transformer_blocks, DualStreamBlock, _dual_forward),
        (model.single_transformer_blocks, SingleStreamBlock, _single_forward),
    ):
        for i, block in enumerate(blocks):
            if not isinstance(block, cls):
                raise MGTInputError(f"TomeMGT: block {i} is a {type(block).__name__}, expected a {cls.__name__}")
            block._tome, block._tome_index = runtime, i
            block.__class__ = _patched_class(type(block), forward)
    return model


def remove_tome(model: MeissonicTransformer) -> MeissonicTransformer:
    """Undo :func:`apply_tome` (no-op on an unpatched model): classes and attributes as before."""
    for module in model.modules():
        parent = type(module).__dict__.get("_tome_parent")
        if parent is not None:
            module.__class__ = parent
        for attr in ("_tome", "_tome_index"):
            module.__dict__.pop(attr, None)
    return model


def tome_config(model: nn.Module) -> TomeConfig | None:
    return model._tome.config if is_tome_applied(model) else None


@contextmanager
def tome_generation(model: nn.Module, seed: int, steps: int | None = None) -> Iterator[None]:
    """One generation: its seed (the image seed) picks the dst partitions; ``steps`` (T) places the
    step window. No-op on an unpatched model. Restores the previous values on exit."""
    if not is_tome_applied(model):
        yield
        return
    rt: _Runtime = model._tome
    if steps is not None and (not isinstance(steps, int) or steps < 1):
        raise MGTInputError(f"steps must be an integer >= 1, got {steps!r}")
    before = (rt.seed, rt.steps)
    rt.seed, rt.steps = int(seed), steps
    try:
        yield
    finally:
        rt.seed, rt.steps = before
        rt._parts.clear()


@contextmanager
def tome_patched(model: MeissonicTransformer, ratio: float = 0.25, **options) -> Iterator[MeissonicTransformer]:
    """``with tome_patched(model, 0.25): ...`` patches for the block and restores the model on exit."""
    apply_tome(model, ratio, **options)
    try:
        yield model
    finally:
        remove_tome(model)


# ----------------------------------------------------------------------------------------------
# Analytic cost (the CPU flop counter misses SDPA, so everything is counted by hand)


def transformer_macs(
    config, grid: tuple[int, int], text_len: int = 77, merging: TomeConfig | None = None
) -> dict[str, float]:
    """Multiply-accumulates of one forward for one batch row, by part.

    ``config`` is a :class:`~mgt_core.models.meissonic.transformer.MeissonicConfig`; ``grid`` the VQ
    token grid (h, w). Linear layers count in*out per token, attention 2*S^2*D (QK^T and AV), convs
    their kernel MACs per output; norms, activations and softmax are left out (a few percent of
    memory traffic, no MACs). The matching costs #src*#dst*D per recomputation.
    """
    d, f = config.inner_dim, config.grid_factor
    h, w = grid
    gh, gw = h // f, w // f
    n = gh * gw
    cfg = merging or TomeConfig(ratio=0.0)
    r_dual, nd = merge_count(n, (gh, gw), cfg.ratio, cfg.sx, cfg.sy)
    r_single, _ = merge_count(n, (gh, gw), cfg.single if cfg.single_stream else 0.0, cfg.sx, cfg.sy)

    def attention(s: int) -> float:
        return 2.0 * s * s * d

    def dual(n_img: int) -> float:
        mod = 2 * 6 * d * d  # two AdaLN-Zero modulation linears on temb
        return mod + 12 * d * d * (n_img + text_len) + attention(n_img + text_len)

    def single(n_img: int) -> float:
        s = n_img + text_len
        return 3 * d * d + 12 * d * d * s + attention(s)  # q,k,v 3 + proj_mlp 4 + proj_out 5

    def groups(count: int) -> int:
        return math.ceil(count / cfg.reuse)

    matching = 0.0
    if r_dual > 0:
        matching += groups(config.num_layers) * (n - nd) * nd * d
    if r_single > 0:
        matching += groups(config.num_single_layers) * (n - nd) * nd * d
    io = (
        d * d * h * w  # embed 1x1 conv on the VQ grid
        + (4 * d * d * n if f == 2 else 0) * 2  # 2x2 down conv and transposed up conv
        + 2 * d * d * n  # project_to_hidden / project_from_hidden
        + config.joint_attention_dim * d * text_len  # context_embedder
        + (d * d + config.codebook_size * d) * h * w  # mlm head convs
        + (256 * d + d * d) + (config.pooled_projection_dim * d + d * d)  # time/text embedders
        + (5 * 256 + config.pooled_projection_dim) * d + d * d  # cond_embed
    )
    parts = {
        "dual": config.num_layers * dual(n - r_dual),
        "single": config.num_single_layers * single(n - r_single),
        "io": float(io),
        "matching": matching,
    }
    parts["total"] = sum(parts.values())
    parts["image_tokens_dual"] = n - r_dual
    parts["image_tokens_single"] = n - r_single
    return parts

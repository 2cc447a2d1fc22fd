"""SCQ: weight quantization (W8, W4) and W4A8 with secondary calibration (design-choices.md section 11).

Plain PyTorch, for memory, not speed: :class:`QuantLinear` stores int8 or packed uint4 weights (two
per byte) with one bf16 scale and one uint8 zero point per group of ``group_size`` inputs (affine),
and dequantizes the weight to the compute dtype inside ``forward`` just before ``F.linear``, so only
one layer's full-precision weight exists at a time.

W4A8 adds static symmetric int8 fake-quantization of each layer's input and output with one scale
per CFG half ([uncond, cond], shape [2]). The recipe (SCQ = quantize -> calibrate -> QAT ->
re-calibrate -> freeze):

* :func:`quantize_model` replaces every ``nn.Linear`` (the 373 layers of Meissonic);
* :func:`calibrate` runs the pipeline's own sampling over prompts (negative prompt, index timesteps:
  FIX 4) and keeps an EMA (momentum 0.9, the first batch replaces) of the per-half absmax;
* :func:`qat_finetune` optionally fine-tunes with straight-through fake quantization on the doubled
  [uncond; cond] batch (FIX 3);
* :func:`secondary_calibration` re-calibrates the fine-tuned weights; :func:`freeze` packs them;
* :func:`save_quantized` / :func:`load_quantized_transformer` keep weights, scales and zero points
  exactly (FIX 1); the activation precision of each layer is an explicit :class:`ActivationRule`
  recorded in ``quantization.json`` (FIX 2).
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import MGTInputError, MGTLoadError
from .context import cfg_branches, current_branches

MODES = {"w8": (8, False), "w4": (4, False), "w4a8": (4, True)}
"""mode -> (weight bits, static int8 activation scales)."""
ACT_INT8, ACT_FLOAT = "int8", "none"
AUTO_GROUP_SIZES = (128, 96, 64, 32, 16, 8)
"""``group_size="auto"`` takes the first of these that divides in_features (the reference's fallback order)."""
QUANT_MAP = "quantization.json"
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
FORMAT = "mgt-quant"
SCALE_DTYPE = torch.bfloat16
COMPUTE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# ----------------------------------------------------------------------------------------------
# Weight and activation (fake-)quantization


def check_group_size(in_features: int, bits: int, group_size: int, name: str = "layer") -> None:
    if bits not in (4, 8):
        raise MGTInputError(f"{name}: weight bits must be 4 or 8, got {bits!r}")
    if not isinstance(group_size, int) or group_size < 2 or group_size % 2:
        raise MGTInputError(f"{name}: group size must be an even integer >= 2, got {group_size!r}")
    if in_features % group_size:
        raise MGTInputError(
            f"{name}: group size {group_size} does not divide in_features {in_features}; pick a divisor "
            f"or group_size='auto' (first of {AUTO_GROUP_SIZES} that divides)"
        )


def _scale_up_to_bf16(scale: torch.Tensor) -> torch.Tensor:
    """Round a positive fp32 scale to bf16 without going below it (so the group range still fits)."""
    return (scale * (1.0 + 2.0**-8)).to(SCALE_DTYPE)


def quantize_weight(weight: torch.Tensor, bits: int, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Affine per-group quantization along in_features: (q uint8 [out, in], scale bf16 [out, G], zero uint8 [out, G]).

    The scale is rounded to bf16 *before* the codes are computed, so dequantization with the stored
    scale is exact up to the rounding of the codes (|error| <= scale / 2 inside the group range).
    """
    out_f, in_f = weight.shape
    qmax = 2**bits - 1
    w = weight.detach().float().reshape(out_f, in_f // group_size, group_size)
    lo = w.amin(-1).clamp(max=0.0)
    hi = w.amax(-1).clamp(min=0.0)
    scale = _scale_up_to_bf16(((hi - lo) / qmax).clamp(min=torch.finfo(torch.float32).tiny))
    s = scale.float()[..., None]
    zero = torch.round(-lo / scale.float()).clamp(0, qmax)
    q = (torch.round(w / s) + zero[..., None]).clamp(0, qmax)
    return q.reshape(out_f, in_f).to(torch.uint8), scale, zero.to(torch.uint8)


def pack_uint4(q: torch.Tensor) -> torch.Tensor:
    """[..., 2k] codes in [0, 15] -> [..., k] bytes (element 2j in the low nibble, 2j+1 in the high)."""
    return q[..., 0::2] | (q[..., 1::2] << 4)


def unpack_uint4(packed: torch.Tensor) -> torch.Tensor:
    return torch.stack((packed & 15, packed >> 4), dim=-1).flatten(-2)


def dequantize_weight(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(q - zero) * scale per group, in ``dtype``. q - zero is an integer |.| <= 255, exact in bf16/fp16."""
    out_f, in_f = q.shape
    g = in_f // scale.shape[1]
    w = (q.view(out_f, -1, g).to(dtype) - zero[..., None].to(dtype)) * scale[..., None].to(dtype)
    return w.view(out_f, in_f)


def fake_quant_weight(weight: torch.Tensor, bits: int, group_size: int) -> torch.Tensor:
    """Quantize-dequantize with a straight-through gradient (QAT)."""
    q, scale, zero = quantize_weight(weight, bits, group_size)
    wq = dequantize_weight(q, scale, zero, weight.dtype)
    return weight + (wq - weight).detach()


def _row_scales(scale: torch.Tensor, rows: int) -> torch.Tensor:
    """The per-row scale [rows] for a call: [uncond; cond] halves, one branch, or a shared row.

    Inside ``cfg_branches("both")`` (or outside any, the reference's layout) an even batch is
    [uncond; cond] halves; an odd batch (the batch-1 timestep embedding, or images without CFG)
    uses the cond scale. ``"cond"`` / ``"uncond"`` use that half's scale for every row.
    """
    branches = current_branches()
    if branches == "uncond":
        return scale[0:1].expand(rows)
    if branches == "cond" or rows % 2:
        return scale[1:2].expand(rows)
    return scale.repeat_interleave(rows // 2)


def fake_quant_act(x: torch.Tensor, scale: torch.Tensor, ste: bool = False) -> torch.Tensor:
    """Symmetric int8 quantize-dequantize of x [rows, ...] with per-CFG-half scales [2], in fp32."""
    s = _row_scales(scale, x.shape[0]).view(-1, *([1] * (x.ndim - 1)))
    xf = x.float()
    xq = (torch.round(xf / s).clamp(-128, 127) * s).to(x.dtype)
    return x + (xq - x).detach() if ste else xq


# ----------------------------------------------------------------------------------------------
# FP8 fast path (issue 13): W4A8 layers with static activation scales as one FP8 e4m3 matmul

FP8 = torch.float8_e4m3fn if hasattr(torch, "float8_e4m3fn") else None
FP8_MAX = 448.0
INT8_TO_FP8 = 127.0 / FP8_MAX
"""The calibrated int8 scale is absmax / 127; the same absmax maps to e4m3's largest value 448."""
FAST_PATHS: dict = {"fp8": os.environ.get("MGT_SCQ_FP8", "1") != "0", "force": False}
"""``fp8``: use FP8 where the device has it (env MGT_SCQ_FP8=0 turns it off); ``force``: on any
device (the CPU runs ``torch._scaled_mm`` too in recent torch: how the tests check the path)."""
_fp8_devices: dict[str, bool] = {}


@torch.compiler.disable
def _probe_fp8(device: torch.device) -> bool:
    """FP8 tensor-core matmuls: NVIDIA compute capability 8.9 (Ada) or newer, and this torch's
    row-wise scaled kernel actually runs there (checked once per device)."""
    if FP8 is None or not hasattr(torch, "_scaled_mm"):
        return False
    if device.type != "cuda" or torch.cuda.get_device_capability(device) < (8, 9):
        return False
    try:  # the exact call the path makes (row-wise scales, bf16 bias and output): some builds lack it
        a = torch.zeros(16, 32, device=device).to(FP8)
        b = torch.zeros(16, 32, device=device).to(FP8)
        ones = torch.ones(16, 1, device=device)
        torch._scaled_mm(a, b.t(), ones, ones.t().contiguous(), bias=torch.zeros(16, device=device, dtype=torch.bfloat16),
                         out_dtype=torch.bfloat16)
        return True
    except (RuntimeError, TypeError, NotImplementedError):
        return False


def fp8_available(x: torch.Tensor) -> bool:
    """Whether :func:`fp8_linear` runs for inputs like ``x`` (bf16 on an FP8 GPU, or forced)."""
    if not FAST_PATHS["fp8"] or FP8 is None:
        return False
    if FAST_PATHS["force"]:
        return x.dtype in (torch.bfloat16, torch.float32)
    if x.device.type != "cuda" or x.dtype != torch.bfloat16:  # row-wise scaled FP8 matmuls write bf16
        return False
    key = str(x.device)
    if key not in _fp8_devices:
        _fp8_devices[key] = _probe_fp8(x.device)
    return _fp8_devices[key]


def fp8_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(e4m3 weight [N, K], fp32 per-output-row scale [1, N]): each row's absmax maps to 448."""
    w = weight.float()
    scale = (w.abs().amax(dim=1) / FP8_MAX).clamp_min(torch.finfo(torch.float32).tiny)
    return (w / scale[:, None]).to(FP8), scale[None]


def fp8_linear(
    x: torch.Tensor, weight: torch.Tensor, row_scale: torch.Tensor, bias: torch.Tensor | None, emulate: bool = False
) -> torch.Tensor:
    """x [..., K] @ weight^T + bias with x quantized to e4m3 by a STATIC per-row scale (no reduction
    over x, so nothing waits on the data) and the weight per output row; fp32 accumulation.
    ``row_scale`` [rows of x] is the calibrated int8 scale of each batch row. ``emulate`` computes
    the same quantized operands in fp32 instead of ``torch._scaled_mm``."""
    k = x.shape[-1]
    s = (row_scale.float() * INT8_TO_FP8).repeat_interleave(x[..., 0].numel() // x.shape[0])[:, None]
    x8 = (x.reshape(-1, k).float() / s).clamp(-FP8_MAX, FP8_MAX).to(FP8)
    w8, ws = fp8_weight(weight)
    out_dtype = x.dtype
    if emulate:
        y = (x8.float() * s) @ (w8.float() * ws.t()).t()
        y = y + bias.float() if bias is not None else y
    else:
        y = torch._scaled_mm(x8, w8.t(), s, ws, bias=bias.to(out_dtype) if bias is not None else None, out_dtype=out_dtype)
    return y.to(out_dtype).view(*x.shape[:-1], weight.shape[0])


class _Observer:
    """EMA of the per-CFG-half absmax of one tensor (the first observation of a half replaces)."""

    def __init__(self, momentum: float):
        self.momentum, self.value, self.seen = momentum, None, [False, False]

    def update(self, x: torch.Tensor) -> None:
        rows = x.shape[0]
        a = x.detach().abs().reshape(rows, -1).amax(1).float()
        branches = current_branches()
        if branches == "uncond":
            halves = {0: a.max()}
        elif branches == "cond":
            halves = {1: a.max()}
        elif rows % 2:  # one shared row (or an odd batch): the same values reach both halves
            halves = {0: a.max(), 1: a.max()}
        else:
            halves = {0: a[: rows // 2].max(), 1: a[rows // 2 :].max()}
        if self.value is None:
            self.value = torch.zeros(2, device=x.device)
        for h, v in halves.items():
            self.value[h] = v if not self.seen[h] else self.momentum * self.value[h] + (1 - self.momentum) * v
            self.seen[h] = True


# ----------------------------------------------------------------------------------------------
# The layer


class QuantLinear(nn.Module):
    """A Linear with int8 / packed uint4 weights, per-group bf16 scale and uint8 zero point.

    Buffers: ``qweight`` uint8 [out, in] (8 bit) or [out, in/2] (4 bit), ``scale`` bf16 [out, in/g],
    ``zero`` uint8 [out, in/g]; with activation scales (W4A8) also ``input_scale`` and
    ``output_scale`` fp32 [2] (uncond, cond). ``act`` says whether this layer fake-quantizes its
    activations (``"int8"``) or keeps them in the compute dtype (``"none"``). Scales keep their
    storage dtype through ``model.to(dtype)``: they are part of the checkpoint, not of the compute.
    """

    _KEEP_DTYPE = ("scale", "input_scale", "output_scale")

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, *, bits: int = 4, group_size: int = 128,
        act_scales: bool = False, device=None, dtype: torch.dtype | None = None, name: str = "QuantLinear",
    ):
        super().__init__()
        check_group_size(in_features, bits, group_size, name)
        self.in_features, self.out_features, self.bits, self.group_size = in_features, out_features, bits, group_size
        groups = in_features // group_size
        packed = in_features // 2 if bits == 4 else in_features
        self.register_buffer("qweight", torch.zeros(out_features, packed, dtype=torch.uint8, device=device))
        self.register_buffer("scale", torch.ones(out_features, groups, dtype=SCALE_DTYPE, device=device))
        self.register_buffer("zero", torch.zeros(out_features, groups, dtype=torch.uint8, device=device))
        self.bias = nn.Parameter(torch.zeros(out_features, device=device, dtype=dtype), requires_grad=False) if bias else None
        if act_scales:
            self.register_buffer("input_scale", torch.zeros(2, device=device))
            self.register_buffer("output_scale", torch.zeros(2, device=device))
        else:
            self.input_scale = self.output_scale = None
        self.act = ACT_FLOAT  # set to int8 by calibration or by a loaded quantization map
        self.latent: nn.Parameter | None = None  # float weight while QAT runs (see qat_finetune)
        self._observers: tuple[_Observer, _Observer] | None = None

    @classmethod
    def from_linear(cls, linear: nn.Linear, bits: int, group_size: int, act_scales: bool = False, name: str = "") -> QuantLinear:
        w = linear.weight
        if w.dtype not in COMPUTE_DTYPES:
            raise MGTInputError(f"{name or 'Linear'}: cannot quantize {w.dtype} weights (supported: fp32, fp16, bf16)")
        if w.device.type == "meta":
            raise MGTInputError(f"{name or 'Linear'}: weights are on the meta device; load them before quantizing")
        q = cls(
            linear.in_features, linear.out_features, linear.bias is not None, bits=bits, group_size=group_size,
            act_scales=act_scales, device=w.device, dtype=w.dtype, name=name or "Linear",
        )
        q.set_weight(w)
        if linear.bias is not None:
            q.bias = nn.Parameter(linear.bias.detach(), requires_grad=False)
        return q

    @property
    def has_act_scales(self) -> bool:
        return self.input_scale is not None

    def set_weight(self, weight: torch.Tensor) -> None:
        qw, scale, zero = quantize_weight(weight, self.bits, self.group_size)
        self.qweight = pack_uint4(qw) if self.bits == 4 else qw
        self.scale, self.zero = scale, zero

    def codes(self) -> torch.Tensor:
        return unpack_uint4(self.qweight) if self.bits == 4 else self.qweight

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return dequantize_weight(self.codes(), self.scale, self.zero, dtype)

    def _weight(self, dtype: torch.dtype) -> torch.Tensor:
        if self.latent is not None:
            return fake_quant_weight(self.latent, self.bits, self.group_size).to(dtype)
        return self.dequantize(dtype)

    def fast_path(self, x: torch.Tensor) -> str:
        """'fp8' (W4A8 layer, calibrated, inference, FP8 device) or 'dequantize' (the reference math)."""
        if (self.act == ACT_INT8 and self._observers is None and self.latent is None
                and self.in_features % 16 == 0 and self.out_features % 16 == 0 and fp8_available(x)):
            return "fp8"
        return "dequantize"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fast_path(x) == "fp8":
            rows = _row_scales(self.input_scale, x.shape[0])
            y = fp8_linear(x, self.dequantize(torch.float32), rows, self.bias)
            return fake_quant_act(y, self.output_scale)
        quant_act = self.act == ACT_INT8 and self._observers is None
        ste = self.latent is not None
        if self._observers is not None:
            self._observers[0].update(x)
        elif quant_act:
            x = fake_quant_act(x, self.input_scale, ste)
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        y = F.linear(x, self._weight(x.dtype), bias)
        if self._observers is not None:
            self._observers[1].update(y)
        elif quant_act:
            y = fake_quant_act(y, self.output_scale, ste)
        return y

    def _apply(self, fn, recurse=True):
        # Move the scales with the module but never cast them (a bf16 -> fp16 -> bf16 trip is lossy).
        kept = {n: self._buffers[n].dtype for n in self._KEEP_DTYPE if self._buffers.get(n) is not None}
        for n in kept:
            self._buffers[n] = self._buffers[n].view(torch.uint8)
        try:
            super()._apply(fn, recurse)
        finally:
            for n, dt in kept.items():
                self._buffers[n] = self._buffers[n].view(dt)
        return self

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"bits={self.bits}, group_size={self.group_size}, act={self.act}"
        )

    def spec(self) -> dict:
        return {"bits": self.bits, "group_size": self.group_size, "act": self.act, "act_scales": self.has_act_scales}


# ----------------------------------------------------------------------------------------------
# Whole models


def _resolve_group(in_features: int, group_size: int | str, bits: int, name: str) -> int:
    if group_size == "auto":
        for g in AUTO_GROUP_SIZES:
            if in_features % g == 0:
                return g
        raise MGTInputError(f"{name}: no group size in {AUTO_GROUP_SIZES} divides in_features {in_features}")
    check_group_size(in_features, bits, group_size, name)
    return group_size


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


def quant_layers(model: nn.Module) -> dict[str, QuantLinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, QuantLinear)}


def quantize_model(
    model: nn.Module,
    mode: str = "w4",
    group_size: int | str = 128,
    *,
    exclude: Sequence[str] = (),
) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` (in place) by a :class:`QuantLinear`; returns the model.

    ``mode``: ``"w8"``, ``"w4"`` (weight-only) or ``"w4a8"`` (adds per-CFG-half activation scales;
    activations stay in float until :func:`calibrate`). ``group_size``: an integer that must divide
    every layer's in_features, or ``"auto"``. ``exclude``: fnmatch patterns of layer names to keep.
    The original weight of each layer is freed as soon as it is replaced.
    """
    if mode not in MODES:
        raise MGTInputError(f"quantization mode must be one of {tuple(MODES)}, got {mode!r}")
    bits, act_scales = MODES[mode]
    targets = [
        (n, m) for n, m in model.named_modules()
        if type(m) is nn.Linear and not any(fnmatch.fnmatchcase(n, p) for p in exclude)
    ]
    if not targets:
        raise MGTInputError("quantize_model: the model has no nn.Linear layer left to quantize")
    groups = {n: _resolve_group(m.in_features, group_size, bits, n) for n, m in targets}  # all errors before any change
    for n, m in targets:
        if m.weight.dtype not in COMPUTE_DTYPES:
            raise MGTInputError(f"{n}: cannot quantize {m.weight.dtype} weights (supported: fp32, fp16, bf16)")
    del targets, m  # hold no reference: each float weight is freed as soon as its layer is replaced
    for n, g in groups.items():
        _set_submodule(model, n, QuantLinear.from_linear(model.get_submodule(n), bits, g, act_scales, name=n))
    model._mgt_quant = {"mode": mode, "group_size": group_size, "calibrated": False}
    return model


def fast_path_summary(model: nn.Module, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> str:
    """How the quantized layers compute for inputs on ``device`` in ``dtype`` (default: the model's),
    e.g. 'fp8 x 336, dequantize x 37'."""
    layers = quant_layers(model)
    if not layers:
        return "not quantized"
    first = next(iter(layers.values()))
    probe = torch.empty(0, device=device or first.qweight.device, dtype=dtype or getattr(model, "dtype", torch.float32))
    counts: dict[str, int] = {}
    with torch.no_grad():
        for m in layers.values():
            path = m.fast_path(probe)
            counts[path] = counts.get(path, 0) + 1
    return ", ".join(f"{k} x {v}" for k, v in sorted(counts.items()))


def quant_info(model: nn.Module) -> dict | None:
    """``{"mode", "group_size", "calibrated"}`` of a quantized model, else None."""
    return getattr(model, "_mgt_quant", None)


def weight_bytes(model: nn.Module) -> dict[str, int]:
    """Bytes of every parameter and buffer, split into quantized layers and the rest."""
    quant = other = 0
    qnames = {f"{n}." for n in quant_layers(model)}
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        size = t.numel() * t.element_size()
        if any(name.startswith(p) for p in qnames):
            quant += size
        else:
            other += size
    return {"quantized_layers": quant, "other": other, "total": quant + other}


def estimate_weight_bytes(
    model: nn.Module, mode: str | None, group_size: int | str = 128, other_dtype: torch.dtype = torch.bfloat16
) -> dict[str, int]:
    """What :func:`weight_bytes` would report after ``quantize_model(model, mode, group_size)`` with
    every other floating tensor in ``other_dtype``, from shapes alone (works on meta models).
    ``mode=None`` gives the unquantized size in ``other_dtype``."""
    item = torch.empty((), dtype=other_dtype).element_size()
    bits, act = MODES[mode] if mode is not None else (None, False)
    quant = other = 0
    linear = {n: m for n, m in model.named_modules() if type(m) is nn.Linear} if bits else {}
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        owner, _, leaf = name.rpartition(".")
        size = t.numel() * (item if t.is_floating_point() else t.element_size())
        if owner in linear:
            if leaf == "bias":
                quant += size
            continue
        other += size
    for n, m in linear.items():
        g = _resolve_group(m.in_features, group_size, bits, n)
        quant += m.out_features * m.in_features * bits // 8 + 3 * m.out_features * (m.in_features // g) + (16 if act else 0)
    return {"quantized_layers": quant, "other": other, "total": quant + other}


@dataclass(frozen=True)
class ActivationRule:
    """Which W4A8 layers fake-quantize their activations to int8 (FIX 2: explicit and configurable).

    Layers are ranked by their calibrated output scale (max over the two CFG halves), smallest
    first; the first ``int8_fraction`` of them (rounded down) get int8, the rest keep float
    activations. ``float_layers`` (fnmatch patterns) always keep float. The default, all int8, is
    what the reference's released script ran; ``int8_fraction=1/3`` is its apparent intent.
    """

    int8_fraction: float = 1.0
    float_layers: tuple[str, ...] = ()

    def __post_init__(self):
        if not 0.0 <= self.int8_fraction <= 1.0:
            raise MGTInputError(f"int8_fraction must lie in [0, 1], got {self.int8_fraction}")

    def assign(self, layers: dict[str, QuantLinear]) -> dict[str, str]:
        ranked = sorted(layers, key=lambda n: (float(layers[n].output_scale.max()), n))
        n_int8 = math.floor(self.int8_fraction * len(ranked) + 1e-9)
        chosen = set(ranked[:n_int8])
        return {
            n: ACT_INT8 if n in chosen and not any(fnmatch.fnmatchcase(n, p) for p in self.float_layers) else ACT_FLOAT
            for n in layers
        }


def apply_activation_rule(model: nn.Module, rule: ActivationRule | None = None) -> dict[str, str]:
    """Set each W4A8 layer's activation precision from its calibrated scales; returns name -> act."""
    layers = {n: m for n, m in quant_layers(model).items() if m.has_act_scales}
    if not layers:
        raise MGTInputError("this model has no layers with activation scales (quantize with mode='w4a8')")
    for n, m in layers.items():
        if not bool((m.input_scale > 0).all() and (m.output_scale > 0).all()):
            raise MGTInputError(f"{n}: activation scales are not calibrated (zero); run calibrate() first")
    acts = (rule or ActivationRule()).assign(layers)
    for n, a in acts.items():
        layers[n].act = a
    return acts


@contextmanager
def calibration(model: nn.Module, momentum: float = 0.9) -> Iterator[None]:
    """Every forward inside observes the per-half absmax of each W4A8 layer's input and output
    (weights quantized, activations left in float), EMA with ``momentum``; the first batch replaces.
    On a clean exit the scales are absmax / 127."""
    if not 0.0 <= momentum < 1.0:
        raise MGTInputError(f"calibration momentum must lie in [0, 1), got {momentum}")
    layers = {n: m for n, m in quant_layers(model).items() if m.has_act_scales}
    if not layers:
        raise MGTInputError("calibration needs a model quantized with mode='w4a8'")
    for m in layers.values():
        m._observers = (_Observer(momentum), _Observer(momentum))
    ok = False
    try:
        yield
        ok = True
    finally:
        for n, m in layers.items():
            obs, m._observers = m._observers, None
            if not ok:
                continue
            if not all(all(o.seen) for o in obs):
                raise MGTInputError(f"{n}: calibration saw no {'uncond' if not obs[0].seen[0] else 'cond'} rows; "
                                    "calibrate with CFG (guidance > 1) so both halves are observed")
            with torch.no_grad():
                m.input_scale.copy_(obs[0].value.to(m.input_scale.device) / 127.0)
                m.output_scale.copy_(obs[1].value.to(m.output_scale.device) / 127.0)


def calibrate(
    pipe,
    prompts: Sequence[str],
    *,
    negative_prompt: str | None = None,
    seeds: Sequence[int] | None = None,
    steps: int | None = None,
    guidance_scale: float | None = None,
    height: int | None = None,
    width: int | None = None,
    batch_size: int = 1,
    momentum: float = 0.9,
    rule: ActivationRule | None = None,
) -> dict[str, str]:
    """Calibrate a W4A8 ``pipe.transformer`` on its own sampling trajectories (all timesteps).

    Each batch of prompts is sampled with the model's defaults (its negative prompt, steps, CFG,
    size); every transformer call along the way updates the EMA. Then ``rule`` picks each layer's
    activation precision. Returns name -> activation precision.
    """
    from ..pipeline import make_settings

    if not prompts:
        raise MGTInputError("calibration needs at least one prompt")
    info = pipe.info
    guidance = info.guidance_scale if guidance_scale is None else guidance_scale
    if guidance <= 1:
        raise MGTInputError(f"W4A8 calibration needs CFG (guidance > 1) to see both halves, got {guidance}")
    settings = make_settings(steps=steps or info.steps, guidance_scale=guidance, schedule=info.schedule)
    negative = info.negative_prompt if negative_prompt is None else negative_prompt
    seeds = list(seeds) if seeds is not None else list(range(len(prompts)))
    if len(seeds) != len(prompts):
        raise MGTInputError(f"{len(seeds)} seeds for {len(prompts)} prompts")
    with calibration(pipe.transformer, momentum):
        for i in range(0, len(prompts), batch_size):
            batch = list(prompts[i : i + batch_size])
            gen = torch.Generator(pipe.device).manual_seed(int(seeds[i]))
            pipe.sample_tokens(
                pipe.encode_prompt(batch), pipe.encode_prompt([negative] * len(batch)), settings,
                height=height or info.height, width=width or info.width, generator=gen,
            )
    acts = apply_activation_rule(pipe.transformer, rule)
    pipe.transformer._mgt_quant["calibrated"] = True
    return acts


def secondary_calibration(pipe, prompts: Sequence[str], **options) -> dict[str, str]:
    """Calibrate again after QAT: the fine-tuned weights shift every activation range. Same options
    as :func:`calibrate`; the EMA restarts (its first batch replaces the old scales)."""
    freeze(pipe.transformer, check_calibrated=False)
    return calibrate(pipe, prompts, **options)


# ----------------------------------------------------------------------------------------------
# QAT


@dataclass
class QATBatch:
    """Clean VQ tokens [B, h, w] of (image, prompt) pairs, their conditioning, the negative-prompt
    conditioning (same length) and micro-conditions [B, 5]."""

    tokens: torch.Tensor
    cond: object  # TextConditioning
    uncond: object
    micro: torch.Tensor


def masked_like_sampling(
    tokens: torch.Tensor, steps: int, mask_id: int, generator: torch.Generator, schedule="cosine"
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """A state the sampler visits: step i ~ U{0..T-1}, the schedule's masked count before it at random
    positions, and the value t = T - 1 - i the model receives (FIX 4). Returns (input, mask, t)."""
    from ..sampling.schedules import get_schedule

    b = tokens.shape[0]
    flat = tokens.reshape(b, -1)
    length = flat.shape[1]
    counts = [length, *get_schedule(schedule).counts(steps, length)[:-1]]
    i = int(torch.randint(steps, (1,), generator=generator))
    n = max(1, counts[i])
    ranks = torch.rand(b, length, generator=generator).argsort(dim=1).argsort(dim=1).to(flat.device)
    mask = ranks < n
    return torch.where(mask, torch.full_like(flat, mask_id), flat).view_as(tokens), mask.view_as(tokens), steps - 1 - i


def qat_finetune(
    model: nn.Module,
    batches: Iterable[QATBatch],
    *,
    steps: int = 64,
    lr: float = 5e-6,
    weight_decay: float = 0.01,
    grad_accum: int = 1,
    seed: int = 0,
    train: str = "linear",
    log: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Short QAT fine-tune (plain AdamW, fp32): fake-quantized weights with a straight-through
    gradient, int8 activations as calibrated. Each batch runs as [uncond; cond] (FIX 3) and the
    loss is cross-entropy on the masked tokens of the cond half. ``train``: ``"linear"`` (quantized
    layers' weights and biases) or ``"all"`` float parameters. Call :func:`secondary_calibration`
    (or :func:`freeze`) afterwards. Returns the loss of each batch.
    """
    layers = quant_layers(model)
    if not layers:
        raise MGTInputError("QAT needs a quantized model (quantize_model first)")
    if model.dtype != torch.float32:
        raise MGTInputError(f"QAT runs in fp32; load the model with dtype=torch.float32 (it is {model.dtype})")
    if train not in ("linear", "all"):
        raise MGTInputError(f"train must be 'linear' or 'all', got {train!r}")
    if grad_accum < 1:
        raise MGTInputError(f"grad_accum must be >= 1, got {grad_accum}")
    for m in layers.values():
        m.latent = nn.Parameter(m.dequantize(torch.float32))
    model._rope_cache = None  # a table cached under inference_mode (sampling) cannot enter autograd
    params = (
        [p for m in layers.values() for p in (m.latent, m.bias) if p is not None]
        if train == "linear" else [p for p in model.parameters() if p.is_floating_point()]
    )
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    model.train()
    try:
        with torch.enable_grad():
            for k, batch in enumerate(batches):
                x, mask, t = masked_like_sampling(batch.tokens, steps, model.mask_token_id, gen)
                hidden = torch.cat([batch.uncond.hidden, batch.cond.hidden])
                pooled = torch.cat([batch.uncond.pooled, batch.cond.pooled])
                with cfg_branches("both"):
                    logits = model(torch.cat([x, x]), hidden, pooled, t, torch.cat([batch.micro, batch.micro]))
                cond = logits.chunk(2)[1].permute(0, 2, 3, 1)[mask]
                loss = F.cross_entropy(cond.float(), batch.tokens[mask])
                (loss / grad_accum).backward()
                if (k + 1) % grad_accum == 0:
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                losses.append(float(loss.detach()))
                if log is not None:
                    log(k, losses[-1])
    finally:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
    freeze(model, check_calibrated=False)
    return losses


def freeze(model: nn.Module, check_calibrated: bool = True) -> nn.Module:
    """Pack QAT weights into codes/scales/zeros, drop the float copies, stop observing, eval mode.
    With ``check_calibrated``, every int8-activation layer must have positive scales."""
    for n, m in quant_layers(model).items():
        if m.latent is not None:
            with torch.no_grad():
                m.set_weight(m.latent.detach())
            m.latent = None
        m._observers = None
        if check_calibrated and m.act == ACT_INT8 and not bool((m.input_scale > 0).all() and (m.output_scale > 0).all()):
            raise MGTInputError(f"{n}: int8 activations without calibrated scales")
    return model.eval().requires_grad_(False)


def run_scq(
    pipe,
    calibration_prompts: Sequence[str],
    *,
    qat_batches: Iterable[QATBatch] | None = None,
    group_size: int | str = 128,
    rule: ActivationRule | None = None,
    qat_options: dict | None = None,
    **calibrate_options,
) -> dict[str, str]:
    """The whole SCQ recipe on ``pipe.transformer`` in place: W4A8 quantize -> calibrate -> [QAT ->
    secondary calibration] -> freeze. Without ``qat_batches`` it is W4A8 with one calibration."""
    if quant_info(pipe.transformer) is None:
        quantize_model(pipe.transformer, "w4a8", group_size)
    acts = calibrate(pipe, calibration_prompts, rule=rule, **calibrate_options)
    if qat_batches is not None:
        qat_finetune(pipe.transformer, qat_batches, **(qat_options or {}))
        acts = secondary_calibration(pipe, calibration_prompts, rule=rule, **calibrate_options)
    freeze(pipe.transformer)
    return acts


# ----------------------------------------------------------------------------------------------
# Save / load


def quantization_map(model: nn.Module) -> dict:
    info = quant_info(model)
    if info is None:
        raise MGTInputError("this model is not quantized (quantize_model or load_quantized_transformer first)")
    return {
        "format": FORMAT, "version": 1, "mode": info["mode"], "group_size": info["group_size"],
        "calibrated": bool(info.get("calibrated")), "scale_dtype": "bf16",
        "layers": {n: m.spec() for n, m in quant_layers(model).items()},
    }


def save_quantized(model: nn.Module, folder: str | os.PathLike, dtype: torch.dtype | None = None) -> str:
    """Write ``config.json``, ``quantization.json`` and the weights (codes, scales, zero points,
    activation scales, and every other tensor; ``dtype`` casts only the non-quantized floating ones)."""
    from safetensors.torch import save_file

    if any(m.latent is not None for m in quant_layers(model).values()):
        raise MGTInputError("freeze() the model after QAT before saving it")
    qmap = quantization_map(model)
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    keep = {f"{n}.{b}" for n in quant_layers(model) for b in ("qweight", "scale", "zero", "input_scale", "output_scale")}
    state = {}
    for k, v in model.state_dict().items():
        if dtype is not None and k not in keep and v.is_floating_point():
            v = v.to(dtype)
        state[k] = v.detach().cpu().contiguous()
    save_file(state, os.path.join(folder, WEIGHTS_FILE), metadata={"format": "pt", "mgt_quant": qmap["mode"]})
    with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as f:
        json.dump(model.config.to_dict(), f, indent=2)
    with open(os.path.join(folder, QUANT_MAP), "w", encoding="utf-8") as f:
        json.dump(qmap, f, indent=1)
    return folder


def _check_map(qmap: dict, source: str) -> None:
    if qmap.get("format") != FORMAT or qmap.get("version") != 1:
        raise MGTLoadError(f"{source}: not an {FORMAT} v1 map (format={qmap.get('format')!r}, version={qmap.get('version')!r})")
    if qmap.get("mode") not in MODES:
        raise MGTLoadError(f"{source}: unknown mode {qmap.get('mode')!r} (known: {', '.join(MODES)})")
    layers = qmap.get("layers")
    if not isinstance(layers, dict) or not layers:
        raise MGTLoadError(f"{source}: no 'layers' map")
    for n, spec in layers.items():
        if not isinstance(spec, dict) or spec.get("bits") not in (4, 8) or spec.get("act") not in (ACT_INT8, ACT_FLOAT):
            raise MGTLoadError(f"{source}: layer {n!r} has a bad entry {spec!r} (bits 4|8, act int8|none)")
        if spec["act"] == ACT_INT8 and not spec.get("act_scales"):
            raise MGTLoadError(f"{source}: layer {n!r} has int8 activations but no activation scales")


_FILE_DTYPES = {"qweight": torch.uint8, "zero": torch.uint8, "scale": SCALE_DTYPE, "input_scale": torch.float32, "output_scale": torch.float32}


def load_quantized_transformer(folder: str | os.PathLike, *, dtype: torch.dtype = torch.float32, device="cpu"):
    """Load a folder written by :func:`save_quantized` into a MeissonicTransformer whose Linear layers
    are the :class:`QuantLinear` layers of its ``quantization.json`` (strict: keys, shapes, dtypes)."""
    from ..loading.modules import load_module, meta_module
    from ..loading.pipeline import read_json
    from ..loading.safetensors_io import SafetensorsFile
    from ..models.meissonic.transformer import MeissonicConfig, MeissonicTransformer

    folder = os.fspath(folder)
    if dtype not in COMPUTE_DTYPES:
        raise MGTInputError(f"compute dtype must be one of fp32, fp16, bf16, got {dtype}")
    map_path = os.path.join(folder, QUANT_MAP)
    qmap = read_json(map_path)
    _check_map(qmap, map_path)
    cfg = MeissonicConfig.from_dict(read_json(os.path.join(folder, "config.json")), source=os.path.join(folder, "config.json"))
    file = SafetensorsFile(os.path.join(folder, WEIGHTS_FILE))
    model = meta_module(lambda: MeissonicTransformer(cfg))
    linears = {n: m for n, m in model.named_modules() if type(m) is nn.Linear}
    unknown = [n for n in qmap["layers"] if n not in linears]
    if unknown:
        raise MGTLoadError(f"{map_path}: {len(unknown)} layers are not Linear layers of this model (e.g. {unknown[0]!r})")
    with torch.device("meta"):
        for n, spec in qmap["layers"].items():
            lin = linears[n]
            try:
                q = QuantLinear(
                    lin.in_features, lin.out_features, lin.bias is not None, bits=spec["bits"],
                    group_size=spec["group_size"], act_scales=bool(spec.get("act_scales")), name=n,
                )
            except MGTInputError as e:
                raise MGTLoadError(f"{map_path}: {e}") from None
            q.act = spec["act"]
            _set_submodule(model, n, q)
    for key, info in file.tensors.items():
        want = _FILE_DTYPES.get(key.rpartition(".")[2])
        owner = key.rpartition(".")[0]
        if want is not None and owner in qmap["layers"] and info.dtype != want:
            raise MGTLoadError(f"{file.path}: {key} is {info.dtype}, expected {want} for a quantized layer")
    load_module(model, [file], dtype=None, device=device, hint=f"does {QUANT_MAP} match this weights file?")
    model.to(dtype)
    model._mgt_quant = {"mode": qmap["mode"], "group_size": qmap["group_size"], "calibrated": bool(qmap.get("calibrated"))}
    return model


def quantized_variants(model_folder: str | os.PathLike) -> dict[str, str]:
    """Quantized transformers saved inside a model folder: ``{"w4a8": ".../transformer_w4a8", ...}``
    for every ``transformer_<name>/`` with a ``quantization.json``."""
    folder = os.fspath(model_folder)
    out = {}
    if os.path.isdir(folder):
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if name.startswith("transformer_") and os.path.isfile(os.path.join(path, QUANT_MAP)):
                out[name[len("transformer_") :]] = path
    return out

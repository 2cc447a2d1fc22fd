"""Noise regularization (design-choices.md section 6): time-dependent Gaussian noise on the CFG logits.

sigma(t) = A * shape(t), default A = 2 and shape |cos(pi t / (T - 1))| (U-shaped over the run),
added before the softmax, so the noisy distribution drives sampling, the confidence ranking and
differential sampling. Costs no model calls; one normal draw of B*L*K values per step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import MGTInputError
from .context import StepContext

SHAPES = ("abs_cos", "signed_cos", "linear", "constant")


@dataclass(frozen=True)
class NoiseRegularization:
    amplitude: float = 2.0
    shape: str = "abs_cos"

    def __post_init__(self):
        if self.shape not in SHAPES:
            raise MGTInputError(f"noise regularization shape {self.shape!r} is not one of {', '.join(SHAPES)}")
        if not math.isfinite(self.amplitude) or self.amplitude < 0:
            raise MGTInputError(f"noise regularization amplitude must be >= 0, got {self.amplitude}")

    def sigma(self, t: int, steps: int) -> torch.Tensor:
        """Noise scale at step value t, as a float32 scalar computed in the reference's op order."""
        if steps == 1:
            return torch.tensor(self.amplitude, dtype=torch.float32)
        tt = torch.tensor(t)
        if self.shape == "abs_cos":
            unit = torch.abs(torch.cos(math.pi * tt / (steps - 1)))
        elif self.shape == "signed_cos":
            unit = torch.cos(math.pi * tt / (steps - 1))
        elif self.shape == "linear":
            unit = 1 - tt / steps
        else:
            unit = torch.ones((), dtype=torch.float32)
        return self.amplitude * unit

    def __call__(self, logits: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        sigma = float(self.sigma(ctx.t, ctx.steps))  # the fp32 value as a host float: no device copy per step
        if sigma == 0.0:
            return logits
        g = ctx.generator
        device = g.device if g is not None else logits.device
        # The reference calls randn_like on the [B, L, K] view of its CFG logits, and the fill order
        # follows that view's strides: channels-last for the real transformer (its logits come from a
        # [B, h, w, K] permute), channels-first elsewhere. Draw into exactly those strides.
        noise = torch.empty_strided(logits.shape, _dense_strides(logits), dtype=logits.dtype, device=device)
        noise.normal_(generator=g)
        return logits + sigma * noise.to(logits.device)


def _dense_strides(view: torch.Tensor) -> tuple[int, ...]:
    """The view's own strides when they describe a dense, non-overlapping tensor (what randn_like
    would preserve), else the strides of the [B, L, K] view of channel-first [B, K, L] storage."""
    b, length, k = view.shape
    order = sorted(range(view.ndim), key=lambda d: view.stride(d), reverse=True)
    expected = 1
    dense = True
    for d in reversed(order):
        if view.shape[d] != 1 and view.stride(d) != expected:
            dense = False
            break
        expected *= view.shape[d]
    return tuple(view.stride()) if dense else (k * length, 1, length)

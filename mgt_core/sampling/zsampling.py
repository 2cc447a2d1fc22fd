"""Masked Z-Sampling (design-choices.md section 8): zig forward, zag by selective re-masking, zig again.

At step i (inside the window): STEP with CFG s gives x_f with m_i masks; the model then looks at
x_f at the NEXT step's timestep with a low guidance s_inv (0 = the negative prompt alone), and the
n_b = (|U_b| - 1) - m_i decoded tokens it is MOST confident about are masked again, so x_f lands
one mask short of x (the reference's count; ``land_exact`` lands on |U_b|). The step then runs
again from there. Per image, so batches work (the reference edited only image 0).
Cost: 3 model calls per zig-zag step, 3T - 2 for the whole default window.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import MGTInputError
from .context import StepContext
from .step import categorical, uniform


@dataclass(frozen=True)
class ZSampling:
    inversion_cfg: float = 0.0
    start: int = 0  # first step index that zig-zags
    stop: int | None = None  # first step index that does not (None: the last step, T - 1)
    land_exact: bool = False
    uncond_only_inversion: bool = False  # run the inversion on the uncond rows only (s_inv = 0)

    def __post_init__(self):
        if self.inversion_cfg < 0:
            raise MGTInputError(f"Z-Sampling inversion guidance must be >= 0, got {self.inversion_cfg}")
        if self.start < 0 or (self.stop is not None and self.stop < self.start):
            raise MGTInputError(f"Z-Sampling window [{self.start}, {self.stop}) is empty or negative")

    def applies(self, i: int, steps: int) -> bool:
        stop = steps - 1 if self.stop is None else min(self.stop, steps - 1)
        return self.start <= i < stop

    def remask_counts(self, x: torch.Tensor, mask_id: int, m_i: int) -> torch.Tensor:
        """n_b per image, from the state x BEFORE the zig step."""
        pre = (x == mask_id).sum(-1) - (0 if self.land_exact else 1)
        return (pre - m_i).clamp_min(0)

    def invert(
        self, probs_inv: torch.Tensor, x_f: torch.Tensor, n: torch.Tensor, mask_id: int, ctx: StepContext
    ) -> torch.Tensor:
        """Mask again the n_b decoded positions of x_f with the largest max-probability."""
        known = x_f != mask_id
        if ctx.reference_rng:  # the reference draws, then discards, a sample and a Gumbel tensor
            categorical(probs_inv, ctx.generator, exact=True)
            uniform(x_f.shape, probs_inv, ctx.generator)
        score = probs_inv.amax(-1).masked_fill(~known, float("-inf"))
        order = torch.sort(score, dim=-1, descending=True, stable=True).indices
        ranks = torch.empty_like(order)
        ranks.scatter_(1, order, torch.arange(x_f.shape[1], device=x_f.device).expand_as(order))
        return torch.where(known & (ranks < n[:, None]), mask_id, x_f)

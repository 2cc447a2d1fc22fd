"""Differential sampling (design-choices.md section 7).

For the positions whose distribution changed least since this image's previous sampler call
(smallest KL(p || q)), sample from the normalised positive part of the change, max(p - q, 1e-6),
instead of p. The state (q, per image) lives in one generation: it is created at the start and
never leaks into the next image (the reference kept one process-wide tensor and counter).
DS is active on every call that has a stored distribution, except the final step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import MGTInputError
from .context import StepContext

FLOOR = 1e-6
LOG_FLOOR = 1e-30


@dataclass
class DSState:
    """The distribution each image had at its previous call (None before the first)."""

    previous: torch.Tensor | None = None


@dataclass(frozen=True)
class DifferentialSampling:
    fraction: float = 0.75
    store_raw: bool = False  # store p instead of the modified p-hat (experiment)
    rank_unknown_only: bool = False  # rank only still-masked positions (experiment)

    def __post_init__(self):
        if not 0.0 <= self.fraction <= 1.0:
            raise MGTInputError(f"differential sampling fraction must lie in [0, 1], got {self.fraction}")

    def start(self) -> DSState:
        return DSState()

    def selection(self, kl: torch.Tensor, unknown: torch.Tensor) -> torch.Tensor:
        """Bool [B, L]: the positions ranked in [0, fraction * N) by ascending KL."""
        b, length = kl.shape
        if self.rank_unknown_only:
            kl = kl.masked_fill(~unknown, float("inf"))
            n = (unknown.sum(-1) * self.fraction).long()  # per image
        else:
            n = torch.full((b,), int(length * self.fraction), device=kl.device)
        ranks = torch.empty_like(kl, dtype=torch.long)
        order = torch.sort(kl, dim=-1).indices
        ranks.scatter_(1, order, torch.arange(length, device=kl.device).expand(b, -1))
        return ranks < n[:, None]

    def __call__(self, probs: torch.Tensor, ctx: StepContext, state: DSState) -> torch.Tensor:
        previous, raw = state.previous, probs
        if previous is not None and not ctx.final and self.fraction > 0:
            p = probs.float()
            kl = (p * (torch.log(p.clamp_min(LOG_FLOOR)) - torch.log(previous.clamp_min(LOG_FLOOR)))).sum(-1)
            diff = (p - previous).clamp_min(FLOOR)
            diff = diff / diff.sum(-1, keepdim=True)
            sel = self.selection(kl, ctx.unknown)
            probs = torch.where(sel[..., None], diff.to(probs.dtype), probs)
        state.previous = (raw if self.store_raw else probs).float()
        return probs

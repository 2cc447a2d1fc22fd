"""What a design choice sees at one sampler call."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class StepContext:
    """Step i of T (t = T - 1 - i is the value the model receives), the generator, and which
    positions were still masked when the step started."""

    i: int
    steps: int
    generator: torch.Generator | None
    unknown: torch.Tensor  # bool [B, L]
    reference_rng: bool = False

    @property
    def t(self) -> int:
        return self.steps - 1 - self.i

    @property
    def final(self) -> bool:
        return self.t == 0

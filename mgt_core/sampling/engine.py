"""The sampler engine: one loop for every masked generative transformer.

The model side is a :class:`Denoiser` (token grid + step value -> unconditional/conditional
logits); the engine owns CFG, the schedule, temperature, the RNG and the design choices, which
plug in at fixed points: logit transforms (noise regularization) -> softmax -> probability
transforms (differential sampling) -> draw -> confidence re-masking, and a step rescheduler
(masked Z-Sampling) between steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch

from ..errors import MGTInputError
from .context import StepContext
from .differential import DifferentialSampling
from .noise_reg import NoiseRegularization
from .partial import Start
from .schedules import MaskSchedule, get_schedule
from .step import categorical, confidence_remask, keep_decoded
from .zsampling import ZSampling


class Denoiser(Protocol):
    """A model adapted to the engine. Returns logits [B, K, h, w] for the requested branches
    (``"uncond"``, ``"cond"`` or ``"both"``; None for a branch not computed)."""

    mask_id: int
    grid: tuple[int, int]

    def __call__(self, tokens: torch.Tensor, t: int, branches: str) -> tuple[torch.Tensor | None, torch.Tensor | None]: ...


@dataclass(frozen=True)
class SamplerSettings:
    """Everything that decides a sampling run besides the model, the prompt and the seed."""

    steps: int = 64
    guidance_scale: float = 9.0
    schedule: str | MaskSchedule = "cosine"
    temperature: tuple[float, float] | float = (2.0, 0.0)
    noise_regularization: NoiseRegularization | None = None
    differential_sampling: DifferentialSampling | None = None
    z_sampling: ZSampling | None = None
    reference_rng: bool = False
    """True: the reference's exact random draws (torch.multinomial over every row, the discarded
    draws of the Z-Sampling inversion), so tokens equal the reference scheduler's for the same
    logits and seed. False: the same distributions from an inverse-CDF sampler, several times faster."""

    def __post_init__(self):
        if not isinstance(self.steps, int) or self.steps < 1:
            raise MGTInputError(f"steps must be an integer >= 1, got {self.steps}")
        if not math.isfinite(self.guidance_scale) or self.guidance_scale < 0:
            raise MGTInputError(f"guidance scale must be >= 0, got {self.guidance_scale}")
        temps = self.temperature if isinstance(self.temperature, (tuple, list)) else (self.temperature,)
        if len(temps) not in (1, 2) or any(not math.isfinite(v) or v < 0 for v in temps):
            raise MGTInputError(f"temperature must be a value or a (start, end) pair >= 0, got {self.temperature}")
        object.__setattr__(self, "schedule", get_schedule(self.schedule))

    def temperatures(self) -> torch.Tensor:
        """Gumbel temperature per step: linspace(a, b, T) for a pair, linspace(a, 0.01, T) for a value."""
        t = self.temperature
        a, b = (t[0], t[1]) if isinstance(t, (tuple, list)) else (t, 0.01)
        return torch.linspace(a, b, self.steps)

    def model_calls(self) -> int:
        """Model calls (NFE, each on the CFG batch) for a full run."""
        z = self.z_sampling
        return self.steps + (0 if z is None else 2 * sum(z.applies(i, self.steps) for i in range(self.steps)))


@dataclass
class StepInfo:
    """Passed to the callback after each step (for previews, progress and cancel)."""

    i: int
    steps: int
    tokens: torch.Tensor  # [B, L] after the step (MASK where still masked)
    predicted: torch.Tensor  # [B, L] the step's full prediction (every position filled)


@dataclass
class SampleResult:
    tokens: torch.Tensor  # [B, L], fully decoded
    model_calls: int = 0
    trajectory: list = field(default_factory=list)


def guided_logits(denoiser: Denoiser, x: torch.Tensor, t: int, scale: float, always_mix: bool = False, uncond_only: bool = False):
    """CFG logits as a [B, L, K] fp32 view of the denoiser's [B, K, h, w] output, in its memory layout
    (channels-last for the Meissonic transformer, as in the reference; noise regularization draws
    in that layout's order).

    CFG is on iff scale > 1 (else the conditional branch alone), unless ``always_mix``, which
    applies l_u + s (l_c - l_u) for any s (the Z-Sampling inversion).
    """
    b, h, w = x.shape[0], *denoiser.grid
    grid = x.view(b, h, w)
    if uncond_only:
        mixed = denoiser(grid, t, "uncond")[0].float()
    elif scale > 1 or always_mix:
        lu, lc = (v.float() for v in denoiser(grid, t, "both"))
        mixed = lu + scale * (lc - lu)
    else:
        mixed = denoiser(grid, t, "cond")[1].float()
    return mixed.reshape(b, mixed.shape[1], h * w).permute(0, 2, 1)


class Sampler:
    """Runs :class:`SamplerSettings` over a :class:`Denoiser`; one instance per generation."""

    def __init__(self, denoiser: Denoiser, settings: SamplerSettings, generator: torch.Generator | None):
        self.denoiser, self.s, self.generator = denoiser, settings, generator
        self.mask_id = denoiser.mask_id
        self.logit_transforms = [t for t in (settings.noise_regularization,) if t is not None]
        self.prob_transforms = [t for t in (settings.differential_sampling,) if t is not None]
        self.states = [t.start() for t in self.prob_transforms]
        self.temps = settings.temperatures().tolist()  # host floats: a CPU tensor moved per step would sync
        self.calls = 0

    def logits(self, x: torch.Tensor, t: int, scale: float, **kw) -> torch.Tensor:
        self.calls += 1
        return guided_logits(self.denoiser, x, t, scale, **kw)

    def step(self, x: torch.Tensor, i: int, counts: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """One STEP: returns (next tokens, this step's full prediction)."""
        logits = self.logits(x, self.s.steps - 1 - i, self.s.guidance_scale)
        return self.unmask(logits, x, i, counts)

    def unmask(self, logits: torch.Tensor, x: torch.Tensor, i: int, counts: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The scheduler part of a STEP, from CFG logits [B, L, K] (what bench/sampler_step.py times)."""
        s = self.s
        unknown = x == self.mask_id
        ctx = StepContext(i, s.steps, self.generator, unknown, s.reference_rng)
        for transform in self.logit_transforms:
            logits = transform(logits, ctx)
        probs = logits.softmax(dim=-1)
        for transform, state in zip(self.prob_transforms, self.states, strict=True):
            probs = transform(probs, ctx, state)
        sampled = keep_decoded(categorical(probs, self.generator, exact=s.reference_rng), x, unknown)
        if ctx.final:
            return sampled, sampled
        rows = unknown.any(-1)
        x_next = confidence_remask(
            probs, sampled, unknown, counts[i], self.temps[i], self.mask_id, self.generator, rows
        )
        return x_next, sampled

    def zigzag(self, x: torch.Tensor, i: int, counts: list[int]) -> torch.Tensor:
        z = self.s.z_sampling
        n = z.remask_counts(x, self.mask_id, counts[i])
        x_f, _ = self.step(x, i, counts)
        ctx = StepContext(i, self.s.steps, self.generator, x_f == self.mask_id, self.s.reference_rng)
        uncond_only = z.uncond_only_inversion and z.inversion_cfg == 0
        logits = self.logits(x_f, ctx.t - 1, z.inversion_cfg, always_mix=True, uncond_only=uncond_only)
        return z.invert(logits.softmax(dim=-1), x_f, n, self.mask_id, ctx)

    def run(self, start: Start, callback: Callable[[StepInfo], None] | None = None, keep_trajectory=False) -> SampleResult:
        s, x = self.s, start.tokens
        length = x.shape[1]
        counts = s.schedule.counts(s.steps, length, start.start_ratio)
        trajectory = []
        for i in range(start.first_step, s.steps):
            if s.z_sampling is not None and s.z_sampling.applies(i, s.steps):
                x = self.zigzag(x, i, counts)
            x, predicted = self.step(x, i, counts)
            if keep_trajectory:
                trajectory.append(x.clone())
            if callback is not None:
                callback(StepInfo(i, s.steps, x, predicted))
        return SampleResult(x, self.calls, trajectory)


def sample(
    denoiser: Denoiser,
    settings: SamplerSettings,
    start: Start,
    generator: torch.Generator | None,
    callback: Callable[[StepInfo], None] | None = None,
) -> SampleResult:
    """Sample tokens from ``start`` (see :mod:`.partial`) to a fully decoded grid."""
    h, w = denoiser.grid
    if start.tokens.ndim != 2 or start.tokens.shape[1] != h * w:
        raise MGTInputError(f"start tokens must be [B, {h * w}] for a {h}x{w} grid, got {list(start.tokens.shape)}")
    return Sampler(denoiser, settings, generator).run(start, callback)

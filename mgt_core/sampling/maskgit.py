"""The MaskGIT-family samplers as parts of the one engine (design-choices.md section 4).

A sampler is the engine's loop plus three small parts, each replaceable on its own:

* a **guidance** (how the two branches mix): :class:`MaskGITGuidance` is (1 + w) l_c - w l_u,
  with w ramping 0 -> w over the run (v1) or constant (Halton); no CFG call when w == 0;
* a **logit temperature** (:class:`LogitTemperature`): logits times linspace(a, b, T)[i] ** pow,
  halved during a warm-up (v1: a constant 1; Halton: 1 -> 1.2);
* an **unmasking rule**: :class:`ConfidenceReveal` (v1: reveal the k most confident unknown tokens,
  confidence log p(sampled) + r_temp (1 - i/(T-1)) Gumbel) or :class:`HaltonReveal` (a fixed
  low-discrepancy order; the first n_i positions are (re)written at step i).

How many tokens each step reveals is a mask schedule (``schedules.py``): the samplers' own count
rules are the schedules ``v1_arccos`` (and ``v1_cosine`` ...) and ``halton``; any other schedule
(cosine, pow2, a table ...) works with either rule. Noise regularization, differential sampling and
masked Z-Sampling plug in exactly as for Meissonic; Z-Sampling's low-guidance branch is the
class-dropped one (``inversion_cfg`` 0).

``reference_rng`` reproduces the official samplers' draws: ``torch.distributions.Categorical``
(multinomial over the renormalised probabilities, the mask logit included), the v1 Gumbel noise from
``numpy.random`` (a ``RandomState`` seeded with the generator's seed, as the official scripts seed
both) in float64, and Halton's per-image roll offsets from ``torch.randint``. Without it the mask
logit is dropped (the mask id can never be drawn), draws use the fast inverse-CDF sampler and the
Gumbel noise comes from the torch generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import MGTInputError
from .context import StepContext
from .step import FLOOR, categorical, gumbel, uniform

RANDOMIZE_MODES = ("linear", "warm_up", "random", "no")


def _ratio(i: int, steps: int) -> float:
    """i / (T - 1), the v1 sampler's progress (1 for a single step)."""
    return i / (steps - 1) if steps > 1 else 1.0


# ---------------------------------------------------------------------------------------------
# Guidance and logit temperature


@dataclass(frozen=True)
class MaskGITGuidance:
    """l = (1 + w_i) l_c - w_i l_u, w_i = w i/(T-1) (``ramp``) or w; the conditional branch alone if w == 0."""

    w: float = 3.0
    ramp: bool = True

    def __post_init__(self):
        if not math.isfinite(self.w) or self.w < 0:
            raise MGTInputError(f"MaskGIT guidance w must be >= 0, got {self.w}")

    def weight(self, i: int, steps: int) -> float:
        return self.w * _ratio(i, steps) if self.ramp else self.w

    def __call__(self, denoiser, grid: torch.Tensor, t: int, i: int, steps: int) -> torch.Tensor:
        if self.w == 0:
            return denoiser(grid, t, "cond")[1].float()
        lu, lc = (v.float() for v in denoiser(grid, t, "both"))
        w = self.weight(i, steps)
        return (1 + w) * lc - w * lu

    def calls_uncond(self) -> bool:
        return self.w != 0


@dataclass(frozen=True)
class LogitTemperature:
    """Logits times temps[i] ** power, temps = linspace(start, end, T); halved for i < warmup."""

    start: float = 1.0
    end: float | None = None
    power: float = 1.0
    warmup: int = 0

    def __post_init__(self):
        for v in (self.start, self.end if self.end is not None else self.start):
            if not math.isfinite(v) or v <= 0:
                raise MGTInputError(f"softmax temperature must be > 0, got {v}")

    @classmethod
    def token_temperature(cls, tau) -> LogitTemperature | None:
        """The token draw from softmax(logits / tau) (Meissonic's ``token_temperature``); None for tau = 1,
        the reference, so its tokens stay exactly the reference's. Below 1 the draw keeps nearer the most
        likely code: a small model's long tail of edge codes leaves stray tokens and ragged outlines."""
        try:
            if isinstance(tau, bool):
                raise TypeError
            value = float(tau)
        except (TypeError, ValueError):
            raise MGTInputError(f"token temperature must be a number > 0, got {tau!r}") from None
        if not math.isfinite(value) or value <= 0:
            raise MGTInputError(f"token temperature must be a number > 0, got {tau!r}")
        return None if value == 1.0 else cls(1.0 / value)

    def factor(self, i: int, steps: int) -> torch.Tensor | float:
        if self.end is None and self.power == 1 and self.warmup == 0:
            return self.start  # v1: a Python scalar, as there
        temp = torch.linspace(self.start, self.start if self.end is None else self.end, steps)[i] ** self.power
        return temp * 0.5 if i < self.warmup else temp

    def __call__(self, logits: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        f = self.factor(ctx.i, ctx.steps)
        if isinstance(f, float) and f == 1.0:
            return logits * f if ctx.reference_rng else logits
        return logits * (f.to(logits.device) if isinstance(f, torch.Tensor) else f)


# ---------------------------------------------------------------------------------------------
# Unmasking rules


def reference_draw(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """``torch.distributions.Categorical(probs).sample()``: multinomial over p / sum(p)."""
    return categorical(probs / probs.sum(-1, keepdim=True), generator, exact=True)


def reveal_counts(unknown: torch.Tensor, masked_after: int) -> torch.Tensor:
    """Per image: |U_b| - m_i tokens to reveal, at least 1 while any is unknown, at most |U_b|. [B, 1]"""
    n = unknown.sum(-1, keepdim=True)
    return (n - masked_after).clamp_min(1).minimum(n)


def reveal_top(conf: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Bool [B, L]: each row's counts[b] highest-confidence positions (ties: lower index first)."""
    order = torch.sort(conf, dim=-1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(conf.shape[1], device=conf.device).expand_as(order))
    return ranks < counts


@dataclass
class RuleState:
    numpy_rng: np.random.RandomState | None = None
    ranks: torch.Tensor | None = None  # Halton: each position's place in the order [B, L]
    start_tokens: torch.Tensor | None = None


@dataclass(frozen=True)
class ConfidenceReveal:
    """MaskGIT v1: reveal the k_b most confident unknown tokens; known tokens get -inf confidence.

    Confidence by ``randomize``: ``linear`` log p + r_temp (1 - i/(T-1)) Gumbel (default), ``warm_up``
    uniform noise for the first two steps then p, ``random`` uniform noise, ``no`` p.
    """

    r_temp: float = 4.5
    randomize: str = "linear"

    def __post_init__(self):
        if self.randomize not in RANDOMIZE_MODES:
            raise MGTInputError(f"randomize must be one of {', '.join(RANDOMIZE_MODES)}, got {self.randomize!r}")
        if not math.isfinite(self.r_temp) or self.r_temp < 0:
            raise MGTInputError(f"Gumbel temperature r_temp must be >= 0, got {self.r_temp}")

    def start(self, tokens: torch.Tensor, generator: torch.Generator | None, reference_rng: bool) -> RuleState:
        if not reference_rng:
            return RuleState()
        seed = generator.initial_seed() if generator is not None else torch.initial_seed()
        return RuleState(numpy_rng=np.random.RandomState(seed % 2**32))

    def draw(self, probs: torch.Tensor, generator, reference_rng: bool) -> torch.Tensor:
        return reference_draw(probs, generator) if reference_rng else categorical(probs, generator, exact=False)

    def confidence(self, probs, sampled, ctx: StepContext, state: RuleState) -> torch.Tensor:
        b, length = sampled.shape
        p = torch.gather(probs, -1, sampled[..., None])[..., 0]
        mode = self.randomize
        if mode == "linear":
            scale = 1 - _ratio(ctx.i, ctx.steps)
            if state.numpy_rng is not None:  # the reference: float64 numpy Gumbel, conf promoted to float64
                rand = self.r_temp * state.numpy_rng.gumbel(size=(b, length)) * scale
                return torch.log(p) + torch.from_numpy(rand).to(p.device)
            return torch.log(p.clamp_min(FLOOR)) + (self.r_temp * scale) * gumbel(uniform((b, length), p, ctx.generator))
        if mode == "random" or (mode == "warm_up" and ctx.i < 2):
            return uniform((b, length), p, ctx.generator)
        return p

    def select(self, probs, sampled, x, unknown, masked_after: int, ctx: StepContext, state: RuleState, mask_id: int):
        conf = self.confidence(probs, sampled, ctx, state)
        conf = conf.masked_fill(~unknown, float("-inf"))
        chosen = reveal_top(conf, reveal_counts(unknown, masked_after)) & unknown
        return torch.where(chosen, sampled, x)


def halton_sequence(base: int, count: int) -> list[tuple[int, int]]:
    """Radical inverse of n = 1..count in ``base`` as exact fractions (numerator, denominator)."""
    out = []
    for n in range(1, count + 1):
        num, den, k = 0, 1, n
        while k:
            k, digit = divmod(k, base)
            num, den = num * base + digit, den * base
        out.append((num, den))
    return out


def halton_order(height: int, width: int, points: int = 10_000) -> torch.Tensor:
    """The Halton token order: flat indices row * width + col of (floor(h phi2(n)), floor(w phi3(n))),
    duplicates dropped (first occurrence kept). FIX: points keep coming until every cell is covered."""
    seen: dict[int, None] = {}
    n_total, start = height * width, 0
    while len(seen) < n_total:
        xs, ys = halton_sequence(2, start + points), halton_sequence(3, start + points)
        for (a, da), (c, dc) in zip(xs[start:], ys[start:], strict=True):
            seen.setdefault((a * height // da) * width + (c * width // dc), None)
        start += points
    return torch.tensor(list(seen), dtype=torch.long)


@dataclass(frozen=True)
class HaltonReveal:
    """Halton-MaskGIT: at step i the first n_i positions of the fixed order take the step's draw
    (earlier ones are redrawn too); ``randomize`` rolls the order by a random offset per image."""

    randomize: bool = False
    top_k: int = -1
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    def order(self, h: int, w: int) -> torch.Tensor:
        if (h, w) not in self._cache:
            self._cache[(h, w)] = halton_order(h, w)
        return self._cache[(h, w)]

    def start(self, tokens: torch.Tensor, generator, reference_rng: bool, grid: tuple[int, int]) -> RuleState:
        b, length = tokens.shape
        order = self.order(*grid).to(tokens.device)
        orders = order.expand(b, -1)
        if self.randomize:
            dev = generator.device if generator is not None else torch.device("cpu")
            shift = torch.randint(0, length, (b,), generator=generator, device=dev).to(tokens.device)
            idx = (torch.arange(length, device=tokens.device)[None] - shift[:, None]) % length
            orders = torch.gather(orders, 1, idx)  # torch.roll(order, shift_b) per image
        ranks = torch.empty_like(orders)
        ranks.scatter_(1, orders, torch.arange(length, device=tokens.device).expand(b, -1))
        return RuleState(ranks=ranks, start_tokens=tokens.clone())

    def draw(self, probs: torch.Tensor, generator, reference_rng: bool) -> torch.Tensor:
        if self.top_k > 0:
            top_p, top_i = torch.topk(probs, self.top_k)
            top_p = top_p / top_p.sum(dim=-1, keepdim=True)
            pick = categorical(top_p, generator, exact=reference_rng)
            return top_i.gather(-1, pick[..., None])[..., 0]
        return reference_draw(probs, generator) if reference_rng else categorical(probs, generator, exact=False)

    def select(self, probs, sampled, x, unknown, masked_after: int, ctx: StepContext, state: RuleState, mask_id: int):
        length = x.shape[1]
        fixed = state.start_tokens != mask_id  # a partial start keeps its known tokens
        revealed = state.ranks < (length - masked_after)
        return torch.where(fixed, state.start_tokens, torch.where(revealed, sampled, mask_id))


# ---------------------------------------------------------------------------------------------
# The two published samplers, as engine settings


V1_DEFAULTS = {"steps": 8, "w": 3.0, "r_temp": 4.5, "sm_temp": 1.0, "schedule": "v1_arccos", "randomize": "linear"}
"""MaskGIT-pytorch v1 at 256 px (FID 6.80); 512 px used 15 steps, r_temp 7, w 2.8."""
HALTON_DEFAULTS = {"steps": 32, "w": 2.0, "sm_temp": (1.0, 1.2), "temp_pow": 1.0, "temp_warmup": 0, "randomize": True, "top_k": -1}
"""Halton-MaskGIT README quick start."""


def v1_settings(
    steps: int = 8, w: float = 3.0, r_temp: float = 4.5, sm_temp: float = 1.0, schedule="v1_arccos",
    randomize: str = "linear", ramp: bool = True, **choices,
):
    """The v1 confidence sampler; ``choices`` are the engine's design choices (noise_regularization,
    differential_sampling, z_sampling, reference_rng)."""
    from .engine import SamplerSettings

    return SamplerSettings(
        steps=steps, guidance_scale=float(w), schedule=schedule, guidance=MaskGITGuidance(float(w), ramp),
        logit_temperature=LogitTemperature(float(sm_temp)), rule=ConfidenceReveal(float(r_temp), randomize), **choices,
    )


def halton_settings(
    steps: int = 32, w: float = 2.0, sm_temp: float | tuple[float, float] = (1.0, 1.2), temp_pow: float = 1.0,
    temp_warmup: int = 0, randomize: bool = True, top_k: int = -1, schedule="halton", **choices,
):
    """The Halton sampler (constant guidance); ``choices`` as for :func:`v1_settings` (no Z-Sampling)."""
    from .engine import SamplerSettings

    a, b = (sm_temp, sm_temp) if isinstance(sm_temp, (int, float)) else sm_temp
    return SamplerSettings(
        steps=steps, guidance_scale=float(w), schedule=schedule, guidance=MaskGITGuidance(float(w), ramp=False),
        logit_temperature=LogitTemperature(float(a), float(b), float(temp_pow), int(temp_warmup)),
        rule=HaltonReveal(bool(randomize), int(top_k)), **choices,
    )


def family_settings(sampler: str, defaults: dict, **overrides):
    """Engine settings for a MaskGIT model: its published sampler (``"confidence"`` v1 or ``"halton"``) with
    ``defaults`` (steps, cfg_w, schedule, r_temp, sm_temp...; a model's ``MaskGITInfo``) and ``overrides``.

    ``schedule`` None/"default"/"arccos" keeps the sampler's own count rule (v1_arccos / halton); the
    design choices (``noise_regularization``, ``differential_sampling``, ``z_sampling``) and
    ``reference_rng`` pass through to the engine.
    """
    v = {**defaults, **{k: x for k, x in overrides.items() if x is not None}}
    choices = {k: v[k] for k in ("noise_regularization", "differential_sampling", "z_sampling", "reference_rng") if k in v}
    schedule = v.get("schedule")
    if sampler == "halton":
        sched = "halton" if schedule in (None, "default", "arccos") else schedule
        return halton_settings(
            steps=int(v["steps"]), w=float(v["cfg_w"]), sm_temp=(float(v.get("sm_temp_min", 1.0)), float(v.get("sm_temp_max", 1.2))),
            temp_pow=float(v.get("temp_pow", 1.0)), temp_warmup=int(v.get("temp_warmup", 0)),
            randomize=bool(v.get("randomize", True)), top_k=int(v.get("top_k", -1)), schedule=sched, **choices,
        )
    if sampler != "confidence":
        raise MGTInputError(f"MaskGIT sampler must be 'confidence' (v1) or 'halton', got {sampler!r}")
    sched = "v1_arccos" if schedule in (None, "default") else (f"v1_{schedule}" if f"v1_{schedule}" in _V1_MODES else schedule)
    return v1_settings(
        steps=int(v["steps"]), w=float(v["cfg_w"]), r_temp=float(v.get("r_temp", 4.5)), sm_temp=float(v.get("sm_temp", 1.0)),
        schedule=sched, randomize=str(v.get("randomize", "linear")), **choices,
    )


_V1_MODES = {"v1_arccos", "v1_cosine", "v1_linear", "v1_square", "v1_root"}

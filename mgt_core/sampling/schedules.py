"""Mask schedules: how many tokens stay masked after each sampling step.

A schedule maps (step index i, steps T, starting token count L0) to the number of tokens that
remain masked after step i. Ratio-form schedules give a masked fraction gamma(r) at progress
r = (i + 1) / T and the count is floor(L0 * gamma(r)), evaluated in float32 in the same order
as the reference scheduler so that cosine/linear counts are bit-identical to it.

Three ways to build one (design-choices.md section 5):
  * a built-in name: ``cosine`` (default), ``linear``, ``pow2``/``pow<k>``, ``log``, ``exp``,
    ``arccos``, ``cospow:<a>,<b>`` (gamma = cos(pi/2 * r^a)^b);
  * an expression of ``r`` such as ``"cos(pi/2 * r**1.5)"`` (a safe arithmetic subset);
  * a table of T counts (ints) or T fractions (floats in [0, 1]).
The per-image clamp to [1, |unknown| - 1] happens in the sampler step, not here.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..errors import MGTInputError

RatioFn = Callable[[torch.Tensor, int], torch.Tensor]
"""gamma(r, n_unknown) -> masked fraction, r a float32 tensor in (0, 1]."""

_CLIP_MIN = 1e-6


def _cosine(r: torch.Tensor, n: int) -> torch.Tensor:
    return torch.cos(r * math.pi / 2)


def _linear(r: torch.Tensor, n: int) -> torch.Tensor:
    return 1 - r


def _pow(k: float) -> RatioFn:
    def fn(r: torch.Tensor, n: int) -> torch.Tensor:
        return 1 - r**k

    return fn


def _log(r: torch.Tensor, n: int) -> torch.Tensor:
    return -torch.log2(r) / math.log2(max(n, 2))


def _exp(r: torch.Tensor, n: int) -> torch.Tensor:
    return 1 - torch.exp2(-math.log2(max(n, 2)) * (1 - r))


def _arccos(r: torch.Tensor, n: int) -> torch.Tensor:
    return torch.arccos(r.clamp(-1, 1)) / (math.pi / 2)


def _cospow(a: float, b: float) -> RatioFn:
    def fn(r: torch.Tensor, n: int) -> torch.Tensor:
        return torch.cos(math.pi / 2 * r**a).clamp_min(0) ** b

    return fn


BUILTIN_SCHEDULES: dict[str, RatioFn] = {
    "cosine": _cosine,
    "linear": _linear,
    "pow2": _pow(2.0),
    "pow3": _pow(3.0),
    "pow0.5": _pow(0.5),
    "log": _log,
    "exp": _exp,
    "arccos": _arccos,
}
"""Names offered in the UI. ``pow<k>`` and ``cospow:<a>,<b>`` accept any positive numbers."""

def v1_reveal_counts(steps: int, num_tokens: int, mode: str = "arccos") -> list[int]:
    """Tokens revealed per step by the MaskGIT-pytorch v1 sampler (design-choices.md 4.2), float32 as there:
    r = linspace(1, 0, T), v = weight(r), k = round(N v / sum v), zeros -> 1, the last absorbs the rest."""
    if steps == 1:
        return [num_tokens]  # guard: linspace(1, 0, 1) = [1] gives weight 0 / 0
    r = torch.linspace(1, 0, steps)
    v = {
        "root": lambda: 1 - r**0.5,
        "linear": lambda: 1 - r,
        "square": lambda: 1 - r**2,
        "cosine": lambda: torch.cos(r * math.pi * 0.5),
        "arccos": lambda: torch.arccos(r) / (math.pi * 0.5),
    }[mode]()
    k = ((v / v.sum()) * num_tokens).round()
    k[k == 0] = 1
    k[-1] += num_tokens - k.sum()
    out = k.int().tolist()
    if out[-1] < 1:
        raise MGTInputError(f"the v1 {mode} schedule cannot spread {num_tokens} tokens over {steps} steps; use fewer steps")
    return out


def halton_revealed_counts(steps: int, num_tokens: int) -> list[int]:
    """Cumulative tokens revealed after each step by the Halton sampler (design-choices.md 4.3), float32
    as there: n_i = max(i + 1, int((1 - arccos((i + 1) / T) / (pi / 2)) * N)); n_{T-1} = N."""
    out = []
    for i in range(steps):
        r = 1 - (torch.arccos(torch.tensor((i + 1) / steps)) / (math.pi * 0.5))
        out.append(min(num_tokens, max(i + 1, int(r * num_tokens))))
    out[-1] = num_tokens
    return out


def _v1_counts(mode: str) -> Callable[[int, int], list[int]]:
    def fn(steps: int, n: int) -> list[int]:
        left, out = n, []
        for k in v1_reveal_counts(steps, n, mode):
            left -= k
            out.append(left)
        return out

    return fn


def _halton_counts(steps: int, n: int) -> list[int]:
    return [n - c for c in halton_revealed_counts(steps, n)]


COUNT_SCHEDULES: dict[str, Callable[[int, int], list[int]]] = {
    **{f"v1_{m}": _v1_counts(m) for m in ("arccos", "cosine", "linear", "square", "root")},
    "halton": _halton_counts,
}
"""The MaskGIT samplers' own count rules: ``v1_<mode>`` (MaskGIT-pytorch ``adap_sche``), ``halton``."""

# Names the reference applies without the [1e-6, 1] clip (bit parity with its scheduler).
_UNCLIPPED = {"cosine", "linear"}

_EXPR_FUNCS: dict[str, Callable[..., torch.Tensor]] = {
    "cos": torch.cos, "sin": torch.sin, "tan": torch.tan, "exp": torch.exp, "log": torch.log,
    "log2": torch.log2, "sqrt": torch.sqrt, "abs": torch.abs, "arccos": torch.arccos,
    "acos": torch.arccos, "arcsin": torch.arcsin, "asin": torch.arcsin, "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
}
_EXPR_CONSTS = {"pi": math.pi, "e": math.e}
_EXPR_NODES = (
    ast.Expression, ast.BinOp, ast.UnaryOp, ast.Call, ast.Name, ast.Constant, ast.Load,
    ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow, ast.USub, ast.UAdd, ast.Mod,
)


def _compile_expression(text: str) -> RatioFn:
    """Compile a user expression of ``r`` (and ``n``, the starting unknown count) safely."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        raise MGTInputError(f"schedule expression {text!r} is not valid: {e.msg}") from None
    for node in ast.walk(tree):
        if not isinstance(node, _EXPR_NODES):
            raise MGTInputError(
                f"schedule expression {text!r}: '{type(node).__name__}' is not allowed; use numbers, "
                f"r, n, pi, e, + - * / ** % and {', '.join(sorted(_EXPR_FUNCS))}"
            )
        if isinstance(node, ast.Name) and node.id not in {"r", "n", *_EXPR_CONSTS, *_EXPR_FUNCS}:
            raise MGTInputError(f"schedule expression {text!r}: unknown name {node.id!r} (use r for progress)")
        if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name) and node.func.id in _EXPR_FUNCS):
            raise MGTInputError(f"schedule expression {text!r}: only {', '.join(sorted(_EXPR_FUNCS))} can be called")
    code = compile(tree, "<schedule>", "eval")

    def fn(r: torch.Tensor, n: int) -> torch.Tensor:
        env = {"r": r, "n": float(n), **_EXPR_CONSTS, **_EXPR_FUNCS}
        out = eval(code, {"__builtins__": {}}, env)  # noqa: S307 - AST checked above: arithmetic only
        return torch.as_tensor(out, dtype=torch.float32).expand_as(r)

    return fn


@dataclass(frozen=True)
class MaskSchedule:
    """A mask schedule. Build with :func:`get_schedule`; call :meth:`counts` for the step counts."""

    name: str
    ratio_fn: RatioFn | None = None
    table: tuple[float, ...] | None = None
    clip: bool = True
    counts_fn: Callable[[int, int], list[int]] | None = None
    """Count form: (steps, L0) -> tokens still masked after each step (the MaskGIT samplers' own rules)."""

    def counts(self, steps: int, num_tokens: int, start_ratio: float = 1.0) -> list[int]:
        """Tokens left masked after each step i = 0..T-1 (the last entry is 0).

        ``start_ratio`` is the masked fraction a partial start (inpainting) begins with; the
        reference scales gamma by it before multiplying by the sequence length, and so do we.
        """
        if steps < 1:
            raise MGTInputError(f"steps must be >= 1, got {steps}")
        if self.counts_fn is not None:
            out = self.counts_fn(steps, math.floor(num_tokens * start_ratio))
        elif self.table is not None:
            out = self._table_counts(steps, math.floor(num_tokens * start_ratio))
        else:
            r = (torch.arange(steps, dtype=torch.int64) + 1) / steps  # float32, as the reference
            gamma = self.ratio_fn(r, max(1, round(num_tokens * start_ratio)))
            if self.clip:
                gamma = gamma.clamp(_CLIP_MIN, 1.0)
            if not torch.isfinite(gamma).all():
                raise MGTInputError(f"schedule {self.name!r} gives non-finite mask ratios for T={steps}")
            out = (num_tokens * (start_ratio * gamma)).floor().to(torch.int64).tolist()
            out[-1] = 0  # the last step always fills every remaining token
        validate_counts(out, num_tokens, self.name)
        return out

    def ratio_at(self, i: int, steps: int, num_tokens: int) -> torch.Tensor:
        """gamma((i + 1) / T) as a float32 scalar (the masking probability img2img starts from)."""
        if self.table is not None or self.counts_fn is not None:
            return torch.tensor(self.counts(steps, num_tokens)[i] / num_tokens, dtype=torch.float32)
        r = (torch.tensor(i, dtype=torch.int64) + 1) / steps
        gamma = self.ratio_fn(r, num_tokens)
        return gamma.clamp(_CLIP_MIN, 1.0) if self.clip else gamma

    def _table_counts(self, steps: int, num_tokens: int) -> list[int]:
        if len(self.table) != steps:
            raise MGTInputError(f"schedule table has {len(self.table)} entries but steps is {steps}")
        if all(isinstance(v, int) for v in self.table):  # explicit counts
            if max(self.table) > num_tokens:
                raise MGTInputError(
                    f"schedule table asks for {max(self.table)} masked tokens but the grid has {num_tokens}"
                )
            return list(self.table)
        if any(not 0.0 <= v <= 1.0 for v in self.table):
            raise MGTInputError("schedule table: fractions must lie in [0, 1] (or give whole-number counts)")
        return [math.floor(num_tokens * v) for v in self.table]


def validate_counts(counts: Sequence[int], num_tokens: int, name: str = "schedule") -> None:
    """A usable schedule never unmasks and re-masks: non-increasing, within [0, L0], ending at 0."""
    if any(c < 0 or c > num_tokens for c in counts):
        raise MGTInputError(f"{name}: mask counts must lie in [0, {num_tokens}], got {list(counts)[:8]}...")
    bad = next((i for i in range(1, len(counts)) if counts[i] > counts[i - 1]), None)
    if bad is not None:
        raise MGTInputError(
            f"{name}: mask counts must not increase, but step {bad} has {counts[bad]} > {counts[bad - 1]} at step {bad - 1}"
        )
    if counts and counts[-1] != 0:
        raise MGTInputError(f"{name}: the last step must leave 0 masked tokens, got {counts[-1]}")


def _table_values(vals: list[float]) -> tuple[float, ...]:
    """Whole numbers with any value above 1 are counts; anything else is a table of fractions."""
    if all(float(v).is_integer() for v in vals) and any(v > 1 for v in vals):
        return tuple(int(v) for v in vals)
    return tuple(float(v) for v in vals)


def get_schedule(spec: str | Sequence[float] | Callable | MaskSchedule) -> MaskSchedule:
    """Build a schedule from a name, an expression of r, a table, or a gamma(r) callable."""
    if isinstance(spec, MaskSchedule):
        return spec
    if callable(spec):
        return MaskSchedule(getattr(spec, "__name__", "custom"), ratio_fn=lambda r, n: torch.as_tensor(spec(r)))
    if not isinstance(spec, str):
        return MaskSchedule("table", table=_table_values(list(spec)))
    name = spec.strip()
    key = name.lower()
    if key in COUNT_SCHEDULES:
        return MaskSchedule(key, counts_fn=COUNT_SCHEDULES[key])
    if key in BUILTIN_SCHEDULES:
        return MaskSchedule(key, BUILTIN_SCHEDULES[key], clip=key not in _UNCLIPPED)
    if key.startswith("pow"):
        try:
            k = float(key[3:])
        except ValueError:
            k = -1.0
        if k <= 0:
            raise MGTInputError(f"schedule {name!r}: pow<k> needs a positive k, e.g. pow2 or pow2.5")
        return MaskSchedule(key, _pow(k))
    if key.startswith("cospow:"):
        try:
            a, b = (float(v) for v in key[7:].split(","))
        except ValueError:
            a = b = -1.0
        if a <= 0 or b <= 0:
            raise MGTInputError(f"schedule {name!r}: use cospow:<a>,<b> with a, b > 0, e.g. cospow:1,1 (cosine)")
        return MaskSchedule(key, _cospow(a, b))
    if key.startswith("table:") or ("," in key and not any(c.isalpha() for c in key)):
        body = key.split(":", 1)[1] if key.startswith("table:") else key
        try:
            vals = [float(v) for v in body.replace(";", ",").split(",") if v.strip()]
        except ValueError:
            raise MGTInputError(f"schedule table {name!r}: entries must be numbers") from None
        return MaskSchedule("table", table=_table_values(vals))
    return MaskSchedule(f"expr:{name}", _compile_expression(name))


def mask_counts(schedule: str | Sequence[float] | Callable | MaskSchedule, steps: int, num_tokens: int) -> list[int]:
    """Convenience: the per-step counts of a schedule spec."""
    return get_schedule(schedule).counts(steps, num_tokens)

"""Named combinations of the design choices, with what each costs in model calls."""

from __future__ import annotations

from .differential import DifferentialSampling
from .noise_reg import NoiseRegularization
from .zsampling import ZSampling

PRESETS: dict[str, dict] = {
    "vanilla": {},
    "noise_reg": {"noise_regularization": NoiseRegularization()},
    "diff_sampling": {"differential_sampling": DifferentialSampling()},
    "z_sampling": {"z_sampling": ZSampling()},
    "z_sampling+noise_reg": {"z_sampling": ZSampling(), "noise_regularization": NoiseRegularization()},
    "z_sampling+diff_sampling": {"z_sampling": ZSampling(), "differential_sampling": DifferentialSampling()},
    "enhanced": {
        "z_sampling": ZSampling(),
        "noise_regularization": NoiseRegularization(),
        "differential_sampling": DifferentialSampling(),
    },
}
"""``vanilla``: the reference sampler. ``noise_reg`` is the reference demo.py default
(``--add-noise=cos``). ``z_sampling+noise_reg`` and ``z_sampling+diff_sampling`` are the
combinations the reference ships; ``enhanced`` stacks all three. Z-Sampling presets cost
3T - 2 model calls, the others T."""


def preset(name: str) -> dict:
    from ..errors import MGTInputError

    if name not in PRESETS:
        raise MGTInputError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return dict(PRESETS[name])

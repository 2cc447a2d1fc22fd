"""Named combinations of the design choices, with what each costs in model calls.

Two sources: the built-in ``PRESETS`` below, and a model folder's own presets, stored under
``"presets"`` in its ``mgt_defaults.json`` (what ``python -m mgt_core.tune`` writes): each is a
JSON object of sampler options (``PRESET_KEYS``), so a preset tuned for one model travels with it.
A model's preset of the same name wins over a built-in one.
"""

from __future__ import annotations

import json
import math
import os

from ..errors import MGTInputError
from .differential import DifferentialSampling
from .maskgit import LogitTemperature
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

PRESET_KEYS = ("schedule", "temperature", "token_temperature", "noise_regularization", "differential_sampling", "z_sampling")
"""What a model preset may set: the sampler's design choices, never steps, CFG, size or seed."""

_CLASSES = {"noise_regularization": NoiseRegularization, "differential_sampling": DifferentialSampling,
            "z_sampling": ZSampling}


def check_preset(name: str, options: dict) -> dict:
    """A model preset's options, validated (unknown keys, bad values) so errors name the preset."""
    if not isinstance(options, dict):
        raise MGTInputError(f"preset {name!r} must be a JSON object of sampler options, got {options!r}")
    out = {}
    for key, value in options.items():
        if key.startswith("_"):  # comments such as "_measured"
            continue
        if key not in PRESET_KEYS:
            raise MGTInputError(f"preset {name!r}: unknown option {key!r}; presets set {', '.join(PRESET_KEYS)}")
        if key == "temperature":
            vals = value if isinstance(value, (list, tuple)) else [value]
            if len(vals) not in (1, 2) or not all(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in vals):
                raise MGTInputError(f"preset {name!r}: temperature must be a number or a [start, end] pair >= 0")
            value = tuple(float(v) for v in vals) if isinstance(value, (list, tuple)) else float(value)
        elif key == "token_temperature":
            try:
                LogitTemperature.token_temperature(value if isinstance(value, (int, float)) else None)
            except MGTInputError:
                raise MGTInputError(f"preset {name!r}: token_temperature must be a number > 0 (1 = the reference)") from None
            value = float(value)
        elif key == "schedule":
            from .schedules import get_schedule

            get_schedule(value)  # raises with the schedule's own message
        elif value is not None and value is not False:
            try:
                _CLASSES[key](**(value if isinstance(value, dict) else {}))
            except TypeError as e:
                raise MGTInputError(f"preset {name!r}: {key} options {value!r} are not valid ({e})") from None
        out[key] = value
    return out


def preset(name: str, model_presets: dict | None = None) -> dict:
    """Options of a preset: the model's own (``model_presets``) first, then the built-in ones."""
    if model_presets and name in model_presets:
        return check_preset(name, model_presets[name])
    if name not in PRESETS:
        known = [*(model_presets or {}), *PRESETS]
        raise MGTInputError(f"unknown preset {name!r}; choose one of {', '.join(known)}")
    return dict(PRESETS[name])


def read_model_presets(folder: str) -> dict[str, dict]:
    """The ``"presets"`` object of ``<folder>/mgt_defaults.json`` ({} if there is none)."""
    path = os.path.join(folder, "mgt_defaults.json")
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    presets = data.get("presets", {}) if isinstance(data, dict) else {}
    return presets if isinstance(presets, dict) else {}


def save_model_preset(folder: str, name: str, options: dict) -> str:
    """Add or replace preset ``name`` in ``<folder>/mgt_defaults.json``, keeping everything else."""
    if not name or name in PRESETS or not all(c.isalnum() or c in "-_.+" for c in name):
        raise MGTInputError(f"preset name {name!r}: use letters, digits and - _ . + and not a built-in name")
    check_preset(name, options)
    path = os.path.join(folder, "mgt_defaults.json")
    data = {}
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    data.setdefault("presets", {})[name] = options
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    return path

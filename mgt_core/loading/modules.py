"""Strict loading of safetensors weights into a module built on the meta device.

The module is constructed under ``torch.device("meta")`` (no memory), every key and shape is
checked against the files first (one clear error listing what is missing, unexpected or of the
wrong shape), then tensors are read one by one in the target dtype/device and assigned.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..errors import MGTLoadError
from .safetensors_io import SafetensorsFile


def _listing(keys: Sequence[str], n: int = 3) -> str:
    keys = sorted(keys)
    more = f", ... {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def check_keys(
    expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]], source: str, hint: str = ""
) -> None:
    """Raise one MGTLoadError naming missing/unexpected keys and shape mismatches."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    wrong = [k for k in expected if k in found and tuple(found[k]) != tuple(expected[k])]
    if not (missing or unexpected or wrong):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys ({_listing(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys ({_listing(unexpected)})")
    if wrong:
        k = sorted(wrong)[0]
        parts.append(
            f"{len(wrong)} shape mismatches (e.g. {k}: file {list(found[k])}, model {list(expected[k])})"
        )
    raise MGTLoadError(f"{source}: " + "; ".join(parts) + (f"; {hint}" if hint else ""))


def load_module(
    module: nn.Module,
    files: Sequence[str | os.PathLike | SafetensorsFile],
    *,
    dtype: torch.dtype | None,
    device: torch.device | str,
    rename: Callable[[str], str | None] | None = None,
    hint: str = "",
) -> nn.Module:
    """Fill a meta-device ``module`` from safetensors ``files`` (strict) and return it in eval mode.

    ``rename`` maps a file key to a module key, or to None to skip it (e.g. a full CLIP file's
    vision tower).
    """
    files = [f if isinstance(f, SafetensorsFile) else SafetensorsFile(f) for f in files]
    source = ", ".join(os.path.basename(os.path.dirname(f.path)) + "/" + os.path.basename(f.path) for f in files)
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    owners: dict[str, tuple[SafetensorsFile, str]] = {}
    for f in files:
        for key in f.tensors:
            name = rename(key) if rename else key
            if name is not None:
                owners[name] = (f, key)
    check_keys(expected, {k: f.tensors[fk].shape for k, (f, fk) in owners.items()}, source, hint)
    state: dict[str, torch.Tensor] = {}
    for f in files:
        back = {fk: k for k, (ff, fk) in owners.items() if ff is f}
        for fk, tensor in f.read(back, dtype=dtype, device=device):
            state[back[fk]] = tensor
    module.load_state_dict(state, strict=True, assign=True)
    return module.eval().requires_grad_(False)


def meta_module(builder: Callable[[], nn.Module]) -> nn.Module:
    """Construct a module without allocating its weights."""
    with torch.device("meta"):
        return builder()


def param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())

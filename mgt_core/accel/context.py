"""Small pieces the accelerators share: which CFG half a model call holds, and weight-sharing clones.

The CFG batch of :class:`~mgt_core.models.meissonic.denoiser.MeissonicDenoiser` is [uncond; cond]
with equal halves. Per-half activation scales (SCQ) need to know whether a call holds both halves
or one branch; the denoiser says so with :func:`cfg_branches` around each model call. A context
variable (not a model attribute) keeps this out of the model's state.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import nn

from ..errors import MGTInputError

BRANCHES = ("both", "cond", "uncond")
_branches: ContextVar[str | None] = ContextVar("mgt_cfg_branches", default=None)


@contextmanager
def cfg_branches(branches: str) -> Iterator[None]:
    """Model calls inside hold ``"both"`` halves ([uncond; cond]), only ``"cond"`` or only ``"uncond"`` rows."""
    if branches not in BRANCHES:
        raise MGTInputError(f"branches must be one of {BRANCHES}, got {branches!r}")
    token = _branches.set(branches)
    before, _mirror[0] = _mirror[0], branches
    try:
        yield
    finally:
        _branches.reset(token)
        _mirror[0] = before


_mirror: list[str | None] = [None]
"""The same value as a plain global: torch.compile cannot trace ContextVar.get, but it guards on a
global's value (at most one graph per value). Compiled regions run in the thread that set it."""


def current_branches() -> str | None:
    """The innermost :func:`cfg_branches` value, or None outside any (then even batches count as CFG halves)."""
    if torch.compiler.is_compiling():
        return _mirror[0]
    return _branches.get()


def shared_clone(module: nn.Module) -> nn.Module:
    """A copy of the module tree that shares every parameter and buffer tensor with ``module``.

    Patching the clone (swapping block classes, replacing Linear layers) leaves the original
    untouched, at no weight memory: what a ComfyUI node needs, since it must never patch its input.
    """
    new = copy.copy(module)
    for key, value in list(vars(new).items()):
        if isinstance(value, (dict, set, list)):  # _parameters, _buffers, hook dicts, ... are per module
            setattr(new, key, copy.copy(value))
    new._modules = {k: (shared_clone(m) if m is not None else None) for k, m in module._modules.items()}
    return new

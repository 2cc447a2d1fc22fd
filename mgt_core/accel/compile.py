"""Compiled inference: ``torch.compile`` per transformer block (regional), with a clean eager fallback.

Why regional: the 42 blocks of Meissonic are two classes, so compiling the block forward (not the
whole model) traces two graphs that every block of the class reuses; compile time is a fraction of
a whole-model compile and the speed-up is the same (the issue 13 measurements). Python state of the
accelerators (TomeMGT's per-forward matching, the CFG-half context of SCQ) stays outside the
compiled regions: they call the compiled bodies with plain tensors.

The compiled callables live in a process-wide cache keyed by (function, settings), so every model
(and every weight-sharing clone a node makes per run) reuses them: no recompile across runs. The
step value enters the blocks as a tensor (the time embedding), so a new step never recompiles; a
new image size or batch recompiles once, then ``dynamic=None`` (torch's automatic dynamic shapes)
keeps the sizes symbolic.

Where no compiler can run (CPU without a C++ compiler, CUDA without Triton, MPS) :func:`enable_compile`
returns the reason and the model stays eager; a compile that fails at run time falls back to eager
once, with a warning that says why.
"""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import MGTInputError

log = logging.getLogger("mgt")

BACKENDS = ("inductor", "aot_eager", "eager")
"""``inductor`` generates kernels (the speed-up); the other two check tracing only (tests, debugging)."""
MODES = (None, "default", "max-autotune-no-cudagraphs")
EAGER_REGION = "_mgt_eager_region"
"""Attribute that marks a block forward which must run eagerly (it calls compiled regions itself)."""


@dataclass(frozen=True)
class CompileSettings:
    backend: str = "inductor"
    mode: str | None = None
    dynamic: bool | None = None  # None: specialise first, mark a dimension dynamic once it changes
    fullgraph: bool = False

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise MGTInputError(f"compile backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.mode not in MODES:
            raise MGTInputError(f"compile mode must be one of {MODES}, got {self.mode!r}")


def _has_cxx() -> bool:
    names = [os.environ.get("CXX"), "g++", "c++", "clang++"]
    return any(n and shutil.which(n) for n in names)


def _has_triton() -> bool:
    try:
        from torch.utils._triton import has_triton

        return bool(has_triton())
    except Exception:  # an old or stripped torch: no way to ask, so no
        return False


def compile_unavailable(device: torch.device | str, backend: str = "inductor") -> str | None:
    """None when ``backend`` can compile for ``device``; otherwise why not, in one sentence."""
    device = torch.device(device)
    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile"
    if backend != "inductor":
        return None
    if device.type == "cpu" and not _has_cxx():
        return "no C++ compiler found (set CXX or install g++/clang++); torch.compile's CPU backend needs one"
    if device.type == "cuda" and not _has_triton():
        return "Triton is not installed; torch.compile's GPU backend needs it (pip install triton)"
    if device.type not in ("cpu", "cuda"):
        return f"torch.compile is not supported for {device.type} devices here"
    return None


_COMPILED: dict[tuple[Callable, CompileSettings], Callable] = {}


def compiled(fn: Callable, settings: CompileSettings) -> Callable:
    """The process-wide compiled version of ``fn`` under ``settings`` (created on first use)."""
    key = (fn, settings)
    if key not in _COMPILED:
        opts = {} if settings.mode in (None, "default") else {"mode": settings.mode}
        _COMPILED[key] = torch.compile(
            fn, backend=settings.backend, dynamic=settings.dynamic, fullgraph=settings.fullgraph, **opts
        )
    return _COMPILED[key]


class RegionCompiler:
    """Runs a function compiled (``compiler(fn, *args)``), or eagerly once compiling has failed."""

    def __init__(self, settings: CompileSettings):
        self.settings = settings
        self.failed: str | None = None

    def __call__(self, fn: Callable, *args):
        if self.failed is not None or getattr(fn, EAGER_REGION, False):
            return fn(*args)
        try:
            return compiled(fn, self.settings)(*args)
        except Exception as e:  # noqa: BLE001 - see below: a real error fails again, eagerly
            out = fn(*args)  # an error of the code itself raises here, as without compile
            self.failed = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:300]
            msg = f"MGT: torch.compile failed ({self.failed}); running eagerly from now on"
            log.warning(msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
            return out

    def __repr__(self) -> str:
        state = f", failed={self.failed!r}" if self.failed else ""
        return f"RegionCompiler({self.settings}{state})"


def enable_compile(
    model: torch.nn.Module,
    *,
    backend: str = "inductor",
    mode: str | None = None,
    dynamic: bool | None = None,
    device: torch.device | str | None = None,
) -> str | None:
    """Run ``model``'s transformer blocks compiled from its next forward on; returns None, or the
    reason compiling is impossible on ``device`` (default: the model's), leaving the model eager.

    Patches only an attribute of ``model`` (patch a :func:`~.context.shared_clone` to keep the
    original eager); compiled code is shared by every model with the same settings.
    """
    settings = CompileSettings(backend, mode, dynamic)
    if not hasattr(model, "_mgt_compiler"):
        raise MGTInputError(f"compiled inference needs a MeissonicTransformer, got {type(model).__name__}")
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    reason = compile_unavailable(dev, backend)
    if reason is not None:
        msg = f"MGT: compiled inference is off on {dev.type}: {reason}; running eagerly"
        log.warning(msg)
        model._mgt_compiler = None
        return reason
    _raise_recompile_limit()
    model._mgt_compiler = RegionCompiler(settings)
    return None


RECOMPILE_LIMIT = 64


def _raise_recompile_limit() -> None:
    """Graphs per block forward: (plain, TomeMGT, each SCQ mode) x (CFG batch, one branch) x (first size,
    dynamic) x branch values exceed torch's default of 8, past which it silently runs a new variant
    eagerly. Only ever raised, never lowered (it is process-wide)."""
    cfg = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if isinstance(getattr(cfg, name, None), int) and getattr(cfg, name) < RECOMPILE_LIMIT:
            setattr(cfg, name, RECOMPILE_LIMIT)
            break


def disable_compile(model: torch.nn.Module) -> torch.nn.Module:
    model._mgt_compiler = None
    return model


def compile_status(model: torch.nn.Module) -> str:
    """'eager', 'compiled (<backend>)' or 'eager (compile failed: ...)', for logs and benches."""
    c = getattr(model, "_mgt_compiler", None)
    if c is None:
        return "eager"
    if c.failed:
        return f"eager (compile failed: {c.failed})"
    return f"compiled ({c.settings.backend})"

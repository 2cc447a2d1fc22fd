"""Reading the released MaskGIT pickles safely: ``torch.load(weights_only=True)`` and nothing else.

The released ``.pth``/``.ckpt``/``.pt`` files are pickles that also carry optimizer state. A pickle
can name any Python callable and have it run while loading; the weights-only unpickler refuses
every global outside torch's allowlist of tensor/container types *before* calling it, so a file
that needs more is refused with the globals it names and nothing in it runs. The one addition to
the allowlist is ``argparse.Namespace`` (LlamaGen's trainer stores its ``args`` beside the weights):
it is rebuilt as a bare attribute bag, without calling any of its methods.

From the loaded object we keep the model state (``model_state_dict``, else ``state_dict``, else
``model``), strip ``module.`` / ``_orig_mod.`` and taming's ``loss.*``, and drop everything else.
safetensors files (e.g. converted folders or LlamaGen's safetensors twin) are read as well.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pickle
import re
import zipfile

import torch

from ..errors import MGTLoadError
from .safetensors_io import SafetensorsFile

PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
STATE_KEYS = ("model_state_dict", "state_dict", "model")
SAFE_EXTRA_GLOBALS = [argparse.Namespace]
_PREFIXES = ("module.", "_orig_mod.")


class UnsafeCheckpointError(MGTLoadError):
    """The file needs more than weights-only unpickling; it was not loaded and nothing in it ran."""


def _refusal(path: str, error: Exception) -> UnsafeCheckpointError:
    names: list[str] = []
    try:  # lists the globals of a zip checkpoint from its pickle opcodes, without unpickling anything
        names = list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # noqa: BLE001 - legacy/non-torch pickles: fall back to the unpickler's message
        pass
    found = re.findall(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
    names = sorted(set(names) | set(found))
    allowed = {f"{g.__module__}.{g.__qualname__}" for g in SAFE_EXTRA_GLOBALS}
    names = [n for n in names if n not in allowed and not any(m.endswith("." + n) for m in names)]
    what = f"it references {', '.join(names)}" if names else f"the weights-only unpickler stopped: {_first_line(error)}"
    return UnsafeCheckpointError(
        f"{path}: refused: this file needs more than weights-only unpickling ({what}). Nothing in it was run. "
        "Pickles can execute code when loaded, so only files holding plain tensors and containers are read. "
        "If you trust its source, re-save just its model state with torch.save (or convert it to safetensors) "
        "in an environment you are willing to risk, and load that instead."
    )


def _first_line(error: Exception) -> str:
    text = str(error)
    m = re.search(r"WeightsUnpickler error: *\n*\s*(.+)", text)
    return (m.group(1) if m else text.splitlines()[0] if text else type(error).__name__).strip()


@contextlib.contextmanager
def _allowed_extra_globals():
    """``safe_globals`` scopes the allowance to this call (torch >= 2.5); older torch lacks it and then
    refuses files that store an ``argparse.Namespace`` (the refusal message says so)."""
    scoped = getattr(torch.serialization, "safe_globals", None)
    if scoped is None:
        yield
        return
    with scoped(SAFE_EXTRA_GLOBALS):
        yield


def load_pickle(path: str | os.PathLike) -> object:
    """``torch.load(path, weights_only=True)`` on the CPU (memory-mapped when the format allows), with
    refusals and damaged files turned into :class:`MGTLoadError` naming the file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MGTLoadError(f"{path}: file not found")
    mmap = zipfile.is_zipfile(path)  # only the zip format can be memory-mapped; optimizer state then stays on disk
    try:
        with _allowed_extra_globals():
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        raise _refusal(path, e) from None
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile, OSError) as e:
        raise MGTLoadError(f"{path}: cannot read this checkpoint ({_first_line(e)}); truncated or not a torch file?") from None


def extract_state(obj: object, source: str) -> dict[str, torch.Tensor]:
    """The model tensors of a loaded checkpoint, prefixes stripped, training-only entries dropped."""
    state = obj
    if isinstance(obj, dict):
        for key in STATE_KEYS:
            if isinstance(obj.get(key), dict):
                state = obj[key]
                break
    if not isinstance(state, dict) or not state:
        raise MGTLoadError(f"{source}: no model state found (looked for {', '.join(STATE_KEYS)} or a flat tensor dict)")
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            continue
        name = key
        while name.startswith(_PREFIXES):
            name = name.split(".", 1)[1]
        name = name.replace("._orig_mod.", ".").replace(".module.", ".")
        if name.startswith("loss."):  # taming's discriminator / LPIPS, training only
            continue
        out[name] = value
    if not out:
        raise MGTLoadError(f"{source}: the model state holds no tensors")
    return out


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Model tensors of a released pickle (weights-only) or of a safetensors file, on the CPU."""
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        return dict(SafetensorsFile(path).read())
    return extract_state(load_pickle(path), path)

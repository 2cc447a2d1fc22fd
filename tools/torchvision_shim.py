"""Let the CUDA build of torchvision (the only one on PyPI) import on CPU torch.

Its ``_C`` extension needs CUDA torch, so ``torchvision._meta_registrations`` fails with
"operator torchvision::nms does not exist" and takes ``import torchvision`` (and ComfyUI, which
imports it at top level) down with it. This finder replaces that one module with an empty one,
and only when torchvision reports it has no compiled ops. Transforms keep working; only
``torchvision.ops`` kernels (nms, roi_align, ...) raise if called, and no node here calls them.

Installed by ``tools/launch_comfy.py`` and, as a ``.pth`` hook, into the env by ``tools/mgt.py``.
"""

import importlib.abc
import importlib.machinery
import sys

_TARGET = "torchvision._meta_registrations"


class TorchvisionCpuShim(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    mgt_torchvision_shim = True  # marker: install() stays idempotent across copies of this file

    def find_spec(self, name, path=None, target=None):
        if name != _TARGET:
            return None
        ext = sys.modules.get("torchvision.extension")
        if ext is None or ext._has_ops():
            return None  # a working build: import the real module
        return importlib.machinery.ModuleSpec(name, self)

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        pass


def install() -> None:
    if not any(getattr(f, "mgt_torchvision_shim", False) for f in sys.meta_path):
        sys.meta_path.insert(0, TorchvisionCpuShim())


install()

"""Schema features that differ between the ComfyUI versions the pack supports, detected once here.

ComfyUI 0.30.0's V3 inputs take ``advanced=`` (the widget folds into the node's "advanced" section);
0.3.75's do not, and an unknown keyword there makes the whole pack fail to import. Nodes spread
``**ADVANCED`` instead of passing the keyword, so they register on both.
"""

from __future__ import annotations

import inspect

from comfy_api.latest import io


def _accepts(cls, name: str) -> bool:
    try:
        return name in inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):  # builtins without a signature: be conservative
        return False


ADVANCED: dict = {"advanced": True} if _accepts(io.Boolean.Input, "advanced") else {}
"""Keyword arguments marking an input as advanced where the running ComfyUI knows the notion."""

"""mgt_core: masked generative transformers (Meissonic, Monetico, MaskGIT) in plain PyTorch.

Never imports ComfyUI; the ComfyUI nodes in ``nodes/`` are thin adapters over this library.
"""

from .errors import MGTError, MGTInputError, MGTLoadError

__version__ = "0.1.0"

__all__ = ["MGTError", "MGTInputError", "MGTLoadError", "__version__"]

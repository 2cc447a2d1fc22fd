"""mgt_core: masked generative transformers (Meissonic, Monetico, MaskGIT) in plain PyTorch.

Never imports ComfyUI; the ComfyUI nodes in ``nodes/`` are thin adapters over this library.
"""

from .errors import MGTError, MGTInputError, MGTLoadError
from .loading.pipeline import load_pipeline
from .maskgit_pipeline import MaskGITPipeline
from .pipeline import MGTPipeline

__version__ = "0.1.0"

__all__ = [
    "MGTError", "MGTInputError", "MGTLoadError", "MGTPipeline", "MaskGITPipeline", "__version__", "load_pipeline",
]

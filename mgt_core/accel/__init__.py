"""Efficient inference: TomeMGT token merging (:mod:`.tome`) and SCQ quantization (:mod:`.quant`).

Pure PyTorch; both patch a :class:`~mgt_core.models.meissonic.MeissonicTransformer` in place, so
patch a :func:`shared_clone` when the caller's model must stay as it is.
"""

from .context import cfg_branches, shared_clone
from .tome import TomeConfig, apply_tome, remove_tome, tome_generation, tome_patched, transformer_macs

__all__ = [
    "TomeConfig", "apply_tome", "cfg_branches", "remove_tome", "shared_clone", "tome_generation", "tome_patched",
    "transformer_macs",
]

"""Efficient inference: TomeMGT token merging (:mod:`.tome`) and SCQ quantization (:mod:`.quant`).

Pure PyTorch; both patch a :class:`~mgt_core.models.meissonic.MeissonicTransformer` in place, so
patch a :func:`shared_clone` when the caller's model must stay as it is.
"""

from .context import cfg_branches, shared_clone
from .quant import (
    ActivationRule,
    QATBatch,
    QuantLinear,
    calibrate,
    calibration,
    freeze,
    load_quantized_transformer,
    qat_finetune,
    quantize_model,
    quantized_variants,
    run_scq,
    save_quantized,
    secondary_calibration,
    weight_bytes,
)
from .tome import TomeConfig, apply_tome, remove_tome, tome_generation, tome_patched, transformer_macs

__all__ = [
    "ActivationRule", "QATBatch", "QuantLinear", "TomeConfig", "apply_tome", "calibrate", "calibration",
    "cfg_branches", "freeze", "load_quantized_transformer", "qat_finetune", "quantize_model", "quantized_variants",
    "remove_tome", "run_scq", "save_quantized", "secondary_calibration", "shared_clone", "tome_generation", "tome_patched",
    "transformer_macs", "weight_bytes",
]

"""Halton-MaskGIT as a sampler Denoiser: the same class-conditional adapter as MaskGIT v1
(:class:`~mgt_core.models.maskgit.denoiser.MaskGITDenoiser`); the unconditional branch is the
class row ``nclass`` of ``cls_emb`` (the label the model was trained with when dropped)."""

from __future__ import annotations

from ..maskgit.denoiser import MaskGITDenoiser


class HaltonDenoiser(MaskGITDenoiser):
    """K = 16384 codes by default; ``mask_logit=True`` keeps the 16385th (mask) column."""

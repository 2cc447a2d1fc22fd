"""MaskGITPipeline: class labels -> tokens -> image, for MaskGIT v1 and Halton-MaskGIT.

Holds the transformer, its VQGAN and :class:`~mgt_core.loading.maskgit.MaskGITInfo` (family and the
authors' sampler settings). The model half lives here (denoiser, decode, encode); the family
samplers build on :meth:`MaskGITPipeline.denoiser`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .errors import MGTInputError
from .loading.maskgit import MaskGITInfo
from .models.maskgit.denoiser import MaskGITDenoiser
from .models.vq.vqgan import VQGAN


def images_to_tensor(images: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] in [0, 1] -> [B, H, W, 3] float32 on the CPU (ComfyUI's IMAGE layout)."""
    return images.float().permute(0, 2, 3, 1).cpu().contiguous()


@dataclass
class MaskGITPipeline:
    transformer: nn.Module  # MaskGITTransformer | HaltonTransformer
    vq: VQGAN
    info: MaskGITInfo

    @property
    def family(self) -> str:
        return self.info.family

    @property
    def device(self) -> torch.device:
        return self.transformer.device

    @property
    def factor(self) -> int:
        return self.vq.factor

    @property
    def grid(self) -> tuple[int, int]:
        """The token grid (fixed: the position embeddings are learned per position)."""
        return self.transformer.grid

    @property
    def mask_id(self) -> int:
        return self.transformer.mask_id

    @property
    def num_classes(self) -> int:
        return self.transformer.config.nclass

    def denoiser(self, labels, mask_logit: bool = False) -> MaskGITDenoiser:
        """The sampler engine's Denoiser for these class labels (ints, [B])."""
        return MaskGITDenoiser(self.transformer, labels, mask_logit=mask_logit)

    def decode(self, tokens: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        """Tokens [B, L] or [B, h, w] -> image [B, H, W, 3] float32 in [0, 1] on the CPU.

        Ids are clamped to the codebook first, as both reference samplers do (a mask id left in
        the grid decodes as the last code instead of failing).
        """
        if tokens.ndim == 2:
            h, w = grid or self.grid
            if tokens.shape[1] != h * w:
                raise MGTInputError(f"{tokens.shape[1]} tokens per image do not fill a {h}x{w} grid")
            tokens = tokens.view(tokens.shape[0], h, w)
        if tokens.ndim != 3:
            raise MGTInputError(f"tokens must be [B, L] or [B, h, w], got {list(tokens.shape)}")
        with torch.inference_mode():
            ids = tokens.to(self.vq.device, torch.long).clamp(0, self.vq.codebook_size - 1)
            return images_to_tensor(self.vq.decode(ids))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Image [B, H, W, 3] in [0, 1] -> tokens [B, h, w]."""
        if images.ndim != 4 or images.shape[-1] != 3:
            raise MGTInputError(f"images must be [B, H, W, 3], got {list(images.shape)}")
        with torch.inference_mode():
            return self.vq.encode(images.permute(0, 3, 1, 2))

"""Cheap live previews of a token grid, the token analogue of ComfyUI's latent2rgb previews.

A linear map from codebook vectors to RGB is fitted once per VQ model by decoding one small grid
of random codes and regressing each token cell's mean colour on its code vector. A preview is
then one matrix product per step instead of a VQ decode.
"""

from __future__ import annotations

import torch

from .models.vq.vqmodel import VQModel


class TokenPalette:
    """RGB colour for every code (plus grey for the mask token)."""

    def __init__(self, colours: torch.Tensor):
        self.colours = colours  # [K, 3] float in [0, 1]

    @classmethod
    @torch.no_grad()
    def fit(cls, vq: VQModel, grid: int = 8, seed: int = 0) -> TokenPalette:
        g = torch.Generator().manual_seed(seed)
        k = getattr(vq.config, "num_vq_embeddings", None) or vq.config.n_embed  # VQModel or MaskGIT's VQGAN
        ids = torch.randint(0, k, (2, grid, grid), generator=g)
        dev = vq.post_quant_conv.weight.device
        img = vq.decode(ids.to(dev)).float().cpu()  # [2, 3, H, W]
        f = vq.factor
        cell = img.unfold(2, f, f).unfold(3, f, f).mean((-1, -2))  # [2, 3, grid, grid]
        target = cell.permute(0, 2, 3, 1).reshape(-1, 3)
        book = vq.quantize.embedding.weight.float().cpu()
        x = torch.cat([book[ids.reshape(-1)], torch.ones(target.shape[0], 1)], 1)
        ridge = 1e-3 * torch.eye(x.shape[1])
        w = torch.linalg.solve(x.T @ x + ridge, x.T @ target)
        colours = (torch.cat([book, torch.ones(k, 1)], 1) @ w).clamp(0, 1)
        return cls(colours)

    def image(self, tokens: torch.Tensor, grid: tuple[int, int], scale: int = 8) -> torch.Tensor:
        """Tokens [L] (one image) -> uint8 [h*scale, w*scale, 3]; masked positions are grey."""
        t = tokens.reshape(grid).cpu()
        k = self.colours.shape[0]
        rgb = torch.full((*grid, 3), 0.5)
        known = t < k
        rgb[known] = self.colours[t[known]]
        rgb = rgb.repeat_interleave(scale, 0).repeat_interleave(scale, 1)
        return (rgb * 255).round().to(torch.uint8)

"""MaskGIT (v1 and Halton) as a sampler :class:`~mgt_core.sampling.engine.Denoiser`.

The conditioning is a class label per image; the unconditional branch is the same label with
``drop`` set (v1: the "no class" token, Halton: its drop row of ``cls_emb``). Under CFG one forward
holds [uncond; cond]. Logits come back channel-first, [B, K, h, w], with K = codebook size: the
mask column the networks also predict is dropped (so it can never be sampled), unless
``mask_logit=True`` keeps it (K = codebook + 1) for reproducing the reference samplers, which
softmax over it too.
"""

from __future__ import annotations

import torch
from torch import nn

from ...accel.context import cfg_branches
from ...errors import MGTInputError


class MaskGITDenoiser:
    def __init__(self, transformer: nn.Module, labels: torch.Tensor | list[int], mask_logit: bool = False):
        self.model = transformer
        self.grid: tuple[int, int] = transformer.grid
        self.mask_id: int = transformer.mask_id
        self.codebook_size: int = transformer.config.codebook_size
        self.mask_logit = mask_logit
        labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        nclass = transformer.config.nclass
        if labels.numel() == 0:
            raise MGTInputError("at least one class label is needed")
        if int(labels.min()) < 0 or int(labels.max()) >= nclass:
            raise MGTInputError(f"class labels must lie in [0, {nclass - 1}], got {labels.tolist()}")
        self.labels = labels.to(transformer.device)
        n = len(self.labels)
        self._drop = {
            "cond": torch.zeros(n, dtype=torch.bool, device=transformer.device),
            "uncond": torch.ones(n, dtype=torch.bool, device=transformer.device),
        }

    def __len__(self) -> int:
        return len(self.labels)

    def _forward(self, tokens: torch.Tensor, labels: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
        b, h, w = tokens.shape
        if (h, w) != tuple(self.grid):
            raise MGTInputError(f"this model samples a {self.grid[0]}x{self.grid[1]} token grid, got {h}x{w}")
        logits = self.model(tokens, labels, drop)  # [B, h*w, codebook + 1]
        if not self.mask_logit:
            logits = logits[..., : self.codebook_size]
        return logits.transpose(1, 2).reshape(b, -1, h, w)

    def __call__(self, tokens: torch.Tensor, t: int, branches: str):
        """tokens [B, h, w] (B = number of labels); ``t`` is unused (MaskGIT has no timestep input)."""
        if tokens.shape[0] != len(self.labels):
            raise MGTInputError(f"{tokens.shape[0]} token grids for {len(self.labels)} class labels")
        with cfg_branches(branches):
            if branches == "both":
                both = torch.cat([self._drop["uncond"], self._drop["cond"]])
                out = self._forward(torch.cat([tokens, tokens]), torch.cat([self.labels, self.labels]), both)
                return tuple(out.chunk(2))
            out = self._forward(tokens, self.labels, self._drop[branches])
            return (None, out) if branches == "cond" else (out, None)

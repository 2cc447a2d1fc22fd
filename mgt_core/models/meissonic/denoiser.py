"""Meissonic/Monetico as a sampler :class:`~mgt_core.sampling.engine.Denoiser`: the CFG batch is
[uncond; cond] in one forward, with the micro-conditions [width, height, crop_top, crop_left,
aesthetic] of the reference pipeline."""

from __future__ import annotations

import torch

from ...accel.context import cfg_branches
from ...errors import MGTInputError
from ..text import TextConditioning
from .transformer import MeissonicTransformer


class MeissonicDenoiser:
    def __init__(
        self,
        transformer: MeissonicTransformer,
        cond: TextConditioning,
        uncond: TextConditioning | None,
        grid: tuple[int, int],
        image_size: tuple[int, int],
        crop: tuple[int, int] = (0, 0),
        aesthetic: float = 6.0,
    ):
        transformer.check_grid(*grid)
        self.model, self.grid, self.mask_id = transformer, grid, transformer.mask_token_id
        device, dtype = transformer.device, transformer.dtype
        self.cond = cond.to(device, dtype)
        self.uncond = uncond.to(device, dtype) if uncond is not None else None
        if self.uncond is not None and len(self.uncond) != len(self.cond):
            raise MGTInputError(f"{len(self.uncond)} negative prompts for {len(self.cond)} prompts")
        width, height = image_size
        micro = torch.tensor([width, height, crop[0], crop[1], aesthetic], dtype=dtype, device=device)
        self.micro = micro[None].expand(len(cond), -1)
        if self.uncond is not None:
            self.both = (
                torch.cat([self.uncond.hidden, self.cond.hidden]),
                torch.cat([self.uncond.pooled, self.cond.pooled]),
                torch.cat([self.micro, self.micro]),
            )

    def __call__(self, tokens: torch.Tensor, t: int, branches: str):
        with cfg_branches(branches):  # per-CFG-half activation scales (SCQ) read which rows are which
            return self._call(tokens, t, branches)

    def _call(self, tokens: torch.Tensor, t: int, branches: str):
        if branches == "both":
            if self.uncond is None:
                raise MGTInputError("guidance > 1 needs a negative prompt (use \"\" for none)")
            hidden, pooled, micro = self.both
            out = self.model(torch.cat([tokens, tokens]), hidden, pooled, t, micro)
            return tuple(out.chunk(2))
        if branches == "cond":
            return None, self.model(tokens, self.cond.hidden, self.cond.pooled, t, self.micro)
        if self.uncond is None:
            raise MGTInputError("this step needs the negative prompt's conditioning")
        return self.model(tokens, self.uncond.hidden, self.uncond.pooled, t, self.micro), None

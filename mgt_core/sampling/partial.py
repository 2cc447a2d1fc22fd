"""Partial starts: img2img (strength) and inpainting/outpainting (a token mask), section 2.3.

Both return where the loop starts: the initial tokens, the first step index, and the masked
fraction the schedule is scaled by (inpainting; 1 otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import MGTInputError
from .schedules import MaskSchedule


@dataclass(frozen=True)
class Start:
    tokens: torch.Tensor  # [B, L]
    first_step: int
    start_ratio: float = 1.0


def full_mask(batch: int, length: int, mask_id: int, device) -> Start:
    return Start(torch.full((batch, length), mask_id, dtype=torch.long, device=device), 0)


def steps_for_strength(steps: int, strength: float) -> int:
    if not 0.0 < strength <= 1.0:
        raise MGTInputError(f"strength must lie in (0, 1], got {strength}")
    n = int(steps * strength)
    if n < 1:
        raise MGTInputError(f"strength {strength} with {steps} steps runs no step; raise one of them")
    return n


def img2img_start(
    tokens: torch.Tensor, steps: int, strength: float, schedule: MaskSchedule, mask_id: int,
    generator: torch.Generator | None,
) -> Start:
    """Mask each token with the probability the schedule has at the start step (the reference's add_noise).

    strength 1 masks everything (the reference, through cos(pi/2) ~ -4e-8, masked nothing).
    """
    first = steps - steps_for_strength(steps, strength)
    if first == 0:
        return Start(torch.full_like(tokens, mask_id), 0)
    ratio = schedule.ratio_at(first - 1, steps, tokens.shape[1])
    device = generator.device if generator is not None else tokens.device
    drop = torch.rand(tokens.shape, device=device, generator=generator).to(tokens.device) < ratio
    return Start(torch.where(drop, mask_id, tokens), first)


def inpaint_start(tokens: torch.Tensor, token_mask: torch.Tensor, steps: int, strength: float, mask_id: int) -> Start:
    """Set the masked region to MASK; the schedule then counts from that fraction (whole batch, as the reference)."""
    if token_mask.shape != tokens.shape:
        raise MGTInputError(
            f"inpaint mask covers {list(token_mask.shape)} tokens but the image has {list(tokens.shape)}"
        )
    mask = token_mask.to(torch.bool)
    if not mask.any():
        raise MGTInputError("the inpainting mask is empty: nothing to generate")
    first = steps - steps_for_strength(steps, strength)
    ratio = float(mask.sum() / mask.numel())
    return Start(torch.where(mask, mask_id, tokens), first, ratio)


def token_mask_from_pixels(mask: torch.Tensor, grid: tuple[int, int], threshold: float = 0.0) -> torch.Tensor:
    """Pixel mask [B, H, W] (1 = regenerate) -> token mask [B, h, w].

    A token is regenerated when the masked fraction of its cell exceeds ``threshold``; the default 0
    regenerates every token the mask touches, so no masked pixel is left to the old image.
    """
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim != 3:
        raise MGTInputError(f"mask must be [H, W] or [B, H, W], got shape {list(mask.shape)}")
    h, w = grid
    if mask.shape[1] % h or mask.shape[2] % w:
        raise MGTInputError(f"mask size {mask.shape[2]}x{mask.shape[1]} does not split into a {w}x{h} token grid")
    cover = F.adaptive_avg_pool2d(mask[:, None].float(), (h, w))[:, 0]
    return cover > threshold


def start_from_tokens(
    tokens: torch.Tensor, token_mask: torch.Tensor | None, steps: int, strength: float, schedule: MaskSchedule,
    batch: int, mask_id: int, generator: torch.Generator | None,
) -> Start:
    """img2img (no mask) or inpainting (token mask, True = regenerate) from token grids [1 or B, h, w]."""
    if tokens.shape[0] not in (1, batch):
        raise MGTInputError(f"{tokens.shape[0]} init token grids for a batch of {batch}")
    device = generator.device if generator is not None else tokens.device
    flat = tokens.expand(batch, -1, -1).reshape(batch, -1).to(device)
    if token_mask is None:
        return img2img_start(flat, steps, strength, schedule, mask_id, generator)
    if token_mask.shape[0] not in (1, batch):
        raise MGTInputError(f"{token_mask.shape[0]} token masks for a batch of {batch}")
    tmask = token_mask.expand(batch, -1, -1).reshape(batch, -1).to(device)
    return inpaint_start(flat, tmask, steps, strength, mask_id)

"""A picture and a text of a mask schedule, for choosing one before spending sampling time.

Lives here rather than in the node so it runs (and is tested) without ComfyUI.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..errors import MGTInputError
from .schedules import mask_counts

PLOT_SIZE = (384, 256)
"""(width, height) of the preview image."""

_MARGIN = (40, 28, 12, 28)  # left, top, right, bottom
_CURVE = (31, 119, 180)
_GRID = (225, 225, 225)


def plot_mask_fractions(counts: list[int], num_tokens: int, title: str, size: tuple[int, int] = PLOT_SIZE) -> Image.Image:
    """Masked fraction before step 0 (1.0) and after each step, as a line plot."""
    w, h = size
    left, top, right, bottom = _MARGIN
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    x0, x1, y0, y1 = left, w - right, h - bottom, top  # y0 is fraction 0, y1 is fraction 1
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = y0 + (y1 - y0) * frac
        draw.line([(x0, y), (x1, y)], fill=_GRID)
        draw.text((4, y - 6), f"{frac:.2f}", fill="black", font=font)
    draw.rectangle([x0, y1, x1, y0], outline="black")
    fractions = [1.0] + [c / num_tokens for c in counts]
    n = len(fractions) - 1
    points = [(x0 + (x1 - x0) * i / n, y0 + (y1 - y0) * f) for i, f in enumerate(fractions)]
    draw.line(points, fill=_CURVE, width=2)
    if n <= 64:
        for x, y in points:
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=_CURVE)
    draw.text((x0, 6), title, fill="black", font=font)
    draw.text((x0, y0 + 6), "0", fill="black", font=font)
    last = f"step {n}"
    draw.text((x1 - draw.textlength(last, font=font), y0 + 6), last, fill="black", font=font)
    return img


def image_to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL RGB -> ComfyUI IMAGE layout [1, H, W, 3], float32 in [0, 1]."""
    return torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0)[None]


def schedule_preview(spec: str, steps: int, num_tokens: int) -> tuple[torch.Tensor, str]:
    """(plot as IMAGE tensor, counts as a comma list) for any schedule spec ``mask_counts`` takes.

    The text is itself a valid custom schedule (a table of counts), so it can be edited and fed back.
    """
    if not spec.strip():
        raise MGTInputError("schedule is 'custom' but no expression was given: enter e.g. cos(pi/2*r) or a comma table")
    counts = mask_counts(spec, steps, num_tokens)
    title = f"{spec.strip()[:40]}  steps={steps}  tokens={num_tokens}"
    img = plot_mask_fractions(counts, num_tokens, title)
    return image_to_tensor(img), ", ".join(str(c) for c in counts)

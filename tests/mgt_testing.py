"""Shared helpers for the unit tests: tiny random models in the real folder layout, fake denoisers."""

from __future__ import annotations

import torch

from mgt_core.demo.tokenizer import write_tokenizer
from mgt_core.loading.export import save_model_folder
from mgt_core.models.configs import tiny_clip_text, tiny_transformer, tiny_vq
from mgt_core.models.meissonic import MeissonicTransformer
from mgt_core.models.text import build_clip_text
from mgt_core.models.vq import VQModel


def randomize(module: torch.nn.Module, seed: int, std: float = 0.2) -> torch.nn.Module:
    """Non-trivial weights (default inits leave norms at 1 and biases at 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)
    return module


def make_tiny_folder(folder, downsample: bool = True, seed: int = 0, defaults: dict | None = None) -> str:
    torch.manual_seed(seed)
    tc, vc, cc = tiny_transformer(downsample), tiny_vq(), tiny_clip_text()
    t = randomize(MeissonicTransformer.from_config(tc), seed)
    v = randomize(VQModel.from_config(vc), seed + 1, std=0.05)
    c = randomize(build_clip_text(cc), seed + 2, std=0.05)
    save_model_folder(
        str(folder), transformer=t, transformer_config=tc, vq=v, vq_config=vc, text_encoder=c, text_config=cc,
        tokenizer_writer=write_tokenizer,
        defaults=defaults or {"steps": 6, "guidance_scale": 3.0, "width": 32, "height": 32, "negative_prompt": ""},
    )
    return str(folder)


class FakeDenoiser:
    """Seeded random logits per (step value, branch), independent of the tokens; counts calls."""

    def __init__(self, batch: int, grid: tuple[int, int], codebook: int = 16, seed: int = 0, scale: float = 3.0,
                 channels_last: bool = False):
        self.grid, self.mask_id, self.batch, self.codebook = grid, codebook + 3, batch, codebook
        self.seed, self.scale, self.calls = seed, scale, []
        self.channels_last = channels_last  # the real transformer's layout: a [B, h, w, K] permute

    def logits(self, t: int, branch: int, rows: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1000 + t * 2 + branch)
        out = torch.randn(rows, self.codebook, *self.grid, generator=g) * self.scale
        return out.contiguous(memory_format=torch.channels_last) if self.channels_last else out

    def __call__(self, tokens: torch.Tensor, t: int, branches: str):
        assert tokens.shape[1:] == self.grid
        self.calls.append((t, branches))
        b = tokens.shape[0]
        lu = self.logits(t, 0, b) if branches in ("both", "uncond") else None
        lc = self.logits(t, 1, b) if branches in ("both", "cond") else None
        return lu, lc


class ExplodingDenoiser(FakeDenoiser):
    """Fails if called: proves that bad input is rejected before any model call."""

    def __call__(self, tokens, t, branches):
        raise AssertionError("the model was called before the input was validated")


def mean_brightness(image, prompt: str) -> float:
    """A stand-in for a user's image-prompt scorer (HPS, CLIP...): any callable works with the tuner."""
    return float(image.mean())

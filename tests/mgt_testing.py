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


def optimizer_state(module: torch.nn.Module) -> dict:
    """A real Adam state after one step, as the trainers save it."""
    module.requires_grad_(True)
    opt = torch.optim.Adam(module.parameters(), lr=1e-4)
    for p in module.parameters():
        p.grad = torch.ones_like(p) * 1e-3
    opt.step()
    opt.zero_grad()
    module.requires_grad_(False)
    return opt.state_dict()


def save_released_v1(model: torch.nn.Module, path, legacy: bool = False, optimizer: dict | None = None):
    """``model`` as MaskGIT-pytorch v1 saves it: DDP ``module.`` keys, iteration counters, optimizer state."""
    obj = {"iter": 1000, "global_epoch": 3, "model_state_dict": {"module." + k: v for k, v in model.state_dict().items()},
           "optimizer_state_dict": optimizer if optimizer is not None else optimizer_state(torch.nn.Linear(3, 3))}
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path


def save_released_taming(vq: torch.nn.Module, path):
    """``vq`` as taming's Lightning ``last.ckpt``: its state plus the loss networks, callbacks, optimizer states."""
    sd = dict(vq.state_dict())
    sd["loss.discriminator.main.0.weight"] = torch.randn(8, 3, 4, 4)
    sd["loss.perceptual_loss.net.slice1.0.weight"] = torch.randn(8, 3, 3, 3)
    obj = {"epoch": 4, "global_step": 1234, "pytorch-lightning_version": "1.0.8", "state_dict": sd,
           "callbacks": {"ModelCheckpoint": {"best_model_score": torch.tensor(0.5), "best_model_path": "x.ckpt"}},
           "optimizer_states": [optimizer_state(torch.nn.Linear(3, 3)), optimizer_state(torch.nn.Linear(3, 3))],
           "lr_schedulers": []}
    torch.save(obj, path)
    return path


MASKGIT_FILES = ("maskgit/MaskGIT_ImageNet_tiny.pth", "maskgit/last.ckpt")
"""Where ``comfy_models`` puts the released-style MaskGIT files, under diffusion_models/ and vae/ (as the
loader node lists them)."""
MASKGIT_CONVERTED = "tiny-maskgit-converted"
"""The same files converted (``python -m mgt_core.convert``), in models/mgt."""


def make_released_maskgit(transformer_path, vq_path, seed: int = 0) -> None:
    """A small MaskGIT v1 pair in the released file structures that loads with no config: hidden 768 (the width
    whose head count the loader knows), depth 1, MLP 64, 4x4 tokens, 16 codes, the 1000 ImageNet classes; taming VQGAN ch 32,
    factor 2 (8x8 px images)."""
    from mgt_core.models.configs import tiny_maskgit, tiny_taming
    from mgt_core.models.maskgit import MaskGITTransformer
    from mgt_core.models.vq.vqgan import VQGAN

    torch.manual_seed(seed)
    cfg = {**tiny_maskgit(nclass=1000, depth=1), "hidden_dim": 768, "heads": 16, "mlp_dim": 64}
    save_released_v1(randomize(MaskGITTransformer.from_config(cfg), seed, std=0.02).eval(), transformer_path)
    save_released_taming(randomize(VQGAN.from_config(tiny_taming()), seed + 1, std=0.05).eval(), vq_path)


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

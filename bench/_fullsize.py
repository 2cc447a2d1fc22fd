"""Full-size Meissonic transformers with random weights and a CFG-batch STEP, for the benches.

Weights are allocated once in the target dtype (built on the meta device, cast there, then
``to_empty``) and filled in place, so a 1B-parameter model costs exactly its weight bytes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mgt_core.loading.modules import meta_module  # noqa: E402
from mgt_core.models.configs import MEISSONIC_TRANSFORMER  # noqa: E402
from mgt_core.models.meissonic.denoiser import MeissonicDenoiser  # noqa: E402
from mgt_core.models.meissonic.transformer import MeissonicConfig, MeissonicTransformer  # noqa: E402
from mgt_core.models.text import TextConditioning  # noqa: E402
from mgt_core.sampling.engine import Sampler, SamplerSettings  # noqa: E402

GRID = (64, 64)  # VQ tokens of a 1024x1024 image
TEXT_LEN = 77


def random_transformer(dtype: torch.dtype = torch.float32, seed: int = 0, config: dict | None = None) -> MeissonicTransformer:
    """Meissonic-1024 (or ``config``) with N(0, 1/fan_in) weights, unit norms, zero biases."""
    cfg = MeissonicConfig.from_dict(config or MEISSONIC_TRANSFORMER)
    model = meta_module(lambda: MeissonicTransformer(cfg)).to(dtype).to_empty(device="cpu")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.fill_(1.0 if "norm" in name else 0.0)
            elif name.endswith("embeddings.weight"):
                p.normal_(0.0, 1.0, generator=g)
            else:
                p.normal_(0.0, p[0].numel() ** -0.5, generator=g)
    return model.eval().requires_grad_(False)


def conditioning(batch: int, dim: int, pooled: int, seed: int, dtype: torch.dtype) -> TextConditioning:
    g = torch.Generator().manual_seed(seed)
    return TextConditioning(
        torch.randn(batch, TEXT_LEN, dim, generator=g).to(dtype), torch.randn(batch, pooled, generator=g).to(dtype), [""] * batch
    )


def forward_inputs(model: MeissonicTransformer, batch: int = 2, seed: int = 0, masked: float = 0.5):
    """A CFG batch (2 rows per image) at 1024x1024: half the tokens masked, random text."""
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    ids = torch.randint(0, cfg.codebook_size, (batch, *GRID), generator=g)
    ids[torch.rand(batch, *GRID, generator=g) < masked] = cfg.mask_token_id
    text = conditioning(batch, cfg.joint_attention_dim, cfg.pooled_projection_dim, seed + 1, model.dtype)
    micro = torch.tensor([[1024.0, 1024, 0, 0, 6]] * batch, dtype=model.dtype)
    return ids, text.hidden, text.pooled, 40, micro


def sampler_step(model: MeissonicTransformer, seed: int = 0, steps: int = 64, guidance: float = 9.0) -> torch.Tensor:
    """The first STEP of a 1024x1024 generation of one image: CFG forward on [uncond; cond], softmax,
    sampling and confidence re-masking (what a generation repeats T times)."""
    cfg = model.config
    cond = conditioning(1, cfg.joint_attention_dim, cfg.pooled_projection_dim, seed, model.dtype)
    uncond = conditioning(1, cfg.joint_attention_dim, cfg.pooled_projection_dim, seed + 1, model.dtype)
    den = MeissonicDenoiser(model, cond, uncond, GRID, (1024, 1024))
    settings = SamplerSettings(steps=steps, guidance_scale=guidance)
    gen = torch.Generator().manual_seed(seed)
    sampler = Sampler(den, settings, gen)
    x = torch.full((1, GRID[0] * GRID[1]), cfg.mask_token_id, dtype=torch.long)
    counts = settings.schedule.counts(steps, x.shape[1])
    with torch.inference_mode():
        out, _ = sampler.step(x, 0, counts)
    return out


def rss_mib() -> tuple[float, float]:
    """(current RSS, peak RSS since start or the last :func:`reset_peak`) in MiB, from /proc."""
    vals = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                vals[line.split(":")[0]] = int(line.split()[1]) / 1024
    return vals["VmRSS"], vals["VmHWM"]


def reset_peak() -> None:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process."""
    with open(f"/proc/{os.getpid()}/clear_refs", "w") as f:
        f.write("5")


def env_line() -> str:
    return f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, {os.cpu_count()} cores visible"

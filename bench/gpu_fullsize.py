"""Full-size generation on an accelerator: time per step and peak memory, against the official README.

Random weights in the real configs (Meissonic transformer, CLIP-H text tower, VQ), built straight
on the device in the chosen dtype; the sampler, CFG and decode are the pack's. The official README
reports 64 steps at 1024x1024 in 12.35 s / 9.5 GB (FP16) and 13.32 s / 12 GB (FP32), GPU unstated.

    python bench/gpu_fullsize.py                       # cuda, bf16, 1024x1024, 64 steps
    python bench/gpu_fullsize.py --device cpu --tiny   # smoke run of the script itself
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mgt_core.loading.pipeline import ModelInfo, vq_dtype_for  # noqa: E402
from mgt_core.models import configs  # noqa: E402
from mgt_core.models.meissonic import MeissonicTransformer  # noqa: E402
from mgt_core.models.text import TextConditioning  # noqa: E402
from mgt_core.models.vq import VQModel  # noqa: E402
from mgt_core.pipeline import MGTPipeline, make_settings  # noqa: E402


def random_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator(device=next(module.parameters()).device).manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            std = p.shape[-1] ** -0.5 if p.ndim > 1 else 0.02
            p.copy_(torch.randn(p.shape, generator=g, device=p.device, dtype=torch.float32).to(p.dtype) * std)
            if p.ndim == 1 and p.shape[0] > 1:
                p.add_(1.0 if p.shape[0] in (128, 1024) else 0.0)  # norm weights near 1
    return module


def build(device: torch.device, dtype: torch.dtype, tiny: bool):
    tcfg = configs.tiny_transformer(True) if tiny else configs.MEISSONIC_TRANSFORMER
    vcfg = configs.tiny_vq() if tiny else configs.MEISSONIC_VQ
    with torch.device(device):
        transformer = random_(MeissonicTransformer.from_config(tcfg).to(dtype), 0).eval()
        vq = random_(VQModel.from_config(vcfg).to(vq_dtype_for(dtype)), 1).eval()
    info = ModelInfo("random", "meissonic", "", 64, 9.0, 1024, 1024, "", vq_factor=vq.factor)
    return MGTPipeline(transformer, vq, None, None, info), tcfg


def conditioning(tcfg: dict, device, dtype, text_len: int = 77) -> TextConditioning:
    g = torch.Generator(device=device).manual_seed(2)
    hidden = torch.randn(1, text_len, tcfg["joint_attention_dim"], generator=g, device=device).to(dtype)
    pooled = torch.randn(1, tcfg["pooled_projection_dim"], generator=g, device=device).to(dtype)
    return TextConditioning(hidden, pooled, ["x"])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--tiny", action="store_true", help="reduced-width models (checks the script, not the speed)")
    args = ap.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    pipe, tcfg = build(device, dtype, args.tiny)
    cond, uncond = conditioning(tcfg, device, dtype), conditioning(tcfg, device, dtype)
    size = 32 if args.tiny else args.size
    cuda = device.type == "cuda"
    print(f"torch {torch.__version__}, {device} ({torch.cuda.get_device_name(device) if cuda else 'cpu'}), {args.dtype}, "
          f"{size}x{size}, {args.steps} steps")
    print("| variant | s / image | s / model call | peak memory |")
    print("|---|---|---|---|")
    for name, opts in (("vanilla", {}), ("noise_reg + diff_sampling", {"noise_regularization": True, "differential_sampling": True}),
                       ("z_sampling", {"z_sampling": True})):
        settings = make_settings(steps=args.steps, guidance_scale=9.0, **opts)
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        gen = torch.Generator(device).manual_seed(0)
        sync(device)
        t = time.perf_counter()
        result = pipe.sample_tokens(cond, uncond, settings, height=size, width=size, generator=gen)
        images = pipe.decode(result.tokens, pipe.grid_for(size, size))
        sync(device)
        seconds = time.perf_counter() - t
        peak = f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB" if cuda else "n/a"
        print(f"| {name} | {seconds:.2f} | {seconds / settings.model_calls():.3f} | {peak} |")
        assert images.shape == (1, size, size, 3)
    for tiled in (False, True):
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        grid = pipe.grid_for(size, size)
        ids = torch.randint(0, pipe.vq.config.num_vq_embeddings, (1, *grid), device=device)
        sync(device)
        t = time.perf_counter()
        pipe.decode(ids, tiled=tiled)
        sync(device)
        peak = f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB" if cuda else "n/a"
        print(f"| VQ decode {'tiled' if tiled else 'whole'} | {time.perf_counter() - t:.2f} | | {peak} |")


if __name__ == "__main__":
    main()

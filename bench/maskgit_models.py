"""MaskGIT full-size model cost on random weights in the released layouts.

    python bench/maskgit_models.py cost                 # derived multiply-accumulates per CFG forward, every release
    python bench/maskgit_models.py forward [--model v1-256|halton-256-base|...] [--dtype fp32|bf16]
                                                        # time one CFG forward (batch 2) and one VQGAN decode, peak RSS

The cost is counted from the shapes (matrix products only; norms, activations and softmax are
noise next to them). Timings are for whatever CPU/GPU runs this; the README lists the ones measured.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mgt_core.models import configs as C  # noqa: E402
from mgt_core.models.halton import HaltonConfig, HaltonTransformer  # noqa: E402
from mgt_core.models.maskgit import MaskGITConfig, MaskGITTransformer  # noqa: E402
from mgt_core.models.vq.vqgan import VQGAN  # noqa: E402

MODELS = {"v1-256": C.MASKGIT_V1_256, "v1-512": C.MASKGIT_V1_512,
          **{f"halton-{k.split('_')[1]}-{k.split('_')[2]}": v for k, v in C.HALTON_RELEASES.items()}}


def macs(config: dict) -> int:
    """Multiply-accumulates of one forward of one image (the CFG batch is twice this)."""
    if config["family"] == "maskgit-v1":
        c = MaskGITConfig.from_dict(config)
        n, d, m = c.seq_len, c.hidden_dim, c.mlp_dim
        per_layer = n * (4 * d * d + 2 * d * m) + 2 * n * n * d
        edges = n * 3 * d * d + c.input_size**2 * d * (c.codebook_size + 1)  # first/last Linear layers, tied logits
        return c.depth * per_layer + edges
    c = HaltonConfig.from_dict(config)
    s, d, a, h = c.input_size**2, c.hidden_dim, c.attn_dim, c.ff_dim
    n = s + c.register
    per_layer = n * (4 * d * a + 3 * d * h) + 2 * n * n * a + 6 * d * d
    return c.depth * per_layer + 2 * d * d + s * d * (c.codebook_size + 1)


def cost() -> None:
    print(f"{'model':22s} {'params':>13s} {'GMAC/forward (CFG batch 2)':>28s}")
    for name, cfg in MODELS.items():
        with torch.device("meta"):
            m = (MaskGITTransformer if cfg["family"] == "maskgit-v1" else HaltonTransformer).from_config(cfg)
        params = sum(p.numel() for p in m.parameters())
        print(f"{name:22s} {params:13,d} {2 * macs(cfg) / 1e9:28.1f}")


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def forward(name: str, dtype: torch.dtype, device: str) -> None:
    cfg = MODELS[name]
    cls = MaskGITTransformer if cfg["family"] == "maskgit-v1" else HaltonTransformer
    torch.manual_seed(0)
    with torch.device(device):
        model = cls.from_config(cfg).to(dtype).eval().requires_grad_(False)
        vq = VQGAN.from_config(C.TAMING_VQGAN if cfg["family"] == "maskgit-v1" else C.LLAMAGEN_VQ16).eval()
    s = cfg["input_size"]
    tokens = torch.randint(0, cfg["codebook_size"], (2, s, s), device=device)
    labels, drop = torch.tensor([1, 1], device=device), torch.tensor([False, True], device=device)
    with torch.inference_mode():
        model(tokens, labels, drop)  # warm-up
        t0 = time.perf_counter()
        model(tokens, labels, drop)
        if device == "cuda":
            torch.cuda.synchronize()
        t_fwd = time.perf_counter() - t0
        t0 = time.perf_counter()
        vq.decode(tokens[:1].clamp(0, vq.codebook_size - 1))
        if device == "cuda":
            torch.cuda.synchronize()
        t_vq = time.perf_counter() - t0
    print(f"{name} {dtype} on {device}, {torch.get_num_threads()} threads: CFG forward {t_fwd:.2f} s "
          f"({2 * macs(cfg) / t_fwd / 1e9:.0f} GMAC/s); VQGAN decode of one {s * 16} px image {t_vq:.2f} s; "
          f"peak RSS {peak_rss_gib():.2f} GiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["cost", "forward"])
    ap.add_argument("--model", default="v1-256", choices=sorted(MODELS))
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.what == "cost":
        cost()
    else:
        forward(args.model, {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype], args.device)


if __name__ == "__main__":
    main()

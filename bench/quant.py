"""SCQ memory at the full Meissonic-1024 configuration (random weights): transformer weight bytes vs
bf16, and the peak memory of one 1024x1024 generation step loaded from the saved files.

1. Weight bytes from shapes (``estimate_weight_bytes``; no allocation) and the sizes of the
   written files.
2. Random-weight files are written once under ``runs/bench_quant/`` (git-ignored): the bf16
   transformer and its W8, W4 and W4A8 variants (W4A8 calibrated on one CFG forward, so its
   activations really quantize). Each variant is then measured in a fresh process: RSS after
   loading, and the peak RSS of one sampler STEP (CFG forward on [uncond; cond], softmax,
   sampling, re-masking) on top of it (VmHWM reset after loading). Compute is fp32 on the CPU
   (its bf16 matmul is ~10x slower here); the quantized layers dequantize to it one at a time.

    /work/devvenv/bin/python bench/quant.py [--variants bf16 w8 w4 w4a8] [--rewrite]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from _fullsize import env_line, forward_inputs, random_transformer, reset_peak, rss_mib, sampler_step

from mgt_core.accel.context import cfg_branches
from mgt_core.accel.quant import (
    apply_activation_rule,
    calibration,
    estimate_weight_bytes,
    load_quantized_transformer,
    quantize_model,
    save_quantized,
    weight_bytes,
)
from mgt_core.loading.export import save_weights
from mgt_core.loading.modules import meta_module
from mgt_core.loading.pipeline import load_transformer
from mgt_core.models.configs import MEISSONIC_TRANSFORMER
from mgt_core.models.meissonic.transformer import MeissonicConfig, MeissonicTransformer

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "runs" / "bench_quant"
VARIANTS = ("bf16", "w8", "w4", "w4a8")
GB = 1e9


def config(layers: int, single: int) -> dict:
    return {**MEISSONIC_TRANSFORMER, "num_layers": layers, "num_single_layers": single}


def folder(variant: str, cfg: dict) -> Path:
    size = "" if cfg == MEISSONIC_TRANSFORMER else f"_{cfg['num_layers']}x{cfg['num_single_layers']}"
    return OUT / f"meissonic{size}" / ("transformer" if variant == "bf16" else f"transformer_{variant}")


def write(variant: str, cfg: dict) -> None:
    t0 = time.perf_counter()
    model = random_transformer(torch.bfloat16, seed=0, config=cfg)
    path = folder(variant, cfg)
    path.mkdir(parents=True, exist_ok=True)
    if variant == "bf16":
        save_weights(model, str(path / "diffusion_pytorch_model.safetensors"))
        (path / "config.json").write_text(json.dumps(cfg, indent=2))
    else:
        quantize_model(model, variant, 128)
        if variant == "w4a8":
            model.to(torch.float32)  # only the non-quantized tensors change; codes and scales keep their dtypes
            with torch.inference_mode(), calibration(model), cfg_branches("both"):
                model(*forward_inputs(model, batch=1))
            apply_activation_rule(model)
            model._mgt_quant["calibrated"] = True
            model.to(torch.bfloat16)
        save_quantized(model, path)
    print(f"wrote {path} in {time.perf_counter() - t0:.0f} s", flush=True)


def measure(variant: str, cfg: dict) -> dict:
    """Runs in a fresh process: load in fp32, one STEP, RSS numbers."""
    rss0, _ = rss_mib()
    t0 = time.perf_counter()
    if variant == "bf16":
        model = load_transformer(str(folder(variant, cfg) / "diffusion_pytorch_model.safetensors"), dtype=torch.float32)
    else:
        model = load_quantized_transformer(folder(variant, cfg), dtype=torch.float32)
    load_s = time.perf_counter() - t0
    rss_loaded, peak_load = rss_mib()
    reset_peak()
    t0 = time.perf_counter()
    sampler_step(model)
    step_s = time.perf_counter() - t0
    _, peak_step = rss_mib()
    return {
        "variant": variant, "rss_start": rss0, "rss_loaded": rss_loaded, "peak_load": peak_load, "peak_step": peak_step,
        "load_s": load_s, "step_s": step_s, "weights_fp32_compute": weight_bytes(model)["total"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    ap.add_argument("--rewrite", action="store_true", help="write the random-weight files again")
    ap.add_argument("--measure", choices=VARIANTS, help=argparse.SUPPRESS)
    ap.add_argument("--write", choices=VARIANTS, help=argparse.SUPPRESS)
    ap.add_argument("--layers", type=int, default=14, help="dual-stream blocks (fewer only for a quick smoke run)")
    ap.add_argument("--single-layers", type=int, default=28)
    args = ap.parse_args()
    cfg = config(args.layers, args.single_layers)
    sizes = ["--layers", str(args.layers), "--single-layers", str(args.single_layers)]
    if args.write:
        write(args.write, cfg)
        return
    if args.measure:
        print(json.dumps(measure(args.measure, cfg)))
        return

    for v in args.variants:
        if args.rewrite or not list(folder(v, cfg).glob("*.safetensors")):
            subprocess.run([sys.executable, __file__, "--write", v, *sizes], check=True, cwd=REPO)
    meta = meta_module(lambda: MeissonicTransformer(MeissonicConfig.from_dict(cfg)))
    base = estimate_weight_bytes(meta, None)["total"]
    n_lin = sum(type(m) is torch.nn.Linear for m in meta.modules())
    n_w = sum(m.weight.numel() for m in meta.modules() if type(m) is torch.nn.Linear)
    print(f"# SCQ, Meissonic-1024 transformer ({args.layers}+{args.single_layers} blocks), random weights; {n_lin} Linear layers, {n_w:,} weights quantized; {env_line()}")
    print("\n## Transformer weight bytes (group 128; bf16 scale + uint8 zero per group; other tensors bf16)")
    print("| variant | quantized layers (GB) | other tensors (GB) | total (GB) | vs bf16 | target | file (GB) |")
    print("|---|---|---|---|---|---|---|")
    targets = {"w8": 0.55, "w4": 0.30, "w4a8": 0.30}
    for v in VARIANTS:
        e = estimate_weight_bytes(meta, None if v == "bf16" else v)
        files = list(folder(v, cfg).glob("*.safetensors"))
        size = f"{sum(f.stat().st_size for f in files) / GB:.3f}" if files else "-"
        target = f"<= {targets[v]:.2f}x {'ok' if e['total'] / base <= targets[v] else 'MISSED'}" if v in targets else ""
        print(f"| {v} | {e['quantized_layers'] / GB:.3f} | {e['other'] / GB:.3f} | {e['total'] / GB:.3f} | "
              f"{e['total'] / base:.3f}x | {target} | {size} |")

    rows = []
    for v in args.variants:
        out = subprocess.run([sys.executable, __file__, "--measure", v, *sizes], check=True, capture_output=True, text=True, cwd=REPO)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print("\n## One 1024x1024 generation step (CFG batch 2, fp32 compute, CPU), each variant in a fresh process")
    print("(bf16 = the unquantized transformer, loaded from its bf16 file into fp32 like the others)")
    print("| variant | weights in memory (GB) | RSS after load (GiB) | peak RSS during the step (GiB) | step peak above loaded (GiB) "
          "| load s | step s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['weights_fp32_compute'] / GB:.3f} | {r['rss_loaded'] / 1024:.2f} | "
              f"{r['peak_step'] / 1024:.2f} | {(r['peak_step'] - r['rss_loaded']) / 1024:.2f} | {r['load_s']:.1f} | {r['step_s']:.1f} |")
    print(f"\nprocess RSS before loading: {rows[0]['rss_start'] / 1024:.2f} GiB (python + torch)")


if __name__ == "__main__":
    main()

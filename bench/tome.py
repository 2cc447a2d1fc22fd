"""TomeMGT cost at the full Meissonic-1024 configuration (random weights, CFG batch 2): analytic
MACs and measured wall time per transformer forward, unpatched vs ratios, in one run.

MACs are counted analytically (``mgt_core.accel.tome.transformer_macs``): torch's CPU flop counter
does not see SDPA. As a cross-check, the counter's total for one forward of each variant (matmuls
and convs it does see) is printed next to the analytic count without attention. Variants are timed
in interleaved rounds (A B C A B C ...) so a change in machine load hits all of them alike.

    /work/devvenv/bin/python bench/tome.py [--repeats 2] [--single] [--dtype fp32]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _fullsize import GRID, TEXT_LEN, env_line, forward_inputs, random_transformer
from torch.utils.flop_counter import FlopCounterMode

from mgt_core.accel.tome import TomeConfig, apply_tome, remove_tome, tome_generation, transformer_macs
from mgt_core.models.configs import MEISSONIC_TRANSFORMER

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def variants(single: bool) -> list[tuple[str, TomeConfig | None]]:
    out = [("unpatched", None), ("ratio 0.25", TomeConfig(0.25)), ("ratio 0.5", TomeConfig(0.5))]
    if single:
        out += [("0.25 + single", TomeConfig(0.25, single_stream=True)), ("0.5 + single", TomeConfig(0.5, single_stream=True))]
    return out


def attention_macs(cfg, n_dual: int, n_single: int) -> float:
    d = cfg.inner_dim
    return 2.0 * d * (cfg.num_layers * (n_dual + TEXT_LEN) ** 2 + cfg.num_single_layers * (n_single + TEXT_LEN) ** 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2, help="timed forwards per variant (after one counted warm-up)")
    ap.add_argument("--single", action="store_true", help="also time merging in the single-stream blocks")
    ap.add_argument("--dtype", choices=list(DTYPES), default="fp32")
    ap.add_argument("--layers", type=int, default=14, help="dual-stream blocks (fewer only for a quick smoke run)")
    ap.add_argument("--single-layers", type=int, default=28)
    args = ap.parse_args()

    config = {**MEISSONIC_TRANSFORMER, "num_layers": args.layers, "num_single_layers": args.single_layers}
    model = random_transformer(DTYPES[args.dtype], config=config)
    cfg = model.config
    x = forward_inputs(model, batch=2)
    rows = variants(args.single)
    times: dict[str, list[float]] = {name: [] for name, _ in rows}
    counted: dict[str, float] = {}

    def forward(merging: TomeConfig | None, count: bool = False) -> float:
        if merging is not None:
            apply_tome(model, merging.ratio, single_stream=merging.single_stream)
        try:
            with torch.inference_mode(), tome_generation(model, seed=0, steps=64):
                if count:
                    with FlopCounterMode(display=False) as fc:
                        model(*x)
                    return fc.get_total_flops() / 2  # FLOPs -> MACs
                t0 = time.perf_counter()
                model(*x)
                return time.perf_counter() - t0
        finally:
            remove_tome(model)

    for name, merging in rows:  # warm-up and flop-counter cross-check
        counted[name] = forward(merging, count=True)
    for _ in range(args.repeats):
        for name, merging in rows:
            times[name].append(forward(merging))

    blocks = f"{args.layers}+{args.single_layers} blocks"
    print(f"# TomeMGT, Meissonic-1024 {blocks} (VQ grid {GRID[0]}x{GRID[1]}, transformer grid 32x32, {TEXT_LEN} text tokens), "
          f"random weights, {args.dtype}, CFG batch 2; {env_line()}")
    print("| variant | image tokens (dual / single) | GMAC / forward (analytic) | vs unpatched | counter, no SDPA (GMAC) "
          "| analytic w/o SDPA (GMAC) | wall s / forward (median) | speed-up |")
    print("|---|---|---|---|---|---|---|---|")
    base_macs = base_time = None
    for name, merging in rows:
        m = transformer_macs(cfg, GRID, TEXT_LEN, merging)
        macs = 2 * m["total"]  # the CFG batch has 2 rows
        no_attn = macs - 2 * attention_macs(cfg, m["image_tokens_dual"], m["image_tokens_single"])
        wall = statistics.median(times[name])
        base_macs = base_macs or macs
        base_time = base_time or wall
        print(
            f"| {name} | {m['image_tokens_dual']} / {m['image_tokens_single']} | {macs / 1e9:.0f} | "
            f"{macs / base_macs:.3f}x | {counted[name] / 1e9:.0f} | {no_attn / 1e9:.0f} | {wall:.2f} | {base_time / wall:.3f}x |"
        )
    print(f"timings (s): { {k: [round(t, 2) for t in v] for k, v in times.items()} }")


if __name__ == "__main__":
    main()

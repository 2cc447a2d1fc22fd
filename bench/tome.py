"""TomeMGT cost at the full Meissonic-1024 configuration (random weights, CFG batch 2): analytic
MACs and measured wall time per transformer forward, unpatched vs ratios, in one run.

MACs are counted analytically (``mgt_core.accel.tome.transformer_macs``): torch's CPU flop counter
does not see SDPA. As a cross-check, the counter's total for one forward of each variant (matmuls
and convs it does see) is printed next to the analytic count without attention. Variants are timed
in interleaved rounds (A B C A B C ...) so a change in machine load hits all of them alike; block
hooks split each forward into dual blocks, single blocks and the rest. On a shared machine the
minimum over rounds is the better estimate (other load only adds time); the median is shown too.
The merge overhead (one matching, one merge, one unmerge at full size) is timed separately.

    /work/devvenv/bin/python bench/tome.py [--repeats 2] [--single] [--threads N] [--layers 14 --single-layers 28]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _fullsize import GRID, TEXT_LEN, env_line, forward_inputs, random_transformer
from torch.utils.flop_counter import FlopCounterMode

from mgt_core.accel.tome import (
    TomeConfig,
    apply_tome,
    bipartite_matching,
    remove_tome,
    tome_generation,
    transformer_macs,
)
from mgt_core.models.configs import MEISSONIC_TRANSFORMER
from mgt_core.models.meissonic.transformer import MeissonicConfig

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def variants(single: bool) -> list[tuple[str, TomeConfig | None]]:
    out = [("unpatched", None), ("ratio 0.25", TomeConfig(0.25)), ("ratio 0.5", TomeConfig(0.5))]
    if single:
        out += [("0.25 + single", TomeConfig(0.25, single_stream=True)), ("0.5 + single", TomeConfig(0.5, single_stream=True))]
    return out


def attention_macs(cfg, n_dual: int, n_single: int) -> float:
    d = cfg.inner_dim
    return 2.0 * d * (cfg.num_layers * (n_dual + TEXT_LEN) ** 2 + cfg.num_single_layers * (n_single + TEXT_LEN) ** 2)


def overhead(cfg) -> None:
    """Milliseconds of one matching, merge and unmerge on the CFG batch at full width (min of 7)."""
    x = torch.randn(2, 1024, cfg.inner_dim)
    print("\nmerge overhead at full width (CFG batch 2, 32x32 grid), ms, min of 7:")
    for ratio in (0.25, 0.5):
        m = bipartite_matching(x, (32, 32), ratio, torch.Generator().manual_seed(0))
        y = m.merge(x)
        cost = {}
        for label, fn in (
            ("matching", lambda r=ratio: bipartite_matching(x, (32, 32), r, torch.Generator().manual_seed(0))),
            ("merge", lambda m=m: m.merge(x)),
            ("unmerge", lambda m=m, y=y: m.unmerge(y)),
        ):
            ts = []
            for _ in range(7):
                t0 = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t0)
            cost[label] = 1000 * min(ts)
        print(f"  ratio {ratio}: " + ", ".join(f"{k} {v:.1f}" for k, v in cost.items())
              + f"; per forward (3 matchings, 14 x (2 merges + 2 unmerges)): {3 * cost['matching'] + 28 * (cost['merge'] + cost['unmerge']):.0f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2, help="timed forwards per variant (after one counted warm-up)")
    ap.add_argument("--single", action="store_true", help="also time merging in the single-stream blocks")
    ap.add_argument("--dtype", choices=list(DTYPES), default="fp32")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--layers", type=int, default=14, help="dual-stream blocks of the timed model (full width always)")
    ap.add_argument("--single-layers", type=int, default=28)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    full = MeissonicConfig.from_dict(MEISSONIC_TRANSFORMER)
    config = {**MEISSONIC_TRANSFORMER, "num_layers": args.layers, "num_single_layers": args.single_layers}
    model = random_transformer(DTYPES[args.dtype], config=config)
    cfg = model.config
    x = forward_inputs(model, batch=2)
    rows = variants(args.single)
    times: dict[str, list[tuple[float, float, float]]] = {name: [] for name, _ in rows}
    counted: dict[str, float] = {}
    spent = {"dual": 0.0, "single": 0.0}
    started: list[float] = []

    def timer(kind: str):
        def pre(module, args):
            started.append(time.perf_counter())

        def post(module, args, out):
            spent[kind] += time.perf_counter() - started.pop()

        return pre, post

    for kind, blocks in (("dual", model.transformer_blocks), ("single", model.single_transformer_blocks)):
        pre, post = timer(kind)
        for block in blocks:
            block.register_forward_pre_hook(pre)
            block.register_forward_hook(post)

    def forward(merging: TomeConfig | None, count: bool = False):
        if merging is not None:
            apply_tome(model, merging.ratio, single_stream=merging.single_stream)
        try:
            with torch.inference_mode(), tome_generation(model, seed=0, steps=64):
                if count:
                    with FlopCounterMode(display=False) as fc:
                        model(*x)
                    return fc.get_total_flops() / 2  # FLOPs -> MACs
                spent.update(dual=0.0, single=0.0)
                t0 = time.perf_counter()
                model(*x)
                return time.perf_counter() - t0, spent["dual"], spent["single"]
        finally:
            remove_tome(model)

    for name, merging in rows:  # warm-up and flop-counter cross-check
        counted[name] = forward(merging, count=True)
    for _ in range(args.repeats):
        for name, merging in rows:
            times[name].append(forward(merging))

    print(f"# TomeMGT, Meissonic-1024 (VQ grid {GRID[0]}x{GRID[1]}, transformer grid 32x32, {TEXT_LEN} text tokens), "
          f"random weights, {args.dtype}, CFG batch 2; {env_line()}")
    print("\n## MACs per forward of the full model (14 dual + 28 single blocks), analytic")
    print("| variant | image tokens (dual / single) | GMAC / forward | vs unpatched | of which attention (SDPA) | matching |")
    print("|---|---|---|---|---|---|")
    base_macs = None
    for name, merging in rows:
        m = transformer_macs(full, GRID, TEXT_LEN, merging)
        macs = 2 * m["total"]  # the CFG batch has 2 rows
        att = 2 * attention_macs(full, m["image_tokens_dual"], m["image_tokens_single"])
        base_macs = base_macs or macs
        print(f"| {name} | {m['image_tokens_dual']} / {m['image_tokens_single']} | {macs / 1e9:.0f} | "
              f"{macs / base_macs:.3f}x | {att / 1e9:.0f} | {2 * m['matching'] / 1e9:.1f} |")
    depth = f"{args.layers} dual + {args.single_layers} single blocks"
    def no_sdpa(merging) -> float:
        m = transformer_macs(cfg, GRID, TEXT_LEN, merging)
        return 2 * (m["total"] - attention_macs(cfg, m["image_tokens_dual"], m["image_tokens_single"]))

    checks = ", ".join(f"{name} {counted[name] / 1e9:.1f} vs {no_sdpa(merging) / 1e9:.1f}" for name, merging in rows)
    print(f"\ncross-check on the timed model ({depth}): torch's flop counter (it skips SDPA) vs the analytic "
          f"count without SDPA, GMAC: {checks}")
    print(f"\n## Wall time, {depth} timed ({args.repeats} interleaved rounds), seconds, min (median)")
    print("Full forward = rest + 14 x dual block + 28 x single block (measured as is when the timed model is full depth).")
    print("| variant | dual block | single block | rest (embed, heads) | full forward | speed-up (min) | speed-up (median) |")
    print("|---|---|---|---|---|---|---|")
    base_min = base_med = None
    for name, _ in rows:
        est = []
        per_dual, per_single, rest = [], [], []
        for w, d, sg in times[name]:
            per_dual.append(d / max(args.layers, 1))
            per_single.append(sg / max(args.single_layers, 1))
            rest.append(w - d - sg)
            est.append(rest[-1] + full.num_layers * per_dual[-1] + full.num_single_layers * per_single[-1])
        base_min = base_min or min(est)
        base_med = base_med or statistics.median(est)
        cells = [f"{min(v):.2f} ({statistics.median(v):.2f})" for v in (per_dual, per_single, rest, est)]
        print(f"| {name} | {' | '.join(cells)} | {base_min / min(est):.3f}x | {base_med / statistics.median(est):.3f}x |")
    print(f"raw (wall, dual, single): { {k: [tuple(round(t, 2) for t in r) for r in v] for k, v in times.items()} }")
    overhead(cfg)


if __name__ == "__main__":
    main()

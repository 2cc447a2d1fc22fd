"""Per-step sampler time without the model: ours vs diffusers' AmusedScheduler.step on the same logits.

Meissonic at 1024 px: L = 4096 tokens, K = 8192 codes. Both sides start from the model's
unconditional and conditional logits and include the CFG mix (the reference pipeline mixes before
calling its scheduler; we mix straight into the layout the softmax wants). Prints one table
with the vanilla ratio (ours / reference, target <= 1.0) and the added cost of noise regularization
and differential sampling relative to our vanilla step, all measured in the same run.

    python bench/sampler_step.py [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mgt_core.sampling.differential import DifferentialSampling  # noqa: E402
from mgt_core.sampling.engine import Sampler, SamplerSettings  # noqa: E402
from mgt_core.sampling.noise_reg import NoiseRegularization  # noqa: E402

H = W = 64
K = 8192
MASK = 8255
STEPS = 64
STEP_I = 20  # a mid-run step: ~3100 tokens still masked


def logits_for(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return tuple(torch.randn(batch, K, H, W, generator=g) * 4 for _ in range(2))  # channel-first, as the model


class _FixedLogits:
    """Stands in for the transformer: returns precomputed logits, so only the sampler is timed."""

    mask_id, grid = MASK, (H, W)

    def __init__(self, batch: int):
        self.lu, self.lc = logits_for(batch)

    def __call__(self, tokens, t, branches):
        return self.lu, self.lc


def state(batch: int) -> torch.Tensor:
    x = torch.randint(0, K, (batch, H * W), generator=torch.Generator().manual_seed(1))
    masked = torch.rand(batch, H * W, generator=torch.Generator().manual_seed(2)) < 0.75
    return torch.where(masked, MASK, x)


def time_interleaved(fns: dict, repeats: int) -> dict:
    """Median seconds per function, measured round-robin so background load hits all alike."""
    for fn in fns.values():
        fn()  # warm-up
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def ours(batch: int, **design):
    settings = SamplerSettings(steps=STEPS, guidance_scale=9.0, **design)
    sampler = Sampler(_FixedLogits(batch), settings, torch.Generator().manual_seed(0))
    counts = settings.schedule.counts(STEPS, H * W)
    x = state(batch)
    if design.get("differential_sampling"):
        sampler.step(x, STEP_I - 1, counts)  # give DS a previous distribution
    return lambda: sampler.step(x, STEP_I, counts)


def reference(batch: int):
    try:
        from diffusers import AmusedScheduler
    except ImportError:
        return None
    sched = AmusedScheduler(mask_token_id=MASK, masking_schedule="cosine")
    sched.set_timesteps(STEPS)
    (lu, lc), x = logits_for(batch), state(batch).view(batch, H, W)
    g = torch.Generator().manual_seed(0)
    t = sched.timesteps[STEP_I]
    return lambda: sched.step(lu + 9.0 * (lc - lu), t, x, generator=g)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU fp32, L={H * W}, K={K}, step {STEP_I}/{STEPS}")
    print("| batch (CFG) | reference step | ours, reference_rng | ratio | ours, default | ratio | + noise reg | + diff sampling |")
    print("|---|---|---|---|---|---|---|---|")
    for batch in (1, 2):
        fns = {"van": ours(batch), "exact": ours(batch, reference_rng=True),
               "nr": ours(batch, noise_regularization=NoiseRegularization()),
               "ds": ours(batch, differential_sampling=DifferentialSampling())}
        if reference(batch) is not None:
            fns["ref"] = reference(batch)
        t = time_interleaved(fns, args.repeats)
        ref, van, exact, nr, ds = t.get("ref"), t["van"], t["exact"], t["nr"], t["ds"]
        ref_s = f"{ref * 1e3:.0f} ms" if ref else "n/a"

        r_exact, r_van = (f"{v / ref:.2f}" if ref else "n/a" for v in (exact, van))
        print(f"| {batch} | {ref_s} | {exact * 1e3:.0f} ms | {r_exact} | {van * 1e3:.0f} ms | {r_van} "
              f"| +{(nr / van - 1) * 100:.0f}% | +{(ds / van - 1) * 100:.0f}% |")


if __name__ == "__main__":
    main()

"""Quality study of TomeMGT and SCQ on a demo-domain model: agreement with the plain model, judge
accuracy and winning rate vs the plain model, per merging ratio and quantization variant.

For each evaluation prompt (``mgt_core.demo.scenes.eval_prompts``, with its fixed seed) the plain
model and every variant generate with the same prompt, seed and settings (spec section 13). Reported:

* token agreement: fraction of the final VQ tokens equal to the plain model's;
* judge accuracy: fraction of images whose every prompt attribute the programmatic judge confirms;
* winning rate vs plain: judge preference (more checks passed, then soft score), ties = 1/2, with a
  95% Wilson interval and the tie count. 50% means "no worse".

W4A8 is calibrated on ``--calib`` prompts of the train split (disjoint from the evaluation prompts);
``scq`` adds ``--qat`` QAT batches on train-split renders, then the secondary calibration.

    /work/devvenv/bin/python bench/quality_accel.py --model mgt_core/demo/mgt-demo [--n 64] [--split simple]
    /work/devvenv/bin/python bench/quality_accel.py --tiny runs/quality_tiny --n 4   # smoke run, random model
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import mgt_core  # noqa: E402
from mgt_core.accel import quant as Q  # noqa: E402
from mgt_core.accel.context import shared_clone  # noqa: E402
from mgt_core.accel.tome import apply_tome  # noqa: E402
from mgt_core.demo import scenes as S  # noqa: E402
from mgt_core.demo.judge import judge, preference  # noqa: E402

TOME = {
    "tome0.25": {"ratio": 0.25},
    "tome0.5": {"ratio": 0.5},
    "tome0.25+single": {"ratio": 0.25, "single_stream": True},
    "tome0.5+single": {"ratio": 0.5, "single_stream": True},
    "tome0.5[0,0.75)": {"ratio": 0.5, "window": (0.0, 0.75)},
}
QUANT = ("w8", "w4", "w4a8", "scq")
DEFAULT = ("tome0.25", "tome0.5", "tome0.25+single", "tome0.5[0,0.75)", "w8", "w4", "w4a8")


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def qat_batches(pipe, n: int, batch: int, seed: int, exclude: set[str]):
    """QAT pairs: train-split renders at the model's size, VQ-encoded, with their prompts."""
    rng = np.random.default_rng(seed)
    info = pipe.info
    out = []
    while len(out) < n:
        prompts, images = S.sample_batch(rng, "train", batch, size=info.width)
        if exclude & set(prompts):
            continue
        tokens = pipe.encode_image(torch.from_numpy(images).float() / 255)
        micro = torch.tensor([[info.width, info.height, 0, 0, 6.0]] * batch)
        out.append(Q.QATBatch(tokens, pipe.encode_prompt(prompts), pipe.encode_prompt([info.negative_prompt] * batch), micro))
    return out


def build(pipe, name: str, args, calib: list[str], exclude: set[str]):
    """A pipeline whose transformer is a patched shared clone (the plain model is never touched)."""
    model = shared_clone(pipe.transformer)
    variant = dataclasses.replace(pipe, transformer=model)
    if name in TOME:
        apply_tome(model, **TOME[name])
        return variant
    mode = "w4a8" if name == "scq" else name
    Q.quantize_model(model, mode, args.group_size)
    if mode == "w4a8":
        Q.calibrate(variant, calib)
    if name == "scq":
        Q.qat_finetune(model, qat_batches(pipe, args.qat, 2, args.seed, exclude), lr=args.qat_lr)
        Q.secondary_calibration(variant, calib)
    Q.freeze(model)
    return variant


def generate(pipe, prompts):
    tokens, verdicts, t0 = [], [], time.perf_counter()
    for prompt, seed in prompts:
        images, toks = pipe(prompt, seed=seed, return_tokens=True)
        tokens.append(toks[0])
        verdicts.append(judge(images[0], prompt))
    return tokens, verdicts, (time.perf_counter() - t0) / len(prompts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--model", help="model folder (the demo model)")
    where.add_argument("--tiny", help="write a tiny random model folder here and study it (a smoke run)")
    ap.add_argument("--n", type=int, default=64, help="evaluation prompts")
    ap.add_argument("--split", default="simple", choices=S.SPLITS)
    ap.add_argument("--variants", nargs="+", default=list(DEFAULT), choices=[*TOME, *QUANT])
    ap.add_argument("--calib", type=int, default=16, help="calibration prompts (train split)")
    ap.add_argument("--qat", type=int, default=32, help="QAT batches of 2 (for the scq variant)")
    ap.add_argument("--qat-lr", type=float, default=5e-6)
    ap.add_argument("--group-size", default="auto", type=lambda v: v if v == "auto" else int(v))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(REPO / "runs" / "quality.json"))
    args = ap.parse_args()

    if args.tiny:
        sys.path.insert(0, str(REPO / "tests"))
        from mgt_testing import make_tiny_folder

        folder = make_tiny_folder(Path(args.tiny))
    else:
        folder = args.model
    torch.manual_seed(args.seed)
    pipe = mgt_core.load_pipeline(folder, dtype=torch.float32)
    prompts = S.eval_prompts(args.split, args.n, seed=args.seed)
    exclude = {p for p, _ in prompts}
    calib = [p for p, _ in S.eval_prompts("train", args.calib + len(exclude), seed=args.seed + 1) if p not in exclude][: args.calib]

    base_tokens, base_verdicts, base_s = generate(pipe, prompts)
    rows = [{"variant": "plain", "agreement": 1.0, "accuracy": float(np.mean([v.all_correct for v in base_verdicts])),
             "win": 0.5, "ci": (0.5, 0.5), "ties": len(prompts), "s_per_image": base_s}]
    for name in args.variants:
        variant = build(pipe, name, args, calib, exclude)
        tokens, verdicts, sec = generate(variant, prompts)
        agree = float(np.mean([(a == b).float().mean().item() for a, b in zip(tokens, base_tokens, strict=True)]))
        prefs = [preference(v, b) for v, b in zip(verdicts, base_verdicts, strict=True)]
        win = float(np.mean(prefs))
        rows.append({"variant": name, "agreement": agree, "accuracy": float(np.mean([v.all_correct for v in verdicts])),
                     "win": win, "ci": wilson(win, len(prefs)), "ties": sum(p == 0.5 for p in prefs), "s_per_image": sec})
        print(f"done {name}", flush=True)

    info = pipe.info
    print(f"\n# Quality on {folder} ({info.family}, {info.width}x{info.height}, T={info.steps}, CFG {info.guidance_scale}); "
          f"{len(prompts)} '{args.split}' prompts with fixed seeds; torch {torch.__version__}, CPU fp32")
    print("| variant | token agreement with plain | judge accuracy | winning rate vs plain [95% CI] | ties | s / image |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['agreement']:.3f} | {r['accuracy']:.3f} | {r['win']:.3f} [{r['ci'][0]:.2f}, {r['ci'][1]:.2f}] "
              f"| {r['ties']} | {r['s_per_image']:.2f} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"folder": str(folder), "split": args.split, "n": len(prompts), "rows": rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""The design-choice study on MaskGIT: the built-in MaskGIT v1 demo (40 classes, colour x shape).

Same protocol as ``bench/quality.py``: every variant draws the same (class, seed) pairs; the judge
checks each image against its class's prompt ("a red circle on a gray background": count,
background, colour, shape); a variant wins a pair when the judge prefers its image to vanilla's
(more checks passed, then a higher soft score; ties count half). Vanilla is the v1 confidence
sampler with the demo's defaults (12 steps, w 3 ramped, r_temp 4.5, arccos counts).

    python bench/quality_maskgit.py                 # 5 seeds per class (200 images per variant)
    python bench/quality_maskgit.py --per-class 2 --variants vanilla noise_reg
"""

from __future__ import annotations

import argparse
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
from mgt_core.demo import class_scenes as C  # noqa: E402
from mgt_core.demo.judge import accuracy, judge, preference  # noqa: E402

DEMO = REPO / "mgt_core" / "demo" / "maskgit-demo"
ATTRIBUTES = ("colour", "shape", "outline", "clean", "background", "count")

VARIANTS: dict[str, dict] = {
    "vanilla (v1 confidence)": {},
    "noise_reg": {"noise_regularization": True},
    "diff_sampling": {"differential_sampling": True},
    "z_sampling": {"z_sampling": True},
    "z_sampling+noise_reg": {"z_sampling": True, "noise_regularization": True},
    "z_sampling+diff_sampling": {"z_sampling": True, "differential_sampling": True},
    "enhanced (all three)": {"z_sampling": True, "noise_regularization": True, "differential_sampling": True},
    "schedule cosine": {"schedule": "cosine"},
    "schedule linear": {"schedule": "linear"},
    "schedule pow2": {"schedule": "pow2"},
    "halton sampler": {"sampler": "halton"},
}
"""Variant name -> keyword arguments of MaskGITPipeline.__call__ (on top of the model's defaults)."""
VANILLA = "vanilla (v1 confidence)"


def pairs(per_class: int, seed: int) -> list[tuple[int, int]]:
    """(class, batch seed): one batch of all 40 classes per seed index."""
    return [(y, seed + k) for k in range(per_class) for y in range(len(C.CLASSES))]


def generate(pipe, items: list[tuple[int, int]], options: dict) -> list[np.ndarray]:
    images = []
    n = len(C.CLASSES)
    for i in range(0, len(items), n):
        chunk = items[i : i + n]
        out = pipe([y for y, _ in chunk], seed=chunk[0][1], **options)
        images += [(img.numpy() * 255).round().astype(np.uint8) for img in out]
    return images


def interval(prefs: list[float]) -> tuple[float, float]:
    x = np.asarray(prefs, dtype=float)
    return float(x.mean()), 1.96 * float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else 0.0


def study(pipe, per_class: int, variants: list[str], seed: int) -> dict:
    items = pairs(per_class, seed)
    verdicts, rows = {}, {}
    for name in variants:
        t = time.perf_counter()
        opts = VARIANTS[name]
        images = generate(pipe, items, opts)
        verdicts[name] = [judge(img, C.class_prompt(y)) for img, (y, _) in zip(images, items, strict=True)]
        seconds = (time.perf_counter() - t) / len(items)
        acc = accuracy(verdicts[name])
        calls = pipe.sampler_settings(**opts).model_calls()
        rows[name] = {"accuracy": acc, "score": float(np.mean([v.score for v in verdicts[name]])), "calls": calls,
                      "seconds_per_image": seconds}
        if name != VANILLA:
            prefs = [preference(a, b) for a, b in zip(verdicts[name], verdicts[VANILLA], strict=True)]
            mean, half = interval(prefs)
            rows[name].update(win=mean, ci=half, ties=int(sum(p == 0.5 for p in prefs)))
        print(f"  {name:26s} all={acc['all']:.3f} score={rows[name]['score']:.3f} {seconds:.3f} s/img", flush=True)
    return {"model": pipe.info.name, "steps": pipe.info.steps, "cfg_w": pipe.info.cfg_w, "torch": torch.__version__,
            "n": len(items), "variants": rows}


def table(results: dict) -> str:
    lines = [f"Model `{results['model']}` (MaskGIT v1 layout; vanilla = v1 confidence sampler, {results['steps']} steps, "
             f"w {results['cfg_w']} ramped), {results['n']} class-seed pairs, torch {results['torch']}, CPU.", ""]
    lines.append("| variant | calls/img | all correct | " + " | ".join(ATTRIBUTES) + " | score | win vs vanilla (95% CI, ties) |")
    lines.append("|---|---|---|" + "---|" * len(ATTRIBUTES) + "---|---|")
    for name, r in results["variants"].items():
        acc = r["accuracy"]
        win = f"{r['win'] * 100:.1f}% ± {r['ci'] * 100:.1f} ({r['ties']})" if "win" in r else "-"
        cells = " | ".join(f"{acc[a] * 100:.1f}" for a in ATTRIBUTES)
        lines.append(f"| {name} | {r['calls']} | {acc['all'] * 100:.1f} | {cells} | {r['score']:.3f} | {win} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(DEMO), help="a MaskGIT folder whose classes are the demo's (default: the demo)")
    ap.add_argument("--per-class", type=int, default=5, help="seeds per class")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(REPO / "runs" / "quality_maskgit"))
    args = ap.parse_args(argv)
    pipe = mgt_core.load_pipeline(args.model, dtype=torch.float32)
    variants = [VANILLA, *[v for v in args.variants if v != VANILLA]]
    results = study(pipe, args.per_class, variants, args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    md = table(results)
    (out / "results.md").write_text(md + "\n")
    print(md)
    return results


if __name__ == "__main__":
    main()

"""The quality study: what each sampling design choice does on the built-in demo model.

For fixed prompt sets (held-in simple prompts and two-object compositional prompts) and identical
seeds, every variant generates the same images' worth of prompts; the programmatic judge
(``mgt_core.demo.judge``) checks each attribute the prompt names. Reported per variant: accuracy per
attribute, all-correct rate, mean soft score, winning rate against vanilla (a prompt is won when
the judge prefers the variant's image: more checks passed, then a higher score; ties count half)
with a 95% interval and the tie count, and model calls per image. It plays the role the paper
gives HPS v2 winning rates.

    python bench/quality.py                        # defaults: 200 prompts per split, every variant
    python bench/quality.py --n 20 --variants vanilla noise_reg --splits simple
    python bench/quality.py --grid docs/quality_grid.png   # also a side-by-side image of a few prompts
    python bench/quality.py --size 384x256 --variants vanilla   # another canvas (width x height)
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
from mgt_core.demo.judge import accuracy, judge, preference  # noqa: E402
from mgt_core.demo.scenes import eval_prompts  # noqa: E402

DEMO = REPO / "mgt_core" / "demo" / "mgt-demo"
ATTRIBUTES = ("colour", "shape", "outline", "clean", "position", "size", "background", "count", "relation")
WELL_FORMED = ("outline", "clean")
"""The stricter judge's checks (issue 15); ``all correct (lenient)`` leaves them out, which is the
verdict of the judge before them."""

VARIANTS: dict[str, dict] = {
    "vanilla": {},
    "noise_reg": {"noise_regularization": True},
    "diff_sampling": {"differential_sampling": True},
    "z_sampling": {"z_sampling": True},
    "z_sampling+noise_reg": {"z_sampling": True, "noise_regularization": True},
    "z_sampling+diff_sampling": {"z_sampling": True, "differential_sampling": True},
    "enhanced (all three)": {"z_sampling": True, "noise_regularization": True, "differential_sampling": True},
    "schedule linear": {"schedule": "linear"},
    "schedule pow2": {"schedule": "pow2"},
    "schedule pow0.5": {"schedule": "pow0.5"},
    "schedule arccos": {"schedule": "arccos"},
    "schedule log": {"schedule": "log"},
    "schedule exp": {"schedule": "exp"},
    "vanilla 46 steps": {"steps": 46},
    "token temperature 0.5": {"token_temperature": 0.5},
    "token temperature 0.5 + Gumbel 0.5": {"token_temperature": 0.5, "temperature": (0.5, 0.0)},
    "token temperature 0.7 + Gumbel 0.5": {"token_temperature": 0.7, "temperature": (0.5, 0.0)},
    "token temperature 0.35 + Gumbel 0.5": {"token_temperature": 0.35, "temperature": (0.5, 0.0)},
    "token temperature 0.7 + Gumbel 0.5 + Z": {
        "token_temperature": 0.7, "temperature": (0.5, 0.0), "z_sampling": {"start": 0, "stop": None, "inversion_cfg": 0.0}
    },
    "token temperature 0.7 + Gumbel 0.5 + Z 8-15": {
        "token_temperature": 0.7, "temperature": (0.5, 0.0), "z_sampling": {"start": 8, "stop": None, "inversion_cfg": 0.0}
    },
    "vanilla 30 steps": {"steps": 30},
}
"""Variant name -> keyword arguments of MGTPipeline.__call__ (on top of the model's defaults).
"vanilla 46 steps" is vanilla given masked Z-Sampling's model calls (the compute-matched baseline), "vanilla 30
steps" the same for Z over the second half of the steps (8-15)."""


def generate(pipe, prompts: list[tuple[str, int]], options: dict, batch: int) -> list[np.ndarray]:
    """Images for the prompts, in batches; each batch is seeded with its first prompt's seed, so
    every variant sees the same prompts with the same seeds."""
    images = []
    for i in range(0, len(prompts), batch):
        chunk = prompts[i : i + batch]
        out = pipe([p for p, _ in chunk], seed=chunk[0][1], **options)
        images += [(img.numpy() * 255).round().astype(np.uint8) for img in out]
    return images


def model_calls(pipe, options: dict) -> int:
    from mgt_core.pipeline import make_settings

    opts = {k: v for k, v in options.items() if k in ("noise_regularization", "differential_sampling", "z_sampling", "schedule")}
    return make_settings(steps=options.get("steps", pipe.info.steps), guidance_scale=pipe.info.guidance_scale, **opts).model_calls()


def interval(prefs: list[float]) -> tuple[float, float]:
    """Mean and 95% half-width (normal approximation) of per-prompt preferences (1, 0.5, 0)."""
    x = np.asarray(prefs, dtype=float)
    return float(x.mean()), 1.96 * float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else 0.0


def study(pipe, splits: list[str], n: int, variants: list[str], batch: int, seed: int, size=None,
          baseline: str = "vanilla") -> dict:
    """``size`` (width, height) generates every variant at that canvas instead of the model's default;
    win rates are against ``baseline`` (run first)."""
    results: dict = {"model": pipe.info.name, "baseline": baseline, "steps": pipe.info.steps, "guidance_scale": pipe.info.guidance_scale,
                     "size": list(size or (pipe.info.width, pipe.info.height)), "torch": torch.__version__, "splits": {}}
    extra = {"width": size[0], "height": size[1]} if size else {}
    for split in splits:
        prompts = eval_prompts(split, n, seed)
        verdicts, rows = {}, {}
        for name in variants:
            t = time.perf_counter()
            images = generate(pipe, prompts, {**VARIANTS[name], **extra}, batch)
            verdicts[name] = [judge(img, p) for img, (p, _) in zip(images, prompts, strict=True)]
            seconds = (time.perf_counter() - t) / len(prompts)
            acc = accuracy(verdicts[name])
            acc["lenient"] = float(np.mean([all(ok for k, ok in v.checks.items() if k not in WELL_FORMED)
                                            for v in verdicts[name]]))
            rows[name] = {"accuracy": acc, "score": float(np.mean([v.score for v in verdicts[name]])),
                          "calls": model_calls(pipe, VARIANTS[name]), "seconds_per_image": seconds}
            if name != baseline and baseline in verdicts:
                prefs = [preference(a, b) for a, b in zip(verdicts[name], verdicts[baseline], strict=True)]
                mean, half = interval(prefs)
                rows[name].update(win=mean, ci=half, ties=int(sum(p == 0.5 for p in prefs)))
            print(f"  {split:14s} {name:26s} all={acc['all']:.3f} score={rows[name]['score']:.3f} "
                  f"{seconds:.2f} s/img", flush=True)
        results["splits"][split] = {"n": len(prompts), "variants": rows}
    return results


def table(results: dict) -> str:
    size = "x".join(str(v) for v in results.get("size", ()))
    lines = [f"Model `{results['model']}` ({results['steps']} steps, CFG {results['guidance_scale']}, {size}), "
             f"torch {results['torch']}, CPU."]
    for split, data in results["splits"].items():
        lines += ["", f"**{split}** ({data['n']} prompt-seed pairs)", ""]
        attrs = [a for a in ATTRIBUTES if any(a in r["accuracy"] for r in data["variants"].values())]
        lines.append("| variant | calls/img | all correct | all correct (lenient) | " + " | ".join(attrs)
                     + f" | score | win vs {results.get('baseline', 'vanilla')} (95% CI, ties) |")
        lines.append("|---|---|---|---|" + "---|" * len(attrs) + "---|---|")
        for name, r in data["variants"].items():
            acc = r["accuracy"]
            win = f"{r['win'] * 100:.1f}% ± {r['ci'] * 100:.1f} ({r['ties']})" if "win" in r else "-"
            cells = " | ".join(f"{acc[a] * 100:.1f}" if a in acc else "-" for a in attrs)
            lenient = f"{acc['lenient'] * 100:.1f}" if "lenient" in acc else "-"
            lines.append(f"| {name} | {r['calls']} | {acc['all'] * 100:.1f} | {lenient} | {cells} | {r['score']:.3f} | {win} |")
    return "\n".join(lines)


def grid(pipe, path: Path, variants: list[str], seed: int) -> None:
    """A small side-by-side PNG: rows = prompts, columns = variants."""
    from PIL import Image, ImageDraw

    prompts = eval_prompts("simple", 3, seed) + eval_prompts("compositional", 3, seed)
    cell, pad, head = 128, 4, 18
    canvas = Image.new("RGB", (len(variants) * (cell + pad) + pad, len(prompts) * (cell + pad) + pad + head), "white")
    draw = ImageDraw.Draw(canvas)
    for c, name in enumerate(variants):
        draw.text((pad + c * (cell + pad), 3), name[:22], fill="black")
        images = generate(pipe, prompts, VARIANTS[name], len(prompts))
        for r, img in enumerate(images):
            thumb = Image.fromarray(img).resize((cell, cell), Image.LANCZOS)
            canvas.paste(thumb, (pad + c * (cell + pad), head + pad + r * (cell + pad)))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, optimize=True)
    (path.with_suffix(".txt")).write_text("\n".join(p for p, _ in prompts) + "\n")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(DEMO), help="model folder (default: the built-in demo model)")
    ap.add_argument("--n", type=int, default=200, help="prompt-seed pairs per split")
    ap.add_argument("--splits", nargs="+", default=["simple", "compositional"])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--batch", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(REPO / "runs" / "quality"), help="folder for results.json / results.md")
    ap.add_argument("--grid", help="also write a side-by-side PNG of a few prompts here")
    ap.add_argument("--baseline", default="vanilla", choices=list(VARIANTS), help="win rates against this variant")
    ap.add_argument("--size", default=None, help="generate at WIDTHxHEIGHT (default: the model's size)")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    pipe = mgt_core.load_pipeline(args.model, dtype=torch.float32)
    variants = [args.baseline, *[v for v in args.variants if v != args.baseline]]
    size = tuple(int(v) for v in args.size.lower().split("x")) if args.size else None
    results = study(pipe, args.splits, args.n, variants, args.batch, args.seed, size, args.baseline)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    md = table(results)
    (out / "results.md").write_text(md + "\n")
    print(md)
    if args.grid:
        grid(pipe, Path(args.grid), ["vanilla", "noise_reg", "diff_sampling", "z_sampling", "enhanced (all three)"], args.seed)
    return results


if __name__ == "__main__":
    main()

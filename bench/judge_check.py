"""Judge accuracy on ground-truth renders and on degraded copies, per split and attribute.

The judge must be ~100% on clean renders (it defines the metric) and degrade gracefully on lossy
images, which is what a generated image looks like. Degradations mimic a VQ round trip:
JPEG quality 30, Gaussian blur (sigma 2 px), Gaussian noise (sigma 12), and down-up resampling by 8x / 16x (16x leaves one pixel per token,
far harsher than a VQ decoder, which draws sharp edges inside a token). Then the negative set
(``scenes.broken_set``: L-shapes, holes, blobs, fragments, stray dots, stretched boxes; the prompt
unchanged), which the judge must reject (>= 95%), with the checks that caught each kind.

    python bench/judge_check.py [--n 1000] [--seed 0]
    python bench/judge_check.py --vq-only mgt_core/demo/mgt-demo --n 300   # the VQ's round trips only
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mgt_core.demo import scenes as S  # noqa: E402
from mgt_core.demo.judge import judge  # noqa: E402


def jpeg(a: np.ndarray, q: int = 30) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=q)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def blur(a: np.ndarray, r: float = 2.0) -> np.ndarray:
    return np.asarray(Image.fromarray(a).filter(ImageFilter.GaussianBlur(r)))


def down_up(a: np.ndarray, f: int, resample: Image.Resampling) -> np.ndarray:
    im = Image.fromarray(a)
    w, h = im.size
    return np.asarray(im.resize((w // f, h // f), resample).resize((w, h), resample))


def noise(a: np.ndarray, sigma: float = 12.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(a + rng.normal(0, sigma, a.shape), 0, 255).astype(np.uint8)


DEGRADATIONS = {
    "gt": lambda a: a,
    "jpeg30": jpeg,
    "blur2": blur,
    "noise12": noise,
    "down8-bilinear": lambda a: down_up(a, 8, Image.Resampling.BILINEAR),
    "down16-bilinear": lambda a: down_up(a, 16, Image.Resampling.BILINEAR),
    "down16-nearest": lambda a: down_up(a, 16, Image.Resampling.NEAREST),
}
ATTRS = ("count", "background", "colour", "shape", "outline", "clean", "size", "position", "relation")


def vq_check(model: str, n: int, seed: int) -> None:
    """All-correct and per-attribute rates of VQ round trips (the ceiling of a model on its tokens)."""
    import torch

    from mgt_core.demo.judge import accuracy
    from mgt_core.loading.pipeline import load_pipeline

    pipe = load_pipeline(model, dtype=torch.float32, load_text=False)
    for split in ("simple", "compositional"):
        rng = np.random.default_rng([seed, S.SPLITS.index(split)])
        verdicts = []
        for i in range(0, n, 50):
            prompts, images = S.sample_batch(rng, split, min(50, n - i))
            rec = pipe.decode(pipe.encode_image(torch.from_numpy(images).float() / 255))
            verdicts += [judge((r.numpy() * 255).round().astype(np.uint8), p) for r, p in zip(rec, prompts, strict=True)]
        acc = accuracy(verdicts)
        print(f"VQ round trip, {split} ({n}): " + ", ".join(f"{k} {100 * v:.1f}" for k, v in acc.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="scenes per split")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vq-only", metavar="MODEL", help="judge encode + decode of renders through MODEL's VQ instead")
    args = ap.parse_args()
    if args.vq_only:
        vq_check(args.vq_only, args.n, args.seed)
        return

    hits: dict[tuple[str, str], Counter] = defaultdict(Counter)
    tries: dict[tuple[str, str], Counter] = defaultdict(Counter)
    shape_conf: dict[str, Counter] = defaultdict(Counter)  # degradation -> (true, judged) counts, one-object
    shape_by_size: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    t_judge = 0.0
    n_judge = 0
    t0 = time.perf_counter()
    for split in S.SPLITS:
        rng = np.random.default_rng([args.seed, S.SPLITS.index(split)])
        for _ in range(args.n):
            scene = S.sample_scene(rng, split)
            prompt = S.prompt_of(scene)
            clean = S.render(scene)
            for name, fn in DEGRADATIONS.items():
                t = time.perf_counter()
                v = judge(fn(clean), prompt)
                t_judge += time.perf_counter() - t
                n_judge += 1
                key = (split, name)
                tries[key]["all"] += 1
                hits[key]["all"] += v.all_correct
                for a, ok in v.checks.items():
                    tries[key][a] += 1
                    hits[key][a] += ok
                if len(scene.objects) == 1:
                    o = scene.objects[0]
                    d = v.matched[0]
                    judged = v.detections[d].shape if d >= 0 else "none"
                    shape_conf[name][(o.shape, judged)] += 1
                    shape_by_size[(name, o.size)][0] += judged == o.shape
                    shape_by_size[(name, o.size)][1] += 1

    cols = ("all", *ATTRS)
    print(f"judge accuracy (%), {args.n} scenes per split; '-' = attribute not in that split's prompts")
    print(f"{'split':14s} {'degradation':16s} " + " ".join(f"{c:>10s}" for c in cols))
    for split in S.SPLITS:
        for name in DEGRADATIONS:
            key = (split, name)
            cells = [f"{100 * hits[key][c] / tries[key][c]:10.1f}" if tries[key][c] else f"{'-':>10s}" for c in cols]
            print(f"{split:14s} {name:16s} " + " ".join(cells))
    print()
    print("shape accuracy (%) by true size, one-object scenes of all splits")
    print(f"{'degradation':16s} {'small':>8s} {'large':>8s}")
    for name in DEGRADATIONS:
        sm, lg = shape_by_size[(name, "small")], shape_by_size[(name, "large")]
        print(f"{name:16s} {100 * sm[0] / max(sm[1], 1):8.1f} {100 * lg[0] / max(lg[1], 1):8.1f}")
    print()
    judged_names = [*S.SHAPES, "none"]
    for name in DEGRADATIONS:
        conf = shape_conf[name]
        if all(conf[(s, s)] == sum(conf[(s, j)] for j in judged_names) for s in S.SHAPES):
            continue
        print(f"shape confusion, {name} (rows true, cols judged; one-object scenes)")
        print(f"{'':10s}" + "".join(f"{j:>9s}" for j in judged_names))
        for s in S.SHAPES:
            print(f"{s:10s}" + "".join(f"{conf[(s, j)]:9d}" for j in judged_names))
        print()
    negatives = S.broken_set(max(1, args.n // 5), seed=args.seed)
    print(f"negative set: {len(negatives) // len(S.BROKEN_KINDS)} broken renders per kind (simple, heldout, compositional)")
    print(f"{'kind':10s} {'rejected':>9s}  failed checks")
    caught: dict[str, Counter] = defaultdict(Counter)
    rejected: Counter = Counter()
    for kind, prompt, img in negatives:
        v = judge(img, prompt)
        rejected[kind] += not v.all_correct
        caught[kind].update(k for k, ok in v.checks.items() if not ok)
    per = len(negatives) // len(S.BROKEN_KINDS)
    for kind in S.BROKEN_KINDS:
        print(f"{kind:10s} {100 * rejected[kind] / per:8.1f}%  {dict(caught[kind].most_common())}")
    print(f"{'all':10s} {100 * sum(rejected.values()) / len(negatives):8.1f}%")
    print()
    rng = np.random.default_rng(99)
    scenes = [S.sample_scene(rng, "train") for _ in range(2000)]
    t = time.perf_counter()
    S.render_batch(scenes)
    t_render = time.perf_counter() - t
    print(f"render: {len(scenes) / t_render:.0f} images/s (256 px, one process, train mix)")
    print(f"judge: {1000 * t_judge / n_judge:.1f} ms/image; total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()

"""Programmatic judge for the synthetic domain: does an image show what its prompt says?

It plays the role of the paper's HPS v2 scorer (winning rates between sampling design choices), but
is exact and offline. Pipeline, all numpy + PIL:
  1. background colour = per-channel median of a 2 px border strip (objects keep >= 4 px away);
  2. object pixels = RGB distance to the background > ``SEED_THRESHOLD``; 8-connected components by
     run-length union-find; components smaller than ``MIN_AREA`` px count as fragments, not objects;
  3. per object: colour = median of its most saturated pixels -> nearest palette colour; coverage
     alpha = projection of each pixel onto (colour - background), so the silhouette is cut at half
     contrast whatever the colours; bbox of alpha > 0.5 gives centre (-> 3x3 cell), extent (-> size)
     and a crop that is resized to 32x32 and compared (soft IoU) with each shape drawn to fill its box;
  4. the prompt's objects are matched to detections maximising colour + shape agreement;
  5. well-formedness (``outline`` and ``clean``): a matched object must match its shape's template
     closely (IoU >= ``OUTLINE_IOU[shape]`` at the sharp blurs), fill a square box (``MIN_ASPECT``) and have
     no enclosed hole (``MAX_HOLE`` px); the image must carry no stray fragment of ``STRAY_AREA`` px
     or more. Without them an L-shaped "triangle" with a hole and stray dots passed (issue 15);
     ``scenes.broken_render`` makes such negatives and the tests hold the judge to rejecting them.
Each attribute gets a hard check and a soft score in [0, 1]; ``score`` (mean of the soft scores of
the checked attributes) breaks ties between two images of the same prompt.
Images are resized to a 256-px short side first (a square one to 256x256, a 3:2 one to 384x256), so
sizes are px of the 256 scale and positions are thirds of each side.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageFilter

from ..errors import MGTInputError
from . import scenes as S

SEED_THRESHOLD = 40.0
"""RGB distance to the background that marks a pixel as object; < half the weakest palette contrast (90)."""
MIN_AREA = 400
"""Pixels (256 canvas) a component needs to count as an object; the smallest real one (star) has ~1400."""
OUTLINE_IOU: dict[str, float] = {"circle": 0.87, "square": 0.85, "triangle": 0.78, "star": 0.70, "cross": 0.78}
"""IoU with the named shape's sharp templates an object needs to count as well drawn, per shape:
renders score >= 0.94; VQ round trips of them (the best a model on these tokens can draw) score
at their 1st percentile circle 0.90, square 0.88, triangle 0.81, cross 0.80, star 0.69 (small
stars are ragged at 4x4 tokens); a square missing a corner quadrant scores 0.75, a lumpy blob
0.77-0.84 against a circle, an L-shaped star 0.58-0.72. Measured in ``bench/judge_check.py``."""
SHARP_BLURS = 3
"""Template blurs (the first n of TEMPLATE_BLURS) the outline check compares with: a blob matches a
heavily blurred template of almost anything, so well-formedness asks for a crisp match."""
MIN_ASPECT = 0.80
"""Short / long side of an object's box: every shape fills a square box (a stretched one is wrong)."""
MAX_HOLE = 24
"""Enclosed background px an object may hold (none of the shapes has a hole)."""
STRAY_AREA = 24
"""Fragments (components below MIN_AREA) of this many px or more are stray tokens, not antialiasing."""
STRAY_GAP = 3
"""px outside an object's box within which a fragment counts as that object's edge, not a stray."""
TEMPLATE = 32
"""Side of the shape templates the crop is compared at: enough for star points and cross arms."""
BORDER = 2

_COLOUR_SIGMA = 20.0
_SHAPE_TEMP = 0.04
_POS_SCALE = 12.0
_SIZE_SCALE = 6.0
_REL_SCALE = 12.0

_OBJ_NAMES = list(S.COLOURS)
_OBJ_RGB = np.array([S.COLOURS[c] for c in _OBJ_NAMES], np.float32)
_BG_NAMES = list(S.BACKGROUNDS)
_BG_RGB = np.array([S.BACKGROUNDS[c] for c in _BG_NAMES], np.float32)


@dataclass(frozen=True)
class Detection:
    """One object found in the image (px of the image at 256-px short side, bbox end exclusive)."""

    colour: str
    rgb: tuple[float, float, float]
    shape: str
    shape_iou: dict[str, float]
    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1
    center: tuple[float, float]
    extent: float
    cell: tuple[int, int]
    size: str
    area: int
    sharp_iou: dict[str, float] | None = None  # IoU with the sharp templates only (outline check)
    aspect: float = 1.0  # short / long side of the bbox
    hole_area: int = 0  # background px enclosed by the object
    canvas: tuple[int, int] = (S.CANVAS, S.CANVAS)  # (width, height) of the image it was found in


@dataclass(frozen=True)
class Verdict:
    """Per-attribute hard checks and soft scores for the attributes the prompt specifies.

    Keys: ``count``, ``background``, ``colour``, ``shape`` always; ``size`` and ``position`` when
    the one-object prompt names them; ``relation`` for two objects (``colour``/``shape`` then
    require both objects right). ``matched[i]`` is the detection index for prompt object i or -1.
    """

    prompt: str
    checks: dict[str, bool]
    soft: dict[str, float]
    score: float
    all_correct: bool
    n_objects: int
    n_fragments: int
    background: str
    background_rgb: tuple[float, float, float]
    detections: tuple[Detection, ...]
    matched: tuple[int, ...]
    n_stray: int = 0


# ----------------------------------------------------------------------------------------------
# Connected components


def label_components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-connected labels of a bool [H, W] mask (0 = background) and each label's area (index 0 unused).

    Run-length union-find: rows are split into runs with numpy, and only runs (a few hundred per
    image) go through the Python loop, so it is exact and fast without scipy.
    """
    h, w = mask.shape
    pad = np.zeros((h, w + 2), np.int8)
    pad[:, 1:-1] = mask
    d = np.diff(pad, axis=1)
    rows, starts = np.nonzero(d == 1)
    _, ends = np.nonzero(d == -1)  # exclusive; same row-major order as starts
    n = len(starts)
    labels = np.zeros((h, w), np.int32)
    if n == 0:
        return labels, np.zeros(1, np.int64)
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    row_start = np.searchsorted(rows, np.arange(h + 1)).tolist()
    s, e = starts.tolist(), ends.tolist()
    for y in range(1, h):
        i, i_end = row_start[y - 1], row_start[y]
        j, j_end = row_start[y], row_start[y + 1]
        while i < i_end and j < j_end:
            if s[j] <= e[i] and s[i] <= e[j]:  # touching incl. diagonally (ends are exclusive)
                ri, rj = find(i), find(j)
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)
            if e[i] < e[j]:
                i += 1
            else:
                j += 1
    roots = np.fromiter((find(k) for k in range(n)), np.int64, n)
    _, run_label = np.unique(roots, return_inverse=True)
    run_label = run_label + 1
    lengths = ends - starts
    labels[mask.astype(bool)] = np.repeat(run_label, lengths)
    areas = np.bincount(run_label, weights=lengths, minlength=run_label.max() + 1).astype(np.int64)
    return labels, areas


# ----------------------------------------------------------------------------------------------
# Measurements


TEMPLATE_BLURS = (0.0, 0.03, 0.06, 0.09, 0.12, 0.16)
"""Gaussian sigmas (fraction of the box side) of the template bank: a blurred object is compared
with equally blurred templates, cropped the same way, so a soft star still beats a circle."""


@lru_cache(maxsize=1)
def _templates() -> np.ndarray:
    """[n_shapes, n_blurs, T, T] silhouettes, each cropped to its own alpha > 0.5 box like a detection."""
    box, pad = 128, 64
    out = np.zeros((len(S.SHAPES), len(TEMPLATE_BLURS), TEMPLATE, TEMPLATE), np.float32)
    for i, shape in enumerate(S.SHAPES):
        a = S.shape_alpha(shape, pad, pad, box, box + 2 * pad, box + 2 * pad, ss=4)
        img = Image.fromarray(a, "F")
        for j, b in enumerate(TEMPLATE_BLURS):
            # PIL blurs "F" images only through "L"; 8-bit levels are plenty for a 32 px template.
            soft = Image.fromarray(np.rint(a * 255).astype(np.uint8), "L")
            soft = soft.filter(ImageFilter.GaussianBlur(b * box)) if b > 0 else soft
            t = np.asarray(soft, np.float32) / 255 if b > 0 else np.asarray(img)
            ys, xs = np.nonzero(t > 0.5)
            crop = np.ascontiguousarray(t[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1])
            out[i, j] = _resize(crop)
    return out


def _resize(a: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(a, "F").resize((TEMPLATE, TEMPLATE), Image.Resampling.BILINEAR))


def _as_image(image) -> np.ndarray:
    """float32 [H, W, 3] in 0..255, short side 256, from uint8 or float ([0, 1]) HWC, or CHW with 3 channels."""
    if hasattr(image, "detach"):  # torch tensor
        image = image.detach().cpu().numpy()
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[-1] != 3 and a.shape[0] == 3:
        a = np.moveaxis(a, 0, -1)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise MGTInputError(f"judge expects an RGB image [H, W, 3] (or [3, H, W]), got shape {a.shape}")
    if a.dtype == np.uint8:
        a = a.astype(np.float32)
    elif np.issubdtype(a.dtype, np.floating):
        a = np.clip(a.astype(np.float32), 0.0, 1.0) * 255.0
    else:
        raise MGTInputError(f"judge expects uint8 (0..255) or float (0..1) pixels, got dtype {a.dtype}")
    h, w = a.shape[:2]
    if min(h, w) < 1:
        raise MGTInputError(f"judge expects a non-empty image, got shape {a.shape}")
    size = (round(w * S.CANVAS / min(h, w)), round(h * S.CANVAS / min(h, w)))
    if (w, h) != size:
        a = np.stack(
            [np.asarray(Image.fromarray(a[..., c], "F").resize(size, Image.Resampling.BILINEAR)) for c in range(3)],
            -1,
        )
    return a


def _gauss_probs(rgb: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Soft nearest-palette assignment: softmax of -d^2 / (2 sigma^2)."""
    d2 = ((palette - rgb) ** 2).sum(-1)
    z = -(d2 - d2.min()) / (2 * _COLOUR_SIGMA**2)
    p = np.exp(z)
    return p / p.sum()


def _measure(img: np.ndarray, bg: np.ndarray, dist: np.ndarray, labels: np.ndarray, lab: int) -> Detection | None:
    ys, xs = np.nonzero(labels == lab)
    height, width = labels.shape
    y0, y1 = max(0, ys.min() - 3), min(height, ys.max() + 4)
    x0, x1 = max(0, xs.min() - 3), min(width, xs.max() + 4)
    dvals = dist[ys, xs]
    core = dvals >= 0.7 * np.percentile(dvals, 90)
    rgb = np.median(img[ys[core], xs[core]], axis=0)
    direction = rgb - bg
    norm2 = float(direction @ direction)
    if norm2 < 1.0:
        return None
    region = img[y0:y1, x0:x1] - bg
    alpha = np.clip(region @ (direction / norm2), 0.0, 1.0)
    sub = labels[y0:y1, x0:x1]
    alpha[(sub != 0) & (sub != lab)] = 0.0  # a neighbour inside the margin is not ours
    inside = alpha > 0.5
    if not inside.any():
        return None
    ry = np.nonzero(inside.any(1))[0]
    rx = np.nonzero(inside.any(0))[0]
    by0, by1, bx0, bx1 = int(ry[0]), int(ry[-1]) + 1, int(rx[0]), int(rx[-1]) + 1
    crop = _resize(np.ascontiguousarray(alpha[by0:by1, bx0:bx1], np.float32))
    t = _templates()
    ious = np.minimum(t, crop).sum((2, 3)) / np.maximum(np.maximum(t, crop).sum((2, 3)), 1e-6)
    iou = ious.max(1)
    sharp = ious[:, :SHARP_BLURS].max(1)
    box_in = inside[by0:by1, bx0:bx1]
    bbox = (bx0 + x0, by0 + y0, bx1 + x0, by1 + y0)
    center = ((bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2)
    extent = float(max(bbox[2] - bbox[0], bbox[3] - bbox[1]))
    return Detection(
        colour=_OBJ_NAMES[int(np.argmax(_gauss_probs(rgb, _OBJ_RGB)))],
        rgb=tuple(float(v) for v in rgb),
        shape=S.SHAPES[int(np.argmax(iou))],
        shape_iou={s: float(v) for s, v in zip(S.SHAPES, iou, strict=True)},
        bbox=bbox,
        center=center,
        extent=extent,
        cell=S.cell_of(center, (width, height)),
        size="large" if extent >= S.SIZE_THRESHOLD else "small",
        area=int(inside.sum()),
        sharp_iou={s: float(v) for s, v in zip(S.SHAPES, sharp, strict=True)},
        aspect=min(by1 - by0, bx1 - bx0) / max(by1 - by0, bx1 - bx0),
        hole_area=hole_area(box_in),
        canvas=(width, height),
    )


def hole_area(inside: np.ndarray) -> int:
    """Px of the complement of a bool mask that cannot reach the mask's frame (enclosed holes).

    The complement is labelled 8-connected, so a hole must be sealed by a 4-connected wall."""
    pad = np.zeros((inside.shape[0] + 2, inside.shape[1] + 2), bool)
    pad[1:-1, 1:-1] = inside
    labels, areas = label_components(~pad)
    outside = labels[0, 0]  # the padded frame is one component touching everything open
    return int(areas[1:].sum() - (areas[outside] if outside else 0))


def detect(image) -> tuple[np.ndarray, list[Detection], int, int]:
    """Background RGB, objects (largest first), the number of sub-``MIN_AREA`` fragments and of
    those the stray ones (``STRAY_AREA`` px or more)."""
    img = _as_image(image)
    border = np.concatenate(
        [img[:BORDER].reshape(-1, 3), img[-BORDER:].reshape(-1, 3), img[:, :BORDER].reshape(-1, 3),
         img[:, -BORDER:].reshape(-1, 3)]
    )  # fmt: skip
    bg = np.median(border, axis=0)
    diff = img - bg
    dist = np.sqrt(diff[..., 0] ** 2 + diff[..., 1] ** 2 + diff[..., 2] ** 2)  # not .sum(-1): 5x faster
    labels, areas = label_components(dist > SEED_THRESHOLD)
    big = [int(k) for k in np.argsort(-areas) if k > 0 and areas[k] >= MIN_AREA]
    small = (areas > 0) & (areas < MIN_AREA)
    dets = [d for d in (_measure(img, bg, dist, labels, k) for k in big[:8]) if d is not None]
    return bg, dets, int(small.sum()), _stray(labels, np.nonzero(small & (areas >= STRAY_AREA))[0], dets)


def _stray(labels: np.ndarray, candidates, dets: list[Detection]) -> int:
    """Fragments lying more than ``STRAY_GAP`` px outside every object's box: a fringe or rim piece
    hugging an object is an edge artefact (the VQ decoder makes them on clean renders), a dot away
    from the objects is a stray token."""
    n = 0
    for k in candidates:
        ys, xs = np.nonzero(labels == k)
        x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
        gaps = [max(d.bbox[0] - x1, x0 - d.bbox[2], d.bbox[1] - y1, y0 - d.bbox[3]) for d in dets]
        n += not gaps or min(gaps) > STRAY_GAP
    return n


# ----------------------------------------------------------------------------------------------
# Verdict


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, x))))


def _obj_soft(det: Detection, obj: S.SceneObject) -> dict[str, float]:
    rgb = np.asarray(det.rgb, np.float32)
    out = {"colour": float(_gauss_probs(rgb, _OBJ_RGB)[_OBJ_NAMES.index(obj.colour)])}
    ious = np.array([det.shape_iou[s] for s in S.SHAPES])
    p = np.exp((ious - ious.max()) / _SHAPE_TEMP)
    out["shape"] = float(p[S.SHAPES.index(obj.shape)] / p.sum())
    out["outline"] = _outline_soft(det, det.shape)
    if obj.size_specified:
        sgn = 1.0 if obj.size == "large" else -1.0
        out["size"] = _sigmoid(sgn * (det.extent - S.SIZE_THRESHOLD) / _SIZE_SCALE)
    if obj.position_specified:
        tx, ty = det.canvas[0] / 3, det.canvas[1] / 3
        row, col = obj.cell
        dx = max(col * tx - det.center[0], det.center[0] - (col + 1) * tx, 0.0)
        dy = max(row * ty - det.center[1], det.center[1] - (row + 1) * ty, 0.0)
        out["position"] = math.exp(-math.hypot(dx, dy) / _POS_SCALE)
    return out


def well_formed(det: Detection, shape: str) -> bool:
    """The object is drawn as a clean ``shape``: close to its sharp template, square box, no hole.

    The judge asks it for the shape the object looks most like (``det.shape``), so ``outline`` is
    independent of ``shape``: a clean star for a prompted circle fails ``shape`` only."""
    iou = det.sharp_iou[shape] if det.sharp_iou else det.shape_iou[shape]
    return iou >= OUTLINE_IOU[shape] and det.aspect >= MIN_ASPECT and det.hole_area <= MAX_HOLE


def _outline_soft(det: Detection, shape: str) -> float:
    iou = det.sharp_iou[shape] if det.sharp_iou else det.shape_iou[shape]
    return (
        _sigmoid((iou - OUTLINE_IOU[shape]) / 0.03)
        * _sigmoid((det.aspect - MIN_ASPECT) / 0.03)
        * _sigmoid((MAX_HOLE - det.hole_area) / 8.0)
    )


def _obj_checks(det: Detection, obj: S.SceneObject) -> dict[str, bool]:
    out = {
        "colour": det.colour == obj.colour,
        "shape": det.shape == obj.shape,
        "outline": well_formed(det, det.shape),
    }
    if obj.size_specified:
        out["size"] = det.size == obj.size
    if obj.position_specified:
        out["position"] = det.cell == obj.cell
    return out


def _relation_margin(a: Detection, b: Detection, relation: str) -> float:
    """How far a is from b in the relation's direction beyond the cross-axis offset (px)."""
    dx, dy = b.center[0] - a.center[0], b.center[1] - a.center[1]
    along, across = {"left of": (dx, dy), "right of": (-dx, dy), "above": (dy, dx), "below": (-dy, dx)}[relation]
    return along - abs(across)


def judge(image, prompt: str) -> Verdict:
    """Check an image against a prompt of the demo grammar (see module docstring)."""
    spec = S.parse_prompt(prompt)
    bg, dets, fragments, stray = detect(image)
    n_exp = len(spec.objects)
    bg_p = _gauss_probs(bg, _BG_RGB)
    checks: dict[str, bool] = {
        "count": len(dets) == n_exp,
        "background": _BG_NAMES[int(np.argmax(bg_p))] == spec.background,
        "clean": stray == 0,
    }
    soft: dict[str, float] = {
        "count": 0.5 ** abs(len(dets) - n_exp),
        "background": float(bg_p[_BG_NAMES.index(spec.background)]),
        "clean": 0.5**stray,
    }

    def agreement(i: int, obj: S.SceneObject) -> float:
        sc = _obj_soft(dets[i], obj)
        return sc["colour"] + sc["shape"] + 1e-6 * dets[i].area  # area: deterministic tie-break

    best: tuple[int, ...] = ()
    best_val = -1.0
    for k in range(min(n_exp, len(dets)), 0, -1):  # full match if possible, else partial
        for objs_idx in itertools.combinations(range(n_exp), k):
            for det_idx in itertools.permutations(range(len(dets)), k):
                val = sum(agreement(d, spec.objects[o]) for o, d in zip(objs_idx, det_idx, strict=True))
                if val > best_val:
                    best_val = val
                    m = [-1] * n_exp
                    for o, d in zip(objs_idx, det_idx, strict=True):
                        m[o] = d
                    best = tuple(m)
        if best:
            break
    matched = best if best else tuple([-1] * n_exp)

    per_soft: list[dict[str, float]] = []
    per_check: list[dict[str, bool]] = []
    for obj, d in zip(spec.objects, matched, strict=True):
        if d >= 0:
            per_soft.append(_obj_soft(dets[d], obj))
            per_check.append(_obj_checks(dets[d], obj))
        else:
            keys = [k for k in ("colour", "shape", "outline", "size", "position") if _wants(obj, k)]
            per_soft.append(dict.fromkeys(keys, 0.0))
            per_check.append(dict.fromkeys(keys, False))
    for key in per_check[0]:
        checks[key] = all(pc[key] for pc in per_check)
        soft[key] = float(np.mean([ps[key] for ps in per_soft]))
    if spec.relation is not None:
        if all(m >= 0 for m in matched):
            margin = _relation_margin(dets[matched[0]], dets[matched[1]], spec.relation)
            checks["relation"] = margin > 0
            soft["relation"] = _sigmoid(margin / _REL_SCALE)
        else:
            checks["relation"] = False
            soft["relation"] = 0.0
    score = float(np.mean(list(soft.values())))
    checks = {k: bool(v) for k, v in checks.items()}  # plain bools, not numpy's
    return Verdict(
        prompt=prompt,
        checks=checks,
        soft=soft,
        score=score,
        all_correct=all(checks.values()),
        n_objects=len(dets),
        n_fragments=fragments,
        background=_BG_NAMES[int(np.argmax(bg_p))],
        background_rgb=tuple(float(v) for v in bg),
        detections=tuple(dets),
        matched=matched,
        n_stray=stray,
    )


def _wants(obj: S.SceneObject, key: str) -> bool:
    return (
        key in ("colour", "shape", "outline")
        or (key == "size" and obj.size_specified)
        or (key == "position" and obj.position_specified)
    )


# ----------------------------------------------------------------------------------------------
# Comparing images (winning rates between sampling design choices)


def preference(a: Verdict, b: Verdict) -> float:
    """1 if image a answers the same prompt better than b, 0 if worse, 0.5 if tied.

    Better = more attribute checks passed; equal counts are decided by the soft score, which only
    ties exactly for (near-)identical images.
    """
    if a.prompt != b.prompt:
        raise MGTInputError(f"preference compares two images of one prompt, got {a.prompt!r} and {b.prompt!r}")
    ka = (sum(a.checks.values()), a.score)
    kb = (sum(b.checks.values()), b.score)
    return 1.0 if ka > kb else 0.0 if ka < kb else 0.5


def winning_rate(a: list[Verdict], b: list[Verdict]) -> float:
    """Mean preference of a over b across paired verdicts (same prompts, same order)."""
    if len(a) != len(b) or not a:
        raise MGTInputError(f"winning_rate needs two equally long, non-empty lists, got {len(a)} and {len(b)}")
    return float(np.mean([preference(x, y) for x, y in zip(a, b, strict=True)]))


def accuracy(verdicts: list[Verdict]) -> dict[str, float]:
    """Fraction correct per attribute (over the verdicts that check it) and ``all``."""
    out: dict[str, list[bool]] = {"all": [v.all_correct for v in verdicts]}
    for v in verdicts:
        for k, ok in v.checks.items():
            out.setdefault(k, []).append(ok)
    return {k: float(np.mean(x)) for k, x in out.items()}

"""Synthetic text-to-image domain: seeded scenes of flat shapes, their prompts, and a fast renderer.

Real Meissonic weights and image-text scorers are unavailable offline, so the pack trains a small
model on this domain and measures sampling design choices with an exact judge (``judge.py``).

Canvas and geometry (all in pixels of a 256x256 canvas, or of a wider or taller one with a 256-px short
side, ``Scene.canvas``: ``ASPECTS`` are the built-in model's; ``render(size=...)`` scales them):
  * every shape fills a square bounding box of side ``extent`` centred on ``center`` (the bbox
    centre, which is what the judge measures), upright, never closer than ``MARGIN`` px to the border;
  * size ``small``: extent drawn in [64, 76] (>= 4x4 tokens at VQ factor 16), ``large``: [112, 124]
    (64 and 112 once snapped, below);
  * position is a 3x3 grid of cells (rows top/middle/bottom, cols left/centre/right), thirds of
    each side; the centre sits near the cell's nominal point (stretched with the side) with a
    little jitter, clamped inside the canvas; object sizes are px, the same on every canvas;
  * every box then snaps onto the VQ token grid (``SNAP`` px): side floored, corner rounded. With
    continuous placement the tiny demo transformer left shape near chance after 94 CPU-minutes
    (each sub-token offset is a different set of edge codes); on the grid a shape's token map
    follows from (shape, size, cell), which it can learn.
Rendering draws a 4x supersampled coverage mask per object (PIL) and box-downsamples it, so edges
are antialiased by exact area coverage.

Prompt grammar (lowercase, no punctuation):
  one object:  "{a|an} [small|large] {colour} {shape} [position phrase] on a {bg} background"
  two objects: "{a|an} {c1} {s1} {left of|right of|above|below} {a|an} {c2} {s2} on a {bg} background"
"an" is used before a vowel ("an orange circle"); ``parse_prompt`` accepts either article.

Splits: ``train`` (one object with probability 1 - TRAIN_TWO_OBJECT_PROB, else two), ``simple``
(held-in one-object eval prompts), ``heldout`` (one object whose (colour, shape) or (colour, bg)
pair is in HELDOUT_*; those pairs never occur in ``train``) and ``compositional`` (two objects,
held-in pairs only).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field, replace

import numpy as np
from PIL import Image, ImageDraw

from ..errors import MGTInputError

CANVAS = 256
SUPERSAMPLE = 4
MARGIN = 4  # px kept free between any shape and the canvas border
SNAP = 16.0  # px: boxes sit on the token grid of a factor-16 VQ at 256 px
SNAP_PHASE = 8.0  # px: box corners at SNAP * k + SNAP_PHASE
LAYOUT = "grid16+8"
"""Names the placement rule; training-data caches are keyed on it, so a change never reuses old chunks."""

SHAPES = ("circle", "square", "triangle", "star", "cross")
"""Five upright shapes whose silhouettes differ strongly: pairwise template IoU <= 0.79 (circle/square)."""

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 220),
    "yellow": (245, 215, 30),
    "orange": (250, 130, 0),
    "purple": (140, 50, 180),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
"""Object palette; the closest pairs (yellow/orange 90, red/orange 109, blue/purple 119) stay far apart."""

BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "gray": (150, 150, 150),
    "white": COLOURS["white"],
    "black": COLOURS["black"],
    "blue": COLOURS["blue"],
    "green": COLOURS["green"],
    "beige": (225, 205, 160),
}
"""Background palette; a word shared with the object palette means the same RGB."""

MIN_CONTRAST = 90.0
"""Object/background pairs closer than this (RGB euclidean) are never sampled (same colour, mainly)."""

SIZES = ("small", "large")
SIZE_EXTENT = {"small": (64.0, 76.0), "large": (112.0, 124.0)}
SIZE_THRESHOLD = 94.0
"""Bbox side separating small from large (between the two ranges); the judge uses it."""

ROW_NAMES = ("top", None, "bottom")
COL_NAMES = ("left", None, "right")
POSITION_PHRASES: dict[tuple[int, int], str] = {
    (0, 0): "at the top left",
    (0, 1): "at the top",
    (0, 2): "at the top right",
    (1, 0): "on the left",
    (1, 1): "in the center",
    (1, 2): "on the right",
    (2, 0): "at the bottom left",
    (2, 1): "at the bottom",
    (2, 2): "at the bottom right",
}
_NOMINAL = {"small": (46.0, 128.0, 210.0), "large": (68.0, 128.0, 188.0)}
_JITTER = {"small": 8.0, "large": 6.0}

RELATIONS = ("left of", "right of", "above", "below")
"""Relation of the FIRST object to the second: "a A left of a B" means A's centre is left of B's."""

HELDOUT_COLOUR_SHAPE = frozenset(
    {("red", "star"), ("green", "cross"), ("blue", "triangle"), ("yellow", "square"), ("purple", "circle")}
)
"""One pair per shape, five different colours: every word still occurs in train, only the pairing is new."""
HELDOUT_COLOUR_BG = frozenset({("orange", "gray"), ("white", "blue"), ("black", "green"), ("red", "beige")})

SPLITS = ("train", "simple", "heldout", "compositional")
TRAIN_TWO_OBJECT_PROB = 0.3
"""Share of two-object scenes in ``train``: the relation words must be seen in training."""
P_SAY_SIZE = 0.5
P_SAY_POSITION = 0.5

# Two-object layout: objects share a row (or column) up to a small offset and are >= GAP px apart.
PAIR_EXTENT = SIZE_EXTENT["small"]
PAIR_GAP = 20.0
PAIR_MAX_OFFSET = 16.0


@dataclass(frozen=True)
class SceneObject:
    """One shape. Geometry fields are None in a parsed prompt spec until ``realize`` fills them."""

    shape: str
    colour: str
    size: str | None = None
    cell: tuple[int, int] | None = None  # (row, col) in the 3x3 grid
    center: tuple[float, float] | None = None  # (x, y) bbox centre, px on the 256 canvas
    extent: float | None = None  # bbox side, px on the 256 canvas
    size_specified: bool = False  # the prompt names the size
    position_specified: bool = False  # the prompt names the cell


@dataclass(frozen=True)
class Scene:
    """A background and one or two objects; ``relation`` relates objects[0] to objects[1]."""

    objects: tuple[SceneObject, ...]
    background: str
    relation: str | None = None
    split: str | None = field(default=None, compare=False)
    canvas: tuple[int, int] = (CANVAS, CANVAS)
    """(width, height) in px at the 256-px scale: thirds, margins and the token grid follow it."""

    @property
    def is_realized(self) -> bool:
        return all(o.center is not None and o.extent is not None for o in self.objects)


# ----------------------------------------------------------------------------------------------
# Vocabulary helpers


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def grammar_words() -> list[str]:
    """Every word a prompt of this grammar can contain (the tokenizer makes each one token)."""
    words = {"a", "an", "on", "background", "of"}
    words.update(SHAPES, COLOURS, BACKGROUNDS, SIZES)
    for phrase in POSITION_PHRASES.values():
        words.update(phrase.split())
    for rel in RELATIONS:
        words.update(rel.split())
    return sorted(words)


def _contrast(colour: str, bg: str) -> float:
    a = np.asarray(COLOURS[colour], np.float64)
    b = np.asarray(BACKGROUNDS[bg], np.float64)
    return float(np.linalg.norm(a - b))


def allowed(colour: str, shape: str | None, bg: str, heldout_ok: bool) -> bool:
    """Whether an object of this colour/shape may sit on this background in a split."""
    if _contrast(colour, bg) < MIN_CONTRAST:
        return False
    if heldout_ok:
        return True
    return (colour, bg) not in HELDOUT_COLOUR_BG and (shape is None or (colour, shape) not in HELDOUT_COLOUR_SHAPE)


def has_heldout_pair(scene: Scene) -> bool:
    return any(
        (o.colour, o.shape) in HELDOUT_COLOUR_SHAPE or (o.colour, scene.background) in HELDOUT_COLOUR_BG
        for o in scene.objects
    )


def cell_of(center: tuple[float, float], canvas: float | tuple[float, float] = CANVAS) -> tuple[int, int]:
    """Grid cell (row, col) of a point: thirds of the canvas (a side, or (width, height))."""
    w, h = (canvas, canvas) if isinstance(canvas, (int, float)) else canvas
    x, y = center
    col = min(2, max(0, int(x * 3 // w)))
    row = min(2, max(0, int(y * 3 // h)))
    return row, col


ASPECTS: tuple[tuple[int, int], ...] = ((256, 256), (384, 256), (256, 384))
"""Canvases (width, height) the built-in model is trained on: square, landscape and portrait 3:2."""


def check_canvas(canvas: tuple[int, int]) -> tuple[int, int]:
    """A (width, height) canvas: whole tokens (multiples of 16 px), 256 px or more on each side."""
    try:
        w, h = (int(v) for v in canvas)
    except (TypeError, ValueError):
        raise MGTInputError(f"canvas must be (width, height) in px, got {canvas!r}") from None
    if w < CANVAS or h < CANVAS or w % 16 or h % 16:
        raise MGTInputError(f"canvas sides must be multiples of 16 and at least {CANVAS} px, got {w}x{h}")
    return w, h


# ----------------------------------------------------------------------------------------------
# Sampling


def _pick(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


def _sample_one_object_spec(rng: np.random.Generator, heldout_ok: bool) -> Scene:
    while True:
        bg = _pick(rng, list(BACKGROUNDS))
        colour = _pick(rng, list(COLOURS))
        shape = _pick(rng, SHAPES)
        if allowed(colour, shape, bg, heldout_ok):
            break
    say_size = bool(rng.random() < P_SAY_SIZE)
    say_pos = bool(rng.random() < P_SAY_POSITION)
    size = _pick(rng, SIZES)
    cell = (int(rng.integers(3)), int(rng.integers(3)))
    obj = SceneObject(shape, colour, size, cell, size_specified=say_size, position_specified=say_pos)
    return Scene((obj,), bg)


def _sample_two_object_spec(rng: np.random.Generator) -> Scene:
    while True:
        bg = _pick(rng, list(BACKGROUNDS))
        objs = [(_pick(rng, list(COLOURS)), _pick(rng, SHAPES)) for _ in range(2)]
        if objs[0] == objs[1]:
            continue
        if all(allowed(c, s, bg, heldout_ok=False) for c, s in objs):
            break
    rel = _pick(rng, RELATIONS)
    return Scene(tuple(SceneObject(s, c) for c, s in objs), bg, rel)


def sample_scene(rng: np.random.Generator, split: str, canvas: tuple[int, int] = (CANVAS, CANVAS)) -> Scene:
    """A random, fully realised scene of a split (see module docstring for what each split holds)."""
    if split == "train":
        if rng.random() < TRAIN_TWO_OBJECT_PROB:
            spec = _sample_two_object_spec(rng)
        else:
            spec = _sample_one_object_spec(rng, heldout_ok=False)
    elif split == "simple":
        spec = _sample_one_object_spec(rng, heldout_ok=False)
    elif split == "heldout":
        while True:  # rejection: the unrestricted distribution conditioned on a held-out pair
            spec = _sample_one_object_spec(rng, heldout_ok=True)
            if has_heldout_pair(spec):
                break
    elif split == "compositional":
        spec = _sample_two_object_spec(rng)
    else:
        raise MGTInputError(f"split must be one of {SPLITS}, got {split!r}")
    return replace(realize(spec, rng, canvas), split=split)


def _nominal(size: str, k: int, side: float) -> float:
    """The cell's nominal point along a canvas side: the 256-px one, stretched with the side."""
    return side / 2 + (_NOMINAL[size][k] - CANVAS / 2) * (side / CANVAS)


def _place_single(
    rng: np.random.Generator, size: str, cell: tuple[int, int], canvas: tuple[int, int] = (CANVAS, CANVAS)
) -> tuple[tuple[float, float], float]:
    lo, hi = SIZE_EXTENT[size]
    extent = float(rng.uniform(lo, hi))
    half = extent / 2 + MARGIN + 1  # +1: the antialiased rim may reach a pixel past the bbox
    jit = _JITTER[size]
    row, col = cell
    w, h = canvas
    x = float(np.clip(_nominal(size, col, w) + rng.uniform(-jit, jit), half, w - half))
    y = float(np.clip(_nominal(size, row, h) + rng.uniform(-jit, jit), half, h - half))
    return (x, y), extent


def _place_pair(
    rng: np.random.Generator, relation: str, canvas: tuple[int, int] = (CANVAS, CANVAS)
) -> list[tuple[tuple[float, float], float]]:
    """Two non-overlapping boxes: along the relation axis >= PAIR_GAP apart, across it nearly aligned."""
    lo, hi = PAIR_EXTENT
    first_low = relation in ("left of", "above")  # object 0 has the smaller coordinate along the axis
    horizontal = relation in ("left of", "right of")
    A, B = canvas if horizontal else canvas[::-1]  # canvas side along and across the relation axis
    while True:
        e = rng.uniform(lo, hi, size=2)
        h = e / 2 + MARGIN + 1
        i_lo, i_hi = (0, 1) if first_low else (1, 0)
        along = np.empty(2)
        along[i_lo] = rng.uniform(h[i_lo], A / 2 - 10)
        along[i_hi] = rng.uniform(A / 2 + 10, A - h[i_hi])
        if along[i_hi] - along[i_lo] < (e[0] + e[1]) / 2 + PAIR_GAP:
            continue
        base = rng.uniform(max(h) + PAIR_MAX_OFFSET / 2, B - max(h) - PAIR_MAX_OFFSET / 2)
        across = np.clip(base + rng.uniform(-PAIR_MAX_OFFSET / 2, PAIR_MAX_OFFSET / 2, size=2), h, B - h)
        break
    if horizontal:
        centers = [(float(along[i]), float(across[i])) for i in range(2)]
    else:
        centers = [(float(across[i]), float(along[i])) for i in range(2)]
    return [(centers[i], float(e[i])) for i in range(2)]


def snap_box(
    center: tuple[float, float], extent: float, canvas: tuple[int, int] = (CANVAS, CANVAS)
) -> tuple[tuple[float, float], float]:
    """The box on the token grid: side floored to a multiple of SNAP, corner rounded to the nearest
    SNAP * k + SNAP_PHASE that keeps MARGIN free (corners half a token off the grid lines: the
    codebook reconstructs small stars there 99% right against 94.5% on the lines)."""
    e = max(SNAP, math.floor(extent / SNAP) * SNAP)
    k_lo = math.ceil((MARGIN + 1 - SNAP_PHASE) / SNAP)
    k_his = [math.floor((side - MARGIN - 1 - e - SNAP_PHASE) / SNAP) for side in canvas]
    ks = [
        min(k_hi, max(k_lo, math.floor((c - extent / 2 - SNAP_PHASE) / SNAP + 0.5)))
        for c, k_hi in zip(center, k_his, strict=True)
    ]
    return (ks[0] * SNAP + SNAP_PHASE + e / 2, ks[1] * SNAP + SNAP_PHASE + e / 2), e


def realize(spec: Scene, rng: np.random.Generator, canvas: tuple[int, int] = (CANVAS, CANVAS)) -> Scene:
    """Fill the geometry a spec leaves open (size, cell, centre, extent) on a (width, height) canvas,
    keeping what it states.

    Use it to render a ground-truth image for any parsed prompt: ``realize(parse_prompt(p), rng)``.
    """
    canvas = check_canvas(canvas)
    spec = replace(spec, canvas=canvas)
    if len(spec.objects) == 1:
        o = spec.objects[0]
        size = o.size if o.size is not None else _pick(rng, SIZES)
        cell = o.cell if o.cell is not None else (int(rng.integers(3)), int(rng.integers(3)))
        center, extent = snap_box(*_place_single(rng, size, cell, canvas), canvas)
        return replace(spec, objects=(replace(o, size=size, cell=cell, center=center, extent=extent),))
    if len(spec.objects) == 2 and spec.relation in RELATIONS:
        placed = _place_pair(rng, spec.relation, canvas)
        objs = tuple(
            replace(o, size="small", cell=cell_of(c, canvas), center=c, extent=e)
            for o, (c, e) in zip(spec.objects, (snap_box(*b, canvas) for b in placed), strict=True)
        )
        return replace(spec, objects=objs)
    raise MGTInputError(
        f"a scene has one object, or two with a relation in {RELATIONS}; got {len(spec.objects)} "
        f"objects and relation {spec.relation!r}"
    )


# ----------------------------------------------------------------------------------------------
# Prompts


def _object_phrase(o: SceneObject, with_size: bool) -> str:
    words = []
    if with_size and o.size_specified:
        words.append(o.size)
    words += [o.colour, o.shape]
    return f"{article(words[0])} {' '.join(words)}"


def prompt_of(scene: Scene) -> str:
    """The prompt naming what ``scene`` specifies (size/position only where flagged)."""
    bg = f"on a {scene.background} background"
    if len(scene.objects) == 1:
        o = scene.objects[0]
        parts = [_object_phrase(o, with_size=True)]
        if o.position_specified:
            parts.append(POSITION_PHRASES[o.cell])
        return " ".join([*parts, bg])
    a, b = scene.objects
    return f"{_object_phrase(a, False)} {scene.relation} {_object_phrase(b, False)} {bg}"


_PHRASE_TO_CELL = {tuple(p.split()): cell for cell, p in POSITION_PHRASES.items()}


def parse_prompt(text: str) -> Scene:
    """Prompt text -> spec (a Scene without geometry). Raises MGTInputError outside the grammar."""
    words = text.lower().split()
    pos = 0

    def fail(what: str):
        at = " ".join(words[pos : pos + 3]) or "end of prompt"
        raise MGTInputError(f"prompt {text!r} is outside the demo grammar: expected {what} at {at!r}")

    def take(options) -> str | None:
        nonlocal pos
        if pos < len(words) and words[pos] in options:
            pos += 1
            return words[pos - 1]
        return None

    def parse_object() -> SceneObject:
        if take(("a", "an")) is None:
            fail("'a' or 'an'")
        size = take(SIZES)
        colour = take(COLOURS) or fail(f"a colour {tuple(COLOURS)}")
        shape = take(SHAPES) or fail(f"a shape {SHAPES}")
        return SceneObject(shape, colour, size, size_specified=size is not None)

    first = parse_object()
    objects = [first]
    relation = None
    for rel in RELATIONS:
        rw = tuple(rel.split())
        if tuple(words[pos : pos + len(rw)]) == rw:
            pos += len(rw)
            relation = rel
            objects.append(parse_object())
            break
    if relation is None:
        for n in (4, 3):
            cell = _PHRASE_TO_CELL.get(tuple(words[pos : pos + n]))
            if cell is not None:
                pos += n
                objects[0] = replace(first, cell=cell, position_specified=True)
                break
    if words[pos : pos + 2] != ["on", "a"]:
        fail("'on a {background} background'")
    pos += 2
    bg = take(BACKGROUNDS) or fail(f"a background {tuple(BACKGROUNDS)}")
    if take(("background",)) is None or pos != len(words):
        fail("'background' as the last word")
    return Scene(tuple(objects), bg, relation)


def eval_prompts(split: str, n: int, seed: int = 0) -> list[tuple[str, int]]:
    """A fixed list of ``n`` distinct prompts of a split with one sampling seed each.

    Deterministic in (split, n, seed): prompt i is the same for every n > i.
    """
    if split not in SPLITS:
        raise MGTInputError(f"split must be one of {SPLITS}, got {split!r}")
    rng = np.random.default_rng([seed, zlib.crc32(split.encode())])
    seen: set[str] = set()
    out: list[tuple[str, int]] = []
    for _ in range(200 * n + 1000):
        p = prompt_of(sample_scene(rng, split))
        s = int(rng.integers(2**31 - 1))
        if p not in seen:
            seen.add(p)
            out.append((p, s))
            if len(out) == n:
                return out
    raise MGTInputError(f"split {split!r} has fewer than n={n} distinct prompts (found {len(out)})")


# ----------------------------------------------------------------------------------------------
# Rendering


def _star_points(n: int = 5, inner: float = 0.42) -> np.ndarray:
    ang = -math.pi / 2 + np.arange(2 * n) * math.pi / n
    rad = np.where(np.arange(2 * n) % 2 == 0, 1.0, inner)
    return np.stack([rad * np.cos(ang), rad * np.sin(ang)], 1)


def _fit_unit_box(pts: np.ndarray) -> np.ndarray:
    """Stretch a polygon to fill [-0.5, 0.5]^2 exactly, so every shape's bbox is its extent."""
    lo, hi = pts.min(0), pts.max(0)
    return (pts - lo) / (hi - lo) - 0.5


_CROSS_ARM = 0.34  # arm thickness / extent
UNIT_POLYGONS: dict[str, np.ndarray] = {
    "square": np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]]),
    "triangle": np.array([[0.0, -0.5], [0.5, 0.5], [-0.5, 0.5]]),
    "star": _fit_unit_box(_star_points()),
    "cross": np.array(
        [
            [-_CROSS_ARM / 2, -0.5], [_CROSS_ARM / 2, -0.5], [_CROSS_ARM / 2, -_CROSS_ARM / 2],
            [0.5, -_CROSS_ARM / 2], [0.5, _CROSS_ARM / 2], [_CROSS_ARM / 2, _CROSS_ARM / 2],
            [_CROSS_ARM / 2, 0.5], [-_CROSS_ARM / 2, 0.5], [-_CROSS_ARM / 2, _CROSS_ARM / 2],
            [-0.5, _CROSS_ARM / 2], [-0.5, -_CROSS_ARM / 2], [-_CROSS_ARM / 2, -_CROSS_ARM / 2],
        ]
    ),
}  # fmt: skip
"""Shapes in a unit box, y down (the triangle points up). The circle is drawn as an ellipse."""


def _coverage_image(shape: str, x0: float, y0: float, extent: float, width: int, height: int, ss: int) -> Image.Image:
    img = Image.new("L", (width * ss, height * ss), 0)
    draw = ImageDraw.Draw(img)
    if shape == "circle":
        # PIL's ellipse bbox includes its end pixel: end one supersample early.
        draw.ellipse([x0 * ss, y0 * ss, (x0 + extent) * ss - 1, (y0 + extent) * ss - 1], fill=255)
    elif shape in UNIT_POLYGONS:
        pts = (UNIT_POLYGONS[shape] + 0.5) * extent + (x0, y0)
        # PIL also fills the supersamples on the outline; -0.25 centres that extra rim (measured).
        draw.polygon([(float(px * ss - 0.25), float(py * ss - 0.25)) for px, py in pts], fill=255)
    else:
        raise MGTInputError(f"shape must be one of {SHAPES}, got {shape!r}")
    return img.reduce(ss) if ss > 1 else img


def shape_alpha(shape: str, x0: float, y0: float, extent: float, width: int, height: int, ss: int = SUPERSAMPLE):
    """Coverage in [0, 1] (float32 [height, width]) of a shape whose bbox starts at (x0, y0), in px.

    Drawn at ``ss``x resolution and box-averaged, so each value is the covered area fraction.
    """
    return np.asarray(_coverage_image(shape, x0, y0, extent, width, height, ss), np.float32) * (1 / 255)


def _render_pil(scene: Scene, size: int) -> Image.Image:
    """``size`` is the output's short side; the geometry scales from the scene's canvas."""
    """PIL does the compositing (paste through the coverage mask), all in C: ~1 ms per image."""
    if not scene.is_realized:
        raise MGTInputError("render needs a realised scene: call realize(spec, rng) on a parsed prompt first")
    if scene.background not in BACKGROUNDS:
        raise MGTInputError(f"background must be one of {tuple(BACKGROUNDS)}, got {scene.background!r}")
    k = size / min(scene.canvas)
    width, height = (round(side * k) for side in scene.canvas)
    img = Image.new("RGB", (width, height), BACKGROUNDS[scene.background])
    for o in scene.objects:
        if o.colour not in COLOURS:
            raise MGTInputError(f"colour must be one of {tuple(COLOURS)}, got {o.colour!r}")
        e = o.extent * k
        x0 = o.center[0] * k - e / 2
        y0 = o.center[1] * k - e / 2
        ix0, iy0 = max(0, math.floor(x0)), max(0, math.floor(y0))
        ix1, iy1 = min(width, math.ceil(x0 + e)), min(height, math.ceil(y0 + e))
        mask = _coverage_image(o.shape, x0 - ix0, y0 - iy0, e, ix1 - ix0, iy1 - iy0, SUPERSAMPLE)
        img.paste(COLOURS[o.colour], (ix0, iy0, ix1, iy1), mask)
    return img


def render(scene: Scene, size: int = CANVAS) -> np.ndarray:
    """uint8 [H, W, 3] image of a realised scene, short side ``size`` (geometry scaled from its canvas)."""
    return np.asarray(_render_pil(scene, size)).copy()


def render_batch(scenes, size: int = CANVAS) -> np.ndarray:
    """uint8 [N, H, W, 3] for a list of realised scenes of one canvas."""
    canvases = {s.canvas for s in scenes}
    if len(canvases) > 1:
        raise MGTInputError(f"render_batch renders scenes of one canvas, got {sorted(canvases)}")
    w, h = next(iter(canvases), (CANVAS, CANVAS))
    out = np.empty((len(scenes), round(h * size / min(w, h)), round(w * size / min(w, h)), 3), np.uint8)
    for i, s in enumerate(scenes):
        out[i] = np.asarray(_render_pil(s, size))
    return out


def sample_batch(
    rng: np.random.Generator, split: str, n: int, size: int = CANVAS, canvas: tuple[int, int] = (CANVAS, CANVAS)
) -> tuple[list[str], np.ndarray]:
    """n (prompt, image) training pairs: prompts list and uint8 [n, H, W, 3] (short side ``size``)."""
    scenes = [sample_scene(rng, split, canvas) for _ in range(n)]
    return [prompt_of(s) for s in scenes], render_batch(scenes, size)


# ----------------------------------------------------------------------------------------------
# Negatives: deliberately broken renders the judge must reject (issue 15)

BROKEN_KINDS = ("l_shape", "hole", "blob", "fragments", "stray", "aspect")
"""Ways a generated object goes wrong that a shape-class check alone misses: a quadrant missing
(an L), a hole punched in, a lumpy blob instead of the shape, the shape cut into pieces, stray
token-sized dots of its colour elsewhere, and the shape stretched out of its square box."""


def _composite(img: np.ndarray, alpha: np.ndarray, colour: str) -> np.ndarray:
    a = alpha[..., None]
    out = img.astype(np.float32) * (1 - a) + np.asarray(COLOURS[colour], np.float32) * a
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _broken_alpha(o: SceneObject, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Coverage [CANVAS, CANVAS] of object ``o`` drawn wrong in the way ``kind`` names."""
    e = float(o.extent)
    x0, y0 = o.center[0] - e / 2, o.center[1] - e / 2
    yy, xx = np.mgrid[0:CANVAS, 0:CANVAS].astype(np.float32) + 0.5
    if kind == "blob":  # a disc with 3-4 lumps bulging out of it: one lumpy, connected blob
        cx0, cy0 = o.center
        r0 = e * 0.27
        a = np.clip(r0 + 0.5 - np.hypot(xx - cx0, yy - cy0), 0, 1)
        for _ in range(int(rng.integers(3, 5))):
            r, ang = e * rng.uniform(0.15, 0.24), rng.uniform(0, 2 * math.pi)
            d = min(r0 + 0.4 * r, e / 2 - r)
            cx, cy = cx0 + d * math.cos(ang), cy0 + d * math.sin(ang)
            a = np.maximum(a, np.clip(r + 0.5 - np.hypot(xx - cx, yy - cy), 0, 1))
        return a
    if kind == "aspect":  # the shape drawn into a box stretched 1.35-1.6x along one axis
        k = rng.uniform(1.35, 1.6)
        w, h = (e * k, e) if rng.random() < 0.5 else (e, e * k)
        w, h = min(w, CANVAS - 2 * MARGIN - 2), min(h, CANVAS - 2 * MARGIN - 2)
        side = int(math.ceil(max(w, h))) + 2
        local = Image.fromarray(shape_alpha(o.shape, 1.0, 1.0, side - 2, side, side), "F")
        local = np.asarray(local.resize((max(1, round(w)), max(1, round(h))), Image.Resampling.BILINEAR))
        cx = float(np.clip(o.center[0], w / 2 + MARGIN + 1, CANVAS - w / 2 - MARGIN - 1))
        cy = float(np.clip(o.center[1], h / 2 + MARGIN + 1, CANVAS - h / 2 - MARGIN - 1))
        a = np.zeros((CANVAS, CANVAS), np.float32)
        ix, iy = round(cx - local.shape[1] / 2), round(cy - local.shape[0] / 2)
        a[iy : iy + local.shape[0], ix : ix + local.shape[1]] = local
        return np.clip(a, 0, 1)
    a = shape_alpha(o.shape, x0, y0, e, CANVAS, CANVAS)
    if kind == "l_shape":  # one quadrant of the box erased, among those holding >= 20% of the shape
        quads = [(xx >= x0 + qx * e / 2) & (xx < x0 + (qx + 1) * e / 2) & (yy >= y0 + qy * e / 2) & (yy < y0 + (qy + 1) * e / 2)
                 for qy in range(2) for qx in range(2)]
        full = [q for q in quads if a[q].sum() >= 0.2 * a.sum()]
        a[full[int(rng.integers(len(full)))]] = 0
    elif kind == "hole":  # a disc of 0.2-0.26 of the side punched out around the shape's centroid
        w = a.sum()
        cx, cy = float((a * xx).sum() / w), float((a * yy).sum() / w)
        r = e * rng.uniform(0.10, 0.13)
        a = a * np.clip(np.hypot(xx - cx, yy - cy) - r + 0.5, 0, 1)
    elif kind == "fragments":  # cut by a background band 6-10 px wide through the centre
        band = rng.uniform(6, 10)
        if rng.random() < 0.5:
            a[np.abs(xx - o.center[0]) < band / 2] = 0
        else:
            a[np.abs(yy - o.center[1]) < band / 2] = 0
    elif kind != "stray":
        raise MGTInputError(f"broken kind must be one of {BROKEN_KINDS}, got {kind!r}")
    return a


def broken_render(scene: Scene, kind: str, rng: np.random.Generator) -> np.ndarray:
    """uint8 [256, 256, 3]: ``scene`` with its first object drawn wrong (see BROKEN_KINDS); the
    prompt stays ``prompt_of(scene)``, so a strict judge must say not all correct."""
    if not scene.is_realized:
        raise MGTInputError("broken_render needs a realised scene")
    first, rest = scene.objects[0], scene.objects[1:]
    img = render(replace(scene, objects=rest))
    img = _composite(img, _broken_alpha(first, kind, rng), first.colour)
    if kind == "stray":  # 1-3 dots of 6-14 px, each >= 12 px from every object and from the border
        boxes = [(o.center[0] - o.extent / 2, o.center[1] - o.extent / 2, o.center[0] + o.extent / 2,
                  o.center[1] + o.extent / 2) for o in scene.objects]
        placed, want = 0, int(rng.integers(1, 4))
        for _ in range(200):
            s = float(rng.uniform(6, 14))
            x, y = rng.uniform(MARGIN + 8, CANVAS - MARGIN - 8 - s, size=2)
            if any(x < bx1 + 12 and x + s > bx0 - 12 and y < by1 + 12 and y + s > by0 - 12 for bx0, by0, bx1, by1 in boxes):
                continue
            img[int(y) : int(y + s), int(x) : int(x + s)] = COLOURS[first.colour]
            boxes.append((x, y, x + s, y + s))
            placed += 1
            if placed == want:
                break
    return img


def broken_set(n_per_kind: int, seed: int = 0, splits=("simple", "heldout", "compositional")):
    """[(kind, prompt, image)] with ``n_per_kind`` broken renders per kind, scenes drawn in turn
    from ``splits`` (deterministic in n_per_kind and seed)."""
    out = []
    for kind in BROKEN_KINDS:
        rng = np.random.default_rng([seed, BROKEN_KINDS.index(kind)])
        for i in range(n_per_kind):
            scene = sample_scene(rng, splits[i % len(splits)])
            out.append((kind, prompt_of(scene), broken_render(scene, kind, rng)))
    return out

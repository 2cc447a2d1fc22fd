"""Class-conditional scenes for the MaskGIT demo: class = (colour, shape), one object, fixed background.

40 classes (8 colours x 5 shapes, colour-major: 0 = red circle, 1 = red square, ...). Every scene is
one object in the centre cell of the 3x3 grid, small or large (drawn per scene), on the fixed
``BACKGROUND``; geometry comes from :func:`scenes.realize`, so boxes sit on the 16 px token grid.
The judge reads a class through its prompt, ``"a red circle on a gray background"``, which checks
count, background, colour and shape (size and position are not named, so not checked).
"""

from __future__ import annotations

import numpy as np

from ..classes import ClassTable
from . import scenes as S

BACKGROUND = "gray"
CENTRE = (1, 1)
CLASSES: tuple[tuple[str, str], ...] = tuple((c, s) for c in S.COLOURS for s in S.SHAPES)
"""(colour, shape) per class index."""
CLASS_NAMES: tuple[str, ...] = tuple(f"{c} {s}" for c, s in CLASSES)


TABLE = ClassTable(CLASS_NAMES, "demo")


def class_index(label: int | str) -> int:
    """A class index from an index or a name ("red circle"); unknown names list close matches."""
    return TABLE.index(label)


def class_prompt(label: int | str) -> str:
    """The judge prompt of a class."""
    colour, shape = CLASSES[class_index(label)]
    return f"{S.article(colour)} {colour} {shape} on a {BACKGROUND} background"


def class_scene(label: int | str, rng: np.random.Generator, size: str | None = None) -> S.Scene:
    """A realised scene of a class (size drawn from ``rng`` unless given)."""
    colour, shape = CLASSES[class_index(label)]
    obj = S.SceneObject(shape, colour, size=size, cell=CENTRE)
    return S.realize(S.Scene((obj,), BACKGROUND), rng)


def render_classes(labels, rng: np.random.Generator) -> np.ndarray:
    """uint8 [N, 256, 256, 3] renders, one fresh scene per label."""
    return S.render_batch([class_scene(int(y), rng) for y in labels])


def eval_classes(n_per_class: int = 1) -> list[tuple[int, int]]:
    """Fixed (class, seed) pairs for evaluation: every class, ``n_per_class`` seeds each."""
    return [(y, 1000 * k + y) for k in range(n_per_class) for y in range(len(CLASSES))]

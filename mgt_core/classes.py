"""Class labels for class-conditional models: ImageNet-1k names or a model's own class table.

A label is an index, a name ("goldfish", case and spacing ignored), or a picker entry ("1: goldfish").
Unknown names fail with the closest matches listed.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import MGTInputError

_PICKER = re.compile(r"^\s*(\d+)\s*:\s*(.*)$")


def _norm(text: str) -> str:
    return " ".join(text.strip().lower().replace("_", " ").split())


@dataclass(frozen=True)
class ClassTable:
    names: tuple[str, ...]
    what: str = "ImageNet"

    def __len__(self) -> int:
        return len(self.names)

    def picker(self) -> list[str]:
        """Combo entries "index: name" (searchable by either)."""
        return [f"{i}: {n}" for i, n in enumerate(self.names)]

    def index(self, label: int | str) -> int:
        if isinstance(label, bool):
            raise MGTInputError(f"a class label is an index or a name, got {label!r}")
        if isinstance(label, int) or (hasattr(label, "__index__") and not isinstance(label, str)):
            i = int(label)
            if not 0 <= i < len(self.names):
                raise MGTInputError(f"{self.what} class index {i} is out of range 0..{len(self.names) - 1}")
            return i
        if not isinstance(label, str):
            raise MGTInputError(f"a class label is an index or a name, got {type(label).__name__}")
        m = _PICKER.match(label)
        if m:
            i = self.index(int(m.group(1)))
            if m.group(2) and _norm(m.group(2)) != _norm(self.names[i]):
                raise MGTInputError(f"picker entry {label!r}: class {i} is {self.names[i]!r}, not {m.group(2)!r}")
            return i
        if label.strip().isdigit():
            return self.index(int(label))
        key = _norm(label)
        lookup = {_norm(n): i for i, n in enumerate(self.names)}
        if key in lookup:
            return lookup[key]
        close = difflib.get_close_matches(key, list(lookup), n=5, cutoff=0.6)
        close += [n for n in lookup if key and key in n and n not in close][: 5 - len(close)]
        hint = f"; close matches: {', '.join(repr(c) for c in close)}" if close else ""
        raise MGTInputError(f"unknown {self.what} class {label!r}{hint}")

    def indices(self, labels: int | str | Sequence[int | str]) -> list[int]:
        if isinstance(labels, (int, str)) or not isinstance(labels, Sequence):
            labels = [labels]
        if len(labels) == 0:
            raise MGTInputError("no class labels given")
        return [self.index(v) for v in labels]


def imagenet() -> ClassTable:
    from .imagenet_classes import IMAGENET_CLASSES

    return ClassTable(IMAGENET_CLASSES, "ImageNet")


def table_for(names: Sequence[str] | None, nclass: int, what: str = "model") -> ClassTable:
    """The model's own names when it ships them (the demo), ImageNet for 1000 classes, else bare indices."""
    if names:
        if len(names) != nclass:
            raise MGTInputError(f"the model has {nclass} classes but its class-name table lists {len(names)}")
        return ClassTable(tuple(names), what)
    if nclass == 1000:
        return imagenet()
    return ClassTable(tuple(f"class {i}" for i in range(nclass)), what)

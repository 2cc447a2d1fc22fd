"""MGT Class Label: class conditioning for class-conditional models (MaskGIT v1, Halton-MaskGIT, the MaskGIT demo)."""

from __future__ import annotations

from comfy_api.latest import io

from ..mgt_core.classes import imagenet
from ..mgt_core.demo.class_scenes import TABLE as DEMO_TABLE
from .types import MGTConditioning

DEMO_PREFIX = "demo: "
PICKER = [*imagenet().picker(), *(DEMO_PREFIX + n for n in DEMO_TABLE.names)]
"""ImageNet-1k as "index: name" (type to search either), then the MaskGIT demo's 40 "demo: <colour> <shape>"."""


def parse_label(entry: str) -> str:
    """A picker entry or a typed label -> the label the model's class table resolves."""
    entry = entry.strip()
    return entry[len(DEMO_PREFIX):] if entry.startswith(DEMO_PREFIX) else entry


class MGTClassLabel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MGTClassLabel",
            display_name="MGT Class Label",
            category="MGT/conditioning",
            description="The class to draw, for class-conditional MaskGIT models (ImageNet-1k classes; the built-in "
                        "maskgit-demo has its own 40 '<colour> <shape>' classes). Connect to MGT Sampler's positive; "
                        "the unconditional branch of guidance is the model's own 'no class' input.",
            inputs=[
                io.Combo.Input("class_name", options=PICKER, default="1: goldfish",
                               tooltip="ImageNet class (type part of the name or the index to search), or a 'demo: ...' "
                                       "class for the built-in maskgit-demo."),
                io.String.Input("more_classes", default="", optional=True,
                                tooltip="Optional extra classes, comma separated (names or indices, e.g. 'tiger cat, "
                                        "207'): one image per class, after class_name. Unknown names fail with the "
                                        "closest matches."),
            ],
            outputs=[MGTConditioning.Output(display_name="conditioning")],
        )

    @classmethod
    def execute(cls, class_name: str, more_classes: str = "") -> io.NodeOutput:
        labels = [parse_label(class_name), *(parse_label(x) for x in more_classes.split(",") if x.strip())]
        return io.NodeOutput(ClassLabels(tuple(labels)))


class ClassLabels:
    """Class labels as they travel to the sampler (resolved there against the model's class table)."""

    def __init__(self, labels: tuple[str, ...]):
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def repeat(self, n: int) -> ClassLabels:
        return ClassLabels(tuple(x for x in self.labels for _ in range(n)))

"""MGT Schedule Preview: plot and list the per-step mask counts of a schedule (thin node)."""

from comfy_api.latest import io

from ..mgt_core.sampling import BUILTIN_SCHEDULES
from ..mgt_core.sampling.preview import schedule_preview

CUSTOM = "custom"


class MGTSchedulePreview(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MGTSchedulePreview",
            display_name="MGT Schedule Preview",
            category="MGT/sampling",
            description="How many image tokens stay masked after each sampling step, as a plot and as numbers.",
            inputs=[
                io.Combo.Input(
                    "schedule", options=[*BUILTIN_SCHEDULES, CUSTOM], default="cosine",
                    tooltip="Mask schedule: the masked fraction as progress r goes 0 -> 1. "
                            "'custom' uses the custom field.",
                ),
                io.String.Input(
                    "custom", default="", multiline=False, placeholder="cos(pi/2 * r**1.5)  or  0.9, 0.6, 0.3, 0",
                    tooltip="Used when schedule is 'custom': an expression of r (0..1] with + - * / ** and "
                            "cos, sin, exp, log, sqrt...; or a comma table of fractions or counts, one per step; "
                            "or pow<k> / cospow:<a>,<b>.",
                ),
                io.Int.Input("steps", default=64, min=1, max=256,
                             tooltip="Number of sampling steps T."),
                io.Int.Input("tokens", default=4096, min=1, max=65536,
                             tooltip="Image tokens to unmask (64x64 = 4096 for a 1024 px Meissonic image)."),
            ],
            outputs=[
                io.Image.Output(display_name="plot", tooltip="Masked fraction per step."),
                io.String.Output(display_name="counts",
                                 tooltip="Masked tokens left after each step, comma-separated "
                                         "(usable as a custom table)."),
            ],
        )

    @classmethod
    def execute(cls, schedule: str, custom: str, steps: int, tokens: int) -> io.NodeOutput:
        image, text = schedule_preview(custom if schedule == CUSTOM else schedule, steps, tokens)
        return io.NodeOutput(image, text)

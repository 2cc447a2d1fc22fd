"""MGT TomeMGT: token merging in the transformer blocks, as a patch the sampler applies per run."""

from __future__ import annotations

from comfy_api.latest import io

from ..mgt_core.accel.tome import TomeConfig
from .compat import ADVANCED
from .types import MGTModel, ModelHandle


class MGTTomeMGT(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MGTTomeMGT",
            display_name="MGT TomeMGT",
            category="MGT/acceleration",
            description="Merges similar image tokens inside the transformer (TomeMGT): fewer FLOPs, a little "
                        "quality. Returns a patched copy; the input model is never changed.",
            inputs=[
                MGTModel.Input("model", tooltip="From MGT Model Loader."),
                io.Float.Input("ratio", default=0.25, min=0.0, max=0.75, step=0.05,
                               tooltip="Share of image tokens merged away in the dual-stream blocks (reference 0.25; "
                                       "0 = off). At 1024 px, 0.25 saves ~8% of the transformer's MACs, 0.5 ~15%: on a GPU "
                                       "that is at most ~1.1x / ~1.2x faster, and the sampler logs a warning when the "
                                       "settings save under 10%."),
                io.Boolean.Input("single_stream", default=False,
                                 tooltip="Also merge in the 28 single-stream blocks (beyond the reference): much larger "
                                         "savings (0.5: ~46% fewer MACs, the setting that pays on a GPU), more quality risk."),
                io.Float.Input("window_start", default=0.0, min=0.0, max=1.0, step=0.05, optional=True, **ADVANCED,
                               tooltip="Merge only from this share of the steps on (0 = from the first step)."),
                io.Float.Input("window_end", default=1.0, min=0.0, max=1.0, step=0.05, optional=True, **ADVANCED,
                               tooltip="Stop merging at this share of the steps (e.g. 0.8 leaves the last steps exact)."),
            ],
            outputs=[MGTModel.Output(display_name="model")],
        )

    @classmethod
    def execute(cls, model: ModelHandle, ratio: float, single_stream: bool, window_start: float = 0.0,
                window_end: float = 1.0) -> io.NodeOutput:
        if ratio == 0:
            return io.NodeOutput(model.with_changes(tome=None))
        options = dict(ratio=ratio, single_stream=single_stream, window=(window_start, window_end))
        TomeConfig(ratio, single_stream=single_stream, window=(window_start, window_end))  # bad values fail here
        return io.NodeOutput(model.with_changes(tome=options))

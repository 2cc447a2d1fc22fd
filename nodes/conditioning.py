"""MGT Text Encode: prompt -> conditioning (penultimate CLIP states + pooled embedding)."""

from __future__ import annotations

import logging

from comfy_api.latest import io, ui

from ..mgt_core.loading.pipeline import REFERENCE_NEGATIVE_PROMPT
from ..mgt_core.models.text import encode_text, max_text_length, prompt_warnings
from ..mgt_core.pipeline import known_words
from . import bridge
from .compat import ADVANCED
from .types import MGTConditioning, MGTTextEncoder, TextEncoderHandle


class MGTTextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MGTTextEncode",
            display_name="MGT Text Encode",
            category="MGT/conditioning",
            description="Encodes a prompt the way Meissonic was trained: the penultimate CLIP layer before its final "
                        "LayerNorm, plus the projected pooled embedding (ComfyUI's CLIP Text Encode differs).",
            inputs=[
                MGTTextEncoder.Input("text_encoder", tooltip="From MGT Model Loader."),
                io.String.Input("text", multiline=True, default="",
                                tooltip="The prompt. For the negative branch of CFG, encode a negative prompt with a "
                                        "second node (empty text is allowed)."),
                io.Boolean.Input("reference_negative", default=False, optional=True, **ADVANCED,
                                 tooltip="Append the official scripts' negative prompt (\"worst quality, low quality, "
                                         "... identifying mark\") to the text; for the negative branch with Meissonic."),
            ],
            outputs=[MGTConditioning.Output(display_name="conditioning")],
        )

    @classmethod
    def execute(cls, text_encoder: TextEncoderHandle, text: str, reference_negative: bool = False) -> io.NodeOutput:
        if reference_negative:
            text = ", ".join(p for p in (text.strip(), REFERENCE_NEGATIVE_PROMPT) if p)
        model = bridge.use(text_encoder.patcher)
        cond = encode_text(model, text_encoder.tokenizer, [text])
        info = text_encoder.info
        notes = prompt_warnings(text_encoder.tokenizer, [text], max_text_length(text_encoder.tokenizer, model),
                                known_words(info) if info is not None else None)
        for note in notes:
            logging.warning("[MGT Text Encode] %s", note)
        shown = ui.PreviewText("\n".join(f"warning: {n}" for n in notes)) if notes else None
        return io.NodeOutput(cond.to(device=bridge.intermediate_device()), ui=shown)

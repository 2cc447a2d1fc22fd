"""MGT VQ Decode (tokens -> IMAGE) and MGT VQ Encode (IMAGE [+ MASK] -> tokens [+ token mask])."""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..mgt_core.pipeline import images_to_tensor
from ..mgt_core.sampling.partial import token_mask_from_pixels
from . import bridge
from .types import MGTVQ, MGTTokens, Tokens, VQHandle


class MGTVQDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MGTVQDecode",
            display_name="MGT VQ Decode",
            category="MGT",
            description="Turns image tokens into an IMAGE.",
            inputs=[
                MGTVQ.Input("vq", tooltip="From MGT Model Loader."),
                MGTTokens.Input("tokens", tooltip="From MGT Sampler or MGT VQ Encode."),
                io.Boolean.Input("tiled", default=False,
                                 tooltip="Decode the high-resolution part in tiles: same image (to float rounding), "
                                         "a fraction of the peak memory, a few times slower. For 1024 px on small GPUs "
                                         "(Meissonic's VQ; MaskGIT VQGANs decode whole)."),
            ],
            outputs=[io.Image.Output(display_name="image")],
        )

    @classmethod
    def execute(cls, vq: VQHandle, tokens: Tokens, tiled: bool) -> io.NodeOutput:
        model = bridge.use(vq.patcher)
        with torch.inference_mode():
            ids = tokens.tokens.to(model.post_quant_conv.weight.device)
            if not hasattr(model, "decode_tiled"):  # MaskGIT's VQGAN: clamp to the codebook as its samplers do
                img = model.decode(ids.clamp(0, model.codebook_size - 1))
            else:
                img = model.decode_tiled(ids) if tiled else model.decode(ids)
        return io.NodeOutput(bridge.intermediate(images_to_tensor(img)))


class MGTVQEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MGTVQEncode",
            display_name="MGT VQ Encode",
            category="MGT",
            description="Turns an IMAGE into tokens for img2img; with a MASK, also marks the tokens to regenerate "
                        "(inpainting, outpainting).",
            inputs=[
                MGTVQ.Input("vq", tooltip="From MGT Model Loader."),
                io.Image.Input("image", tooltip="Width and height must be multiples of the VQ factor (16 for Meissonic)."),
                io.Mask.Input("mask", optional=True,
                              tooltip="White = regenerate. Every token the mask touches is regenerated."),
            ],
            outputs=[MGTTokens.Output(display_name="tokens")],
        )

    @classmethod
    def execute(cls, vq: VQHandle, image: torch.Tensor, mask: torch.Tensor | None = None) -> io.NodeOutput:
        model = bridge.use(vq.patcher)
        dev = model.post_quant_conv.weight.device
        with torch.inference_mode():
            ids = model.encode(image[..., :3].permute(0, 3, 1, 2).to(dev)).cpu()
        tmask = None
        if mask is not None:
            tmask = token_mask_from_pixels(mask.float(), (ids.shape[1], ids.shape[2]))
            if tmask.shape[0] not in (1, ids.shape[0]):
                raise ValueError(f"{tmask.shape[0]} masks for {ids.shape[0]} images")
            tmask = tmask.expand(ids.shape[0], -1, -1).clone()
        return io.NodeOutput(Tokens(ids, model.factor, tmask))

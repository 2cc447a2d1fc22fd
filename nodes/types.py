"""Socket types of the pack and the objects that travel through them."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from comfy_api.latest import io

from ..mgt_core.loading.pipeline import ModelInfo
from ..mgt_core.preview import TokenPalette

MGTModel = io.Custom("MGT_MODEL")
MGTTextEncoder = io.Custom("MGT_TEXT_ENCODER")
MGTVQ = io.Custom("MGT_VQ")
MGTConditioning = io.Custom("MGT_CONDITIONING")
MGTTokens = io.Custom("MGT_TOKENS")


@dataclass
class VQHandle:
    patcher: object  # comfy.model_patcher.ModelPatcher around a VQModel
    palette: TokenPalette | None = None  # fitted on first preview, then reused


@dataclass(frozen=True)
class ModelHandle:
    """A transformer plus what the sampler needs around it. Patches (TomeMGT) live here as
    settings applied for the duration of a sampling run, so the input model is never changed."""

    patcher: object  # ModelPatcher around a MeissonicTransformer
    info: ModelInfo
    vq: VQHandle | None = None  # the loader's VQ, for live previews
    tome: dict | None = None  # apply_tome options, applied to a weight-sharing copy while sampling
    compile: bool = False  # run the blocks compiled (regional torch.compile) on that copy

    def with_changes(self, **kw) -> ModelHandle:
        return replace(self, **kw)


@dataclass(frozen=True)
class TextEncoderHandle:
    patcher: object  # ModelPatcher around a CLIPTextModelWithProjection
    tokenizer: object
    info: ModelInfo | None = None  # the model it came with: what vocabulary its prompts may use


@dataclass(frozen=True)
class Tokens:
    """Token grids [B, h, w] on the CPU, the pixels per token, and an optional token mask
    (True = regenerate) from a pixel mask, for inpainting."""

    tokens: torch.Tensor
    factor: int
    token_mask: torch.Tensor | None = None

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return self.tokens.shape[1] * self.factor, self.tokens.shape[2] * self.factor

"""MaskGITPipeline: class labels -> tokens -> image, for MaskGIT v1 and Halton-MaskGIT.

Holds the transformer, its VQGAN and :class:`~mgt_core.loading.maskgit.MaskGITInfo` (family and the
authors' sampler settings). The model half lives here (denoiser, decode, encode); the family
samplers build on :meth:`MaskGITPipeline.denoiser`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .classes import ClassTable, table_for
from .errors import MGTInputError
from .loading.maskgit import MaskGITInfo
from .models.maskgit.denoiser import MaskGITDenoiser
from .models.vq.vqgan import VQGAN


def images_to_tensor(images: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] in [0, 1] -> [B, H, W, 3] float32 on the CPU (ComfyUI's IMAGE layout)."""
    return images.float().permute(0, 2, 3, 1).cpu().contiguous()


@dataclass
class MaskGITPipeline:
    transformer: nn.Module  # MaskGITTransformer | HaltonTransformer
    vq: VQGAN
    info: MaskGITInfo

    @property
    def family(self) -> str:
        return self.info.family

    @property
    def device(self) -> torch.device:
        return self.transformer.device

    @property
    def factor(self) -> int:
        return self.vq.factor

    @property
    def grid(self) -> tuple[int, int]:
        """The token grid (fixed: the position embeddings are learned per position)."""
        return self.transformer.grid

    @property
    def mask_id(self) -> int:
        return self.transformer.mask_id

    @property
    def num_classes(self) -> int:
        return self.transformer.config.nclass

    @property
    def class_table(self) -> ClassTable:
        """The class names: the model's own (the demo's ``class_names``), else ImageNet's for 1000 classes."""
        return table_for(self.info.settings.get("class_names"), self.num_classes, self.info.name)

    def sampler_settings(self, sampler: str | None = None, preset: str | None = None, **overrides):
        """Engine settings: the family's published sampler with the model's defaults, ``overrides`` on top
        (steps, cfg_w, schedule, r_temp, sm_temp, ..., noise_regularization, differential_sampling,
        z_sampling as True, a dict or an instance; reference_rng; see
        :func:`mgt_core.sampling.maskgit.family_settings`), or a named ``preset`` of design choices."""
        from .pipeline import _component
        from .sampling.differential import DifferentialSampling
        from .sampling.maskgit import family_settings
        from .sampling.noise_reg import NoiseRegularization
        from .sampling.presets import preset as named_preset
        from .sampling.zsampling import ZSampling

        chosen = named_preset(preset) if preset else {}
        for key, cls in (("noise_regularization", NoiseRegularization), ("differential_sampling", DifferentialSampling),
                         ("z_sampling", ZSampling)):
            value = _component(overrides.pop(key, None), cls) or chosen.get(key)
            if value is not None:
                overrides[key] = value
        base = {"steps": self.info.steps, "cfg_w": self.info.cfg_w, "schedule": self.info.schedule,
                **{k: v for k, v in self.info.settings.items() if k != "class_names"}}
        return family_settings(sampler or self.info.sampler, base, **overrides)

    def sample_tokens(self, labels: list[int], settings, generator: torch.Generator | None, *,
                      start=None, callback=None):
        """Class indices -> a :class:`~mgt_core.sampling.engine.SampleResult` (tokens [B, L])."""
        from .sampling.engine import sample
        from .sampling.partial import full_mask

        den = self.denoiser(labels, mask_logit=settings.reference_rng)
        if start is None:
            start = full_mask(len(labels), self.grid[0] * self.grid[1], self.mask_id, self.device)
        with torch.inference_mode():
            return sample(den, settings, start, generator, callback)

    def __call__(self, class_labels, *, seed: int = 0, generator: torch.Generator | None = None,
                 sampler: str | None = None, preset: str | None = None, return_tokens: bool = False, callback=None,
                 **overrides):
        """Generate one image per class label (ImageNet indices or names, or the demo's "red circle" ...).

        ``overrides``: steps, cfg_w, schedule, r_temp, sm_temp, randomize, ... and the design choices
        (``noise_regularization``/``differential_sampling``/``z_sampling``: True, a dict or an instance),
        or ``preset`` (a name from :data:`mgt_core.sampling.presets.PRESETS`). Returns images
        [B, H, W, 3] float32 in [0, 1] (and the tokens with ``return_tokens``).
        """
        labels = self.class_table.indices(class_labels)
        settings = self.sampler_settings(sampler, preset=preset, **overrides)
        if generator is None:
            generator = torch.Generator(self.device).manual_seed(seed)
        result = self.sample_tokens(labels, settings, generator, callback=callback)
        images = self.decode(result.tokens)
        return (images, result.tokens.view(-1, *self.grid)) if return_tokens else images

    def denoiser(self, labels, mask_logit: bool = False) -> MaskGITDenoiser:
        """The sampler engine's Denoiser for these class labels (ints, [B])."""
        return MaskGITDenoiser(self.transformer, labels, mask_logit=mask_logit)

    def decode(self, tokens: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        """Tokens [B, L] or [B, h, w] -> image [B, H, W, 3] float32 in [0, 1] on the CPU.

        Ids are clamped to the codebook first, as both reference samplers do (a mask id left in
        the grid decodes as the last code instead of failing).
        """
        if tokens.ndim == 2:
            h, w = grid or self.grid
            if tokens.shape[1] != h * w:
                raise MGTInputError(f"{tokens.shape[1]} tokens per image do not fill a {h}x{w} grid")
            tokens = tokens.view(tokens.shape[0], h, w)
        if tokens.ndim != 3:
            raise MGTInputError(f"tokens must be [B, L] or [B, h, w], got {list(tokens.shape)}")
        with torch.inference_mode():
            ids = tokens.to(self.vq.device, torch.long).clamp(0, self.vq.codebook_size - 1)
            return images_to_tensor(self.vq.decode(ids))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Image [B, H, W, 3] in [0, 1] -> tokens [B, h, w]."""
        if images.ndim != 4 or images.shape[-1] != 3:
            raise MGTInputError(f"images must be [B, H, W, 3], got {list(images.shape)}")
        with torch.inference_mode():
            return self.vq.encode(images.permute(0, 3, 1, 2))

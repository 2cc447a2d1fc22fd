"""MGTPipeline: prompt -> conditioning -> tokens -> image, for Meissonic, Monetico and the demo model.

Each stage is a method the ComfyUI nodes call separately (text encode, sample, decode); calling
the pipeline runs them all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .accel.tome import tome_generation
from .errors import MGTInputError
from .loading.pipeline import ModelInfo
from .models.meissonic.denoiser import MeissonicDenoiser
from .models.meissonic.transformer import MeissonicTransformer
from .models.text import TextConditioning, encode_text
from .models.vq.vqmodel import VQModel
from .sampling.differential import DifferentialSampling
from .sampling.engine import SampleResult, SamplerSettings, StepInfo, sample
from .sampling.noise_reg import NoiseRegularization
from .sampling.partial import Start, full_mask, start_from_tokens, token_mask_from_pixels
from .sampling.presets import preset
from .sampling.zsampling import ZSampling


def _component(value, cls):
    """True/False/None/dict/instance -> an instance of the design-choice class, or None."""
    if value is None or value is False:
        return None
    if value is True:
        return cls()
    if isinstance(value, dict):
        return cls(**value)
    if isinstance(value, cls):
        return value
    raise MGTInputError(f"expected True/False, a dict or a {cls.__name__}, got {value!r}")


def make_settings(
    *,
    steps: int,
    guidance_scale: float,
    schedule=None,
    temperature=None,
    noise_regularization=None,
    differential_sampling=None,
    z_sampling=None,
    reference_rng: bool = False,
    preset_name: str | None = None,
    model_presets: dict | None = None,
    default_schedule: str = "cosine",
) -> SamplerSettings:
    """Sampler settings from user-level values (booleans or dicts for the design choices).

    ``preset_name`` fills what the caller leaves unset (None): schedule, temperature and the three
    design choices, from the model's own presets (``model_presets``) or the built-in ones.
    """
    chosen = preset(preset_name, model_presets) if preset_name else {}
    nr = _component(noise_regularization, NoiseRegularization) or _component(chosen.get("noise_regularization"), NoiseRegularization)
    ds = _component(differential_sampling, DifferentialSampling) or _component(
        chosen.get("differential_sampling"), DifferentialSampling
    )
    zs = _component(z_sampling, ZSampling) or _component(chosen.get("z_sampling"), ZSampling)
    if schedule is None:
        schedule = chosen.get("schedule", default_schedule)
    if temperature is None:
        temperature = chosen.get("temperature", (2.0, 0.0))
    return SamplerSettings(
        steps=steps, guidance_scale=float(guidance_scale), schedule=schedule, temperature=temperature,
        noise_regularization=nr, differential_sampling=ds, z_sampling=zs, reference_rng=reference_rng,
    )


def images_to_tensor(images: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] in [0, 1] (model dtype) -> [B, H, W, 3] float32 on the CPU."""
    return images.float().permute(0, 2, 3, 1).cpu().contiguous()


@dataclass
class MGTPipeline:
    transformer: MeissonicTransformer
    vq: VQModel
    text_encoder: torch.nn.Module | None
    tokenizer: object | None
    info: ModelInfo

    @property
    def device(self) -> torch.device:
        return self.transformer.device

    @property
    def factor(self) -> int:
        """Pixels per VQ token along each axis."""
        return self.info.vq_factor

    def grid_for(self, height: int, width: int) -> tuple[int, int]:
        """Token grid of an image size; sizes must split into whole transformer tokens."""
        step = self.factor * self.transformer.config.grid_factor
        if height <= 0 or width <= 0 or height % step or width % step:
            raise MGTInputError(
                f"image size {width}x{height} must be a positive multiple of {step} for this model "
                f"(VQ factor {self.factor}{' x 2 for its down-sampling' if step != self.factor else ''})"
            )
        return height // self.factor, width // self.factor

    def encode_prompt(self, prompts: str | Sequence[str]) -> TextConditioning:
        if self.text_encoder is None or self.tokenizer is None:
            raise MGTInputError("this pipeline was loaded without its text encoder")
        return encode_text(self.text_encoder, self.tokenizer, list([prompts] if isinstance(prompts, str) else prompts))

    def sample_tokens(
        self,
        cond: TextConditioning,
        uncond: TextConditioning | None,
        settings: SamplerSettings,
        *,
        height: int,
        width: int,
        generator: torch.Generator | None,
        start: Start | None = None,
        callback: Callable[[StepInfo], None] | None = None,
        crop: tuple[int, int] = (0, 0),
        aesthetic: float = 6.0,
    ) -> SampleResult:
        grid = self.grid_for(height, width)
        denoiser = MeissonicDenoiser(self.transformer, cond, uncond, grid, (width, height), crop, aesthetic)
        if start is None:
            start = full_mask(len(cond), grid[0] * grid[1], denoiser.mask_id, self.device)
        # TomeMGT (if applied) draws its merge partitions from the image seed, never from ``generator``
        seed = generator.initial_seed() if generator is not None else torch.initial_seed()
        with torch.inference_mode(), tome_generation(self.transformer, seed, settings.steps):
            return sample(denoiser, settings, start, generator, callback)

    def decode(self, tokens: torch.Tensor, grid: tuple[int, int] | None = None, tiled: bool = False) -> torch.Tensor:
        """Tokens [B, L] or [B, h, w] -> image [B, H, W, 3] float32 in [0, 1] on the CPU."""
        if tokens.ndim == 2:
            if grid is None:
                raise MGTInputError("flat tokens need the grid (height, width) to decode")
            tokens = tokens.view(tokens.shape[0], *grid)
        with torch.inference_mode():
            ids = tokens.to(self.vq.post_quant_conv.weight.device)
            return images_to_tensor(self.vq.decode_tiled(ids) if tiled else self.vq.decode(ids))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Image [B, H, W, 3] in [0, 1] -> tokens [B, h, w]."""
        if images.ndim != 4 or images.shape[-1] != 3:
            raise MGTInputError(f"images must be [B, H, W, 3], got {list(images.shape)}")
        dev = self.vq.post_quant_conv.weight.device
        with torch.inference_mode():
            return self.vq.encode(images.permute(0, 3, 1, 2).to(dev))

    def __call__(
        self,
        prompt: str | Sequence[str],
        negative_prompt: str | Sequence[str] | None = None,
        *,
        height: int | None = None,
        width: int | None = None,
        steps: int | None = None,
        guidance_scale: float | None = None,
        seed: int = 0,
        num_images_per_prompt: int = 1,
        schedule: str | None = None,
        temperature=None,
        noise_regularization=None,
        differential_sampling=None,
        z_sampling=None,
        preset: str | None = None,
        init_image: torch.Tensor | None = None,
        strength: float = 1.0,
        mask: torch.Tensor | None = None,
        reference_rng: bool = False,
        generator: torch.Generator | None = None,
        callback: Callable[[StepInfo], None] | None = None,
        tiled_decode: bool = False,
        return_tokens: bool = False,
    ):
        """Generate images [B, H, W, 3] (float32, [0, 1], CPU); B = prompts x images per prompt.

        The design choices take True (defaults), a dict of options, or their class instance;
        ``preset`` picks a named combination: the model's own (``mgt_defaults.json``, e.g. tuned by
        ``python -m mgt_core.tune``) or a built-in one (``mgt_core.sampling.presets``); options
        passed explicitly win over the preset's. ``temperature`` defaults to (2, 0). ``init_image``
        [B, H, W, 3] with ``strength`` is img2img; adding ``mask`` [B, H, W] (1 = regenerate)
        makes it inpainting/outpainting.
        """
        info = self.info
        height, width = height or info.height, width or info.width
        settings = make_settings(
            steps=steps or info.steps,
            guidance_scale=info.guidance_scale if guidance_scale is None else guidance_scale,
            schedule=schedule or None, default_schedule=info.schedule, temperature=temperature,
            noise_regularization=noise_regularization, differential_sampling=differential_sampling,
            z_sampling=z_sampling, reference_rng=reference_rng, preset_name=preset, model_presets=info.presets,
        )
        grid = self.grid_for(height, width)
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if negative_prompt is None:
            negative_prompt = info.negative_prompt
        negatives = [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) else list(negative_prompt)
        if len(negatives) != len(prompts):
            raise MGTInputError(f"{len(negatives)} negative prompts for {len(prompts)} prompts")
        if generator is None:
            generator = torch.Generator(self.device).manual_seed(int(seed))
        start = None
        if init_image is not None:
            start = self.partial_start(init_image, mask, settings, strength, generator, len(prompts) * num_images_per_prompt)
        cond = self.encode_prompt(prompts).repeat(num_images_per_prompt)
        uncond = self.encode_prompt(negatives).repeat(num_images_per_prompt) if settings.guidance_scale > 1 or settings.z_sampling else None
        result = self.sample_tokens(
            cond, uncond, settings, height=height, width=width, generator=generator, start=start, callback=callback
        )
        images = self.decode(result.tokens, grid, tiled=tiled_decode)
        return (images, result.tokens.view(-1, *grid)) if return_tokens else images

    def partial_start(self, init_image, mask, settings: SamplerSettings, strength: float, generator, batch: int) -> Start:
        """img2img (no mask) or inpainting (mask) start from an image [B or 1, H, W, 3]."""
        tokens = self.encode_image(init_image)
        tmask = None
        if mask is not None:
            tmask = token_mask_from_pixels(mask, (tokens.shape[1], tokens.shape[2]))
        return start_from_tokens(tokens, tmask, settings.steps, strength, settings.schedule, batch,
                                 self.transformer.mask_token_id, generator)

"""MGTPipeline: prompt -> conditioning -> tokens -> image, for Meissonic, Monetico and the demo model.

Each stage is a method the ComfyUI nodes call separately (text encode, sample, decode); calling
the pipeline runs them all.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .accel.tome import tome_generation
from .errors import MGTInputError, MGTPromptWarning
from .loading.pipeline import ModelInfo
from .models.meissonic.denoiser import MeissonicDenoiser
from .models.meissonic.transformer import MeissonicTransformer
from .models.text import TextConditioning, encode_text, max_text_length, prompt_warnings
from .models.vq.vqmodel import VQModel
from .sampling.differential import DifferentialSampling
from .sampling.engine import SampleResult, SamplerSettings, StepInfo, sample
from .sampling.maskgit import LogitTemperature
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
    token_temperature=None,
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
    if token_temperature is None:
        token_temperature = chosen.get("token_temperature", 1.0)
    return SamplerSettings(
        steps=steps, guidance_scale=float(guidance_scale), schedule=schedule, temperature=temperature,
        noise_regularization=nr, differential_sampling=ds, z_sampling=zs, reference_rng=reference_rng,
        logit_temperature=LogitTemperature.token_temperature(token_temperature),
    )


SEED_MAX = 2**64 - 1
"""Seeds cover ComfyUI's whole range, 0 .. 2**64 - 1 (torch generators take unsigned 64-bit seeds)."""


def check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise MGTInputError(f"seed must be an integer from 0 to 2**64-1 ({SEED_MAX}), got {seed!r}")
    return seed


def _count(name: str, value, default: int | None = None, minimum: int = 1) -> int:
    """An explicit integer >= minimum, or the model's default for None (never for 0)."""
    if value is None and default is not None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        hint = f" (or None for the model's default, {default})" if default is not None else ""
        raise MGTInputError(f"{name} must be an integer >= {minimum}{hint}, got {value!r}")
    return value


def _prompts(value, name: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and value and all(isinstance(p, str) for p in value):
        return list(value)
    raise MGTInputError(f"{name} must be a string or a non-empty list of strings, got {value!r:.80}")


def known_words(info: ModelInfo) -> list[str] | None:
    """The whole word vocabulary of a model trained on a closed grammar (the built-in demo), else None."""
    if info.family != "demo":
        return None
    from .demo.scenes import grammar_words

    return grammar_words()


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

    def compile(self, backend: str = "inductor", mode: str | None = None, dynamic: bool | None = None) -> str | None:
        """Run the transformer blocks compiled from the next generation on (regional torch.compile,
        shared across runs and sizes). Returns None, or why compiling is impossible here (then eager)."""
        from .accel.compile import enable_compile

        return enable_compile(self.transformer, backend=backend, mode=mode, dynamic=dynamic)

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
        token_temperature: float | None = None,
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
        passed explicitly win over the preset's. ``temperature`` (the Gumbel one of the confidence
        ranking) defaults to (2, 0); ``token_temperature`` (softmax temperature of the token draw)
        to 1, the reference. ``init_image``
        [B, H, W, 3] with ``strength`` is img2img; adding ``mask`` [B, H, W] (1 = regenerate)
        makes it inpainting/outpainting.
        """
        info = self.info
        prompts = _prompts(prompt, "prompt")
        check_seed(seed)
        num_images_per_prompt = _count("num_images_per_prompt", num_images_per_prompt)
        if init_image is not None:  # the image decides the size unless width/height say otherwise
            height, width = self.check_init_image(init_image, mask, height, width)
        height = _count("height", height, info.height)
        width = _count("width", width, info.width)
        settings = make_settings(
            steps=_count("steps", steps, info.steps),
            guidance_scale=info.guidance_scale if guidance_scale is None else guidance_scale,
            schedule=schedule or None, default_schedule=info.schedule, temperature=temperature,
            noise_regularization=noise_regularization, differential_sampling=differential_sampling,
            z_sampling=z_sampling, token_temperature=token_temperature, reference_rng=reference_rng,
            preset_name=preset, model_presets=info.presets,
        )
        grid = self.grid_for(height, width)
        if negative_prompt is None:
            negative_prompt = info.negative_prompt
        negatives = _prompts(negative_prompt, "negative_prompt")
        if isinstance(negative_prompt, str):
            negatives = negatives * len(prompts)
        if len(negatives) != len(prompts):
            raise MGTInputError(f"{len(negatives)} negative prompts for {len(prompts)} prompts")
        for note in self.prompt_warnings(prompts + negatives):
            warnings.warn(note, MGTPromptWarning, stacklevel=2)
        if generator is None:
            generator = torch.Generator(self.device).manual_seed(seed)
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

    def check_init_image(self, image, mask, height: int | None, width: int | None) -> tuple[int, int]:
        """The init image's (height, width), after checking it against width/height and the mask."""
        if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] != 3:
            shape = list(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise MGTInputError(f"init_image must be a tensor [B, H, W, 3] in [0, 1], got {shape}")
        ih, iw = int(image.shape[1]), int(image.shape[2])
        if (height is not None and height != ih) or (width is not None and width != iw):
            raise MGTInputError(
                f"init_image is {iw}x{ih} (width x height) but width/height ask for {width}x{height}: resize the "
                "image, or leave width and height as None to use the image's size"
            )
        if mask is not None:
            if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3) or tuple(mask.shape[-2:]) != (ih, iw):
                shape = list(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
                raise MGTInputError(f"mask must be [B, H, W] or [H, W] of the init image's size ({ih}x{iw}), got {shape}")
        return ih, iw

    def prompt_warnings(self, prompts: Sequence[str]) -> list[str]:
        """What the text encoder will not read as written: truncated prompts, and for the built-in
        demo model the words outside its grammar (it was trained on nothing else)."""
        if self.tokenizer is None:
            return []
        return prompt_warnings(self.tokenizer, prompts, max_text_length(self.tokenizer, self.text_encoder),
                               known_words(self.info))

    def partial_start(self, init_image, mask, settings: SamplerSettings, strength: float, generator, batch: int) -> Start:
        """img2img (no mask) or inpainting (mask) start from an image [B or 1, H, W, 3]."""
        tokens = self.encode_image(init_image)
        tmask = None
        if mask is not None:
            tmask = token_mask_from_pixels(mask, (tokens.shape[1], tokens.shape[2]))
        return start_from_tokens(tokens, tmask, settings.steps, strength, settings.schedule, batch,
                                 self.transformer.mask_token_id, generator)

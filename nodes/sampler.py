"""MGT Sampler: conditioning -> tokens, with the paper's inference design choices as inputs."""

from __future__ import annotations

import logging
import time

import torch
from comfy_api.latest import io

from ..mgt_core.accel.compile import compile_status, enable_compile
from ..mgt_core.accel.context import shared_clone
from ..mgt_core.accel.quant import quant_info
from ..mgt_core.accel.tome import TomeConfig, apply_tome, transformer_macs
from ..mgt_core.errors import MGTInputError
from ..mgt_core.loading.maskgit import MaskGITInfo
from ..mgt_core.maskgit_pipeline import MaskGITPipeline
from ..mgt_core.models.text import TextConditioning
from ..mgt_core.pipeline import MGTPipeline, make_settings
from ..mgt_core.sampling.noise_reg import SHAPES
from ..mgt_core.sampling.partial import start_from_tokens
from ..mgt_core.sampling.presets import PRESETS, read_model_presets
from ..mgt_core.sampling.schedules import BUILTIN_SCHEDULES, COUNT_SCHEDULES
from . import bridge
from .class_label import ClassLabels
from .compat import ADVANCED
from .types import MGTConditioning, MGTModel, MGTTokens, ModelHandle, Tokens

CUSTOM = "custom"
MODEL_DEFAULT = "model default"
SCHEDULES = [*BUILTIN_SCHEDULES, *COUNT_SCHEDULES, MODEL_DEFAULT, CUSTOM]
NO_PRESET = "none"
log = logging.getLogger("mgt")
SIZE_STEP = 32  # a size widget step every supported model accepts (Meissonic and the demo need 32)


def model_defaults(info, steps: int, cfg: float, width: int, height: int) -> tuple[int, float, int, int]:
    """0 in a widget means the connected model's own setting (its mgt_defaults.json or family default)."""
    return (steps or info.steps, cfg or info.guidance_scale, width or info.width, height or info.height)


def preset_choices() -> list[str]:
    """'none', then the presets of every model the loader can see (mgt_defaults.json "presets",
    e.g. written by ``python -m mgt_core.tune``), then the built-in ones."""
    from .loader import model_folders

    names: list[str] = []
    for path in model_folders().values():
        try:
            found = read_model_presets(path)
        except (OSError, ValueError):  # a broken file: the loader reports it when that model is loaded
            continue
        names += [n for n in found if n not in names]
    return [NO_PRESET, *names, *(n for n in PRESETS if n not in names and n != "vanilla"), "vanilla"]


class MGTSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MGTSampler",
            display_name="MGT Sampler",
            category="MGT/sampling",
            description="Unmasks image tokens step by step (Meissonic's sampler), with the design choices of 'Bag of "
                        "Design Choices for Inference of High-Resolution Masked Generative Transformer' as switches.",
            inputs=[
                MGTModel.Input("model", tooltip="From MGT Model Loader (or MGT TomeMGT)."),
                MGTConditioning.Input("positive", tooltip="MGT Text Encode of the prompt, or MGT Class Label for a "
                                      "class-conditional MaskGIT model."),
                MGTConditioning.Input("negative", optional=True,
                                      tooltip="MGT Text Encode of the negative prompt (the CFG unconditional branch; "
                                              "required for text models); Meissonic's scripts use their long negative "
                                              "prompt. MaskGIT models need none: their unconditional branch is the "
                                              "class-dropped input."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of every random draw of the run (token draws, Gumbel noise, NR noise)."),
                io.Int.Input("steps", default=0, min=0, max=512,
                             tooltip="Sampling steps T. 0 = the connected model's default (built-in demo 16, "
                                     "Meissonic 64, Monetico 48)."),
                io.Float.Input("cfg", default=0.0, min=0.0, max=50.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance on the logits. 0 = the connected model's default "
                                       "(built-in demo 1.5, Meissonic and Monetico 9); 1 = no guidance. MaskGIT: the "
                                       "scale 1 + w of (1 + w) l_c - w l_u (v1 256 px w = 3, so 4; v1 ramps w from 0 "
                                       "over the run, Halton keeps it)."),
                io.Int.Input("width", default=0, min=0, max=4096, step=SIZE_STEP,
                             tooltip="Image width in pixels. 0 = the connected model's default (built-in demo 256, "
                                     "Meissonic 1024, Monetico 512); otherwise a multiple of 32 (Meissonic, demo) "
                                     "or 16 (Monetico)."),
                io.Int.Input("height", default=0, min=0, max=4096, step=SIZE_STEP,
                             tooltip="Image height; 0 = the model's default. See width."),
                io.Int.Input("batch_size", default=1, min=1, max=64, tooltip="Images per prompt."),
                io.Combo.Input("schedule", options=SCHEDULES, default="cosine",
                               tooltip="Mask schedule (how many tokens stay masked after each step). cosine is "
                                       "Meissonic's; v1_arccos (MaskGIT v1) and halton are the MaskGIT samplers' own "
                                       "count rules; 'model default' picks the model's; 'custom' uses custom_schedule."),
                io.Boolean.Input("noise_regularization", default=False,
                                 tooltip="Noise regularization: Gaussian noise on the logits, strong at the start and "
                                         "end (2|cos(pi t/(T-1))|). More diverse, less over-confident. Free."),
                io.Boolean.Input("differential_sampling", default=False,
                                 tooltip="Differential sampling: where the prediction barely changed since the last "
                                         "step, sample from the change instead. Free; one L x K buffer per image."),
                io.Boolean.Input("z_sampling", default=False,
                                 tooltip="Masked Z-Sampling: each step goes forward, re-masks the tokens a low-guidance "
                                         "pass is surest of, and goes forward again. ~3x the model calls (3T-2)."),
                MGTTokens.Input("init_tokens", optional=True,
                                tooltip="From MGT VQ Encode: img2img, or inpainting when it carries a mask. Its size "
                                        "overrides width/height."),
                io.Float.Input("denoise", default=1.0, min=0.01, max=1.0, step=0.01, optional=True,
                               tooltip="With init_tokens: the share of steps that run (img2img strength)."),
                io.String.Input("custom_schedule", default="", optional=True, **ADVANCED,
                                tooltip="When schedule is 'custom': an expression of r in (0, 1] such as "
                                        "cos(pi/2*r**1.5), a comma list of T fractions or counts, pow<k> or cospow:a,b."),
                io.Float.Input("temperature_start", default=2.0, min=0.0, max=20.0, step=0.1, optional=True, **ADVANCED,
                               tooltip="Gumbel temperature of the confidence ranking at the first step (reference 2)."),
                io.Float.Input("temperature_end", default=0.0, min=0.0, max=20.0, step=0.1, optional=True, **ADVANCED,
                               tooltip="Gumbel temperature at the last step (reference 0)."),
                io.Float.Input("token_temperature", default=1.0, min=0.05, max=5.0, step=0.05, optional=True, **ADVANCED,
                               tooltip="Softmax temperature of the token draw (logits / t). 1 = the reference; below 1 "
                                       "draws nearer the most likely code: fewer stray tokens and ragged edges, less "
                                       "variety. Text models; MaskGIT models keep their own sm_temp."),
                io.Float.Input("nr_amplitude", default=2.0, min=0.0, max=10.0, step=0.05, optional=True, **ADVANCED,
                               tooltip="Noise regularization amplitude A (reference 2)."),
                io.Combo.Input("nr_shape", options=list(SHAPES), default="abs_cos", optional=True, **ADVANCED,
                               tooltip="Noise regularization shape over the run (reference abs_cos)."),
                io.Float.Input("ds_fraction", default=0.75, min=0.0, max=1.0, step=0.05, optional=True, **ADVANCED,
                               tooltip="Differential sampling: share of tokens, those that changed least, sampled "
                                       "from the change (reference 0.75)."),
                io.Float.Input("z_inversion_cfg", default=0.0, min=0.0, max=50.0, step=0.1, optional=True, **ADVANCED,
                               tooltip="Z-Sampling: guidance of the re-masking pass (0 = negative prompt only)."),
                io.Int.Input("z_start", default=0, min=0, max=512, optional=True, **ADVANCED,
                             tooltip="Z-Sampling: first step that zig-zags."),
                io.Int.Input("z_stop", default=-1, min=-1, max=512, optional=True, **ADVANCED,
                             tooltip="Z-Sampling: first step that no longer zig-zags (-1: the last step)."),
                io.Combo.Input("preset", options=preset_choices(), default=NO_PRESET, optional=True,
                               tooltip="A named setting of the design choices. It replaces schedule, the temperatures "
                                       "and the noise regularization / differential sampling / Z-Sampling inputs; seed, "
                                       "steps, cfg and size still come from the widgets. First the connected model's "
                                       "own presets (its mgt_defaults.json, e.g. 'tuned-2obj' found by python -m "
                                       "mgt_core.tune), then the built-in ones. 'none': use the inputs above."),
            ],
            outputs=[MGTTokens.Output(display_name="tokens")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(
        cls, model: ModelHandle, positive: TextConditioning, seed: int, steps: int,
        cfg: float, width: int, height: int, batch_size: int, schedule: str, noise_regularization: bool,
        differential_sampling: bool, z_sampling: bool, negative: TextConditioning | None = None,
        init_tokens: Tokens | None = None, denoise: float = 1.0,
        custom_schedule: str = "", temperature_start: float = 2.0, temperature_end: float = 0.0,
        token_temperature: float = 1.0, nr_amplitude: float = 2.0, nr_shape: str = "abs_cos", ds_fraction: float = 0.75, z_inversion_cfg: float = 0.0,
        z_start: int = 0, z_stop: int = -1, preset: str = NO_PRESET,
    ) -> io.NodeOutput:
        steps, cfg, width, height = model_defaults(model.info, steps, cfg, width, height)
        use_preset = bool(preset) and preset != NO_PRESET
        if schedule == CUSTOM and not custom_schedule.strip() and not use_preset:
            raise MGTInputError("schedule is 'custom' but custom_schedule is empty")
        choices = dict(
            noise_regularization=noise_regularization and {"amplitude": nr_amplitude, "shape": nr_shape},
            differential_sampling=differential_sampling and {"fraction": ds_fraction},
            z_sampling=z_sampling and {"inversion_cfg": z_inversion_cfg, "start": z_start,
                                       "stop": None if z_stop < 0 else z_stop},
        )
        sched = custom_schedule if schedule == CUSTOM else schedule
        if isinstance(model.info, MaskGITInfo):
            return cls.sample_maskgit(model, positive, seed, steps, cfg, width, height, batch_size, sched, choices,
                                      init_tokens, denoise, preset if use_preset else None)
        if negative is None:
            raise MGTInputError("connect a negative conditioning (MGT Text Encode, empty text is fine) for a text model")
        if isinstance(positive, ClassLabels):
            raise MGTInputError(f"{model.info.name} is a text-to-image model: connect MGT Text Encode, not MGT Class Label")
        if use_preset:
            settings = make_settings(steps=steps, guidance_scale=cfg, preset_name=preset, model_presets=model.info.presets,
                                     default_schedule=model.info.schedule)
        else:
            settings = make_settings(
                steps=steps, guidance_scale=cfg, schedule="cosine" if sched == MODEL_DEFAULT else sched,
                temperature=(temperature_start, temperature_end), token_temperature=token_temperature, **choices,
            )
        if init_tokens is not None:
            height, width = init_tokens.image_size
        pipe = MGTPipeline(transformer=model.patcher.model.module, vq=None, text_encoder=None, tokenizer=None, info=model.info)
        grid = pipe.grid_for(height, width)  # size errors before any loading
        bridge.free_text_encoders()
        bridge.use(model.patcher)
        device = pipe.transformer.device
        generator = torch.Generator(device).manual_seed(seed)
        cond = positive.repeat(batch_size)
        uncond = negative.repeat(batch_size)
        start = None
        if init_tokens is not None:
            start = start_from_tokens(init_tokens.tokens, init_tokens.token_mask, settings.steps, denoise,
                                      settings.schedule, len(cond), pipe.transformer.mask_token_id, generator)
        todo = settings.steps - (start.first_step if start else 0)
        node_id = cls.hidden.unique_id if getattr(cls, "hidden", None) else None
        callback = bridge.step_callback(node_id, todo, grid, model.vq)
        if model.tome or model.compile:  # on a weight-sharing copy: the loaded model itself is never patched
            pipe.transformer = shared_clone(pipe.transformer)
        if model.tome:
            apply_tome(pipe.transformer, seed=seed, **model.tome)
            macs = transformer_macs(pipe.transformer.config, grid, cond.hidden.shape[1], TomeConfig(**model.tome))
            plain = transformer_macs(pipe.transformer.config, grid, cond.hidden.shape[1])
            if macs["total"] > 0.9 * plain["total"]:
                log.warning("MGT TomeMGT: these settings save only %.0f%% of the transformer's work at %dx%d (merging "
                            "in the dual-stream blocks alone); on a GPU the merging can cost about as much. Raise the "
                            "ratio or turn on single_stream for a speed-up.", 100 * (1 - macs["total"] / plain["total"]),
                            width, height)
        if model.compile:  # compiled code is cached process-wide: the per-run copy reuses it
            enable_compile(pipe.transformer)  # logs why where no compiler can run, and stays eager
        t0 = time.perf_counter()
        result = pipe.sample_tokens(cond, uncond, settings, height=height, width=width, generator=generator,
                                    start=start, callback=callback)
        tokens = result.tokens.view(-1, *grid).cpu()
        log.info("MGT Sampler: %d steps %dx%d x%d on %s, %s, %s%s: %.2f s", todo, width, height, len(cond), device,
                 str(pipe.transformer.dtype).replace("torch.", ""), compile_status(pipe.transformer),
                 f", SCQ {quant_info(pipe.transformer)['mode']}" if quant_info(pipe.transformer) else "",
                 time.perf_counter() - t0)
        return io.NodeOutput(Tokens(tokens, model.info.vq_factor))

    @classmethod
    def sample_maskgit(cls, model: ModelHandle, positive, seed: int, steps: int, cfg: float, width: int, height: int,
                       batch_size: int, schedule: str, choices: dict, init_tokens: Tokens | None,
                       denoise: float, preset: str | None = None) -> io.NodeOutput:
        """Class-conditional MaskGIT v1 / Halton: the family's own sampler with these design choices (or a
        built-in preset of them)."""
        info = model.info
        if not isinstance(positive, ClassLabels):
            raise MGTInputError(f"{info.name} is class-conditional: connect MGT Class Label to positive")
        if model.tome:
            raise MGTInputError("TomeMGT merges tokens in Meissonic's dual-stream blocks, which MaskGIT models do not "
                                "have: remove MGT TomeMGT for this model")
        if model.compile:
            log.warning("MGT: compiled inference covers Meissonic/Monetico transformers only; %s (MaskGIT) runs "
                        "eagerly", info.name)
        pipe = MaskGITPipeline(transformer=model.patcher.model.module, vq=None, info=info)
        if init_tokens is not None:
            height, width = init_tokens.image_size
        side = pipe.grid[0] * info.vq_factor, pipe.grid[1] * info.vq_factor
        if (height, width) != side:
            raise MGTInputError(f"{info.name} generates {side[1]}x{side[0]} images only (learned positions); "
                                f"set width and height to {side[1]} and {side[0]}")
        labels = pipe.class_table.indices(list(positive.repeat(batch_size).labels))
        if preset:
            settings = pipe.sampler_settings(steps=steps, cfg_w=max(0.0, cfg - 1.0), preset=preset)
        else:
            settings = pipe.sampler_settings(
                steps=steps, cfg_w=max(0.0, cfg - 1.0), schedule=None if schedule == MODEL_DEFAULT else schedule,
                **{k: v for k, v in choices.items() if v},
            )
        bridge.free_text_encoders()
        bridge.use(model.patcher)
        generator = torch.Generator(pipe.device).manual_seed(seed)
        start = None
        if init_tokens is not None:
            start = start_from_tokens(init_tokens.tokens, init_tokens.token_mask, settings.steps, denoise,
                                      settings.schedule, len(labels), pipe.mask_id, generator)
        todo = settings.steps - (start.first_step if start else 0)
        node_id = cls.hidden.unique_id if getattr(cls, "hidden", None) else None
        callback = bridge.step_callback(node_id, todo, pipe.grid, model.vq)
        result = pipe.sample_tokens(labels, settings, generator, start=start, callback=callback)
        return io.NodeOutput(Tokens(result.tokens.view(-1, *pipe.grid).cpu(), info.vq_factor))

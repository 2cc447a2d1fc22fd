"""Load Meissonic / Monetico / the demo model from their original files (no network, no diffusers).

Accepts a diffusers-style model folder (``model_index.json``, ``transformer/``, ``vqvae/``,
``text_encoder/``, ``tokenizer/``, ``scheduler/``) or single safetensors files. Models are
recognised by their config keys, never by ``_class_name``; code shipped in a folder is never run.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import torch

from ..errors import MGTLoadError
from ..models.meissonic.transformer import MeissonicConfig, MeissonicTransformer
from ..models.text import build_clip_text, finish_meta_buffers, infer_clip_text_config, load_tokenizer
from ..models.vq.vqmodel import VQConfig, VQModel
from .modules import load_module, meta_module
from .safetensors_io import SafetensorsFile

REFERENCE_NEGATIVE_PROMPT = (
    "worst quality, low quality, low res, blurry, distortion, watermark, logo, signature, text, jpeg artifacts, "
    "signature, sketch, duplicate, ugly, identifying mark"
)


def default_dtype(device: torch.device | str) -> torch.dtype:
    """bf16 where it is fast (CUDA with bf16), fp16 on MPS, fp32 on CPU."""
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if kind == "mps":
        return torch.float16
    return torch.float32


def vq_dtype_for(dtype: torch.dtype) -> torch.dtype:
    """The VQ decoder produces NaNs in fp16: keep it in fp32 then (bf16 is fine)."""
    return torch.float32 if dtype == torch.float16 else dtype


def read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise MGTLoadError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MGTLoadError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise MGTLoadError(f"{path}: expected a JSON object")
    return data


def pick_weights(folder: str, stem: str, dtype: torch.dtype) -> str:
    """``stem.safetensors`` or ``stem.fp16.safetensors``: the half file when loading in half precision."""
    full = os.path.join(folder, f"{stem}.safetensors")
    half = os.path.join(folder, f"{stem}.fp16.safetensors")
    order = [half, full] if dtype in (torch.float16, torch.bfloat16) else [full, half]
    for path in order:
        if os.path.isfile(path):
            return path
    pickles = [n for n in os.listdir(folder) if n.endswith((".bin", ".pt", ".pth", ".ckpt"))] if os.path.isdir(folder) else []
    extra = f" (found {pickles[0]}: pickle files are not loaded, for safety; convert to safetensors)" if pickles else ""
    raise MGTLoadError(f"{folder}: no {stem}.safetensors or {stem}.fp16.safetensors{extra}")


def _sidecar_config(path: str) -> tuple[str, dict] | tuple[None, None]:
    """``<file>.json`` or ``config.json`` beside a single weights file, if there is one."""
    for candidate in (os.path.splitext(path)[0] + ".json", os.path.join(os.path.dirname(path), "config.json")):
        if os.path.isfile(candidate):
            return candidate, read_json(candidate)
    return None, None


def infer_transformer_config(shapes: dict[str, tuple[int, ...]], source: str) -> dict:
    """A Meissonic transformer config from tensor shapes (for a single file without config.json)."""
    try:
        dim, joint = shapes["context_embedder.weight"]
        head_dim = shapes["single_transformer_blocks.0.attn.norm_q.weight"][0]
        vocab = shapes["embed.embeddings.weight"][0]
        codebook = shapes["mlm_layer.conv2.weight"][0]
        pooled = shapes["cond_embed.linear_1.weight"][1] - 1280
    except KeyError as e:
        raise MGTLoadError(f"{source}: no {e.args[0]}; is this a Meissonic/Monetico transformer file?") from None

    def count(prefix: str) -> int:
        return len({k.split(".")[1] for k in shapes if k.startswith(prefix)})

    if head_dim != 128:
        raise MGTLoadError(f"{source}: head dim {head_dim} is not Meissonic's 128; put its config.json next to the file")
    down = "down_block.downsample.conv.weight" in shapes
    return {
        "num_layers": count("transformer_blocks."), "num_single_layers": count("single_transformer_blocks."),
        "num_attention_heads": dim // head_dim, "attention_head_dim": head_dim, "joint_attention_dim": joint,
        "pooled_projection_dim": pooled, "axes_dims_rope": [16, 56, 56], "vocab_size": vocab,
        "codebook_size": codebook, "downsample": down, "upsample": down,
    }


def infer_vq_config(shapes: dict[str, tuple[int, ...]], source: str) -> dict:
    """A VQModel config from tensor shapes (GroupNorm groups cannot be seen: 32 unless a config says)."""
    try:
        levels = 1 + max(int(k.split(".")[2]) for k in shapes if k.startswith("encoder.down_blocks."))
        chans = [shapes[f"encoder.down_blocks.{i}.resnets.0.conv1.weight"][0] for i in range(levels)]
        layers = 1 + max(int(k.split(".")[4]) for k in shapes if k.startswith("encoder.down_blocks.0.resnets."))
        latent = shapes["encoder.conv_out.weight"][0]
        n_codes, embed = shapes["quantize.embedding.weight"]
    except (KeyError, ValueError) as e:
        raise MGTLoadError(f"{source}: cannot read a VQModel layout ({e}); is this a Meissonic/aMUSEd VQ file?") from None
    return {
        "block_out_channels": chans, "layers_per_block": layers, "latent_channels": latent, "num_vq_embeddings": n_codes,
        "vq_embed_dim": embed if embed != latent else None, "norm_num_groups": 32,
        "mid_block_add_attention": any(k.startswith("decoder.mid_block.attentions.") for k in shapes),
    }


def _file_and_config(path: str, config: dict | None, infer) -> tuple[SafetensorsFile, str, dict]:
    """The weights file and its config: given, else a sidecar json, else inferred from the shapes."""
    f = SafetensorsFile(path)
    source, cfg = (path, config) if config else _sidecar_config(path)
    if cfg is None:
        source, cfg = path, infer(f.shapes(), path)
    return f, source, cfg


def load_transformer(path: str, *, config: dict | None = None, dtype=torch.float32, device="cpu") -> MeissonicTransformer:
    f, source, cfg = _file_and_config(path, config, infer_transformer_config)
    mcfg = MeissonicConfig.from_dict(cfg, source=source)
    model = meta_module(lambda: MeissonicTransformer(mcfg))
    hint = "is this a Meissonic checkpoint?" if mcfg.downsample else "is this a Monetico checkpoint?"
    return load_module(model, [f], dtype=dtype, device=device, hint=hint)


def load_vq(path: str, *, config: dict | None = None, dtype=torch.float32, device="cpu") -> VQModel:
    f, source, cfg = _file_and_config(path, config, infer_vq_config)
    cfg = VQConfig.from_dict(cfg, source=source)
    model = meta_module(lambda: VQModel(cfg))
    return load_module(model, [f], dtype=vq_dtype_for(dtype), device=device, hint="is this the model's vqvae?")


def _clip_rename(key: str) -> str | None:
    """Keep the text tower of a full CLIP file (laion's model.safetensors); drop vision and legacy keys."""
    if key.startswith("text_model.embeddings.position_ids"):
        return None
    if key.startswith("text_model.") or key == "text_projection.weight":
        return key
    return None


def load_text_encoder(path: str, *, config: dict | None = None, dtype=torch.float32, device="cpu"):
    f = SafetensorsFile(path)
    cfg = config or _sidecar_config(path)[1]
    if cfg is None or "text_config" in cfg:  # a full CLIPModel config nests the text one
        cfg = (cfg or {}).get("text_config") or infer_clip_text_config(
            {k: v for k, v in f.shapes().items() if _clip_rename(k)}, path
        )
        cfg.setdefault("projection_dim", f.shapes().get("text_projection.weight", (0,))[0])
    model = meta_module(lambda: build_clip_text(cfg, path))
    model = load_module(model, [f], dtype=dtype, device=device, rename=_clip_rename, hint="is this a CLIP text encoder?")
    finish_meta_buffers(model, torch.device(device))
    return model


@dataclass
class ModelInfo:
    """What a model folder is and the settings its authors sample with."""

    name: str
    family: str  # "meissonic" (native 1024, down-sampling) | "monetico" (native 512) | "demo"
    path: str
    steps: int
    guidance_scale: float
    width: int
    height: int
    negative_prompt: str
    schedule: str = "cosine"
    vq_factor: int = 16
    presets: dict = field(default_factory=dict)
    """Named sampler presets from ``mgt_defaults.json`` (``"presets"``), e.g. written by the tuner."""


def _defaults(folder: str, tcfg: MeissonicConfig, scheduler: dict, vq_factor: int = 16) -> ModelInfo:
    family = "meissonic" if tcfg.downsample else "monetico"
    size = 1024 if tcfg.downsample else 512
    info = ModelInfo(
        name=os.path.basename(os.path.normpath(folder)), family=family, path=folder,
        steps=64 if family == "meissonic" else 48, guidance_scale=9.0, width=size, height=size,
        negative_prompt=REFERENCE_NEGATIVE_PROMPT, schedule=scheduler.get("masking_schedule", "cosine"),
        vq_factor=vq_factor,
    )
    extra = os.path.join(folder, "mgt_defaults.json")
    if os.path.isfile(extra):
        d = read_json(extra)
        info.family = d.get("family", "demo")
        for k in ("steps", "guidance_scale", "width", "height", "negative_prompt", "schedule"):
            if k in d:
                setattr(info, k, type(getattr(info, k))(d[k]))
        presets = d.get("presets", {})
        if not isinstance(presets, dict):
            raise MGTLoadError(f"{extra}: 'presets' must be an object of name -> sampler options")
        info.presets = presets
    return info


def is_model_folder(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, "transformer", "config.json")) and os.path.isdir(
        os.path.join(folder, "vqvae")
    )


def load_pipeline(
    path: str | os.PathLike,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    text_encoder: str | None = None,
    load_text: bool = True,
    quantized: str | None = None,
    compile: bool = False,
):
    """Load a model folder into an :class:`~mgt_core.pipeline.MGTPipeline`, or a converted MaskGIT folder
    (``maskgit_index.json``, see :mod:`.maskgit`) into a :class:`~mgt_core.maskgit_pipeline.MaskGITPipeline`.

    ``dtype`` defaults to bf16 on CUDA, fp16 on MPS and fp32 on CPU (the VQ is never fp16).
    ``text_encoder`` replaces the folder's text tower with a separate file (e.g. laion's
    CLIP-ViT-H-14 ``model.safetensors``; only its text keys are loaded).
    ``quantized`` loads a quantized transformer instead of ``transformer/``: a variant name from
    :func:`~mgt_core.accel.quant.quantized_variants` (``transformer_<name>/`` in the folder) or a folder path.
    ``compile`` runs the transformer blocks compiled (:meth:`MGTPipeline.compile`; eager where no compiler).
    """
    from ..pipeline import MGTPipeline

    folder = os.fspath(path)
    device = torch.device(device) if device is not None else torch.device("cpu")
    dtype = dtype or default_dtype(device)
    if not os.path.isdir(folder):
        raise MGTLoadError(
            f"{folder}: not a folder (pass a model folder with transformer/ and vqvae/, or a converted MaskGIT "
            "folder; released MaskGIT .pth files load with mgt_core.loading.maskgit.load_maskgit_files)"
        )
    from .maskgit import is_maskgit_folder, load_maskgit_folder

    if is_maskgit_folder(folder):
        if quantized or text_encoder:
            raise MGTLoadError(f"{folder}: a MaskGIT folder has no quantized variants or text encoder")
        return load_maskgit_folder(folder, dtype=dtype, device=device)
    if not is_model_folder(folder):
        raise MGTLoadError(
            f"{folder}: not an MGT model folder: expected transformer/config.json and vqvae/ "
            "(and text_encoder/, tokenizer/), as in the published Meissonic/Monetico repositories"
        )
    tdir, vdir = os.path.join(folder, "transformer"), os.path.join(folder, "vqvae")
    tcfg_dict = read_json(os.path.join(tdir, "config.json"))
    tcfg = MeissonicConfig.from_dict(tcfg_dict, source=os.path.join(tdir, "config.json"))
    if quantized:
        from ..accel.quant import load_quantized_transformer, quantized_variants

        variants = quantized_variants(folder)
        qdir = variants.get(quantized) or (quantized if os.path.isdir(quantized) else None)
        if qdir is None:
            raise MGTLoadError(f"{folder}: no quantized variant {quantized!r} (found: {', '.join(variants) or 'none'})")
        transformer = load_quantized_transformer(qdir, dtype=dtype, device=device)
        tcfg = transformer.config
    else:
        transformer = load_transformer(pick_weights(tdir, "diffusion_pytorch_model", dtype), config=tcfg_dict, dtype=dtype, device=device)
    vcfg = read_json(os.path.join(vdir, "config.json"))
    vq = load_vq(pick_weights(vdir, "diffusion_pytorch_model", dtype), config=vcfg, dtype=dtype, device=device)
    if vq.config.num_vq_embeddings < tcfg.codebook_size:
        raise MGTLoadError(
            f"{vdir}: codebook has {vq.config.num_vq_embeddings} entries but the transformer predicts {tcfg.codebook_size}"
        )
    scheduler = {}
    sched_path = os.path.join(folder, "scheduler", "scheduler_config.json")
    if os.path.isfile(sched_path):
        scheduler = read_json(sched_path)
        if int(scheduler.get("mask_token_id", tcfg.mask_token_id)) != tcfg.mask_token_id:
            raise MGTLoadError(
                f"{sched_path}: mask_token_id {scheduler['mask_token_id']} != vocab_size - 1 = {tcfg.mask_token_id}"
            )
    te = tok = None
    if load_text:
        tok_dir = os.path.join(folder, "tokenizer")
        if not os.path.isdir(tok_dir):
            raise MGTLoadError(f"{folder}: no tokenizer/ folder (vocab.json, merges.txt)")
        tok = load_tokenizer(tok_dir)
        if text_encoder:
            te = load_text_encoder(text_encoder, dtype=dtype, device=device)
        else:
            edir = os.path.join(folder, "text_encoder")
            te = load_text_encoder(pick_weights(edir, "model", dtype), config=read_json(os.path.join(edir, "config.json")), dtype=dtype, device=device)
        check_text_fits(te, tcfg, text_encoder or os.path.join(folder, "text_encoder"))
    pipe = MGTPipeline(transformer=transformer, vq=vq, text_encoder=te, tokenizer=tok, info=_defaults(folder, tcfg, scheduler, vq.factor))
    if compile:
        pipe.compile()
    return pipe


def check_text_fits(te, tcfg: MeissonicConfig, source: str) -> None:
    hidden, proj = te.config.hidden_size, te.config.projection_dim
    if hidden != tcfg.joint_attention_dim or proj != tcfg.pooled_projection_dim:
        raise MGTLoadError(
            f"{source}: text encoder gives hidden {hidden} / pooled {proj}, but the transformer expects "
            f"{tcfg.joint_attention_dim} / {tcfg.pooled_projection_dim}"
        )


def load_pipeline_files(
    transformer: str,
    vq: str,
    text_encoder: str | None = None,
    tokenizer: str | None = None,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
):
    """An :class:`~mgt_core.pipeline.MGTPipeline` from single files (e.g. ComfyUI's
    ``diffusion_models``, ``vae`` and ``text_encoders`` folders); the tokenizer is a folder with
    vocab.json/merges.txt (a model folder's ``tokenizer/``)."""
    from ..pipeline import MGTPipeline

    device = torch.device(device) if device is not None else torch.device("cpu")
    dtype = dtype or default_dtype(device)
    t = load_transformer(transformer, dtype=dtype, device=device)
    v = load_vq(vq, dtype=dtype, device=device)
    te = tok = None
    if text_encoder is not None:
        if tokenizer is None:
            raise MGTLoadError(f"{text_encoder}: a text encoder file needs a tokenizer folder (vocab.json, merges.txt)")
        tok = load_tokenizer(tokenizer)
        te = load_text_encoder(text_encoder, dtype=dtype, device=device)
        check_text_fits(te, t.config, text_encoder)
    info = _defaults(os.path.dirname(transformer), t.config, {}, v.factor)
    info.name = os.path.basename(transformer)
    return MGTPipeline(transformer=t, vq=v, text_encoder=te, tokenizer=tok, info=info)

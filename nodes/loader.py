"""MGT Model Loader (a model folder) and MGT Model Loader (Files) (single safetensors files)."""

from __future__ import annotations

import os

import folder_paths
import torch
from comfy_api.latest import io

from ..mgt_core.accel.quant import quantize_model, quantized_variants
from ..mgt_core.loading.maskgit import is_maskgit_folder, load_maskgit_files
from ..mgt_core.loading.pipeline import default_dtype, is_model_folder, load_pipeline, load_pipeline_files
from ..mgt_core.maskgit_pipeline import MaskGITPipeline
from . import bridge
from .types import MGTVQ, MGTModel, MGTTextEncoder, ModelHandle, TextEncoderHandle, VQHandle

FOLDER_KEY = "mgt"
DEMO_NAME = "mgt-demo (built-in)"
DEMO_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "mgt_core", "demo", "mgt-demo")
MASKGIT_DEMO_NAME = "maskgit-demo (built-in)"
MASKGIT_DEMO_PATH = os.path.join(os.path.dirname(DEMO_PATH), "maskgit-demo")
OWN_TEXT_ENCODER = "model's own"
DTYPES = {"auto": None, "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
ON_LOAD = {"w8 (quantize on load)": "w8", "w4 (quantize on load)": "w4"}
SAVED = "saved: "

if FOLDER_KEY not in folder_paths.folder_names_and_paths:
    folder_paths.add_model_folder_path(FOLDER_KEY, os.path.join(folder_paths.models_dir, FOLDER_KEY))


def model_folders() -> dict[str, str]:
    """Display name -> path of every model folder in models/mgt and models/diffusers (+ the demos): Meissonic
    layouts and converted MaskGIT folders (``python -m mgt_core.convert``)."""
    found = {DEMO_NAME: DEMO_PATH} if is_model_folder(DEMO_PATH) else {}
    if is_maskgit_folder(MASKGIT_DEMO_PATH):
        found[MASKGIT_DEMO_NAME] = MASKGIT_DEMO_PATH
    for key in (FOLDER_KEY, "diffusers"):
        for base in folder_paths.get_folder_paths(key) if key in folder_paths.folder_names_and_paths else []:
            if not os.path.isdir(base):
                continue
            for name in sorted(os.listdir(base)):
                path = os.path.join(base, name)
                if is_model_folder(path) or is_maskgit_folder(path):
                    found.setdefault(name, path)
    return found


def quantization_choices() -> list[str]:
    saved = sorted({name for path in model_folders().values() for name in quantized_variants(path)})
    return ["none", *ON_LOAD, *(SAVED + name for name in saved)]


def _dtype(choice: str) -> torch.dtype:
    return DTYPES[choice] or default_dtype(bridge.load_device("transformer"))


def handles(pipe, compile: bool = False):
    vq = VQHandle(bridge.wrap(pipe.vq, "vq"))
    if isinstance(pipe, MaskGITPipeline):  # class-conditional: no text encoder (MGT Class Label conditions it)
        return io.NodeOutput(ModelHandle(bridge.wrap(pipe.transformer, "transformer"), pipe.info, vq), None, vq)
    model = ModelHandle(bridge.wrap(pipe.transformer, "transformer"), pipe.info, vq, compile=compile)
    text = TextEncoderHandle(bridge.wrap(pipe.text_encoder, "text"), pipe.tokenizer, pipe.info) if pipe.text_encoder is not None else None
    return io.NodeOutput(model, text, vq)


DTYPE_INPUT = dict(
    options=list(DTYPES), default="auto",
    tooltip="Weights precision. auto: bf16 on CUDA, fp16 on Apple MPS, fp32 on CPU. The VQ decoder is never "
            "run in fp16 (it produces NaNs); it stays fp32 when fp16 is chosen.",
)
COMPILE_TOOLTIP = (
    "Compiled inference: torch.compile per transformer block (regional), compiled once on the first run "
    "(~15-60 s), then reused for every run, size and step. About 2x faster forwards on a recent NVIDIA GPU; "
    "needs Triton (GPU) or a C++ compiler (CPU). Where neither is available, or on Apple MPS, the model runs "
    "eagerly and the console says why. Same tokens as eager up to float rounding. Meissonic/Monetico only (MaskGIT "
    "models run eagerly)."
)
OUTPUTS = [
    MGTModel.Output(display_name="model", tooltip="The transformer, for MGT Sampler and TomeMGT."),
    MGTTextEncoder.Output(display_name="text_encoder", tooltip="CLIP text encoder, for MGT Text Encode (none for "
                          "class-conditional MaskGIT models: use MGT Class Label)."),
    MGTVQ.Output(display_name="vq", tooltip="VQ image tokenizer, for MGT VQ Decode / Encode."),
]


class MGTModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MGTModelLoader",
            display_name="MGT Model Loader",
            category="MGT/loaders",
            description="Loads a Meissonic / Monetico model folder as published (transformer/, vqvae/, "
                        "text_encoder/, tokenizer/) or a converted MaskGIT v1 / Halton-MaskGIT folder, from models/mgt "
                        "or models/diffusers, or a built-in demo model.",
            inputs=[
                io.Combo.Input("model", options=list(model_folders()) or [DEMO_NAME],
                               tooltip="Model folder. Put MeissonFlow/Meissonic or Collov-Labs/Monetico folders, or "
                                       "MaskGIT folders from python -m mgt_core.convert, in ComfyUI/models/mgt/. The "
                                       "built-in demo models draw coloured shapes at 256 px (maskgit-demo: 40 classes)."),
                io.Combo.Input("dtype", **DTYPE_INPUT),
                io.Combo.Input("text_encoder", options=[OWN_TEXT_ENCODER, *folder_paths.get_filename_list("text_encoders")],
                               default=OWN_TEXT_ENCODER,
                               tooltip="Use another CLIP text tower instead of the folder's text_encoder/: the official "
                                       "Meissonic scripts use laion/CLIP-ViT-H-14-laion2B-s32B-b79K's model.safetensors "
                                       "(a full CLIP file: only its text keys are loaded)."),
                io.Combo.Input("quantization", options=quantization_choices(), default="none", optional=True,
                               tooltip="SCQ weight quantization of the transformer's linear layers: w8 (0.53x the bf16 "
                                       "weight bytes) or w4 (0.28x), computed while loading; 'saved: <name>' loads a "
                                       "calibrated variant (e.g. W4A8 from python -m mgt_core.accel.quantize_tool) from "
                                       "the folder's transformer_<name>/. Saves memory; costs time unless compile is on "
                                       "(dequantization fused per layer) or, for W4A8 on FP8 GPUs, its FP8 matmuls."),
                io.Boolean.Input("compile", default=False, optional=True, tooltip=COMPILE_TOOLTIP),
            ],
            outputs=OUTPUTS,
        )

    @classmethod
    def execute(cls, model: str, dtype: str, text_encoder: str, quantization: str = "none",
                compile: bool = False) -> io.NodeOutput:
        folders = model_folders()
        if model not in folders:
            raise ValueError(f"model folder {model!r} not found in models/{FOLDER_KEY} or models/diffusers")
        override = None if text_encoder == OWN_TEXT_ENCODER else folder_paths.get_full_path_or_raise("text_encoders", text_encoder)
        saved = quantization[len(SAVED):] if quantization.startswith(SAVED) else None
        pipe = load_pipeline(folders[model], dtype=_dtype(dtype), device=bridge.offload_device("transformer"),
                             text_encoder=override, quantized=saved)
        if quantization in ON_LOAD:
            quantize_model(pipe.transformer, ON_LOAD[quantization], group_size="auto")  # 128 where it divides
        return handles(pipe, compile)


class MGTModelLoaderFiles(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MGTModelLoaderFiles",
            display_name="MGT Model Loader (Files)",
            category="MGT/loaders",
            description="Loads single safetensors files: a Meissonic/Monetico transformer, its VQ model and a CLIP "
                        "text encoder, with the tokenizer of a model folder.",
            inputs=[
                io.Combo.Input("transformer", options=folder_paths.get_filename_list("diffusion_models"),
                               tooltip="Transformer file in models/diffusion_models (config inferred from its tensors)."),
                io.Combo.Input("vq", options=folder_paths.get_filename_list("vae"),
                               tooltip="VQ model file (diffusers VQModel keys) in models/vae."),
                io.Combo.Input("text_encoder", options=folder_paths.get_filename_list("text_encoders"),
                               tooltip="CLIP ViT-H/14 text encoder in models/text_encoders (a full CLIP file works: only "
                                       "its text keys are loaded)."),
                io.Combo.Input("tokenizer_from", options=list(model_folders()) or [DEMO_NAME],
                               tooltip="Model folder whose tokenizer/ to use (vocab.json, merges.txt)."),
                io.Combo.Input("dtype", **DTYPE_INPUT),
                io.Boolean.Input("compile", default=False, optional=True, tooltip=COMPILE_TOOLTIP),
            ],
            outputs=OUTPUTS,
        )

    @classmethod
    def execute(cls, transformer: str, vq: str, text_encoder: str, tokenizer_from: str, dtype: str,
                compile: bool = False) -> io.NodeOutput:
        folders = model_folders()
        if tokenizer_from not in folders:
            raise ValueError(f"model folder {tokenizer_from!r} not found for the tokenizer")
        pipe = load_pipeline_files(
            folder_paths.get_full_path_or_raise("diffusion_models", transformer),
            folder_paths.get_full_path_or_raise("vae", vq),
            folder_paths.get_full_path_or_raise("text_encoders", text_encoder),
            os.path.join(folders[tokenizer_from], "tokenizer"),
            dtype=_dtype(dtype), device=bridge.offload_device("transformer"),
        )
        return handles(pipe, compile)


class MGTMaskGITLoaderFiles(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MGTMaskGITLoaderFiles",
            display_name="MGT MaskGIT Loader (Files)",
            category="MGT/loaders",
            description="Loads the released MaskGIT files directly: MaskGIT-pytorch v1 (MaskGIT_ImageNet_256.pth + the "
                        "taming VQGAN last.ckpt) or Halton-MaskGIT (ImageNet_256_base.pth ... + LlamaGen "
                        "vq_ds16_c2i.pt). Pickles are read weights-only; anything else in them is refused.",
            inputs=[
                io.Combo.Input("transformer", options=folder_paths.get_filename_list("diffusion_models"),
                               tooltip="MaskGIT transformer checkpoint in models/diffusion_models (.pth or safetensors; "
                                       "the family and size are recognised from its tensors)."),
                io.Combo.Input("vq", options=folder_paths.get_filename_list("vae"),
                               tooltip="Its VQGAN in models/vae: taming last.ckpt for v1, LlamaGen vq_ds16_c2i.pt for Halton."),
                io.Combo.Input("dtype", **DTYPE_INPUT),
            ],
            outputs=OUTPUTS,
        )

    @classmethod
    def execute(cls, transformer: str, vq: str, dtype: str) -> io.NodeOutput:
        pipe = load_maskgit_files(
            folder_paths.get_full_path_or_raise("diffusion_models", transformer),
            folder_paths.get_full_path_or_raise("vae", vq),
            dtype=_dtype(dtype), device=bridge.offload_device("transformer"),
        )
        return handles(pipe)

"""Write a model folder in the published layout (used for the demo model and random test models)."""

from __future__ import annotations

import json
import os

import torch
from safetensors.torch import save_file

from ..models.configs import MODEL_INDEX


def _write_json(path: str, data: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")


def save_weights(module: torch.nn.Module, path: str, dtype: torch.dtype | None = None) -> None:
    """Contiguous CPU tensors in ``dtype`` (floating ones) with the ``{"format": "pt"}`` metadata."""
    state = {
        k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in module.state_dict().items()
    }
    save_file(state, path, metadata={"format": "pt"})


def save_model_folder(
    folder: str,
    *,
    transformer,
    transformer_config: dict,
    vq,
    vq_config: dict,
    text_encoder=None,
    text_config: dict | None = None,
    tokenizer_writer=None,
    defaults: dict | None = None,
    dtype: torch.dtype | None = None,
) -> str:
    """Save components as ``model_index.json``, ``transformer/``, ``vqvae/``, ``text_encoder/``,
    ``tokenizer/``, ``scheduler/`` (and ``mgt_defaults.json`` when given)."""
    for sub in ("transformer", "vqvae", "scheduler"):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    _write_json(os.path.join(folder, "model_index.json"), MODEL_INDEX)
    _write_json(os.path.join(folder, "transformer", "config.json"), transformer_config)
    save_weights(transformer, os.path.join(folder, "transformer", "diffusion_pytorch_model.safetensors"), dtype)
    _write_json(os.path.join(folder, "vqvae", "config.json"), vq_config)
    save_weights(vq, os.path.join(folder, "vqvae", "diffusion_pytorch_model.safetensors"), dtype)
    sched = {"_class_name": "Scheduler", "mask_token_id": transformer_config["vocab_size"] - 1, "masking_schedule": "cosine"}
    _write_json(os.path.join(folder, "scheduler", "scheduler_config.json"), sched)
    if text_encoder is not None:
        os.makedirs(os.path.join(folder, "text_encoder"), exist_ok=True)
        _write_json(os.path.join(folder, "text_encoder", "config.json"), text_config)
        save_weights(text_encoder, os.path.join(folder, "text_encoder", "model.safetensors"), dtype)
    if tokenizer_writer is not None:
        tokenizer_writer(os.path.join(folder, "tokenizer"))
    if defaults:
        _write_json(os.path.join(folder, "mgt_defaults.json"), defaults)
    return folder

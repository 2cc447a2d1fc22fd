"""Where the pack meets ComfyUI's runtime: model management, progress, previews and Cancel."""

from __future__ import annotations

import weakref

import comfy.model_management as mm
import comfy.model_patcher
import comfy.utils
import torch
from comfy.cli_args import LatentPreviewMethod, args
from PIL import Image

from ..mgt_core.preview import TokenPalette
from ..mgt_core.sampling.engine import StepInfo
from .types import VQHandle

_DEVICES = {
    "transformer": (mm.get_torch_device, mm.unet_offload_device),
    "text": (mm.text_encoder_device, mm.text_encoder_offload_device),
    "vq": (mm.vae_device, mm.vae_offload_device),
}
_text_patchers: weakref.WeakSet = weakref.WeakSet()


def load_device(kind: str) -> torch.device:
    return _DEVICES[kind][0]()


def offload_device(kind: str) -> torch.device:
    return _DEVICES[kind][1]()


class Held(torch.nn.Module):
    """Container handed to ModelPatcher, which sets ``.device`` on its model (a read-only property on
    transformers' models and ours)."""

    def __init__(self, module: torch.nn.Module, device: torch.device):
        super().__init__()
        self.module = module
        self.device = device


def wrap(module: torch.nn.Module, kind: str):
    """A ModelPatcher so the module joins ComfyUI's memory management (load/offload with others)."""
    held = Held(module, offload_device(kind))
    patcher = comfy.model_patcher.ModelPatcher(
        held, load_device=load_device(kind), offload_device=offload_device(kind), size=mm.module_size(module)
    )
    if kind == "text":
        _text_patchers.add(patcher)
    return patcher


def use(patcher) -> torch.nn.Module:
    """Load onto the compute device (fully: plain modules cannot run half-offloaded)."""
    mm.load_models_gpu([patcher], force_full_load=True)
    return patcher.model.module


def free_text_encoders() -> None:
    """Text encoders leave the GPU before sampling: their output is already on the CPU."""
    for p in list(_text_patchers):
        if p.model is not None and next(p.model.parameters()).device != torch.device(p.offload_device):
            mm.unload_model_and_clones(p, unload_additional_models=False)


def previews_enabled() -> str | None:
    """ComfyUI's preview setting (per prompt or --preview-method): None, 'fast' or 'decode'."""
    method = args.preview_method
    if method == LatentPreviewMethod.NoPreviews:
        return None
    return "decode" if method == LatentPreviewMethod.TAESD else "fast"


def step_callback(node_id, steps_total: int, grid, vq: VQHandle | None):
    """Cancel within a step, a progress bar, and a preview of the step's prediction."""
    pbar = comfy.utils.ProgressBar(steps_total, node_id=node_id)
    mode = previews_enabled() if vq is not None else None
    every = max(1, steps_total // 16)
    done = [0]

    def callback(info: StepInfo) -> None:
        mm.throw_exception_if_processing_interrupted()
        done[0] += 1
        preview = None
        if mode and (done[0] % every == 0 or done[0] == steps_total):
            preview = ("JPEG", _preview_image(info.predicted[0], grid, vq, mode), 512)
        pbar.update_absolute(done[0], steps_total, preview)

    return callback


def _preview_image(tokens: torch.Tensor, grid, vq: VQHandle, mode: str) -> Image.Image:
    model = use(vq.patcher)
    if mode == "decode":
        with torch.inference_mode():
            img = model.decode(tokens.view(1, *grid).to(model.post_quant_conv.weight.device))[0]
        return Image.fromarray((img.float().permute(1, 2, 0).cpu().numpy() * 255).round().astype("uint8"))
    if vq.palette is None:
        vq.palette = TokenPalette.fit(model)
    return Image.fromarray(vq.palette.image(tokens, grid, scale=max(1, 256 // max(grid))).numpy())


def intermediate(t: torch.Tensor) -> torch.Tensor:
    return t.to(mm.intermediate_device())


def intermediate_device() -> torch.device:
    return mm.intermediate_device()

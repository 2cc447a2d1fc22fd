"""Loading MaskGIT v1 and Halton-MaskGIT: converted folders and the released files directly.

Converted folder (written by ``python -m mgt_core.convert``)::

    maskgit_index.json          {"format": "mgt-maskgit", "version": 1, "family": "maskgit-v1" | "halton" | "demo",
                                 "defaults": {...sampler settings, override the family's...}, "sources": {...}}
    transformer/config.json     MaskGITConfig / HaltonConfig values + "family" (the architecture: "maskgit-v1" | "halton")
    transformer/model.safetensors   the model state, original key names (Halton: the tied head stored once)
    vq/config.json              VQGANConfig values ("layout": "taming" | "llamagen")
    vq/model.safetensors        the VQGAN state, original key names (taming's loss.* dropped)

Released files (``MaskGIT_ImageNet_256.pth`` + ``last.ckpt``; ``ImageNet_256_base.pth`` +
``vq_ds16_c2i.pt``) are read with weights-only unpickling (:mod:`.checkpoints`); which network a
file holds is recognised from its keys, and the config from its shapes (plus a few published
constants that shapes cannot show: v1's 16 heads and 1000 classes, Halton's heads per width).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import MGTLoadError
from ..models.halton.transformer import SIZES as HALTON_SIZES
from ..models.halton.transformer import HaltonConfig, HaltonTransformer
from ..models.maskgit.transformer import MaskGITConfig, MaskGITTransformer
from ..models.vq.vqgan import VQGAN, VQGANConfig
from .checkpoints import read_state_dict
from .modules import check_keys, meta_module
from .pipeline import read_json
from .safetensors_io import SafetensorsFile

INDEX = "maskgit_index.json"
FORMAT = "mgt-maskgit"
FAMILIES = ("maskgit-v1", "halton")
TIED = "head.weight"  # Halton: same tensor as tok_emb.weight
OPTIONAL = {"quantize.codebook_used"}  # LlamaGen training statistics: zeros when a file lacks them


def detect_kind(keys, source: str) -> str:
    """'maskgit-v1' | 'halton' | 'taming' | 'llamagen' from a state dict's key names."""
    keys = set(keys)
    if "first_layer.0.weight" in keys and "pos_emb" in keys:
        return "maskgit-v1"
    if "cls_emb.weight" in keys and "last_norm.mlp.1.weight" in keys:
        return "halton"
    if "quantize.embedding.weight" in keys:
        if any(k.startswith("decoder.up.") for k in keys):
            return "taming"
        if any(k.startswith("decoder.conv_blocks.") for k in keys):
            return "llamagen"
    sample = ", ".join(sorted(keys)[:4])
    raise MGTLoadError(
        f"{source}: not a MaskGIT v1 / Halton-MaskGIT transformer or a taming / LlamaGen VQGAN (keys: {sample}, ...)"
    )


def _shape(shapes: dict, key: str, source: str) -> tuple[int, ...]:
    if key not in shapes:
        raise MGTLoadError(f"{source}: missing key {key!r}")
    return tuple(shapes[key])


def _count(shapes: dict, prefix: str, index: int) -> int:
    found = {int(k.split(".")[index]) for k in shapes if k.startswith(prefix) and k.split(".")[index].isdigit()}
    return max(found) + 1 if found else 0


def infer_transformer_config(kind: str, shapes: dict, source: str, codebook_size: int | None = None) -> dict:
    """A config from tensor shapes. v1: 16 heads at width 768 (the release; shapes cannot show heads), classes from the
    VQ's ``codebook_size`` when given, else 1000. Halton: heads from the published size of that width."""
    if kind == "maskgit-v1":
        vocab, d = _shape(shapes, "tok_emb.weight", source)
        seq = _shape(shapes, "pos_emb", source)[1]
        side = round((seq - 1) ** 0.5)
        if side * side != seq - 1:
            raise MGTLoadError(f"{source}: pos_emb has {seq} positions, not a square grid + 1 class token")
        codebook = codebook_size if codebook_size is not None else vocab - 1002
        if d != 768:
            raise MGTLoadError(
                f"{source}: hidden width {d} is not the released MaskGIT v1 (768, 16 heads), so the number of heads "
                "is unknown; pass its config (input_size, hidden_dim, depth, heads, mlp_dim, codebook_size, nclass)"
            )
        heads = 16
        return {
            "family": "maskgit-v1", "input_size": side, "hidden_dim": d, "depth": _count(shapes, "transformer.layers.", 2),
            "heads": heads, "mlp_dim": _shape(shapes, "transformer.layers.0.1.fn.net.0.weight", source)[0],
            "codebook_size": codebook, "nclass": vocab - codebook - 2,
        }
    if kind == "halton":
        ncls, d = _shape(shapes, "cls_emb.weight", source)
        n_pos = _shape(shapes, "pos_emb.weight", source)[0]
        side = round(n_pos**0.5)
        attn = _shape(shapes, "transformer.layers.0.attn.wq.weight", source)[0]
        depth = _count(shapes, "transformer.layers.", 2)
        heads = next((h for w, dep, h in HALTON_SIZES.values() if w == d and h * (d // h) == attn), None)
        if heads is None:
            raise MGTLoadError(
                f"{source}: hidden width {d} is not a published Halton-MaskGIT size, so the number of heads is "
                "unknown; pass its config (input_size, hidden_dim, depth, heads, mlp_dim, codebook_size, nclass)"
            )
        return {
            "family": "halton", "input_size": side, "hidden_dim": d, "depth": depth, "heads": heads, "mlp_dim": 4 * d,
            "codebook_size": _shape(shapes, "tok_emb.weight", source)[0] - 1, "nclass": ncls - 1,
            "register": _shape(shapes, "reg_tokens.weight", source)[0] if "reg_tokens.weight" in shapes else 0, "proj": 1,
        }
    raise MGTLoadError(f"{source}: {kind} is not a transformer")


def infer_vq_config(kind: str, shapes: dict, source: str) -> dict:
    """A VQGAN config from tensor shapes (taming: attention levels from which ``down.N.attn`` exist)."""
    n_embed, embed_dim = _shape(shapes, "quantize.embedding.weight", source)
    ch = _shape(shapes, "encoder.conv_in.weight", source)[0]
    z = _shape(shapes, "encoder.conv_out.weight", source)[0]
    level, blocks = ("down", "block") if kind == "taming" else ("conv_blocks", "res")
    n = _count(shapes, f"encoder.{level}.", 2)
    mult = [_shape(shapes, f"encoder.{level}.{i}.{blocks}.0.conv1.weight", source)[0] // ch for i in range(n)]
    res_blocks = _count(shapes, f"encoder.{level}.0.{blocks}.", 4)
    if kind == "llamagen":
        used = _shape(shapes, "quantize.codebook_used", source)[0] if "quantize.codebook_used" in shapes else 0
        return {"layout": "llamagen", "ch": ch, "ch_mult": mult, "num_res_blocks": res_blocks, "z_channels": z,
                "embed_dim": embed_dim, "n_embed": n_embed, "attn_resolutions": [], "resolution": 256,
                "l2_norm": True, "codebook_used": used}
    resolution = 16 * 2 ** (n - 1)  # any value works: only which levels have attention matters
    attn = [resolution // 2**i for i in range(n) if any(k.startswith(f"encoder.down.{i}.attn.") for k in shapes)]
    return {"layout": "taming", "ch": ch, "ch_mult": mult, "num_res_blocks": res_blocks, "z_channels": z,
            "embed_dim": embed_dim, "n_embed": n_embed, "attn_resolutions": attn, "resolution": resolution,
            "l2_norm": False, "codebook_used": 0}


def build(kind: str, config: dict) -> nn.Module:
    """A meta-device module of ``kind`` from its config (no memory)."""
    if kind == "maskgit-v1":
        return meta_module(lambda: MaskGITTransformer.from_config(config))
    if kind == "halton":
        return meta_module(lambda: HaltonTransformer.from_config(config))
    return meta_module(lambda: VQGAN.from_config({**config, "layout": kind}))


def fill(module: nn.Module, state: dict[str, torch.Tensor], source: str, *, dtype: torch.dtype, device) -> nn.Module:
    """Load ``state`` strictly into a meta-built ``module`` (keys and shapes checked first, one error
    naming the file, the keys and the sizes), cast to ``dtype``/``device``; re-ties Halton's head."""
    state = dict(state)
    tied = isinstance(module, HaltonTransformer)
    if tied and TIED not in state and "tok_emb.weight" in state:
        state[TIED] = state["tok_emb.weight"]
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    for k in OPTIONAL & expected.keys() - state.keys():
        state[k] = torch.zeros(expected[k])
    kind = type(module).__name__
    check_keys(expected, {k: tuple(v.shape) for k, v in state.items()}, source, f"is this a {kind} checkpoint of this size?")
    if tied and not torch.equal(state[TIED], state["tok_emb.weight"]):
        raise MGTLoadError(f"{source}: head.weight differs from tok_emb.weight, but Halton-MaskGIT ties them")
    device = torch.device(device)
    # no copy when dtype and device already match: safetensors reads are fresh tensors, and pickle tensors are
    # memory-mapped (their pages load on first use and stay shareable with the page cache)
    cast = {k: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype) for k, v in state.items()}
    module.load_state_dict(cast, strict=True, assign=True)
    if tied:
        module.tie_weights()
    return module.eval().requires_grad_(False)


def _cls_config(kind: str, cfg: dict, source: str):
    if kind == "maskgit-v1":
        return MaskGITConfig.from_dict(cfg, source)
    if kind == "halton":
        return HaltonConfig.from_dict(cfg, source)
    return VQGANConfig.from_dict({**cfg, "layout": kind}, source)


# ---------------------------------------------------------------------------------------------- info


@dataclass
class MaskGITInfo:
    """What a MaskGIT model is and the settings its authors sample with.

    ``cfg_w`` is the official guidance weight w in (1 + w) * cond - w * uncond; the engine's
    ``guidance_scale`` (uncond + s * (cond - uncond)) is 1 + w. v1 ramps w from 0 (first step) to
    ``cfg_w`` (last step); Halton keeps it constant.
    """

    name: str
    family: str  # "maskgit-v1" | "halton" | "demo"
    path: str
    steps: int
    guidance_scale: float
    width: int
    height: int
    sampler: str  # "confidence" (v1) | "halton"
    cfg_w: float
    schedule: str = "arccos"
    vq_factor: int = 16
    num_classes: int = 1000
    codebook_size: int = 1024
    negative_prompt: str = ""  # no text; kept so code written for ModelInfo can read it
    settings: dict = field(default_factory=dict)  # the family's remaining sampler knobs (temperatures...)


def default_settings(family: str, input_size: int) -> dict:
    """The authors' published sampler settings (design-choices.md 4.2, 4.3)."""
    if family == "maskgit-v1":
        if input_size >= 32:  # 512 px: FID 7.26
            return {"sampler": "confidence", "steps": 15, "cfg_w": 2.8, "sm_temp": 1.0, "r_temp": 7.0,
                    "randomize": "linear", "schedule": "arccos"}
        return {"sampler": "confidence", "steps": 8, "cfg_w": 3.0, "sm_temp": 1.0, "r_temp": 4.5,
                "randomize": "linear", "schedule": "arccos"}  # 256 px: FID 6.80
    return {"sampler": "halton", "steps": 32, "cfg_w": 2.0, "sm_temp_min": 1.0, "sm_temp_max": 1.2, "temp_pow": 1.0,
            "temp_warmup": 0, "randomize": True, "top_k": -1, "schedule": "arccos"}  # README quick start


def make_info(name: str, path: str, family: str, tcfg, vq: VQGAN, overrides: dict | None = None) -> MaskGITInfo:
    settings = {**default_settings(family if family in FAMILIES else _family_of(tcfg), tcfg.input_size), **(overrides or {})}
    side = tcfg.input_size * vq.factor
    w = float(settings["cfg_w"])
    return MaskGITInfo(
        name=name, family=family, path=path, steps=int(settings["steps"]), guidance_scale=1.0 + w,
        width=side, height=side, sampler=str(settings["sampler"]), cfg_w=w, schedule=str(settings["schedule"]),
        vq_factor=vq.factor, num_classes=tcfg.nclass, codebook_size=tcfg.codebook_size,
        settings={k: v for k, v in settings.items() if k not in ("steps", "sampler", "cfg_w", "schedule")},
    )


def _family_of(tcfg) -> str:
    return "halton" if isinstance(tcfg, HaltonConfig) else "maskgit-v1"


PAIRS = {"maskgit-v1": "taming", "halton": "llamagen"}


def check_kinds(tkind: str, tpath: str, vkind: str, vpath: str) -> None:
    """v1 decodes with the taming VQGAN, Halton with LlamaGen VQ-16: refuse any other pairing early."""
    if PAIRS[tkind] != vkind:
        raise MGTLoadError(
            f"{vpath}: a {vkind} VQGAN does not go with {tpath} ({tkind}), which decodes with the {PAIRS[tkind]} VQGAN "
            "(MaskGIT v1: taming last.ckpt; Halton-MaskGIT: LlamaGen vq_ds16_c2i.pt)"
        )


def _check_pair(transformer: nn.Module, vq: VQGAN, source: str) -> None:
    if vq.codebook_size != transformer.config.codebook_size:
        raise MGTLoadError(
            f"{source}: the VQ codebook has {vq.codebook_size} entries but the transformer predicts "
            f"{transformer.config.codebook_size} (MaskGIT v1 pairs with the taming VQGAN, Halton with LlamaGen VQ-16)"
        )


# ------------------------------------------------------------------------------------------- loaders


def _default_dtypes(device, dtype):
    from .pipeline import default_dtype, vq_dtype_for

    device = torch.device(device) if device is not None else torch.device("cpu")
    dtype = dtype or default_dtype(device)
    return device, dtype, vq_dtype_for(dtype)


def load_state_file(path: str, want: tuple[str, ...]) -> tuple[str, dict[str, torch.Tensor]]:
    """(kind, state) of a released pickle or safetensors file; ``want`` lists acceptable kinds."""
    state = read_state_dict(path)
    kind = detect_kind(state.keys(), path)
    if kind not in want:
        raise MGTLoadError(f"{path}: holds a {kind} model, expected {' or '.join(want)}")
    return kind, state


def load_maskgit_files(
    transformer: str | os.PathLike,
    vq: str | os.PathLike,
    *,
    transformer_config: dict | None = None,
    vq_config: dict | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
):
    """A :class:`~mgt_core.maskgit_pipeline.MaskGITPipeline` straight from the released files (or their
    safetensors): e.g. ``MaskGIT_ImageNet_256.pth`` + ``last.ckpt``, or ``ImageNet_384_large.pth`` +
    ``vq_ds16_c2i.pt``. Configs are inferred from the shapes unless given."""
    from ..maskgit_pipeline import MaskGITPipeline

    device, dtype, vdtype = _default_dtypes(device, dtype)
    tpath, vpath = os.fspath(transformer), os.fspath(vq)
    tkind, tstate = load_state_file(tpath, FAMILIES)  # memory-mapped where possible: cheap until filled
    vkind, vstate = load_state_file(vpath, ("taming", "llamagen"))
    check_kinds(tkind, tpath, vkind, vpath)
    vcfg = vq_config or infer_vq_config(vkind, {k: v.shape for k, v in vstate.items()}, vpath)
    vq_model = fill(build(vkind, vcfg), vstate, vpath, dtype=vdtype, device=device)
    del vstate
    tcfg = transformer_config or infer_transformer_config(tkind, {k: v.shape for k, v in tstate.items()}, tpath,
                                                          codebook_size=vq_model.codebook_size)
    model = fill(build(tkind, tcfg), tstate, tpath, dtype=dtype, device=device)
    del tstate
    _check_pair(model, vq_model, tpath)
    name = os.path.splitext(os.path.basename(tpath))[0]
    info = make_info(name, tpath, tkind, model.config, vq_model)
    return MaskGITPipeline(transformer=model, vq=vq_model, info=info)


def is_maskgit_folder(folder: str | os.PathLike) -> bool:
    return os.path.isfile(os.path.join(os.fspath(folder), INDEX))


def read_index(folder: str) -> dict:
    index = read_json(os.path.join(folder, INDEX))
    if index.get("format") != FORMAT or index.get("family") not in (*FAMILIES, "demo"):
        raise MGTLoadError(
            f"{os.path.join(folder, INDEX)}: expected format {FORMAT!r} and family one of {FAMILIES}, "
            f"got {index.get('format')!r} / {index.get('family')!r}"
        )
    return index


def load_maskgit_folder(folder: str | os.PathLike, *, dtype: torch.dtype | None = None,
                        device: torch.device | str | None = None):
    """A :class:`~mgt_core.maskgit_pipeline.MaskGITPipeline` from a converted folder (layout in the module doc)."""
    from ..maskgit_pipeline import MaskGITPipeline

    folder = os.fspath(folder)
    device, dtype, vdtype = _default_dtypes(device, dtype)
    index = read_index(folder)
    parts = {}
    for part, kinds, dt in (("vq", ("taming", "llamagen"), vdtype), ("transformer", FAMILIES, dtype)):
        cfg_path = os.path.join(folder, part, "config.json")
        cfg = read_json(cfg_path)
        kind = cfg.get("layout") if part == "vq" else cfg.get("family")
        if kind not in kinds:
            raise MGTLoadError(f"{cfg_path}: {'layout' if part == 'vq' else 'family'} must be one of {kinds}, got {kind!r}")
        config = _cls_config(kind, cfg, cfg_path)
        weights = os.path.join(folder, part, "model.safetensors")
        f = SafetensorsFile(weights)
        module = build(kind, config.to_dict())
        parts[part] = fill(module, dict(f.read()), weights, dtype=dt, device=device)
    model, vq_model = parts["transformer"], parts["vq"]
    _check_pair(model, vq_model, folder)
    name = os.path.basename(os.path.normpath(folder))
    info = make_info(name, folder, index["family"], model.config, vq_model, index.get("defaults"))
    return MaskGITPipeline(transformer=model, vq=vq_model, info=info)


def save_maskgit_folder(
    out: str | os.PathLike,
    family: str,
    transformer_config: dict,
    transformer_state: dict[str, torch.Tensor],
    vq_config: dict,
    vq_state: dict[str, torch.Tensor],
    *,
    dtype: torch.dtype | None = None,
    defaults: dict | None = None,
    sources: dict | None = None,
) -> str:
    """Write a converted folder. ``family`` goes to the index (``"demo"`` for a built-in model; the
    architecture is the transformer config's ``family``). ``dtype`` None keeps the stored dtypes
    (bit-exact); Halton's tied ``head.weight`` is stored once (safetensors cannot hold shared
    tensors) and re-tied on load."""
    from safetensors.torch import save_file

    out = os.fspath(out)
    for part, state, cfg in (("transformer", transformer_state, transformer_config), ("vq", vq_state, vq_config)):
        os.makedirs(os.path.join(out, part), exist_ok=True)
        tensors = {}
        for k, v in state.items():
            if part == "transformer" and k == TIED and "tok_emb.weight" in state and cfg.get("family") == "halton":
                continue  # tied to tok_emb.weight (Halton): stored once
            if dtype is not None and v.is_floating_point() and k not in OPTIONAL:
                v = v.to(dtype)
            tensors[k] = v.detach().to("cpu").contiguous()
        save_file(tensors, os.path.join(out, part, "model.safetensors"), metadata={"format": "pt"})
        with open(os.path.join(out, part, "config.json"), "w", encoding="utf-8") as f:
            json.dump(cfg, f, indent=2)
    index = {"format": FORMAT, "version": 1, "family": family, "defaults": defaults or {}, "sources": sources or {}}
    with open(os.path.join(out, INDEX), "w", encoding="utf-8") as f:
        json.dump(index, f, indent=2)
    return out


def config_dict(kind: str, cfg: dict, source: str) -> dict:
    """Validated, normalised config dict for a ``kind`` (what converted folders store)."""
    return _cls_config(kind, cfg, source).to_dict()


__all__ = [
    "INDEX", "MaskGITInfo", "build", "config_dict", "default_settings", "detect_kind", "fill",
    "infer_transformer_config", "infer_vq_config", "is_maskgit_folder", "load_maskgit_files", "load_maskgit_folder",
    "load_state_file", "save_maskgit_folder",
]

"""Convert released MaskGIT checkpoints into a safetensors model folder.

    python -m mgt_core.convert SRC SRC OUT [--dtype keep|fp32|bf16|fp16] [--transformer-config JSON] [--vq-config JSON]

SRC: the transformer file (``MaskGIT_ImageNet_256.pth``, ``ImageNet_384_base.pth``...) and its VQGAN
(``last.ckpt`` for v1, ``vq_ds16_c2i.pt`` or its safetensors for Halton), in any order; which is
which is read from the keys. Every file is read with weights-only unpickling and checked against
the network (keys, shapes) before anything is written; a file that needs more than weights-only
unpickling is refused (exit 2) and nothing in it runs. OUT gets the folder layout documented in
:mod:`mgt_core.loading.maskgit`, which ``mgt_core.load_pipeline(OUT)`` loads. ``--dtype keep``
(default) stores the tensors as they are, bit for bit.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

from .errors import MGTError, MGTInputError, MGTLoadError
from .loading.checkpoints import UnsafeCheckpointError, read_state_dict
from .loading.maskgit import (
    FAMILIES,
    TIED,
    build,
    check_kinds,
    config_dict,
    default_settings,
    detect_kind,
    infer_transformer_config,
    infer_vq_config,
    save_maskgit_folder,
)
from .loading.modules import check_keys

DTYPES = {"keep": None, "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _json_arg(value: str | None, what: str) -> dict | None:
    import json

    if value is None:
        return None
    try:
        if os.path.isfile(value):
            with open(value, encoding="utf-8") as f:
                return json.load(f)
        return json.loads(value)
    except (OSError, json.JSONDecodeError) as e:
        raise MGTInputError(f"--{what}-config: not a JSON file or JSON text ({e})") from None


def convert(sources: list[str], out: str, *, dtype: torch.dtype | None = None, transformer_config: dict | None = None,
            vq_config: dict | None = None, overwrite: bool = False) -> str:
    """Read, check and write; returns OUT. Raises :class:`MGTError` (nothing written) on any problem."""
    if len(sources) != 2:
        raise MGTInputError(f"expected 2 source files (a transformer and its VQGAN), got {len(sources)}: {sources}")
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)) and not overwrite:
        raise MGTInputError(f"{out}: exists and is not empty (pass --overwrite to replace its files)")
    loaded = {}
    for src in sources:  # every file is read (weights-only) before anything is written
        state = read_state_dict(src)
        kind = detect_kind(state.keys(), src)
        role = "transformer" if kind in FAMILIES else "vq"
        if role in loaded:
            raise MGTInputError(f"{src}: a second {role} ({kind}); pass one transformer and one VQGAN")
        loaded[role] = (src, kind, state)
    if set(loaded) != {"transformer", "vq"}:
        raise MGTInputError(f"need one transformer and one VQGAN, got only {' and '.join(loaded)}")
    (tsrc, tkind, tstate), (vsrc, vkind, vstate) = loaded["transformer"], loaded["vq"]
    check_kinds(tkind, tsrc, vkind, vsrc)
    vcfg = config_dict(vkind, vq_config or infer_vq_config(vkind, {k: v.shape for k, v in vstate.items()}, vsrc), vsrc)
    tcfg = transformer_config or infer_transformer_config(
        tkind, {k: v.shape for k, v in tstate.items()}, tsrc, codebook_size=vcfg["n_embed"]
    )
    tcfg = config_dict(tkind, tcfg, tsrc)
    if vcfg["n_embed"] != tcfg["codebook_size"]:
        raise MGTLoadError(
            f"{vsrc}: a VQGAN with {vcfg['n_embed']} codes does not fit {tsrc}, which predicts {tcfg['codebook_size']}"
        )
    for src, kind, cfg, state in ((tsrc, tkind, tcfg, tstate), (vsrc, vkind, vcfg, vstate)):
        expected = {k: tuple(v.shape) for k, v in build(kind, cfg).state_dict().items()}
        found = {k: tuple(v.shape) for k, v in state.items()}
        if kind == "halton" and TIED not in found and "tok_emb.weight" in found:
            found[TIED] = found["tok_emb.weight"]
        if kind == "llamagen" and "quantize.codebook_used" not in found:
            expected.pop("quantize.codebook_used", None)
        check_keys(expected, found, src, f"is this a {kind} checkpoint of this size?")
        if kind == "halton" and TIED in state and not torch.equal(state[TIED], state["tok_emb.weight"]):
            raise MGTLoadError(f"{src}: head.weight differs from tok_emb.weight, but Halton-MaskGIT ties them")
    defaults = default_settings(tkind, tcfg["input_size"])
    sources_info = {"transformer": os.path.basename(tsrc), "vq": os.path.basename(vsrc)}
    return save_maskgit_folder(out, tkind, tcfg, tstate, vcfg, vstate, dtype=dtype, defaults=defaults, sources=sources_info)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mgt_core.convert", description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="+", metavar="SRC... OUT", help="the transformer and VQGAN files, then the output folder")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="keep", help="tensor dtype in OUT (keep: bit-exact)")
    p.add_argument("--transformer-config", help="JSON text or file, when the shapes cannot tell (e.g. a custom heads count)")
    p.add_argument("--vq-config", help="JSON text or file for the VQGAN")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty OUT")
    args = p.parse_args(argv)
    if len(args.paths) < 2:
        p.error("give the source files and then the output folder")
    *sources, out = args.paths
    try:
        convert(sources, out, dtype=DTYPES[args.dtype], transformer_config=_json_arg(args.transformer_config, "transformer"),
                vq_config=_json_arg(args.vq_config, "vq"), overwrite=args.overwrite)
    except UnsafeCheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except MGTError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {out}: load it with mgt_core.load_pipeline({out!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

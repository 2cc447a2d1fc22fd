"""Quantize a model folder's transformer once and save it as a variant the loader offers.

    python -m mgt_core.accel.quantize_tool MODEL_FOLDER --mode w4a8 --prompts my_prompts.txt
    python -m mgt_core.accel.quantize_tool MODEL_FOLDER --mode w4a8 --prompts p.txt --qat-pairs pairs/ --qat-steps 200

writes ``MODEL_FOLDER/transformer_<mode>/`` (or ``--out``): ``config.json``, ``quantization.json``
and the weights; ``load_pipeline(folder, quantized="<mode>")`` loads it. ``w8``/``w4`` need no data;
``w4a8`` calibrates on the sampling trajectories of ``--prompts`` (one prompt per line; use prompts
like the ones you will generate, not your evaluation set). ``--qat-pairs`` (a folder of
``name.png`` + ``name.txt`` caption pairs) adds a short QAT fine-tune and the secondary calibration (SCQ).
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

from ..errors import MGTError, MGTInputError
from . import quant as Q


def read_prompts(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        prompts = [line.strip() for line in f if line.strip()]
    if not prompts:
        raise MGTInputError(f"{path}: no prompts (one per line)")
    return prompts


def load_pairs(folder: str, size: tuple[int, int]) -> list[tuple[torch.Tensor, str]]:
    """(image [H, W, 3] in [0, 1], caption) for every ``name.png|jpg`` with a ``name.txt``; images are
    resized (shorter side) and centre-cropped to the model's size."""
    from PIL import Image

    w, h = size
    pairs = []
    for name in sorted(os.listdir(folder)):
        stem, ext = os.path.splitext(name)
        caption = os.path.join(folder, stem + ".txt")
        if ext.lower() not in (".png", ".jpg", ".jpeg", ".webp") or not os.path.isfile(caption):
            continue
        img = Image.open(os.path.join(folder, name)).convert("RGB")
        scale = max(w / img.width, h / img.height)
        img = img.resize((max(w, round(img.width * scale)), max(h, round(img.height * scale))), Image.Resampling.LANCZOS)
        left, top = (img.width - w) // 2, (img.height - h) // 2
        img = img.crop((left, top, left + w, top + h))
        with open(caption, encoding="utf-8") as f:
            pairs.append((torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(h, w, 3).float() / 255, f.read().strip()))
    if not pairs:
        raise MGTInputError(f"{folder}: no image + caption pairs (name.png with name.txt)")
    return pairs


def qat_batches(pipe, pairs, steps: int, batch: int, seed: int):
    """``steps`` batches drawn (with a seeded shuffle) from the pairs, VQ-encoded once."""
    info = pipe.info
    images = torch.stack([p[0] for p in pairs])
    tokens = torch.cat([pipe.encode_image(images[i : i + 8]) for i in range(0, len(pairs), 8)])
    captions = [p[1] for p in pairs]
    g = torch.Generator().manual_seed(seed)
    micro = torch.tensor([[info.width, info.height, 0, 0, 6.0]] * batch)
    uncond = pipe.encode_prompt([info.negative_prompt] * batch)
    for _ in range(steps):
        idx = torch.randint(len(pairs), (batch,), generator=g).tolist()
        yield Q.QATBatch(tokens[idx], pipe.encode_prompt([captions[i] for i in idx]), uncond, micro)


def main(argv: list[str] | None = None) -> str:
    import mgt_core

    ap = argparse.ArgumentParser(prog="python -m mgt_core.accel.quantize_tool", description=__doc__.splitlines()[0])
    ap.add_argument("model", help="model folder (transformer/, vqvae/, text_encoder/, tokenizer/)")
    ap.add_argument("--mode", choices=list(Q.MODES), default="w4a8")
    ap.add_argument("--group-size", default="128", help="an integer dividing every in_features, or 'auto'")
    ap.add_argument("--prompts", help="calibration prompts, one per line (w4a8)")
    ap.add_argument("--int8-fraction", type=float, default=1.0, help="fraction of layers with int8 activations (w4a8)")
    ap.add_argument("--qat-pairs", help="folder of name.png + name.txt pairs for a QAT fine-tune (w4a8)")
    ap.add_argument("--qat-steps", type=int, default=100)
    ap.add_argument("--qat-lr", type=float, default=5e-6)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="output folder (default MODEL/transformer_<mode>)")
    args = ap.parse_args(argv)
    group = args.group_size if args.group_size == "auto" else int(args.group_size)
    needs_data = args.mode == "w4a8"
    if needs_data and not args.prompts:
        raise MGTInputError("--mode w4a8 needs --prompts (calibration prompts, one per line)")
    if args.qat_pairs and not needs_data:
        raise MGTInputError("--qat-pairs applies to --mode w4a8 only")
    prompts = read_prompts(args.prompts) if needs_data else []  # bad input fails before the model loads
    if args.qat_pairs and not os.path.isdir(args.qat_pairs):
        raise MGTInputError(f"--qat-pairs {args.qat_pairs}: not a folder")
    # QAT trains in fp32; calibration-only runs use the device's usual dtype
    dtype = torch.float32 if args.qat_pairs else None
    pipe = mgt_core.load_pipeline(args.model, device=args.device, dtype=dtype, load_text=needs_data)
    Q.quantize_model(pipe.transformer, args.mode, group)
    if needs_data:
        rule = Q.ActivationRule(int8_fraction=args.int8_fraction)
        Q.calibrate(pipe, prompts, rule=rule)
        if args.qat_pairs:
            pairs = load_pairs(args.qat_pairs, (pipe.info.width, pipe.info.height))
            Q.qat_finetune(pipe.transformer, qat_batches(pipe, pairs, args.qat_steps, 1, args.seed), lr=args.qat_lr,
                           log=lambda k, loss: print(f"qat {k}: {loss:.4f}", flush=True) if k % 10 == 0 else None)
            Q.secondary_calibration(pipe, prompts, rule=rule)
        Q.freeze(pipe.transformer)
    out = args.out or os.path.join(args.model, f"transformer_{args.mode}")
    Q.save_quantized(pipe.transformer, out)
    size = Q.weight_bytes(pipe.transformer)["total"] / 1e9
    print(f"wrote {out} ({size:.3f} GB of weights in memory)")
    return out


if __name__ == "__main__":
    try:
        main()
    except MGTError as e:
        sys.exit(f"error: {e}")

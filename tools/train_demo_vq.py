"""Distil the demo's patch codebook into a diffusers-layout ``VQModel`` (stages 2 and 3 of 3).

Stage 1 (``demo_codebook.py``) fixed the tokens: the nearest of 512 k-means patch centroids. A
``VQModel`` (the layout ``mgt_core.models.vq.vqmodel`` loads for real Meissonic, cut down) is then
taught to reproduce that tokenizer, in two independent parts that can train side by side:

* ``--part decoder``: ``quantize.embedding`` is fixed to a PCA projection of the centroid
  patches (similar codes get similar vectors), and ``post_quant_conv`` + ``decoder`` regress the
  rendered image from the codebook codes of that image (L1 + L2, object pixels and rims weigh
  more, because shape is what the judge reads hardest);
* ``--part encoder``: ``encoder`` + ``quant_conv`` classify every 16x16 patch to its code, with
  logits = -|z - e_k|^2 (the same nearest-vector rule ``VQModel.encode`` applies).

Why not end to end: on two CPU cores a jointly trained codebook converged slowly and lost
colours; the fixed k-means tokens already read back 99.5% correct. Every step renders fresh
``train`` scenes (no dataset on disk).

    python tools/train_demo_vq.py --part decoder --out runs/vq     # or --resume
    python tools/train_demo_vq.py --part encoder --out runs/vq
    python tools/train_demo_vq.py --out runs/vq --export           # runs/vq/vqvae, judged
Outputs: runs/vq/{decoder,encoder}.pt (resumable), {decoder,encoder}_log.csv, eval.csv, vqvae/.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, Path(__file__).resolve().parent):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from demo_codebook import tokenize  # noqa: E402

from mgt_core.demo import judge as J  # noqa: E402
from mgt_core.demo import scenes as S  # noqa: E402
from mgt_core.models.vq.vqmodel import VQModel  # noqa: E402

CODEBOOK = 512
VQ_CONFIG = {
    "_class_name": "VQModel",
    "_diffusers_version": "0.30.2",
    "act_fn": "silu",
    "block_out_channels": [8, 8, 16, 32, 128],
    "down_block_types": ["DownEncoderBlock2D"] * 5,
    "in_channels": 3,
    "latent_channels": 32,
    "layers_per_block": 1,
    "lookup_from_codebook": True,
    "mid_block_add_attention": False,
    "norm_num_groups": 1,
    "norm_type": "group",
    "num_vq_embeddings": CODEBOOK,
    "out_channels": 3,
    "sample_size": 32,
    "scaling_factor": 0.18215,
    "up_block_types": ["UpDecoderBlock2D"] * 5,
    "vq_embed_dim": None,
    "force_upcast": True,
}
"""Same keys, in the same order, as Meissonic's ``vqvae/config.json`` (models.md section 4);
``sample_size`` and ``scaling_factor`` are unused there too."""

PARTS = {
    "decoder": ("post_quant_conv.", "decoder."),
    "encoder": ("encoder.", "quant_conv."),
}


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, H, W] in [0, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return (x.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()


def loss_weights(x: torch.Tensor, obj_w: float, edge_w: float, border_w: float) -> torch.Tensor:
    """Per-pixel weight [N, 1, H, W]: 1, + obj_w on object pixels, + edge_w on a ~4 px rim, +
    border_w on the 4 px frame (the judge reads the background there, and zero-padded
    convolutions get it wrong first). The background colour is the top-left pixel (objects keep
    >= 4 px from the border)."""
    obj = ((x - x[:, :, :1, :1]).abs().sum(1, keepdim=True) > 0.06).float()
    rim = F.max_pool2d(obj, 5, 1, 2) + F.max_pool2d(-obj, 5, 1, 2)  # dilate - erode
    frame = torch.ones_like(obj)
    frame[:, :, 4:-4, 4:-4] = 0
    return 1 + obj_w * obj + edge_w * rim + border_w * frame


def code_embeddings(book: torch.Tensor, dim: int) -> torch.Tensor:
    """[K, dim]: centroid patches projected on their top principal axes, whitened to unit
    variance per axis, so that the decoder's input says what the patch looks like."""
    centred = book - book.mean(0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    e = centred @ v[:dim].T
    return e / e.std(0)


def new_model(book: torch.Tensor) -> VQModel:
    model = VQModel.from_config(VQ_CONFIG)
    with torch.no_grad():
        model.quantize.embedding.weight.copy_(code_embeddings(book, model.config.embed_dim))
    return model


def batch(rng: np.random.Generator, n: int, book: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    _, images = S.sample_batch(rng, "train", n)
    return to_tensor(images), tokenize(images, book)


def decoder_loss(model: VQModel, x: torch.Tensor, codes: torch.Tensor, a) -> tuple[torch.Tensor, dict]:
    y = model.decoder(model.post_quant_conv(model.quantize.embedding(codes).permute(0, 3, 1, 2)))
    w = loss_weights(x, a.obj_weight, a.edge_weight, a.border_weight)
    err = y - x
    loss = (w * (err.abs() + a.l2 * err * err)).mean() / w.mean()
    return loss, {"mae": err.abs().mean().item()}


def encoder_loss(model: VQModel, x: torch.Tensor, codes: torch.Tensor, a) -> tuple[torch.Tensor, dict]:
    z = model.quant_conv(model.encoder(x)).permute(0, 2, 3, 1).reshape(-1, model.config.embed_dim)
    e = model.quantize.embedding.weight
    logits = -(z * z).sum(1, keepdim=True) + 2 * z @ e.T - (e * e).sum(1)[None]
    target = codes.reshape(-1)
    loss = F.cross_entropy(logits, target)
    return loss, {"code_acc": (logits.argmax(1) == target).float().mean().item()}


def eval_set(split: str, n: int) -> tuple[list[str], np.ndarray]:
    """Fixed eval prompts of a split and their ground-truth renders."""
    items = S.eval_prompts(split, n, seed=0)
    scenes = [S.realize(S.parse_prompt(p), np.random.default_rng(seed)) for p, seed in items]
    return [p for p, _ in items], S.render_batch(scenes)


@torch.no_grad()
def judge_split(model: VQModel, book: torch.Tensor, split: str, n: int, via: str) -> dict[str, float]:
    """Judge reconstructions; ``via`` = "codebook" decodes the codebook's codes (decoder alone),
    "vq" runs encode + decode exactly as the pipeline does."""
    prompts, images = eval_set(split, n)
    recon = []
    for i in range(0, n, 16):
        x = to_tensor(images[i : i + 16])
        ids = tokenize(images[i : i + 16], book) if via == "codebook" else model.encode(x)
        recon.append(to_uint8(model.decode(ids)))
    verdicts = [J.judge(im, p) for im, p in zip(np.concatenate(recon), prompts, strict=True)]
    return J.accuracy(verdicts)


def save_atomic(obj, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def append_csv(path: Path, row: dict) -> None:
    """Append a row under the file's header; a row with columns the header lacks (a sweep of the other
    split has ``relation`` instead of ``position``) rewrites the file under the union, blanks elsewhere."""
    fields: list[str] = []
    if path.exists():
        with path.open(newline="") as f:
            fields = next(csv.reader(f), [])
    if fields and not set(row) <= set(fields):
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        fields += [k for k in row if k not in fields]
        tmp = path.with_suffix(".tmp")  # a crash mid-rewrite must not cost the log
        with tmp.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields, restval="")
            w.writeheader()
            w.writerows([*rows, row])
        os.replace(tmp, path)
        return
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields or list(row), restval="")
        if not fields:
            w.writeheader()
        w.writerow(row)


def lr_at(step: int, a) -> float:
    """Linear warm-up, then cosine decay to 5% at ``--steps``."""
    if step < a.warmup:
        return a.lr * (step + 1) / a.warmup
    p = min(1.0, (step - a.warmup) / max(1, a.steps - a.warmup))
    return a.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p)))


def part_state(model: VQModel, part: str) -> dict:
    return {k: v for k, v in model.state_dict().items() if k.startswith(PARTS[part])}


def train(a) -> None:
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / f"{a.part}.pt"
    book = torch.load(a.codebook)
    torch.manual_seed(a.seed)
    model = new_model(book)
    params = [p for n, p in model.named_parameters() if n.startswith(PARTS[a.part])]
    opt = torch.optim.Adam(params, lr=a.lr)
    step, elapsed = 0, 0.0
    rng_key = [a.seed, 0 if a.part == "decoder" else 1]
    if ckpt.exists():
        if not a.resume:
            raise SystemExit(f"{ckpt} exists: pass --resume to continue or choose another --out")
        st = torch.load(ckpt, weights_only=False)
        model.load_state_dict(st["model"], strict=False)
        opt.load_state_dict(st["opt"])
        step, elapsed = st["step"], st["elapsed"]
        print(f"resumed {a.part} at step {step}", flush=True)
    loss_fn = decoder_loss if a.part == "decoder" else encoder_loss
    print(f"{a.part}: {sum(p.numel() for p in params):,} params, steps {step}..{a.steps}", flush=True)
    t0, t_ckpt, acc = time.time() - elapsed, time.time(), {}
    model.train()
    while step < a.steps:
        rng = np.random.default_rng([*rng_key, step])  # data of step s is fixed: resumes are exact
        x, codes = batch(rng, a.batch, book)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, a)
        loss, stats = loss_fn(model, x, codes, a)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        for k, v in {"loss": loss.item(), **stats}.items():
            acc[k] = acc.get(k, 0.0) + v
        if step % a.log_every == 0:
            row = {"step": step, "minutes": round((time.time() - t0) / 60, 2), "lr": f"{lr_at(step, a):.2e}",
                   **{k: round(v / a.log_every, 5) for k, v in acc.items()}}  # fmt: skip
            append_csv(out / f"{a.part}_log.csv", row)
            print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
            acc = {}
        last = step == a.steps
        if last or time.time() - t_ckpt > a.ckpt_minutes * 60:
            state = {"model": part_state(model, a.part), "opt": opt.state_dict(), "step": step,
                     "elapsed": time.time() - t0, "args": vars(a)}  # fmt: skip
            save_atomic(state, ckpt)
            t_ckpt = time.time()
        if a.part == "decoder" and (step % a.eval_every == 0 or last):
            model.eval()
            res = judge_split(model, book, "simple", a.eval_n, via="codebook")
            model.train()
            row = {"step": step, "minutes": round((time.time() - t0) / 60, 2), "via": "codebook", "split": "simple"}
            row.update({k: round(v, 3) for k, v in res.items()})
            append_csv(out / "eval.csv", row)
            print("EVAL", row, flush=True)
    print(f"done: {a.part} {step} steps in {(time.time() - t0) / 60:.1f} min", flush=True)


def assemble(a, book: torch.Tensor) -> VQModel:
    """The VQ from the two trained parts (with the fixed embedding)."""
    model = new_model(book)
    for part in PARTS:
        model.load_state_dict(torch.load(Path(a.out) / f"{part}.pt", weights_only=False)["model"], strict=False)
    return model.eval()


def export(a) -> None:
    """``vqvae/config.json`` + ``diffusion_pytorch_model.safetensors`` (fp32), then judge it."""
    from safetensors.torch import save_file

    book = torch.load(a.codebook)
    model = assemble(a, book)
    folder = Path(a.out) / "vqvae"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(VQ_CONFIG, indent=2) + "\n")
    state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "diffusion_pytorch_model.safetensors"), metadata={"format": "pt"})
    model = load_exported(folder)
    for split in ("simple", "compositional"):
        res = judge_split(model, book, split, a.final_n, via="vq")
        row = {"step": "export", "minutes": "", "via": "vq", "split": split, **{k: round(v, 3) for k, v in res.items()}}
        append_csv(Path(a.out) / "eval.csv", row)
        print("EVAL", row, flush=True)


def load_exported(folder: Path) -> VQModel:
    from safetensors.torch import load_file

    model = VQModel.from_config(json.loads((folder / "config.json").read_text()))
    model.load_state_dict(load_file(str(folder / "diffusion_pytorch_model.safetensors")), strict=True)
    return model.eval()


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/vq")
    ap.add_argument("--codebook", default="runs/codebook.pt")
    ap.add_argument("--part", choices=sorted(PARTS), default=None)
    ap.add_argument("--export", action="store_true", help="assemble both parts into out/vqvae and judge it")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--l2", type=float, default=1.0)
    ap.add_argument("--obj-weight", type=float, default=1.0)
    ap.add_argument("--edge-weight", type=float, default=3.0)
    ap.add_argument("--border-weight", type=float, default=2.0)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--eval-n", type=int, default=100)
    ap.add_argument("--final-n", type=int, default=300)
    ap.add_argument("--ckpt-minutes", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--resume", action="store_true")
    a = ap.parse_args(argv)
    if not a.export and a.part is None:
        ap.error("pass --part decoder|encoder to train, or --export")
    return a


def main(argv=None) -> None:
    a = parse_args(argv)
    torch.set_num_threads(a.threads)
    export(a) if a.export else train(a)


if __name__ == "__main__":
    main()

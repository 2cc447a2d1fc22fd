"""Train the built-in MaskGIT demo (``mgt_core/demo/maskgit-demo/``): MaskGIT v1 layout, 40 classes.

Classes are (colour, shape) pairs of the synthetic scenes (``mgt_core/demo/class_scenes.py``): one
object in the centre, small or large, on a gray background. Three stages, seeded and resumable:

1. ``--part codebook``: the token vocabulary, as for the text-to-image demo (``demo_codebook.py``):
   flat palette colours + k-means centroids of the 16x16 edge patches of class scenes (256 codes).
2. ``--part transformer``: a reduced-width MaskGIT v1 ``MaskTransformer`` (the released key layout:
   ``tok_emb`` = codes + mask + classes + "no class", tied logits, ``bias``) trained on the
   codebook tokens of fresh renders: masked-token cross-entropy, mask ratio arccos(u)/(pi/2)
   (the v1 trainer's default schedule), class dropped 10% of the time (for CFG).
3. ``--part decoder``: the taming VQGAN decoder distilled to draw each code's centroid patch
   (``quantize.embedding`` fixed to a PCA of the centroids, like ``train_demo_vq.py``), trained on
   random token crops (the decoder is convolutional; crops cut the CPU cost by 4-16x).
4. ``--export``: writes the demo folder and judges vanilla samples.

    OMP_NUM_THREADS=1 python tools/train_demo_maskgit.py --part codebook
    OMP_NUM_THREADS=1 python tools/train_demo_maskgit.py --part transformer --steps 1300   # resumable (the shipped run: README)
    OMP_NUM_THREADS=1 python tools/train_demo_maskgit.py --part decoder --steps 1500 --batch 4 --crop 8 \
        --lr 1e-3 --warmup 50 --obj-weight 4
    OMP_NUM_THREADS=1 python tools/train_demo_maskgit.py --part encoder --steps 1000 --batch 4 --crop 8 \
        --lr 1e-3 --warmup 50
    python tools/train_demo_maskgit.py --eval          # judge samples (codebook decode)
    python tools/train_demo_maskgit.py --export        # -> mgt_core/demo/maskgit-demo
    python tools/train_demo_maskgit.py --sweep --eval-per-class 1   # sampler defaults, held-out seeds
Outputs under ``--out`` (default runs/maskgit): codebook.pt, transformer.pt, decoder.pt, *_log.csv.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, Path(__file__).resolve().parent):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from demo_codebook import PATCH, decode, kmeans, patches, tokenize  # noqa: E402
from train_demo_vq import append_csv, save_atomic  # noqa: E402  (shared checkpoint/log helpers)

from mgt_core.demo import class_scenes as C  # noqa: E402
from mgt_core.demo import judge as J  # noqa: E402
from mgt_core.demo import scenes as S  # noqa: E402

CODEBOOK = 256
GRID = 16
ARCH = {"hidden_dim": 128, "depth": 4, "heads": 4, "mlp_dim": 384, "codebook_size": CODEBOOK, "nclass": len(C.CLASSES), "f_factor": GRID}
"""The demo transformer: MaskGIT v1's MaskTransformer at reduced width (models.md 7/11.1)."""


# ----------------------------------------------------------------------------------------------
# The model used for training. It has the released v1 key layout; when the pack's own
# ``mgt_core.models.maskgit`` class exists it is used instead (same keys, same forward).


class _PreNorm(nn.Module):
    def __init__(self, dim, fn):
        super().__init__()
        self.norm, self.fn = nn.LayerNorm(dim), fn

    def forward(self, x):
        return self.fn(self.norm(x))


class _Attn(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.mha = nn.MultiheadAttention(dim, heads, batch_first=True, bias=True)

    def forward(self, x):
        return self.mha(x, x, x, need_weights=False)[0]


class _FF(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(0.0), nn.Linear(hidden, dim), nn.Dropout(0.0))

    def forward(self, x):
        return self.net(x)


class _Blocks(nn.Module):
    def __init__(self, dim, depth, heads, mlp):
        super().__init__()
        self.layers = nn.ModuleList(nn.ModuleList([_PreNorm(dim, _Attn(dim, heads)), _PreNorm(dim, _FF(dim, mlp))]) for _ in range(depth))

    def forward(self, x):
        for attn, ff in self.layers:
            x = x + attn(x)
            x = x + ff(x)
        return x


class TrainTransformer(nn.Module):
    """MaskGIT v1 MaskTransformer (tokens then the class token; logits tied to ``tok_emb``)."""

    def __init__(self, hidden_dim, depth, heads, mlp_dim, codebook_size, nclass, f_factor):
        super().__init__()
        d, n = hidden_dim, f_factor * f_factor
        self.codebook_size, self.nclass, self.n = codebook_size, nclass, n
        self.tok_emb = nn.Embedding(codebook_size + 1 + nclass + 1, d)
        nn.init.trunc_normal_(self.tok_emb.weight, 0.0, 0.02)  # N(0, 1) tied logits start at loss ~20
        self.pos_emb = nn.Parameter(nn.init.trunc_normal_(torch.zeros(1, n + 1, d), 0.0, 0.02))
        self.first_layer = nn.Sequential(
            nn.LayerNorm(d, eps=1e-12), nn.Dropout(0.0), nn.Linear(d, d), nn.GELU(),
            nn.LayerNorm(d, eps=1e-12), nn.Dropout(0.0), nn.Linear(d, d),
        )
        self.transformer = _Blocks(d, depth, heads, mlp_dim)
        self.last_layer = nn.Sequential(nn.LayerNorm(d, eps=1e-12), nn.Dropout(0.0), nn.Linear(d, d), nn.GELU(), nn.LayerNorm(d, eps=1e-12))
        self.bias = nn.Parameter(torch.zeros(n + 1, codebook_size + 1 + nclass + 1))

    def forward(self, tokens, y, drop):
        b = tokens.shape[0]
        cls = torch.where(drop, self.codebook_size + 1 + self.nclass, y + self.codebook_size + 1)
        x = self.tok_emb(torch.cat([tokens.reshape(b, -1), cls[:, None]], 1)) + self.pos_emb
        x = self.last_layer(self.transformer(self.first_layer(x)))
        logits = x @ self.tok_emb.weight.T + self.bias
        return logits[:, : self.n, : self.codebook_size + 1]


# ----------------------------------------------------------------------------------------------
# Helpers


def lr_at(step: int, lr: float, warmup: int, steps: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, steps - warmup))
    return lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p)))


# ----------------------------------------------------------------------------------------------
# Stage 1: codebook


def build_codebook(n_images: int, iters: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    imgs = C.render_classes(rng.integers(0, len(C.CLASSES), n_images), rng)
    p = patches(torch.from_numpy(imgs).float().div_(255))
    flat = (p.max(1).values - p.min(1).values) < 1e-6
    palette = sorted({tuple(c) for c in [*S.COLOURS.values(), *S.BACKGROUNDS.values()]})
    flat_book = torch.tensor(palette, dtype=torch.float32).div(255).repeat(1, PATCH * PATCH)
    edges = torch.unique(p[~flat], dim=0)
    label = f"{edges.shape[0]} unique edge patches, "
    return torch.cat([flat_book, kmeans(edges, CODEBOOK - len(palette), iters, gen, label)])


def part_codebook(a) -> None:
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    book = build_codebook(a.images, a.iters, a.seed)
    save_atomic(book, out / "codebook.pt")
    pairs = C.eval_classes(2)
    imgs = np.stack([C.render_classes([y], np.random.default_rng(s))[0] for y, s in pairs])
    rec = decode(tokenize(imgs, book), book)
    v = [J.judge(im, C.class_prompt(y)) for im, (y, _) in zip(rec, pairs, strict=True)]
    print("codebook read-back:", {k: round(x, 3) for k, x in J.accuracy(v).items()})


# ----------------------------------------------------------------------------------------------
# Stage 2: transformer


def new_transformer() -> nn.Module:
    return TrainTransformer(**ARCH)


def mask_batch(codes: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask each image's tokens with ratio arccos(u)/(pi/2), u ~ U(0,1) (>= 1 token masked)."""
    b, n = codes.shape
    u = torch.rand(b, 1, generator=gen)
    ratio = torch.arccos(u) / (math.pi / 2)
    mask = torch.rand(b, n, generator=gen) < ratio
    mask[torch.arange(b), torch.randint(0, n, (b,), generator=gen)] = True
    return torch.where(mask, CODEBOOK, codes), mask


def part_transformer(a) -> None:
    out = Path(a.out)
    book = torch.load(out / "codebook.pt")
    ckpt = out / "transformer.pt"
    torch.manual_seed(a.seed)
    model = new_transformer()
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.96), weight_decay=0.01)
    step, elapsed = 0, 0.0
    if ckpt.exists():
        st = torch.load(ckpt)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        step, elapsed = st["step"], st["elapsed"]
        print(f"resumed at step {step}", flush=True)
    gen = torch.Generator().manual_seed(a.seed * 1000 + step)
    rng = np.random.default_rng([a.seed, step])
    t0 = time.time()
    while step < a.steps:
        y = torch.from_numpy(rng.integers(0, len(C.CLASSES), a.batch))
        codes = tokenize(C.render_classes(y.tolist(), rng), book).reshape(a.batch, -1)
        x, mask = mask_batch(codes, gen)
        drop = torch.rand(a.batch, generator=gen) < a.drop
        for g in opt.param_groups:
            g["lr"] = lr_at(step, a.lr, a.warmup, a.steps)
        logits = model(x, y, drop)
        loss = F.cross_entropy(logits[mask], codes[mask])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % a.log_every == 0 or step == a.steps:
            acc = (logits[mask].argmax(-1) == codes[mask]).float().mean().item()
            now = elapsed + time.time() - t0
            print(f"step {step} loss {loss.item():.4f} acc {acc:.3f} {now:.0f}s", flush=True)
            append_csv(out / "transformer_log.csv", {"step": step, "loss": round(loss.item(), 5), "acc": round(acc, 4), "seconds": round(now)})
        if step % a.save_every == 0 or step == a.steps:
            save_atomic({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "elapsed": elapsed + time.time() - t0, "arch": ARCH}, ckpt)


# ----------------------------------------------------------------------------------------------
# Stage 3: the taming VQGAN, distilled to the codebook (decoder: codes -> centroid patches;
# encoder: patches -> codes), on random token crops of fresh class scenes.

VQ_CONFIG = {
    "layout": "taming", "ch": 32, "ch_mult": [1, 1, 2, 2, 4], "num_res_blocks": 1, "z_channels": 64, "embed_dim": 32,
    "n_embed": CODEBOOK, "attn_resolutions": [], "resolution": 256, "in_channels": 3, "out_ch": 3, "l2_norm": False,
    "codebook_used": 0, "norm_groups": 0,
}
"""taming's VQGAN layout at reduced width: factor 16 (5 levels), attention only in the middle block (taming always
has it there). ``norm_groups`` 0: each GroupNorm keeps only its affine part (same keys and shapes as taming's 32
groups). Any GroupNorm normalises over the whole image, which these flat-colour scenes punish: with 32 groups (one
channel each at width 32) a first run drew every object orange; with 1 group, 1600 steps on full images still read
red back as orange and black as green (35% of ground-truth scenes judged correct), because every pixel's colour
moved with the rest of the image. Without statistics the same decoder reads back 100% after 700 steps of crops."""
DECODER_TRAIN_CONFIG = {**VQ_CONFIG, "num_res_blocks": 0}
"""The decoder trains with one ResNet block per level (half the CPU cost). taming's encoder needs >= 1 block
per level, so the exported VQGAN has num_res_blocks 1: each decoder level's second block starts as the identity
(conv2 zero: x + 0), which leaves the trained decoder's output unchanged."""
VQ_PARTS = {"decoder": ("post_quant_conv.", "decoder."), "encoder": ("encoder.", "quant_conv.")}


def code_embeddings(book: torch.Tensor, dim: int) -> torch.Tensor:
    """[K, dim]: the centroid patches on their top principal axes, whitened (similar codes, similar vectors)."""
    centred = book - book.mean(0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    e = centred @ v[:dim].T
    return e / e.std(0)


def new_vq(book: torch.Tensor, config: dict = VQ_CONFIG):
    from mgt_core.models.vq.vqgan import VQGAN

    vq = VQGAN.from_config(config)
    with torch.no_grad():
        vq.quantize.embedding.weight.copy_(code_embeddings(book, VQ_CONFIG["embed_dim"]))
    return vq


def crops(rng: np.random.Generator, n: int, book: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n random size x size token crops: images [n, 3, 16s, 16s] in [0, 1] and their codes [n, s, s]."""
    images = C.render_classes(rng.integers(0, len(C.CLASSES), n), rng)
    codes = tokenize(images, book)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255)
    r, c = rng.integers(0, GRID - size + 1, n), rng.integers(0, GRID - size + 1, n)
    xs = torch.stack([x[i, :, r[i] * PATCH : (r[i] + size) * PATCH, c[i] * PATCH : (c[i] + size) * PATCH] for i in range(n)])
    cs = torch.stack([codes[i, r[i] : r[i] + size, c[i] : c[i] + size] for i in range(n)])
    return xs, cs


def vq_loss(vq, part: str, x: torch.Tensor, codes: torch.Tensor, obj_weight: float = 2.0) -> tuple[torch.Tensor, float]:
    if part == "decoder":
        y = vq.decoder(vq.post_quant_conv(vq.quantize.lookup(codes)))
        err = y - (x * 2 - 1)
        obj = ((x - x[:, :, :1, :1]).abs().sum(1, keepdim=True) > 0.06).float()
        w = 1 + obj_weight * obj
        return (w * (err.abs() + err * err)).mean() / w.mean(), err.abs().mean().item() / 2
    z = vq.quant_conv(vq.encoder(x * 2 - 1)).permute(0, 2, 3, 1).reshape(-1, VQ_CONFIG["embed_dim"])
    e = vq.quantize.embedding.weight
    logits = 2 * z @ e.T - (e * e).sum(1)[None] - (z * z).sum(1, keepdim=True)
    target = codes.reshape(-1)
    return F.cross_entropy(logits, target), (logits.argmax(1) == target).float().mean().item()


def part_vq(a) -> None:
    out = Path(a.out)
    book = torch.load(out / "codebook.pt")
    ckpt = out / f"{a.part}.pt"
    torch.manual_seed(a.seed)
    vq = new_vq(book, DECODER_TRAIN_CONFIG if a.part == "decoder" else VQ_CONFIG)
    params = [p for n, p in vq.named_parameters() if n.startswith(VQ_PARTS[a.part])]
    opt = torch.optim.Adam(params, lr=a.lr)
    step, elapsed = 0, 0.0
    if ckpt.exists():
        st = torch.load(ckpt)
        vq.load_state_dict(st["model"], strict=False)
        opt.load_state_dict(st["opt"])
        step, elapsed = st["step"], st["elapsed"]
        print(f"resumed at step {step}", flush=True)
    rng = np.random.default_rng([a.seed, 1 + (a.part == "encoder"), step])
    t0 = time.time()
    while step < a.steps:
        x, codes = crops(rng, a.batch, book, a.crop)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, a.lr, a.warmup, a.steps)
        loss, metric = vq_loss(vq, a.part, x, codes, a.obj_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)  # lr 2e-3 without clipping spiked after ~320 steps
        opt.step()
        step += 1
        if step % a.log_every == 0 or step == a.steps:
            now = elapsed + time.time() - t0
            name = "mae" if a.part == "decoder" else "code_acc"
            print(f"step {step} loss {loss.item():.4f} {name} {metric:.4f} {now:.0f}s", flush=True)
            append_csv(out / f"{a.part}_log.csv", {"step": step, "loss": round(loss.item(), 5), name: round(metric, 4), "seconds": round(now)})
        if step % a.save_every == 0 or step == a.steps:
            state = {k: v for k, v in vq.state_dict().items() if k.startswith(VQ_PARTS[a.part])}
            save_atomic({"model": state, "opt": opt.state_dict(), "step": step, "elapsed": elapsed + time.time() - t0}, ckpt)


def load_vq(out: Path, book: torch.Tensor):
    """The exported VQGAN: the trained encoder, and the trained decoder with an identity second block per level."""
    torch.manual_seed(0)
    vq = new_vq(book)
    with torch.no_grad():
        for name, p in vq.named_parameters():
            if name.startswith("decoder.up.") and ".block.1.conv2." in name:
                p.zero_()
    for part in VQ_PARTS:
        if (out / f"{part}.pt").exists():
            missing, unexpected = vq.load_state_dict(torch.load(out / f"{part}.pt")["model"], strict=False)
            assert not unexpected, unexpected
    return vq.eval()


@torch.no_grad()
def judge_vq(vq, book: torch.Tensor, n_per_class: int = 1) -> dict[str, dict[str, float]]:
    """Judge ground-truth class scenes read back through the VQGAN: decode(codebook codes), decode(encode)."""
    pairs = C.eval_classes(n_per_class)
    imgs = np.stack([C.render_classes([y], np.random.default_rng(s))[0] for y, s in pairs])
    codes = tokenize(imgs, book)
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float().div_(255)
    res = {}
    for via, ids in (("decode", codes), ("encode+decode", vq.encode(x))):
        rec = (vq.decode(ids).permute(0, 2, 3, 1) * 255).round().byte().numpy()
        res[via] = J.accuracy([J.judge(im, C.class_prompt(y)) for im, (y, _) in zip(rec, pairs, strict=True)])
    res["code_acc"] = {"all": float((vq.encode(x) == codes).float().mean())}
    return res


# ----------------------------------------------------------------------------------------------
# Evaluation: vanilla samples of every class, judged (decoded by the codebook or the trained VQGAN)


def pack_transformer(state: dict):
    from mgt_core.models.maskgit import MaskGITTransformer

    cfg = transformer_config()
    model = MaskGITTransformer.from_config(cfg)
    model.load_state_dict(state, strict=True)
    return model.eval()


def transformer_config() -> dict:
    return {"family": "maskgit-v1", "input_size": GRID, "hidden_dim": ARCH["hidden_dim"], "depth": ARCH["depth"],
            "heads": ARCH["heads"], "mlp_dim": ARCH["mlp_dim"], "codebook_size": CODEBOOK, "nclass": ARCH["nclass"]}


DEMO_SAMPLER = {"steps": 12, "cfg_w": 2.0, "r_temp": 2.0, "sm_temp": 1.0}
"""The demo's sampler defaults (v1 confidence sampler, arccos counts)."""


@torch.no_grad()
def sample_classes(model, labels: list[int], seeds: list[int], settings=None, batch: int = 20) -> torch.Tensor:
    """Tokens [N, 16, 16] for (label, seed) pairs; each image seeded alone (batch-independent)."""
    from mgt_core.models.maskgit import MaskGITDenoiser
    from mgt_core.sampling.engine import sample
    from mgt_core.sampling.maskgit import v1_settings
    from mgt_core.sampling.partial import full_mask

    settings = settings or v1_settings(steps=DEMO_SAMPLER["steps"], w=DEMO_SAMPLER["cfg_w"], r_temp=DEMO_SAMPLER["r_temp"])
    out = []
    for y, s in zip(labels, seeds, strict=True):
        den = MaskGITDenoiser(model, [y])
        res = sample(den, settings, full_mask(1, GRID * GRID, den.mask_id, "cpu"), torch.Generator().manual_seed(s))
        out.append(res.tokens.view(1, GRID, GRID))
    return torch.cat(out)


def evaluate(a) -> None:
    out = Path(a.out)
    book = torch.load(out / "codebook.pt")
    st = torch.load(out / "transformer.pt")
    model = pack_transformer(st["model"])
    pairs = C.eval_classes(a.eval_per_class)
    t = time.time()
    toks = sample_classes(model, [y for y, _ in pairs], [s for _, s in pairs])
    imgs = decode(toks, book)
    v = [J.judge(im, C.class_prompt(y)) for im, (y, _) in zip(imgs, pairs, strict=True)]
    acc = J.accuracy(v)
    print(f"step {st['step']}: vanilla judged on {len(v)} images ({time.time() - t:.0f} s):",
          {k: round(x, 3) for k, x in acc.items()}, flush=True)
    append_csv(out / "eval.csv", {"step": st["step"], "n": len(v), **{k: round(x, 4) for k, x in acc.items()}})


DEMO_DIR = ROOT / "mgt_core" / "demo" / "maskgit-demo"
SWEEP = [{"cfg_w": w, "r_temp": r} for w in (1.5, 2.0, 3.0) for r in (1.0, 2.0, 4.5)]
"""``--sweep``: the sampler settings tried for the demo's defaults (12 steps)."""


def sweep(a) -> None:
    """Judge the exported demo under each ``SWEEP`` setting on held-out seeds (not the seeds ``--export`` and the
    tests judge), to choose ``DEMO_SAMPLER``; rows go to ``--out``/sweep.csv."""
    from mgt_core import load_pipeline

    pipe = load_pipeline(str(DEMO_DIR), dtype=torch.float32)
    pairs = [(y, 1000 * k + y) for k in range(50, 50 + a.eval_per_class) for y in range(len(C.CLASSES))]
    for ov in SWEEP:
        t = time.time()
        v = [J.judge((pipe(y, seed=s, steps=DEMO_SAMPLER["steps"], **ov)[0].numpy() * 255).round().astype(np.uint8),
                     C.class_prompt(y)) for y, s in pairs]
        acc = J.accuracy(v)
        print(ov, {k: round(x, 3) for k, x in acc.items()}, f"{time.time() - t:.0f} s", flush=True)
        append_csv(Path(a.out) / "sweep.csv", {**ov, "n": len(v), **{k: round(x, 4) for k, x in acc.items()}})


def export(a) -> None:
    """Write the demo folder (converted MaskGIT v1 layout, fp16 weights) and judge it end to end."""
    from mgt_core.loading.maskgit import save_maskgit_folder

    out = Path(a.out)
    book = torch.load(out / "codebook.pt")
    st = torch.load(out / "transformer.pt")
    vq = load_vq(out, book)
    steps = {p: torch.load(out / f"{p}.pt")["step"] for p in ("decoder", "encoder") if (out / f"{p}.pt").exists()}
    defaults = {"sampler": "confidence", "steps": DEMO_SAMPLER["steps"], "cfg_w": DEMO_SAMPLER["cfg_w"],
                "r_temp": DEMO_SAMPLER["r_temp"], "sm_temp": DEMO_SAMPLER["sm_temp"], "randomize": "linear",
                "schedule": "arccos", "class_names": list(C.CLASS_NAMES)}
    sources = {"trained_by": "tools/train_demo_maskgit.py", "transformer_steps": st["step"],
               "transformer_seconds": round(st["elapsed"]), **{f"{k}_steps": v for k, v in steps.items()},
               "classes": "mgt_core/demo/class_scenes.py (colour x shape, gray background)"}
    save_maskgit_folder(DEMO_DIR, "maskgit-v1", transformer_config(), st["model"], vq.config.to_dict(), vq.state_dict(),
                        dtype=torch.float16, defaults=defaults, sources=sources)
    print(f"wrote {DEMO_DIR}")
    from mgt_core import load_pipeline

    pipe = load_pipeline(str(DEMO_DIR), dtype=torch.float32)
    pairs = C.eval_classes(a.eval_per_class)
    imgs = [(pipe(y, seed=s)[0].numpy() * 255).round().astype(np.uint8) for y, s in pairs]
    acc = J.accuracy([J.judge(im, C.class_prompt(y)) for im, (y, _) in zip(imgs, pairs, strict=True)])
    print("exported demo, vanilla, judged:", {k: round(x, 3) for k, x in acc.items()})
    print("VQGAN read-back:", judge_vq(vq, book))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("codebook", "transformer", "decoder", "encoder"))
    ap.add_argument("--eval", action="store_true")
    ap.add_argument("--export", action="store_true")
    ap.add_argument("--sweep", action="store_true", help="judge the exported demo under SWEEP's sampler settings")
    ap.add_argument("--out", default="runs/maskgit")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--images", type=int, default=1200)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--steps", type=int, default=2500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--drop", type=float, default=0.1)
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--save-every", type=int, default=100)
    ap.add_argument("--eval-per-class", type=int, default=2)
    ap.add_argument("--obj-weight", type=float, default=2.0, help="decoder loss: extra weight on object pixels")
    ap.add_argument("--crop", type=int, default=4, help="token crop side for the VQGAN stages")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    if a.part == "codebook":
        part_codebook(a)
    elif a.part == "transformer":
        part_transformer(a)
    elif a.part in VQ_PARTS:
        part_vq(a)
    if a.eval:
        evaluate(a)
    if a.export:
        export(a)
    if a.sweep:
        sweep(a)


if __name__ == "__main__":
    main()

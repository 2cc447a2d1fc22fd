"""Train the demo model's Meissonic transformer and CLIP text encoder (jointly, from scratch) on CPU.

Data: scenes of split ``train`` rendered and tokenized by the patch codebook (``demo_codebook.py``;
the distilled VQ reproduces these codes, so training does not wait for it), in deterministic chunks of ``--chunk`` images (chunk k is drawn from seed [data_seed, k]) under
``runs/data/<codebook hash>-<scene layout>/``. Training may use chunks [0, init_chunks + step // steps_per_chunk):
the data grows while training, each missing chunk is encoded in-process, and the result does not
depend on when a chunk was made.

Objective: masked-token cross-entropy, made consistent with how the pack's vanilla sampler calls
the model (design-choices.md section 2): draw T from the step counts users pick, a step index i
in [0, T), mask exactly the tokens the sampler has masked at the input of step i (L for i = 0, else
floor(L cos(pi i / 2T))) at random positions, and pass timestep = T - 1 - i. Prompts are dropped to
"" (the demo's CFG negative prompt) with probability ``--text-drop``.

    python tools/train_demo_t2i.py --out runs/t2i                      # train (or continue: --resume)
    python tools/train_demo_t2i.py --out runs/t2i-b --init runs/t2i/ckpt.pt  # fine-tune a run's EMA weights
    python tools/train_demo_t2i.py --out runs/t2i --sweep              # CFG x steps table (--vq to use the VQ)
    python tools/train_demo_t2i.py --out runs/t2i --vq runs/vq/vqvae --export mgt_core/demo/mgt-demo
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_codebook import decode as centroid_decode  # noqa: E402
from demo_codebook import tokenize as codebook_tokenize  # noqa: E402
from train_demo_vq import ROOT, append_csv, load_exported, save_atomic  # noqa: E402

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mgt_core.demo import judge as J  # noqa: E402
from mgt_core.demo import scenes as S  # noqa: E402
from mgt_core.demo.tokenizer import load_tokenizer, write_tokenizer  # noqa: E402
from mgt_core.models.meissonic.transformer import MeissonicTransformer  # noqa: E402
from mgt_core.sampling.schedules import mask_counts  # noqa: E402

GRID = 16  # VQ tokens per side at 256x256
L = GRID * GRID
TOKEN = 16  # px per VQ token
CODEBOOK = 512
MASK_ID = CODEBOOK  # vocab_size - 1
STEP_CHOICES = (8, 12, 16, 24, 32, 48, 64)
"""Step counts the demo is sampled with; training draws T from these."""
MICRO_CONDS = (256.0, 256.0, 0.0, 0.0, 6.0)
"""(width, height, crop top, crop left, aesthetic score); width and height follow the batch's canvas."""
TEXT_LEN = 24
BOS_ID, EOS_ID = 622, 623


ARCH_ARGS = ("width", "heads", "layers", "single_layers", "text_width", "text_layers")


def transformer_config(a) -> dict:
    """Keys and order of Meissonic's ``transformer/config.json`` (models.md section 2.1)."""
    head_dim = a.width // a.heads
    third = (head_dim // 3) // 2 * 2
    rope = [head_dim - 2 * third, third, third]  # e.g. 32 -> [12, 10, 10]; all even, sum = head_dim
    return {
        "_class_name": "Transformer2DModel",
        "_diffusers_version": "0.30.2",
        "attention_head_dim": head_dim,
        "axes_dims_rope": rope,
        "codebook_size": CODEBOOK,
        "downsample": True,
        "guidance_embeds": False,
        "in_channels": 64,
        "joint_attention_dim": a.text_width,
        "num_attention_heads": a.heads,
        "num_layers": a.layers,
        "num_single_layers": a.single_layers,
        "patch_size": 1,
        "pooled_projection_dim": a.width,
        "upsample": True,
        "vocab_size": CODEBOOK + 1,
    }


def text_config(a):
    """CLIPTextConfig of the demo text tower: the tokenizer's 624 ids, 24 positions, eos = pad = 623."""
    from transformers import CLIPTextConfig

    cfg = CLIPTextConfig(
        vocab_size=624,
        hidden_size=a.text_width,
        intermediate_size=a.text_width * 2,
        num_hidden_layers=a.text_layers,
        num_attention_heads=max(1, a.text_width // 32),
        max_position_embeddings=TEXT_LEN,
        projection_dim=a.width,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=EOS_ID,
    )
    cfg.architectures = ["CLIPTextModelWithProjection"]
    cfg._attn_implementation = "sdpa"
    return cfg


def build_models(a):
    from transformers import CLIPTextModelWithProjection

    model = MeissonicTransformer.from_config(transformer_config(a))
    with torch.no_grad():  # adaLN-Zero (DiT): every block starts as the identity
        for name, mod in model.named_modules():
            if name.endswith(("norm1.linear", "norm1_context.linear", "norm.linear")):
                mod.weight.zero_()
                mod.bias.zero_()
    text = CLIPTextModelWithProjection(text_config(a))
    return model, text


def tokenize(tok, prompts: list[str]) -> torch.Tensor:
    """As the pipeline does: pad to the full length with the tokenizer's pad (eos), truncate, no mask."""
    ids = tok(prompts, padding="max_length", truncation=True, max_length=TEXT_LEN, return_tensors="pt").input_ids
    return ids.to(torch.int16)


def encode_text(text, ids: torch.Tensor):
    """hidden_states[-2] (penultimate layer, before the final LayerNorm) and the projected pooled output."""
    out = text(input_ids=ids.long(), output_hidden_states=True)
    return out.hidden_states[-2], out.text_embeds


# ----------------------------------------------------------------------------------------------
# Data


def book_hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


class CentroidVQ(torch.nn.Module):
    """The codebook as a stand-in VQ for evals during training: decode = centroid patches."""

    def __init__(self, book: torch.Tensor):
        super().__init__()
        self.register_buffer("book", book)
        self.post_quant_conv = torch.nn.Conv2d(1, 1, 1)  # where the pipeline looks for device/dtype

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(centroid_decode(ids.cpu(), self.book)).permute(0, 3, 1, 2).float() / 255

    decode_tiled = decode

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.permute(0, 2, 3, 1) * 255).round().clamp(0, 255).to(torch.uint8).numpy()
        return codebook_tokenize(x, self.book)


def parse_aspects(text: str) -> dict[tuple[int, int], float]:
    """"256x256:2,384x256:1" -> {(256, 256): 0.5, (384, 256): 0.25, ...}: canvases and their share of batches."""
    out: dict[tuple[int, int], float] = {}
    for item in text.split(","):
        size, _, weight = item.strip().partition(":")
        w, _, h = size.partition("x")
        out[S.check_canvas((int(w), int(h)))] = float(weight or 1)
    total = sum(out.values())
    return {k: v / total for k, v in out.items()}


def make_chunk(tokenize_images, tok, data_seed: int, k: int, n: int, canvas: tuple[int, int] = (256, 256)) -> dict:
    """n training scenes from seed [data_seed, k] (another stream per non-square canvas): codebook
    token ids (uint16) and text ids (int16)."""
    rng = np.random.default_rng([data_seed, k] if canvas == (256, 256) else [data_seed, k, *canvas])
    prompts, tokens = [], []
    for i in range(0, n, 64):
        p, images = S.sample_batch(rng, "train", min(64, n - i), canvas=canvas)
        prompts += p
        tokens.append(tokenize_images(images).to(torch.int32))
    return {"tokens": torch.cat(tokens).to(torch.uint16), "text_ids": tokenize(tok, prompts), "prompts": prompts}


class ChunkedData:
    """The growing training set: loads chunk files, encoding any that are missing."""

    def __init__(self, folder: Path, tokenize_images, tok, data_seed: int, chunk: int, canvas=(256, 256)):
        self.folder, self.tokenize_images, self.tok, self.seed, self.chunk = folder, tokenize_images, tok, data_seed, chunk
        self.canvas = canvas
        folder.mkdir(parents=True, exist_ok=True)
        self.tokens: list[torch.Tensor] = []
        self.text_ids: list[torch.Tensor] = []
        self.n = 0
        self._cat = None

    def path(self, k: int) -> Path:
        return self.folder / f"chunk{self.chunk}_{self.seed}_{k:05d}.pt"

    def ensure(self, k: int) -> dict:
        p = self.path(k)
        if p.exists():
            return torch.load(p, weights_only=False)
        d = make_chunk(self.tokenize_images, self.tok, self.seed, k, self.chunk, self.canvas)
        save_atomic(d, p)
        return d

    def grow_to(self, n_chunks: int) -> None:
        while len(self.tokens) < n_chunks:
            d = self.ensure(len(self.tokens))
            self.tokens.append(d["tokens"].to(torch.int64))
            self.text_ids.append(d["text_ids"].to(torch.int64))
            self._cat = None
        if self._cat is None:
            self._cat = (torch.cat(self.tokens), torch.cat(self.text_ids))
            self.n = self._cat[0].shape[0]

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._cat[0][idx], self._cat[1][idx]


# ----------------------------------------------------------------------------------------------
# Masking consistent with the sampler, and the vanilla sampler itself


def input_mask_counts(L: int = L) -> dict[int, torch.Tensor]:
    """Per T: tokens masked at the INPUT of each step i, as the pack's sampler produces them: L
    at i = 0, then the cosine schedule's count (from the pack's own schedule code) clamped to
    reveal at least one token per step (design-choices.md section 2.2)."""
    out = {}
    for T in STEP_CHOICES:
        seq = [L]
        for m in mask_counts("cosine", T, L)[:-1]:
            seq.append(max(1, min(seq[-1] - 1, m)))
        out[T] = torch.tensor(seq)
    return out


def training_mask(
    b: int,
    gen: torch.Generator,
    counts: dict[int, torch.Tensor],
    target: torch.Tensor | None = None,
    p_object_first: float = 0.0,
    L: int = L,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean mask [b, L] with the sampler's count per row, and the timestep T - 1 - i the sampler
    passes at that step.

    Positions are uniform at random, except in a share ``p_object_first`` of the rows, which mask
    the tokens that differ from the row's background (most common) token first, then random ones.
    That is the hole the confidence-ordered sampler leaves: background is revealed first, and the
    late steps fill a masked object. Uniform masks alone almost never show it; a model trained only
    on them filled object holes with background (10% of object tokens right, against 75-78% with 20-50% masked at random)."""
    T = torch.tensor(STEP_CHOICES)[torch.randint(0, len(STEP_CHOICES), (b,), generator=gen)]
    i = (torch.rand(b, generator=gen) * T).long().clamp_max(T - 1)
    m = torch.stack([counts[int(t)][int(j)] for t, j in zip(T, i, strict=True)])
    priority = torch.rand(b, L, generator=gen)
    if target is not None and p_object_first > 0:
        first = torch.rand(b, generator=gen) < p_object_first
        obj = target != torch.mode(target, dim=1).values[:, None]
        priority = priority - (first[:, None] & obj).float()
    ranks = priority.argsort(1).argsort(1)
    return ranks < m[:, None], T - 1 - i


def micro(b: int, canvas: tuple[int, int] = (256, 256)) -> torch.Tensor:
    return torch.tensor((float(canvas[0]), float(canvas[1]), *MICRO_CONDS[2:])).expand(b, 5)


def pipeline_for(model, text, tok, vq):
    """The pack's own pipeline around in-memory modules, so evals measure the shipped sampler."""
    from mgt_core.loading.pipeline import ModelInfo
    from mgt_core.pipeline import MGTPipeline

    info = ModelInfo(name="demo", family="demo", path="", steps=16, guidance_scale=3.0, width=256, height=256,
                     negative_prompt="")  # fmt: skip
    return MGTPipeline(transformer=model, vq=vq, text_encoder=text, tokenizer=tok, info=info)


def judge_generation(pipe, prompts_seeds, steps: int, cfg: float, batch: int = 50, seed: int = 0, **kw):
    """One image per prompt with the vanilla sampler (or the design choices in ``kw``), judged.
    Returns (accuracy dict, verdicts, uint8 images)."""
    prompts = [p for p, _ in prompts_seeds]
    verdicts, images = [], []
    for k in range(0, len(prompts), batch):
        part = prompts[k : k + batch]
        out = pipe(part, negative_prompt="", steps=steps, guidance_scale=cfg, seed=seed + k, **kw)
        imgs = (out.clamp(0, 1) * 255).round().byte().numpy()
        images.append(imgs)
        verdicts += [J.judge(im, p) for im, p in zip(imgs, part, strict=True)]
    return J.accuracy(verdicts), verdicts, np.concatenate(images)


# ----------------------------------------------------------------------------------------------
# Training


def lr_at(step: int, a) -> float:
    """Warm-up, constant, then linear decay over the last ``--decay-frac`` of ``--steps`` (so a
    run can be extended by raising --steps before the decay starts)."""
    if step < a.warmup:
        return a.lr * (step + 1) / a.warmup
    start = a.steps * (1 - a.decay_frac)
    if step < start:
        return a.lr
    return a.lr * max(0.05, 1 - (step - start) / max(1, a.steps - start))


class EMA:
    """Exponential moving average of all weights (transformer + text); used for eval and export."""

    def __init__(self, modules, decay: float):
        self.decay = decay
        self.params = [p for m in modules for p in m.parameters()]
        self.shadow = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1 - d)

    def swap(self) -> None:
        """Exchange live and EMA weights (call twice to restore)."""
        with torch.no_grad():
            for p, s in zip(self.params, self.shadow, strict=True):
                tmp = p.detach().clone()
                p.copy_(s)
                s.copy_(tmp)


def eval_vq(a, book: torch.Tensor | None = None):
    """The distilled VQ when --vq is given, else the codebook itself."""
    if a.vq:
        return load_exported(Path(a.vq))
    return CentroidVQ(torch.load(a.codebook) if book is None else book)


def setup(a):
    torch.manual_seed(a.seed)
    book = None if a.tokenize_vq else torch.load(a.codebook)
    tok_dir = Path(a.out) / "tokenizer"
    write_tokenizer(tok_dir)
    tok = load_tokenizer(tok_dir)
    if a.tokenize_vq:  # the exported VQ's encoder (the shipped model's tokens; see --tokenize-vq)
        enc = load_exported(Path(a.tokenize_vq))
        key = "vq" + book_hash(Path(a.tokenize_vq) / "diffusion_pytorch_model.safetensors")

        @torch.no_grad()
        def tokenize_images(images: np.ndarray) -> torch.Tensor:
            return enc.encode(torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255))
    else:
        key = book_hash(Path(a.codebook))

        def tokenize_images(images: np.ndarray) -> torch.Tensor:
            return codebook_tokenize(images, book)

    data = {}
    for canvas in parse_aspects(a.aspects):
        name = f"{key}-{S.LAYOUT}" + ("" if canvas == (256, 256) else f"-{canvas[0]}x{canvas[1]}")
        data[canvas] = ChunkedData(Path(a.data) / name, tokenize_images, tok, a.data_seed, a.chunk, canvas)
    return eval_vq(a, book), tok, data


def init_weights(path: Path) -> tuple[dict, list[torch.Tensor], int | str]:
    """Architecture args, EMA weights (transformer then text encoder, parameter order) and step to start a run
    from: a run's ``ckpt.pt``, or an exported model folder (e.g. the shipped demo, fp16 -> fp32)."""
    if not path.is_dir():
        init = torch.load(path, weights_only=False)
        return {k: init["args"][k] for k in ARCH_ARGS}, init["ema"], init["step"]
    from safetensors.torch import load_file

    tcfg = json.loads((path / "transformer" / "config.json").read_text())
    ccfg = json.loads((path / "text_encoder" / "config.json").read_text())
    arch = {"width": tcfg["num_attention_heads"] * tcfg["attention_head_dim"], "heads": tcfg["num_attention_heads"],
            "layers": tcfg["num_layers"], "single_layers": tcfg["num_single_layers"],
            "text_width": ccfg["hidden_size"], "text_layers": ccfg["num_hidden_layers"]}  # fmt: skip
    model, text = build_models(argparse.Namespace(**arch))
    model.load_state_dict(load_file(str(path / "transformer" / "diffusion_pytorch_model.safetensors")), strict=True)
    missing, unexpected = text.load_state_dict(load_file(str(path / "text_encoder" / "model.safetensors")), strict=False)
    if unexpected or any("position_ids" not in k for k in missing):
        raise SystemExit(f"{path}: text encoder keys differ (missing {missing}, unexpected {unexpected})")
    return arch, [p.detach().float().clone() for m in (model, text) for p in m.parameters()], "export"


def grow_single_layers(arch: dict, init_ema: list[torch.Tensor], extra: int) -> tuple[dict, list[torch.Tensor]]:
    """Depth growth: the same weights with ``extra`` single-stream blocks appended after the last one. A new
    block's adaLN modulation starts at zero (``build_models``), so its gate is 0 and the grown model computes
    exactly what the old one did; training then opens the new blocks up."""
    old_t, old_c = build_models(argparse.Namespace(**arch))
    with torch.no_grad():
        for p, v in zip([p for m in (old_t, old_c) for p in m.parameters()], init_ema, strict=True):
            p.copy_(v)
    new_arch = {**arch, "single_layers": arch["single_layers"] + extra}
    new_t, new_c = build_models(argparse.Namespace(**new_arch))
    missing, unexpected = new_t.load_state_dict(old_t.state_dict(), strict=False)
    new_keys = tuple(f"single_transformer_blocks.{j}." for j in range(arch["single_layers"], new_arch["single_layers"]))
    if unexpected or any(not k.startswith(new_keys) for k in missing):
        raise SystemExit(f"growing the transformer: unexpected {unexpected}, missing {missing}")
    new_c.load_state_dict(old_c.state_dict())
    return new_arch, [p.detach().clone() for m in (new_t, new_c) for p in m.parameters()]


def train(a) -> None:
    if a.grow_single_layers and not a.init:
        raise SystemExit("--grow-single-layers grows the model given by --init: pass --init too")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "ckpt.pt"
    if ckpt.exists() and not a.resume:
        raise SystemExit(f"{ckpt} exists: pass --resume to continue or choose another --out")
    if a.resume and ckpt.exists():
        st = torch.load(ckpt, weights_only=False)
        saved = st["args"]
        for k in (*ARCH_ARGS, "chunk", "data_seed", "aspects"):
            setattr(a, k, saved.get(k, "256x256") if k == "aspects" else saved[k])  # fixed by the run
    elif a.init:
        arch, init_ema, init_step = init_weights(Path(a.init))
        if a.grow_single_layers:
            torch.manual_seed(a.seed)  # the new blocks' weights
            arch, init_ema = grow_single_layers(arch, init_ema, a.grow_single_layers)
        for k in ARCH_ARGS:
            setattr(a, k, arch[k])
    vq, tok, datasets = setup(a)
    model, text = build_models(a)
    params = [p for m in (model, text) for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=a.lr, betas=(0.9, 0.98), weight_decay=a.wd)
    ema = EMA([model, text], a.ema)
    gen = torch.Generator().manual_seed(a.seed + 1)
    step, elapsed = 0, 0.0
    if a.resume and ckpt.exists():
        model.load_state_dict(st["model"])
        text.load_state_dict(st["text"])
        opt.load_state_dict(st["opt"])
        for s, v in zip(ema.shadow, st["ema"], strict=True):
            s.copy_(v)
        gen.set_state(st["gen"])
        torch.set_rng_state(st["torch_rng"])
        step, elapsed = st["step"], st["elapsed"]
        print(f"resumed at step {step} ({elapsed / 60:.1f} min)", flush=True)
    else:
        if a.init:  # a new run (fresh optimizer, schedule and data stream) from another run's EMA weights
            for p, v in zip(ema.params, init_ema, strict=True):
                p.data.copy_(v)
            for s, v in zip(ema.shadow, init_ema, strict=True):
                s.copy_(v)
            print(f"initialised from {a.init} (step {init_step})", flush=True)
        (out / "args.json").write_text(json.dumps(vars(a), indent=2) + "\n")
    n_t = sum(p.numel() for p in model.parameters())
    n_c = sum(p.numel() for p in text.parameters())
    print(f"transformer {n_t:,} params, text encoder {n_c:,} params; steps {step}..{a.steps}", flush=True)
    empty_ids = tokenize(tok, [""])[0].long()
    eval_items = S.eval_prompts("simple", a.eval_n, seed=0)
    aspects = parse_aspects(a.aspects)
    canvases = list(aspects)
    shares = torch.tensor([aspects[c] for c in canvases])
    counts = {c: input_mask_counts((c[0] // TOKEN) * (c[1] // TOKEN)) for c in canvases}
    eval_sizes = list(parse_aspects(a.eval_sizes)) if a.eval_sizes else [(256, 256)]
    pipe = pipeline_for(model, text, tok, vq)
    acc: dict[str, float] = {}
    t0 = time.time() - elapsed
    t_ckpt = time.time()
    while step < a.steps:
        model.train()
        text.train()
        canvas = canvases[0] if len(canvases) == 1 else canvases[int(torch.multinomial(shares, 1, generator=gen))]
        h, w = canvas[1] // TOKEN, canvas[0] // TOKEN
        n_tok = h * w
        data = datasets[canvas]
        data.grow_to(math.ceil((a.init_chunks + step // a.steps_per_chunk) * aspects[canvas]))
        idx = torch.randint(0, data.n, (a.batch,), generator=gen)
        target, ids = data.batch(idx)
        target = target.view(a.batch, n_tok)
        drop = torch.rand(a.batch, generator=gen) < a.text_drop
        ids = torch.where(drop[:, None], empty_ids[None], ids)
        mask, timestep = training_mask(a.batch, gen, counts[canvas], target, a.object_first, n_tok)
        inp = torch.where(mask, torch.full_like(target, MASK_ID), target)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, a)
        hid, pooled = encode_text(text, ids)
        logits = model(inp.view(a.batch, h, w), hid, pooled, timestep, micro(a.batch, canvas))
        logits = logits.permute(0, 2, 3, 1).reshape(a.batch, n_tok, CODEBOOK)[mask]
        loss = F.cross_entropy(logits, target[mask], label_smoothing=a.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.update(step)
        step += 1
        with torch.no_grad():
            tok_acc = (logits.argmax(-1) == target[mask]).float().mean().item()
        for k, v in (("loss", loss.item()), ("mask_acc", tok_acc), ("gnorm", gnorm.item())):
            acc[k] = acc.get(k, 0.0) + v
        if step % a.log_every == 0:
            row = {"step": step, "minutes": round((time.time() - t0) / 60, 2), "lr": f"{lr_at(step, a):.2e}",
                   "data": sum(d.n for d in datasets.values()),
                   **{k: round(v / a.log_every, 4) for k, v in acc.items()}}  # fmt: skip
            append_csv(out / "log.csv", row)
            print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
            acc = {}
        last = step == a.steps
        if step % a.eval_every == 0 or last:
            model.eval()
            text.eval()
            ema.swap()
            for ew, eh in eval_sizes:
                res, _, _ = judge_generation(pipe, eval_items, a.eval_steps, a.eval_cfg, width=ew, height=eh)
                row = {"step": step, "minutes": round((time.time() - t0) / 60, 2), "steps": a.eval_steps,
                       "cfg": a.eval_cfg}  # fmt: skip
                row.update({k: round(v, 3) for k, v in res.items()})
                name = "eval.csv" if (ew, eh) == (256, 256) else f"eval_{ew}x{eh}.csv"
                append_csv(out / name, row)
                print(f"EVAL {ew}x{eh}", row, flush=True)
            ema.swap()
        if last or time.time() - t_ckpt > a.ckpt_minutes * 60:
            state = {"model": model.state_dict(), "text": text.state_dict(), "opt": opt.state_dict(),
                     "ema": ema.shadow, "gen": gen.get_state(), "torch_rng": torch.get_rng_state(),
                     "step": step, "elapsed": time.time() - t0, "args": vars(a)}  # fmt: skip
            save_atomic(state, ckpt)
            t_ckpt = time.time()
    print(f"done: {step} steps in {(time.time() - t0) / 60:.1f} min", flush=True)


def load_trained(a):
    """The EMA weights of the run in --out, as eval-mode modules."""
    st = torch.load(Path(a.out) / "ckpt.pt", weights_only=False)
    for k in ARCH_ARGS:
        setattr(a, k, st["args"][k])
    model, text = build_models(a)
    ema = EMA([model, text], 0.0)
    for p, s in zip(ema.params, st["ema"], strict=True):
        p.data.copy_(s)
    return model.eval(), text.eval(), st["step"]


def sweep(a) -> None:
    """Judge accuracy over step counts x CFG scales, one image per eval prompt of --sweep-split.

    With --sweep-model, a model folder loaded by the pack's own loader (what users get, e.g. the
    fp16 export); otherwise the EMA weights of the run in --out."""
    if a.sweep_model:
        from mgt_core import load_pipeline

        pipe, source = load_pipeline(a.sweep_model), a.sweep_model
    else:
        vq = eval_vq(a)
        tok = load_tokenizer(write_tokenizer(Path(a.out) / "tokenizer"))
        model, text, step = load_trained(a)
        pipe, source = pipeline_for(model, text, tok, vq), f"{a.out}@{step}"
    items = S.eval_prompts(a.sweep_split, a.sweep_n, seed=1)
    (sw, sh), = parse_aspects(a.sweep_size)
    Path(a.out).mkdir(parents=True, exist_ok=True)  # --sweep-model needs no run folder
    for steps in a.sweep_steps:
        for cfg in a.sweep_cfg:
            t = time.time()
            res, _, _ = judge_generation(pipe, items, steps, cfg, width=sw, height=sh)
            row = {"model": source, "split": a.sweep_split, "canvas": f"{sw}x{sh}", "n": a.sweep_n, "steps": steps, "cfg": cfg,
                   **{k: round(v, 3) for k, v in res.items()}, "seconds": round(time.time() - t)}  # fmt: skip
            append_csv(Path(a.out) / "sweep.csv", row)
            print(row, flush=True)


def export(a) -> None:
    """Write the model folder in Meissonic's layout (see the module docstring of mgt_core.demo)."""
    from safetensors.torch import save_file

    if not a.vq:
        raise SystemExit("--export needs --vq: the distilled VQ folder from train_demo_vq.py")
    dst = Path(a.export)
    if dst.resolve() in (Path(a.vq).resolve(), *Path(a.vq).resolve().parents):
        raise SystemExit(f"--vq {a.vq} lies inside --export {a.export}, which the export replaces: "
                         "copy the VQ folder elsewhere first and pass that copy")  # fmt: skip
    model, text, step = load_trained(a)
    if dst.exists():
        shutil.rmtree(dst)
    for sub in ("transformer", "vqvae", "text_encoder", "scheduler"):
        (dst / sub).mkdir(parents=True)
    index = {
        "_class_name": "Pipeline",
        "_diffusers_version": "0.30.2",
        "scheduler": ["scheduler", "Scheduler"],
        "text_encoder": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "transformer": ["transformer", "Transformer2DModel"],
        "vqvae": ["diffusers", "VQModel"],
    }
    (dst / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    dtype = torch.float32 if a.export_fp32 else torch.float16  # fp16 keeps all weights < 20 MB
    (dst / "transformer" / "config.json").write_text(json.dumps(transformer_config(a), indent=2) + "\n")
    save_file({k: v.to(dtype).contiguous() for k, v in model.state_dict().items()},
              str(dst / "transformer" / "diffusion_pytorch_model.safetensors"), metadata={"format": "pt"})  # fmt: skip
    cfg = text_config(a).to_dict()
    cfg.pop("_attn_implementation_autoset", None)
    cfg.pop("_attn_implementation", None)
    cfg.pop("transformers_version", None)
    (dst / "text_encoder" / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    text_state = {k: v.to(dtype).contiguous() for k, v in text.state_dict().items() if "position_ids" not in k}
    save_file(text_state, str(dst / "text_encoder" / "model.safetensors"), metadata={"format": "pt"})
    for name in ("config.json", "diffusion_pytorch_model.safetensors"):  # the VQ stays fp32 (fp16 NaNs)
        shutil.copy(Path(a.vq) / name, dst / "vqvae" / name)
    write_tokenizer(dst / "tokenizer")
    sched = {
        "_class_name": "Scheduler",
        "_diffusers_version": "0.30.2",
        "mask_token_id": MASK_ID,
        "masking_schedule": "cosine",
    }
    (dst / "scheduler" / "scheduler_config.json").write_text(json.dumps(sched, indent=2) + "\n")
    defaults = {
        "steps": a.default_steps,
        "guidance_scale": a.default_cfg,
        "width": 256,
        "height": 256,
        "negative_prompt": "",
    }
    (dst / "mgt_defaults.json").write_text(json.dumps(defaults, indent=2) + "\n")
    size = sum(f.stat().st_size for f in dst.rglob("*") if f.is_file())
    print(f"exported training step {step} to {dst} ({size / 1e6:.2f} MB)", flush=True)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/t2i")
    ap.add_argument("--codebook", default="runs/codebook.pt", help="tokenizes the training data (demo_codebook.py)")
    ap.add_argument(
        "--vq", default=None, help="exported VQ folder (train_demo_vq.py): evals decode with it; needed by --export"
    )
    ap.add_argument(
        "--tokenize-vq",
        default=None,
        help="tokenize the training data with this exported VQ's encoder instead of the codebook: to fine-tune "
        "the shipped model, whose codebook came from the scenes before they moved onto the token grid",
    )
    ap.add_argument("--data", default="runs/data")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--chunk", type=int, default=1024, help="images per data chunk")
    ap.add_argument("--init-chunks", type=int, default=8)
    ap.add_argument("--aspects", default="256x256", help="training canvases WxH[:share], e.g. 256x256:2,384x256:1,256x384:1")
    ap.add_argument("--steps-per-chunk", type=int, default=40, help="one more chunk of data every this many steps")
    # architecture
    ap.add_argument("--width", type=int, default=128, help="transformer inner dim = heads * head_dim")
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--layers", type=int, default=3, help="dual-stream blocks")
    ap.add_argument("--single-layers", type=int, default=3)
    ap.add_argument("--text-width", type=int, default=128, help="CLIP hidden size = joint_attention_dim")
    ap.add_argument("--text-layers", type=int, default=3)
    # optimisation
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--wd", type=float, default=0.01)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--decay-frac", type=float, default=0.2)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--text-drop", type=float, default=0.12)
    ap.add_argument("--label-smoothing", type=float, default=0.0)
    ap.add_argument("--object-first", type=float, default=0.5, help="share of masks that take the object tokens first")
    # logging / eval
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--eval-every", type=int, default=1000)
    ap.add_argument("--eval-n", type=int, default=50)
    ap.add_argument("--eval-steps", type=int, default=16)
    ap.add_argument("--eval-cfg", type=float, default=1.5)
    ap.add_argument("--eval-sizes", default="256x256", help="canvases the periodic eval generates at (WxH,...)")
    ap.add_argument("--ckpt-minutes", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--init", default=None, help="start a new run from this checkpoint's EMA weights")
    ap.add_argument(
        "--grow-single-layers",
        type=int,
        default=0,
        help="with --init: append this many single-stream blocks, each starting as the identity (depth growth)",
    )
    # other modes
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--sweep-split", default="simple")
    ap.add_argument("--sweep-model", default=None, help="evaluate this model folder instead of the run's EMA weights")
    ap.add_argument("--sweep-n", type=int, default=200)
    ap.add_argument("--sweep-size", default="256x256", help="canvas WxH the sweep generates at")
    ap.add_argument("--sweep-steps", type=int, nargs="+", default=[8, 16, 32, 64])
    ap.add_argument("--sweep-cfg", type=float, nargs="+", default=[1.0, 2.0, 3.0, 5.0, 9.0])
    ap.add_argument("--export", default=None, help="write the model folder here and exit")
    ap.add_argument("--export-fp32", action="store_true", help="keep the transformer and text encoder in fp32")
    ap.add_argument("--default-steps", type=int, default=16)
    ap.add_argument("--default-cfg", type=float, default=3.0)
    return ap.parse_args(argv)


def main(argv=None) -> None:
    a = parse_args(argv)
    if a.tokenize_vq and not a.vq:
        a.vq = a.tokenize_vq  # evals and the export decode with the VQ the tokens come from
    torch.set_num_threads(a.threads)
    if a.export:
        export(a)
    elif a.sweep:
        sweep(a)
    else:
        train(a)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()

"""Dev check: our MaskGIT v1 / Halton-MaskGIT transformers and VQGANs against the official classes, max |diff|.

Needs what the pack never ships: the official sources, fetched at development time into an ignored
folder (never committed), e.g.

    git clone https://github.com/valeoai/Maskgit-pytorch /tmp/mg && git -C /tmp/mg archive 5ce6c9e Network \\
        | tar -x -C .cache/official/maskgit-v1          # v1: transformer + taming VQGAN modules
    git clone https://github.com/valeoai/Halton-MaskGIT /tmp/hm && git -C /tmp/hm archive HEAD Network \\
        | tar -x -C .cache/official/halton              # v2: transformer + LlamaGen VQ-16 copy
    python tools/parity_official_maskgit.py --official .cache/official

The official modules need torch (and einops for Halton). Each official network is built at reduced
width with random N(0, 0.2) weights (the Halton adaLN layers too, which its init zeroes), the
state dict is copied into ours with strict=True, and both run the same inputs in fp32 (and bf16
for the transformers). ``tests/test_maskgit_models.py`` runs it when the sources are present.

Measured here (torch 2.13 CPU; v1 at commit 5ce6c9e, Halton-MaskGIT at f61b0a1): transformers
max |diff| = 0 in fp32 and bf16 (v1 4x4 and 6x6 grids; Halton 4 heads, and 6 heads of width 10 as
in ``small``); VQGAN decode_code 1.8e-6 (taming) and 3.6e-6 (LlamaGen) in fp32 (SDPA against the
reference's bmm attention), taming encoder 4.2e-7, LlamaGen encode token ids identical.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def load_file(name: str, path: Path):
    """Import one official source file by path (only what it imports itself runs)."""
    if not path.is_file():
        raise SystemExit(f"{path}: not found; fetch the official sources as described in this tool's docstring")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def randomize(module: torch.nn.Module, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return module.eval().requires_grad_(False).state_dict()


def diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


RESULTS: dict[str, float] = {}


def report(name: str, value: float, scale: torch.Tensor) -> None:
    RESULTS[name] = value
    print(f"{name:58s} max |diff| = {value:.3e}   (max |ref| = {scale.float().abs().max().item():.3g})")


def transformers(root: Path) -> None:
    from mgt_core.models import configs as C
    from mgt_core.models.halton import HaltonTransformer
    from mgt_core.models.maskgit import MaskGITTransformer

    v1 = load_file("official_maskgit_v1_transformer", root / "maskgit-v1/Network/transformer.py")
    for side in (4, 6):
        cfg = {**C.tiny_maskgit(), "input_size": side}
        ref = v1.MaskTransformer(img_size=side * 16, hidden_dim=cfg["hidden_dim"], codebook_size=cfg["codebook_size"],
                                 f_factor=side, depth=cfg["depth"], heads=cfg["heads"], mlp_dim=cfg["mlp_dim"],
                                 dropout=0.1, nclass=cfg["nclass"])
        state = randomize(ref, side)
        ours = MaskGITTransformer.from_config(cfg).eval()
        ours.load_state_dict(state, strict=True)
        g = torch.Generator().manual_seed(1)
        tokens = torch.randint(0, cfg["codebook_size"] + 1, (4, side, side), generator=g)
        labels, drop = torch.tensor([0, 3, 9, 9]), torch.tensor([False, True, False, True])
        for dtype in (torch.float32, torch.bfloat16):
            ref, ours = ref.to(dtype), ours.to(dtype)
            with torch.no_grad():
                a = ref(tokens.clone(), labels.clone(), drop.clone())
                o = ours(tokens, labels, drop)
            report(f"MaskGIT v1 transformer {side}x{side} {dtype}", diff(a, o), a)

    hal = load_file("official_halton_transformer", root / "halton/Network/transformer.py")
    for heads, side in ((4, 4), (6, 5)):  # 6 heads of width 64: head_dim 10, attention width 60 (like 'small')
        cfg = {**C.tiny_halton(heads=heads), "input_size": side}
        ref = hal.Transformer(input_size=side, hidden_dim=cfg["hidden_dim"], codebook_size=cfg["codebook_size"],
                              depth=cfg["depth"], heads=heads, mlp_dim=cfg["mlp_dim"], dropout=0.1,
                              nclass=cfg["nclass"], register=1, proj=1)
        state = randomize(ref, heads)
        ours = HaltonTransformer.from_config(cfg).eval()
        ours.load_state_dict(state, strict=True)
        ours.tie_weights()
        g = torch.Generator().manual_seed(2)
        tokens = torch.randint(0, cfg["codebook_size"] + 1, (4, side, side), generator=g)
        labels, drop = torch.tensor([0, 3, 9, 9]), torch.tensor([False, True, False, True])
        for dtype in (torch.float32, torch.bfloat16):
            ref, ours = ref.to(dtype), ours.to(dtype)
            with torch.no_grad():
                a = ref(tokens, labels, drop)
                o = ours(tokens, labels, drop)
            report(f"Halton transformer heads={heads} {side}x{side} {dtype}", diff(a, o), a)


def vqgans(root: Path) -> None:
    from mgt_core.models import configs as C
    from mgt_core.models.vq.vqgan import VQGAN

    taming = load_file("official_taming_model", root / "maskgit-v1/Network/Taming/modules/diffusionmodules/model.py")
    cfg = C.tiny_taming()
    dd = {"ch": cfg["ch"], "out_ch": 3, "ch_mult": tuple(cfg["ch_mult"]), "num_res_blocks": cfg["num_res_blocks"],
          "attn_resolutions": cfg["attn_resolutions"], "dropout": 0.0, "in_channels": 3,
          "resolution": cfg["resolution"], "z_channels": cfg["z_channels"], "double_z": False}
    enc, dec = taming.Encoder(**dd), taming.Decoder(**dd)
    quant_conv = torch.nn.Conv2d(cfg["z_channels"], cfg["embed_dim"], 1)
    post = torch.nn.Conv2d(cfg["embed_dim"], cfg["z_channels"], 1)
    book = torch.nn.Embedding(cfg["n_embed"], cfg["embed_dim"])
    state = {}
    for prefix, m in (("encoder.", enc), ("decoder.", dec), ("quant_conv.", quant_conv), ("post_quant_conv.", post),
                      ("quantize.embedding.", book)):
        state.update({prefix + k: v for k, v in randomize(m, len(state)).items()})
    ours = VQGAN.from_config(cfg).eval()
    ours.load_state_dict(state, strict=True)
    ids = torch.randint(0, cfg["n_embed"], (2, 4, 4), generator=torch.Generator().manual_seed(3))
    img = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(4)) * 2 - 1
    with torch.no_grad():
        a = dec(post(book(ids).permute(0, 3, 1, 2)))  # the reference decode_code: lookup -> post_quant_conv -> decoder
        o = ours.decode_raw(ids)
        report("taming VQGAN decode_code (fp32)", diff(a, o), a)
        a = quant_conv(enc(img))
        o = ours.quant_conv(ours.encoder(img))
        report("taming VQGAN encoder + quant_conv (fp32)", diff(a, o), a)

    vq = load_file("official_halton_vq", root / "halton/Network/vq_model.py")
    cfg = C.tiny_llamagen()
    ref = vq.VQModel(vq.ModelArgs(codebook_size=cfg["n_embed"], codebook_embed_dim=cfg["embed_dim"],
                                  encoder_ch_mult=cfg["ch_mult"], decoder_ch_mult=cfg["ch_mult"],
                                  z_channels=cfg["z_channels"]))
    ref.quantize.codebook_used = torch.zeros(cfg["codebook_used"])  # the trainer's buffer length is a constant
    state = randomize(ref, 5)
    ours = VQGAN.from_config(cfg).eval()
    ours.load_state_dict(state, strict=True)
    with torch.no_grad():
        a = ref.decode_code(ids)
        o = ours.decode_raw(ids)
        report("LlamaGen VQ-16 decode_code (fp32)", diff(a, o), a)
        _, _, (_, _, idx) = ref.encode(img)
        mine = ours.quantize.nearest(ours.quant_conv(ours.encoder(img)))
        RESULTS["LlamaGen VQ-16 encode ids differ"] = float(not torch.equal(idx.view(-1), mine.view(-1)))
        print(f"{'LlamaGen VQ-16 encode: token ids equal':58s} {bool(torch.equal(idx.view(-1), mine.view(-1)))}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--official", default=str(REPO / ".cache" / "official"),
                    help="folder with maskgit-v1/Network and halton/Network (default .cache/official)")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    torch.manual_seed(0)
    print(f"torch {torch.__version__}")
    transformers(Path(args.official))
    vqgans(Path(args.official))


if __name__ == "__main__":
    main()

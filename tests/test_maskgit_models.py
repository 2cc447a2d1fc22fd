"""MaskGIT v1 / Halton-MaskGIT / their VQGANs: key manifests and parameter counts of the real configs
(built on the meta device), reduced-width forward shapes and the Denoiser adapters (models.md 7, 8, 11)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mgt_core.errors import MGTInputError, MGTLoadError
from mgt_core.loading.modules import meta_module, param_count
from mgt_core.models import configs as C
from mgt_core.models.halton import HaltonConfig, HaltonDenoiser, HaltonTransformer
from mgt_core.models.maskgit import MaskGITConfig, MaskGITDenoiser, MaskGITTransformer
from mgt_core.models.vq.vqgan import VQGAN, VQGANConfig
from mgt_core.sampling.engine import SamplerSettings, sample
from mgt_core.sampling.partial import full_mask


def shapes(module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("config, pos, params", [(C.MASKGIT_V1_256, 257, 174_160_874), (C.MASKGIT_V1_512, 1025, 176_306_666)])
def test_maskgit_v1_manifest(config, pos, params):
    m = meta_module(lambda: MaskGITTransformer.from_config(config))
    sd = shapes(m)
    assert len(sd) == 305 and param_count(m) == params
    expected = {
        "tok_emb.weight": (2026, 768), "pos_emb": (1, pos, 768), "bias": (pos, 2026),
        "first_layer.0.weight": (768,), "first_layer.2.weight": (768, 768), "first_layer.4.bias": (768,),
        "first_layer.6.weight": (768, 768), "last_layer.0.weight": (768,), "last_layer.2.bias": (768,),
        "last_layer.4.weight": (768,),
        "transformer.layers.23.0.norm.weight": (768,),
        "transformer.layers.23.0.fn.mha.in_proj_weight": (2304, 768),
        "transformer.layers.23.0.fn.mha.in_proj_bias": (2304,),
        "transformer.layers.23.0.fn.mha.out_proj.weight": (768, 768),
        "transformer.layers.23.0.fn.mha.out_proj.bias": (768,),
        "transformer.layers.0.1.norm.bias": (768,),
        "transformer.layers.0.1.fn.net.0.weight": (3072, 768), "transformer.layers.0.1.fn.net.3.weight": (768, 3072),
        "transformer.layers.0.1.fn.net.3.bias": (768,),
    }
    assert {k: sd[k] for k in expected} == expected
    assert not any(".24." in k for k in sd)
    eps = {k: m.get_submodule(k).eps for k in ("first_layer.0", "first_layer.4", "last_layer.0", "last_layer.4")}
    assert set(eps.values()) == {1e-12}
    assert m.get_submodule("transformer.layers.0.0.norm").eps == 1e-5
    assert m.transformer.layers[0][0].fn.mha.num_heads == 16


@pytest.mark.parametrize(
    "name, keys, params",
    [
        ("ImageNet_256_tiny", 76, 23_031_425), ("ImageNet_256_small", 142, 69_344_769),
        ("ImageNet_256_base", 142, 142_224_641), ("ImageNet_384_small", 142, 69_508_609),
        ("ImageNet_384_base", 142, 142_470_401), ("ImageNet_384_large", 274, 479_984_641),
    ],
)
def test_halton_manifest(name, keys, params):
    config = C.HALTON_RELEASES[name]
    m = meta_module(lambda: HaltonTransformer.from_config(config))
    sd = shapes(m)
    assert len(sd) == keys and param_count(m) == params  # the tied head counts once
    d, depth, s = config["hidden_dim"], config["depth"], config["input_size"]
    a = 510 if name.endswith("small") else d
    h = {384: 1024, 512: 1536, 768: 2048, 1024: 2816}[d]
    last = depth - 1
    expected = {
        "cls_emb.weight": (1001, d), "tok_emb.weight": (16385, d), "pos_emb.weight": (s * s, d), "reg_tokens.weight": (1, d),
        f"transformer.layers.{last}.mlp.1.weight": (6 * d, d), f"transformer.layers.{last}.mlp.1.bias": (6 * d,),
        f"transformer.layers.{last}.ln1.weight": (d,), f"transformer.layers.{last}.ln2.weight": (d,),
        f"transformer.layers.{last}.attn.wq.weight": (a, d), f"transformer.layers.{last}.attn.wk.weight": (a, d),
        f"transformer.layers.{last}.attn.wv.weight": (a, d), f"transformer.layers.{last}.attn.wo.weight": (d, a),
        f"transformer.layers.{last}.ff.w1.weight": (h, d), f"transformer.layers.{last}.ff.w3.weight": (h, d),
        f"transformer.layers.{last}.ff.w2.weight": (d, h),
        "last_norm.norm_final.weight": (d,), "last_norm.norm_final.bias": (d,),
        "last_norm.mlp.1.weight": (2 * d, d), "last_norm.mlp.1.bias": (2 * d,),
        "head.weight": (16385, d), "head.bias": (16385,),
    }
    assert {k: sd[k] for k in expected} == expected
    assert len(sd) == 11 * depth + 10
    assert m.head.weight is m.tok_emb.weight


def test_halton_sizes_helper_matches_releases():
    assert HaltonConfig.of_size("small", 24) == HaltonConfig.from_dict(C.HALTON_RELEASES["ImageNet_384_small"])
    assert HaltonConfig.of_size("small").attn_dim == 510 and HaltonConfig.of_size("large").ff_dim == 2816
    with pytest.raises(MGTInputError, match="huge"):
        HaltonConfig.of_size("huge")


def test_taming_vqgan_manifest():
    m = meta_module(lambda: VQGAN.from_config(C.TAMING_VQGAN))
    sd = shapes(m)
    dec = {k: v for k, v in sd.items() if k.startswith("decoder.")}
    enc = {k: v for k, v in sd.items() if k.startswith("encoder.")}
    assert len(dec) == 194 and sum(_numel(v) for v in dec.values()) == 42_449_795
    assert sum(_numel(v) for v in enc.values()) == 29_298_176
    assert param_count(m) - 42_449_795 - 29_298_176 == 393_728
    expected = {
        "quantize.embedding.weight": (1024, 256), "post_quant_conv.weight": (256, 256, 1, 1),
        "decoder.conv_in.weight": (512, 256, 3, 3), "decoder.mid.block_1.conv1.weight": (512, 512, 3, 3),
        "decoder.mid.attn_1.proj_out.weight": (512, 512, 1, 1), "decoder.mid.block_2.norm2.weight": (512,),
        "decoder.up.3.block.0.nin_shortcut.weight": (256, 512, 1, 1),
        "decoder.up.1.block.0.nin_shortcut.weight": (128, 256, 1, 1),
        "decoder.up.4.attn.2.q.weight": (512, 512, 1, 1), "decoder.up.4.upsample.conv.weight": (512, 512, 3, 3),
        "decoder.up.1.upsample.conv.weight": (128, 128, 3, 3), "decoder.norm_out.weight": (128,),
        "decoder.conv_out.weight": (3, 128, 3, 3), "encoder.down.4.attn.1.k.weight": (512, 512, 1, 1),
        "encoder.mid.attn_1.norm.bias": (512,), "encoder.conv_out.weight": (256, 512, 3, 3),
        "quant_conv.weight": (256, 256, 1, 1),
    }
    assert {k: sd[k] for k in expected} == expected
    assert not any(k.startswith("decoder.up.0.upsample") or k.startswith("decoder.up.3.attn") for k in sd)
    assert not any(k.startswith("decoder.up.2.block.0.nin") for k in sd)


def test_llamagen_vq16_is_taming_with_other_names():
    """Same decoder/encoder parameter count as taming; the table of models.md section 8 maps the names."""
    t = shapes(meta_module(lambda: VQGAN.from_config(C.TAMING_VQGAN)))
    m = meta_module(lambda: VQGAN.from_config(C.LLAMAGEN_VQ16))
    sd = shapes(m)
    assert sum(_numel(v) for k, v in sd.items() if k.startswith("decoder.")) == 42_449_795
    assert sd["quantize.embedding.weight"] == (16384, 8) and sd["quantize.codebook_used"] == (65536,)
    assert sd["quant_conv.weight"] == (8, 256, 1, 1) and sd["post_quant_conv.weight"] == (256, 8, 1, 1)

    def taming_name(k: str) -> str:
        for a, b in (("decoder.mid.0.", "decoder.mid.block_1."), ("decoder.mid.1.", "decoder.mid.attn_1."),
                     ("decoder.mid.2.", "decoder.mid.block_2.")):
            k = k.replace(a, b)
        if k.startswith("decoder.conv_blocks."):
            parts = k.split(".")
            parts[1], parts[2] = "up", str(4 - int(parts[2]))
            if parts[3] == "res":
                parts[3] = "block"
            k = ".".join(parts)
        return k

    dec = {taming_name(k): v for k, v in sd.items() if k.startswith("decoder.")}
    assert dec == {k: v for k, v in t.items() if k.startswith("decoder.")}


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def test_reduced_width_key_counts():
    assert len(shapes(MaskGITTransformer.from_config(C.tiny_maskgit()))) == 41
    assert len(shapes(HaltonTransformer.from_config(C.tiny_halton()))) == 32


def _random(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return module.eval()


@pytest.mark.parametrize("family", ["v1", "halton"])
def test_transformer_forward_and_denoiser(family):
    torch.manual_seed(0)
    if family == "v1":
        m, D = _random(MaskGITTransformer.from_config(C.tiny_maskgit())), MaskGITDenoiser
    else:
        m, D = _random(HaltonTransformer.from_config(C.tiny_halton())), HaltonDenoiser
    assert m.mask_id == 16 and m.grid == (4, 4)
    tokens = torch.randint(0, 17, (3, 4, 4))
    labels = torch.tensor([0, 4, 9])
    cond = m(tokens, labels, torch.tensor([False, False, False]))
    assert cond.shape == (3, 16, 17) and cond.dtype == torch.float32
    uncond = m(tokens, labels, torch.tensor([True, True, True]))
    assert not torch.allclose(cond, uncond)
    # the dropped label is the same for every class
    assert torch.allclose(uncond, m(tokens, torch.tensor([1, 2, 3]), torch.ones(3, dtype=torch.bool)), atol=1e-5)
    d = D(m, labels)
    assert d.mask_id == 16 and d.grid == (4, 4)
    lu, lc = d(tokens, 0, "both")
    assert lu.shape == lc.shape == (3, 16, 4, 4)
    torch.testing.assert_close(lc, cond[..., :16].transpose(1, 2).reshape(3, 16, 4, 4), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lu, uncond[..., :16].transpose(1, 2).reshape(3, 16, 4, 4), atol=1e-5, rtol=1e-5)
    assert d(tokens, 0, "cond")[0] is None and d(tokens, 0, "uncond")[1] is None
    assert D(m, labels, mask_logit=True)(tokens, 0, "cond")[1].shape == (3, 17, 4, 4)
    r = sample(d, SamplerSettings(steps=3, guidance_scale=2.0), full_mask(3, 16, d.mask_id, torch.device("cpu")),
               torch.Generator().manual_seed(1))
    assert r.tokens.shape == (3, 16) and int(r.tokens.max()) < 16 and int(r.tokens.min()) >= 0
    with pytest.raises(MGTInputError, match=r"\[0, 9\]"):
        D(m, [10])
    with pytest.raises(MGTInputError, match="4x4"):
        m(torch.zeros(1, 5, 5, dtype=torch.long), torch.tensor([0]))


def test_halton_head_is_tied():
    m = _random(HaltonTransformer.from_config(C.tiny_halton()))
    assert m.head.weight is m.tok_emb.weight
    m.tok_emb.weight = torch.nn.Parameter(torch.zeros_like(m.tok_emb.weight))
    m.tie_weights()
    assert m.head.weight is m.tok_emb.weight


@pytest.mark.parametrize("config", [C.tiny_taming(), C.tiny_llamagen()], ids=["taming", "llamagen"])
def test_vqgan_decode_encode(config):
    v = _random(VQGAN.from_config(config))
    v.quantize.embedding.weight.data.normal_()
    ids = torch.randint(0, 16, (2, 4, 4))
    raw = v.decode_raw(ids)
    img = v.decode(ids)
    assert img.shape == (2, 3, 8, 8) and v.factor == 2
    torch.testing.assert_close(img, ((raw + 1) / 2).clamp(0, 1))
    assert v.encode(img).shape == (2, 4, 4)
    with pytest.raises(MGTInputError, match=r"\[0, 15\]"):
        v.decode(torch.full((1, 4, 4), 16))


def test_llamagen_codebook_is_l2_normalised_at_lookup():
    v = VQGAN.from_config(C.tiny_llamagen())
    torch.nn.init.normal_(v.quantize.embedding.weight)
    z = v.quantize.lookup(torch.arange(16).view(1, 4, 4))
    torch.testing.assert_close(z.norm(dim=1), torch.ones(1, 4, 4))
    t = VQGAN.from_config(C.tiny_taming())
    assert not t.quantize.l2_norm


def test_config_errors_name_the_problem():
    with pytest.raises(MGTLoadError, match="unknown MaskGIT v1 config keys"):
        MaskGITConfig.from_dict({**C.MASKGIT_V1_256, "hiden_dim": 3})
    with pytest.raises(MGTLoadError, match="proj=2"):
        HaltonConfig.from_dict({**C.halton("base"), "proj": 2})
    with pytest.raises(MGTLoadError, match="multiples of 32"):
        VQGANConfig.from_dict({**C.TAMING_VQGAN, "ch": 48})
    taming_yaml = {"embed_dim": 256, "n_embed": 1024, "ddconfig": {
        "double_z": False, "z_channels": 256, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
        "ch_mult": [1, 1, 2, 2, 4], "num_res_blocks": 2, "attn_resolutions": [16], "dropout": 0.0}}
    assert VQGANConfig.from_dict(taming_yaml) == VQGANConfig.from_dict(C.TAMING_VQGAN)
    llama_args = {"codebook_size": 16384, "codebook_embed_dim": 8}
    assert VQGANConfig.from_dict(llama_args) == VQGANConfig.from_dict(C.LLAMAGEN_VQ16)


OFFICIAL = Path(__file__).resolve().parents[1] / ".cache" / "official"


@pytest.mark.skipif(not (OFFICIAL / "halton" / "Network" / "transformer.py").is_file()
                    or not (OFFICIAL / "maskgit-v1" / "Network" / "transformer.py").is_file(),
                    reason="official sources not fetched (dev machines only; see tools/parity_official_maskgit.py)")
def test_official_parity(capsys):
    """Our classes against the official ones on random reduced weights (tools/parity_official_maskgit.py)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("parity_maskgit", OFFICIAL.parents[1] / "tools" / "parity_official_maskgit.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tool.transformers(OFFICIAL)
    tool.vqgans(OFFICIAL)
    r = tool.RESULTS
    assert len(r) == 12 and r["LlamaGen VQ-16 encode ids differ"] == 0
    assert all(v <= 1e-6 for k, v in r.items() if "transformer" in k and "float32" in k), r
    assert all(v <= 2e-2 for k, v in r.items() if "transformer" in k), r
    assert all(v <= 1e-4 for k, v in r.items() if "VQ" in k), r


# Seeded goldens (fp32, CPU): recorded with torch 2.13.0 when the official-parity check above gave
# max |diff| = 0 (transformers) / < 4e-6 (VQGANs); they lock that behaviour where the official
# sources are absent. Weights: N(0, 0.2) from torch.Generator seeds (stable across torch versions).
GOLDEN_TRANSFORMERS = {
    "v1": (23.29782848013565, 309.1017732168548, [0.40292489528656006, -1.2039978504180908, -0.6928943395614624],
           0.40084391832351685),
    "halton": (-142.6896468065679, 226.6946313045919, [0.6870326995849609, -0.5151002407073975, -0.012788176536560059],
               -0.25045162439346313),
}
GOLDEN_VQ = {
    "taming": (-31.866394367069006, 71.77223353460431, [-0.6583133339881897, -0.18263602256774902, 0.39474695920944214]),
    "llamagen": (27.72574071586132, 136.51879079639912, [0.275329053401947, -0.5052580833435059, -0.17041969299316406]),
}


def _seeded(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return module.eval().requires_grad_(False)


@pytest.mark.parametrize("family", ["v1", "halton"])
def test_transformer_goldens(family):
    cls, cfg = (MaskGITTransformer, C.tiny_maskgit()) if family == "v1" else (HaltonTransformer, C.tiny_halton())
    m = _seeded(cls.from_config(cfg), 11)
    tokens = torch.randint(0, 17, (2, 4, 4), generator=torch.Generator().manual_seed(12))
    assert tokens.flatten().tolist()[:6] == [16, 2, 4, 5, 7, 3]
    with torch.inference_mode():
        out = m(tokens, torch.tensor([2, 5]), torch.tensor([False, True]))
    total, absolute, first, last = GOLDEN_TRANSFORMERS[family]
    assert out.double().sum().item() == pytest.approx(total, rel=1e-5, abs=1e-4)
    assert out.double().abs().sum().item() == pytest.approx(absolute, rel=1e-6)
    assert out[0, 0, :3].tolist() == pytest.approx(first, rel=1e-5, abs=1e-6)
    assert out[1, 15, -1].item() == pytest.approx(last, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("layout", ["taming", "llamagen"])
def test_vqgan_goldens(layout):
    v = _seeded(VQGAN.from_config(C.tiny_taming() if layout == "taming" else C.tiny_llamagen()), 13)
    ids = torch.randint(0, 16, (1, 4, 4), generator=torch.Generator().manual_seed(14))
    with torch.inference_mode():
        img = v.decode_raw(ids)
    total, absolute, pixel = GOLDEN_VQ[layout]
    assert img.double().sum().item() == pytest.approx(total, rel=1e-5, abs=1e-4)
    assert img.double().abs().sum().item() == pytest.approx(absolute, rel=1e-6)
    assert img[0, :, 0, 0].tolist() == pytest.approx(pixel, rel=1e-5, abs=1e-6)


def test_halton_attention_narrower_than_hidden():
    """``small`` has 6 heads of 85 (attention width 510 < 512): q/k/v (a, d), wo (d, a)."""
    m = _seeded(HaltonTransformer.from_config(C.tiny_halton(heads=6)), 5)
    assert m.transformer.layers[0].attn.wq.weight.shape == (60, 64) and m.transformer.layers[0].attn.wo.weight.shape == (64, 60)
    out = m(torch.randint(0, 17, (2, 4, 4)), torch.tensor([1, 2]), torch.tensor([False, True]))
    assert out.shape == (2, 16, 17) and torch.isfinite(out).all()


def test_family_mismatch_in_config_is_refused():
    with pytest.raises(MGTLoadError, match="halton"):
        MaskGITConfig.from_dict(C.halton("base"))
    with pytest.raises(MGTLoadError, match="maskgit-v1"):
        HaltonConfig.from_dict(C.MASKGIT_V1_256)

"""Loading the real folder layout, numerics, sizes, the text path, and every bad input's message."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from mgt_testing import make_tiny_folder, randomize
from safetensors.torch import load_file, save_file

import mgt_core
from mgt_core.errors import MGTInputError, MGTLoadError
from mgt_core.loading.pipeline import load_text_encoder, load_transformer, load_vq
from mgt_core.models.configs import tiny_clip_text, tiny_transformer, tiny_vq
from mgt_core.models.meissonic import MeissonicTransformer
from mgt_core.models.vq import VQModel


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_tiny_folder(tmp_path_factory.mktemp("tiny") / "model")


def inputs(b=2, h=8, w=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 80, (b, h, w), generator=g)
    ids[:, : h // 2] = 79
    return ids, torch.randn(b, 24, 24, generator=g), torch.randn(b, 32, generator=g), torch.tensor([[48.0, 64, 0, 0, 6]] * b)


def test_round_trip_gives_identical_outputs(folder):
    pipe = mgt_core.load_pipeline(folder)
    raw = load_file(os.path.join(folder, "transformer", "diffusion_pytorch_model.safetensors"))
    ref = MeissonicTransformer.from_config(tiny_transformer(True))
    ref.load_state_dict(raw, strict=True)
    ids, txt, pooled, micro = inputs()
    with torch.no_grad():
        assert torch.equal(pipe.transformer(ids, txt, pooled, 5, micro), ref(ids, txt, pooled, 5, micro))
    assert pipe.info.steps == 6 and pipe.info.family == "demo"


def test_bf16_agrees_with_fp32(folder):
    a = mgt_core.load_pipeline(folder, dtype=torch.float32)
    b = mgt_core.load_pipeline(folder, dtype=torch.bfloat16)
    assert b.transformer.dtype == torch.bfloat16 and b.vq.dtype == torch.bfloat16
    ids, txt, pooled, micro = inputs()
    with torch.no_grad():
        la = a.transformer(ids, txt, pooled, 2, micro)  # 2000 is exact in bf16 (3000 rounds to 3008)
        lb = b.transformer(ids, txt.bfloat16(), pooled.bfloat16(), 2, micro.bfloat16()).float()
    rel = (la - lb).norm() / la.norm()
    assert rel < 0.03, f"relative L2 difference {rel:.4f} (stated tolerance 3%)"


def test_fp16_load_keeps_the_vq_out_of_fp16(folder):
    p = mgt_core.load_pipeline(folder, dtype=torch.float16)
    assert p.transformer.dtype == torch.float16 and p.vq.dtype == torch.float32


@pytest.mark.parametrize("down", [True, False])
@pytest.mark.parametrize("hw", [(4, 4), (8, 6), (6, 10), (12, 4)])
def test_any_size_and_rope_ids_follow_the_transformer_grid(down, hw):
    m = randomize(MeissonicTransformer.from_config(tiny_transformer(down)), 1)
    ids, txt, pooled, micro = inputs(1, *hw)
    with torch.no_grad():
        out = m(ids, txt, pooled, 2, micro)
    assert out.shape == (1, 64, *hw) and torch.isfinite(out).all()
    gh, gw = (hw[0] // 2, hw[1] // 2) if down else hw
    cos, sin = m.rope(gh, gw, 24, torch.device("cpu"))
    assert cos.shape == (24 + gh * gw, 16)
    assert torch.equal(cos[:24], torch.ones(24, 16)) and torch.equal(sin[:24], torch.zeros(24, 16))
    # the last image token sits at (row gh-1, col gw-1): its row axis angle uses position gh-1
    assert sin[-1, 4] == pytest.approx(torch.sin(torch.tensor(float(gh - 1))).item(), abs=1e-6)
    assert sin[-1, 10] == pytest.approx(torch.sin(torch.tensor(float(gw - 1))).item(), abs=1e-6)


def test_training_step_after_an_inference_preview():
    """A same-size forward in inference mode (a preview, an eval) must not leave tables autograd refuses."""
    m = randomize(MeissonicTransformer.from_config(tiny_transformer(True)), 1)
    ids, txt, pooled, micro = inputs(1, 8, 6)
    with torch.inference_mode():
        m(ids, txt, pooled, 2, micro)
    m(ids, txt, pooled, 2, micro).square().mean().backward()
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)


def test_odd_grid_with_downsampling_is_a_clear_error():
    m = MeissonicTransformer.from_config(tiny_transformer(True))
    with pytest.raises(MGTInputError, match="divisible by 2"):
        m.check_grid(5, 6)


def test_pipeline_size_rule(folder):
    p = mgt_core.load_pipeline(folder)
    assert p.grid_for(40, 24) == (10, 6)
    with pytest.raises(MGTInputError, match="multiple of 8"):
        p.grid_for(36, 32)


def test_vq_matches_diffusers_vqmodel():
    diffusers = pytest.importorskip("diffusers")
    cfg = tiny_vq()
    ref = diffusers.VQModel(**{k: v for k, v in cfg.items() if not k.startswith("_")}).eval()
    randomize(ref, 3, std=0.05)
    ours = VQModel.from_config(cfg).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    ids = torch.randint(0, 64, (2, 6, 4))
    img = torch.rand(2, 3, 24, 16)
    with torch.no_grad():
        a = ref.decode(ids, force_not_quantize=True, shape=(2, 6, 4, 8)).sample.clamp(0, 1)
        assert (a - ours.decode(ids)).abs().max() < 1e-5
        want = ref.quantize(ref.encode(img).latents)[2][2].reshape(2, 6, 4)
        assert torch.equal(ours.encode(img), want)


def test_tiled_decode_matches_whole_decode():
    vq = randomize(VQModel.from_config({**tiny_vq(), "block_out_channels": [32, 32, 64, 64], "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4}), 5, std=0.05).eval()
    ids = torch.randint(0, 64, (1, 12, 10))
    with torch.no_grad():
        whole = vq.decode(ids)
        for tile in (16, 40):
            tiled = vq.decode_tiled(ids, tile=tile)
            assert (whole - tiled).abs().max() < 1e-4


def test_vq_refuses_fp16():
    vq = VQModel.from_config(tiny_vq()).half()
    with pytest.raises(MGTInputError, match="float16"):
        vq.decode(torch.zeros(1, 2, 2, dtype=torch.long))


# ---------------------------------------------------------------- text path


def test_text_hidden_is_penultimate_before_final_layernorm(folder):
    p = mgt_core.load_pipeline(folder)
    cond = p.encode_prompt(["a red circle on a blue background"])
    ids = p.tokenizer(["a red circle on a blue background"], padding="max_length", max_length=24, return_tensors="pt").input_ids
    with torch.no_grad():
        out = p.text_encoder(input_ids=ids, output_hidden_states=True)
        ln = p.text_encoder.text_model.final_layer_norm(out.hidden_states[-2])
    assert cond.hidden.shape == (1, 24, 24)
    assert torch.equal(cond.hidden, out.hidden_states[-2])
    assert not torch.allclose(cond.hidden, ln)
    assert torch.equal(cond.pooled, out.text_embeds)


def test_pad_token_comes_from_the_tokenizer_files(folder, tmp_path):
    p = mgt_core.load_pipeline(folder)
    ids = p.tokenizer(["a red circle"], padding="max_length", max_length=24).input_ids[0]
    assert ids[-1] == p.tokenizer.pad_token_id == 623
    other = tmp_path / "tok"
    shutil.copytree(os.path.join(folder, "tokenizer"), other)
    special = json.loads((other / "special_tokens_map.json").read_text())
    special["pad_token"] = "!"
    (other / "special_tokens_map.json").write_text(json.dumps(special))
    cfg = json.loads((other / "tokenizer_config.json").read_text())
    cfg["pad_token"] = "!"
    (other / "tokenizer_config.json").write_text(json.dumps(cfg))
    from mgt_core.models.text import load_tokenizer

    tok = load_tokenizer(str(other))
    assert tok(["a red circle"], padding="max_length", max_length=24).input_ids[0][-1] == tok.convert_tokens_to_ids("!")


def test_full_clip_file_loads_only_its_text_tower(tmp_path):
    from transformers import CLIPConfig, CLIPModel

    tc = {k: v for k, v in tiny_clip_text().items() if k not in ("architectures", "model_type")}
    full = CLIPModel(CLIPConfig(text_config=tc, vision_config={"hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2, "num_hidden_layers": 1, "image_size": 32, "patch_size": 16}, projection_dim=32))
    state = {k: v.contiguous() for k, v in full.state_dict().items()}
    state["text_model.embeddings.position_ids"] = torch.arange(24)[None]  # older files carry it
    path = tmp_path / "model.safetensors"
    save_file(state, str(path))
    te = load_text_encoder(str(path), config=tiny_clip_text())
    assert torch.equal(te.text_model.embeddings.token_embedding.weight, full.text_model.embeddings.token_embedding.weight)
    assert torch.equal(te.text_projection.weight, full.text_projection.weight)
    assert te.text_model.embeddings.position_ids.device.type == "cpu"
    inferred = load_text_encoder(str(path))  # no config: inferred from the shapes
    assert inferred.config.hidden_size == 24 and inferred.config.num_hidden_layers == 3


# ---------------------------------------------------------------- bad input


def write(path, tensors):
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return str(path)


def tiny_state():
    return MeissonicTransformer.from_config(tiny_transformer(True)).state_dict()


def test_missing_keys_are_named(tmp_path):
    sd = tiny_state()
    for k in ["transformer_blocks.0.attn.to_q.weight", "mlm_layer.conv2.weight", "embed.conv.weight"]:
        del sd[k]
    with pytest.raises(MGTLoadError, match=r"3 missing keys \(embed.conv.weight, mlm_layer.conv2.weight, transformer_blocks.0.attn.to_q.weight\); is this a Meissonic checkpoint\?"):
        load_transformer(write(tmp_path / "t.safetensors", sd), config=tiny_transformer(True))


def test_unexpected_keys_and_shape_mismatches_are_named(tmp_path):
    sd = tiny_state()
    sd["extra.weight"] = torch.zeros(2)
    with pytest.raises(MGTLoadError, match=r"1 unexpected keys \(extra.weight\)"):
        load_transformer(write(tmp_path / "u.safetensors", sd), config=tiny_transformer(True))
    sd = tiny_state()
    sd["context_embedder.weight"] = torch.zeros(32, 25)
    with pytest.raises(MGTLoadError, match=r"context_embedder.weight: file \[32, 25\], model \[32, 24\]"):
        load_transformer(write(tmp_path / "s.safetensors", sd), config=tiny_transformer(True))


def test_truncated_and_wrong_files(tmp_path):
    path = write(tmp_path / "t.safetensors", tiny_state())
    data = open(path, "rb").read()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(MGTLoadError, match=r"cut.safetensors: tensor .* ends at byte \d+ but the file has \d+ bytes"):
        load_transformer(str(cut), config=tiny_transformer(True))
    pickle = tmp_path / "model.ckpt"
    pickle.write_bytes(b"\x80\x04\x95" + b"x" * 100)
    with pytest.raises(MGTLoadError, match="not a safetensors file"):
        load_transformer(str(pickle), config=tiny_transformer(True))
    with pytest.raises(MGTLoadError, match="file not found"):
        load_vq(str(tmp_path / "missing.safetensors"), config=tiny_vq())


def test_wrong_model_into_the_wrong_loader(tmp_path, folder):
    vq_file = os.path.join(folder, "vqvae", "diffusion_pytorch_model.safetensors")
    with pytest.raises(MGTLoadError, match=r"vqvae/config.json: missing axes_dims_rope.*is this a Meissonic transformer config"):
        load_transformer(vq_file)
    lone = tmp_path / "lone.safetensors"
    shutil.copy(vq_file, lone)
    with pytest.raises(MGTLoadError, match="is this a Meissonic/Monetico transformer file"):
        load_transformer(str(lone))
    with pytest.raises(MGTLoadError, match="not an MGT model folder"):
        mgt_core.load_pipeline(str(tmp_path))
    with pytest.raises(MGTLoadError, match="not a folder"):
        mgt_core.load_pipeline(str(tmp_path / "nope"))


def test_bad_configs(tmp_path, folder):
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    cfg = json.loads((bad / "transformer" / "config.json").read_text())
    cfg["pooled_projection_dim"] = 40
    (bad / "transformer" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(MGTLoadError, match=r"pooled_projection_dim \(40\) must equal heads\*head_dim \(32\)"):
        mgt_core.load_pipeline(str(bad))
    (bad / "transformer" / "config.json").write_text("{not json")
    with pytest.raises(MGTLoadError, match="not valid JSON"):
        mgt_core.load_pipeline(str(bad))


def test_pickles_are_refused_not_loaded(tmp_path, folder):
    bad = tmp_path / "p"
    shutil.copytree(folder, bad)
    w = bad / "vqvae" / "diffusion_pytorch_model.safetensors"
    w.rename(bad / "vqvae" / "diffusion_pytorch_model.bin")
    with pytest.raises(MGTLoadError, match="pickle files are not loaded"):
        mgt_core.load_pipeline(str(bad))


def test_single_files_with_inferred_configs(folder, tmp_path):
    # A VQ without config: groups are not visible in the weights, so a sidecar json is used when present.
    src = os.path.join(folder, "vqvae", "diffusion_pytorch_model.safetensors")
    dst = tmp_path / "my_vq.safetensors"
    shutil.copy(src, dst)
    (tmp_path / "my_vq.json").write_text(json.dumps(tiny_vq()))
    vq = load_vq(str(dst))
    assert vq.config.norm_num_groups == 8 and vq.factor == 4

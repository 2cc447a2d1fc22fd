"""SCQ: weight codes and their error bound, QuantLinear storage and dtype rules, W8/W4 accuracy on a
random model, per-CFG-half activation scales, calibration/QAT/freeze, save -> load round trips, and
every bad setting's error."""

from __future__ import annotations

import copy
import json
import os

import pytest
import torch
from mgt_testing import make_tiny_folder, randomize
from safetensors.torch import load_file, save_file

import mgt_core
from mgt_core.accel import cfg_branches
from mgt_core.accel import quant as Q
from mgt_core.errors import MGTInputError, MGTLoadError
from mgt_core.models.configs import tiny_transformer
from mgt_core.models.meissonic.transformer import MeissonicTransformer

G = 8  # divides every in_features of the tiny config (24, 32, 128, 160, 256, 1312)


def tiny(seed=1):
    return randomize(MeissonicTransformer.from_config(tiny_transformer(True, 2, 2)), seed).eval()


def inputs(b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 80, (b, 8, 8), generator=g)
    ids[:, :4] = 79
    return ids, torch.randn(b, 24, 24, generator=g), torch.randn(b, 32, generator=g), torch.tensor([[64.0, 64, 0, 0, 6]] * b)


def run(model, x, t=3):
    with torch.no_grad():
        return model(x[0], x[1], x[2], t, x[3])


def rel(a, b):
    return float((a.detach().float() - b.detach().float()).norm() / b.detach().float().norm())


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_tiny_folder(tmp_path_factory.mktemp("q") / "model")


# ----------------------------------------------------------------------------------------------
# Codes


@pytest.mark.parametrize("bits", [4, 8])
def test_weight_codes_error_bound(bits):
    w = torch.randn(16, 64) * torch.rand(16, 1) * 3
    w[3, :G] = 0.0  # an all-zero group
    w[5, G : 2 * G] = torch.rand(G) + 1  # an all-positive group
    q, scale, zero = Q.quantize_weight(w, bits, G)
    assert q.dtype == zero.dtype == torch.uint8 and scale.dtype == torch.bfloat16 and scale.shape == (16, 64 // G)
    assert int(q.max()) <= 2**bits - 1
    deq = Q.dequantize_weight(q, scale, zero, torch.float32)
    bound = scale.float().repeat_interleave(G, 1) / 2
    assert ((deq - w).abs() <= bound * (1 + 1e-5) + 1e-12).all()  # rounding only, no clipping
    assert torch.equal(deq[3, :G], torch.zeros(G))
    packed = Q.pack_uint4(q & 15)
    assert packed.shape == (16, 32) and torch.equal(Q.unpack_uint4(packed), q & 15)


def test_quantlinear_stores_packed_codes_and_keeps_scale_dtypes():
    lin = torch.nn.Linear(64, 24)
    q4 = Q.QuantLinear.from_linear(lin, 4, 16, act_scales=True)
    assert dict((n, (tuple(b.shape), b.dtype)) for n, b in q4.named_buffers()) == {
        "qweight": ((24, 32), torch.uint8), "scale": ((24, 4), torch.bfloat16), "zero": ((24, 4), torch.uint8),
        "input_scale": ((2,), torch.float32), "output_scale": ((2,), torch.float32),
    }
    assert [n for n, _ in q4.named_parameters()] == ["bias"]  # no float weight kept
    q4.input_scale.copy_(torch.tensor([1 / 3, 1e-30]))
    before = {n: b.clone() for n, b in q4.named_buffers()}
    q4.to(torch.float16).to(torch.bfloat16)
    assert q4.bias.dtype == torch.bfloat16
    for n, b in q4.named_buffers():
        assert b.dtype == before[n].dtype and torch.equal(b, before[n]), n
    x = torch.randn(3, 64, dtype=torch.bfloat16)
    assert q4(x).dtype == torch.bfloat16
    q8 = Q.QuantLinear.from_linear(torch.nn.Linear(64, 24), 8, 16)
    assert q8.qweight.shape == (24, 64) and q8.input_scale is None


def test_w8_close_to_fp32_and_w4_further():
    """Stated bounds on the random tiny model: W8 logits within 3% relative L2, W4 within 50%."""
    base = tiny()
    x = inputs()
    ref = run(base, x)
    w8 = run(Q.quantize_model(copy.deepcopy(base), "w8", G), x)
    w4 = run(Q.quantize_model(copy.deepcopy(base), "w4", G), x)
    e8, e4 = rel(w8, ref), rel(w4, ref)
    assert e8 < 0.03, e8
    assert e8 < e4 < 0.5, (e8, e4)
    lin = torch.nn.Linear(256, 64)
    x = torch.randn(5, 256)
    assert rel(Q.QuantLinear.from_linear(lin, 8, 128)(x), lin(x)) < 0.005


def test_every_linear_is_replaced_and_memory_shrinks():
    base = tiny()
    n_linear = sum(type(m) is torch.nn.Linear for m in base.modules())
    before = Q.weight_bytes(base)["total"]
    m = Q.quantize_model(base, "w4", G)
    assert not any(type(x) is torch.nn.Linear for x in m.modules())
    assert len(Q.quant_layers(m)) == n_linear
    b = Q.weight_bytes(m)
    assert b["total"] < 0.35 * before  # fp32 -> 4 bits + 3 bytes per group of 8
    # exact: every weight is half a byte plus bf16 scale + uint8 zero per group
    expect = sum(q.in_features * q.out_features // 2 + 3 * q.in_features * q.out_features // G for q in Q.quant_layers(m).values())
    expect += sum(q.bias.numel() * 4 for q in Q.quant_layers(m).values() if q.bias is not None)
    assert b["quantized_layers"] == expect
    assert Q.estimate_weight_bytes(tiny(), "w4", G, torch.float32) == b  # from shapes alone
    meta = MeissonicTransformer.from_config(tiny_transformer(True, 2, 2)).to("meta")
    a8 = Q.quantize_model(tiny().to(torch.bfloat16), "w4a8", G)
    assert Q.estimate_weight_bytes(meta, "w4a8", G) == Q.weight_bytes(a8)
    assert Q.estimate_weight_bytes(meta, None, G, torch.float32)["total"] == before


def test_bf16_compute_path_runs():
    m = Q.quantize_model(tiny().to(torch.bfloat16), "w4", G)
    ids, txt, pooled, micro = inputs()
    with torch.no_grad():
        out = m(ids, txt.bfloat16(), pooled.bfloat16(), 2, micro.bfloat16())
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


# ----------------------------------------------------------------------------------------------
# Activation scales per CFG half


def test_observer_ema_first_batch_replaces():
    obs = Q._Observer(0.9)
    obs.update(torch.tensor([[1.0, -2.0], [3.0, 0.5]]))  # [uncond row; cond row]
    assert obs.value.tolist() == [2.0, 3.0]
    obs.update(torch.tensor([[4.0], [1.0]]))
    torch.testing.assert_close(obs.value, torch.tensor([0.9 * 2 + 0.1 * 4, 0.9 * 3 + 0.1 * 1]))
    with cfg_branches("cond"):
        obs.update(torch.tensor([[10.0], [10.0]]))
    torch.testing.assert_close(obs.value, torch.tensor([2.2, 0.9 * 2.8 + 1.0]))  # the uncond half untouched


def test_row_scales_follow_the_cfg_layout():
    s = torch.tensor([1.0, 2.0])
    assert Q._row_scales(s, 4).tolist() == [1, 1, 2, 2]
    assert Q._row_scales(s, 1).tolist() == [2]  # a shared row / no CFG: cond
    with cfg_branches("cond"):
        assert Q._row_scales(s, 2).tolist() == [2, 2]
    with cfg_branches("uncond"):
        assert Q._row_scales(s, 2).tolist() == [1, 1]
    with cfg_branches("both"):
        assert Q._row_scales(s, 6).tolist() == [1, 1, 1, 2, 2, 2]
    x = torch.full((2, 3), 0.7)
    assert Q.fake_quant_act(x, torch.tensor([0.5, 0.01])).tolist() == [[0.5] * 3, [pytest.approx(0.7)] * 3]


def calibrated_w4a8(folder, rule=None, dtype=torch.float32):
    pipe = mgt_core.load_pipeline(folder, dtype=dtype)
    Q.quantize_model(pipe.transformer, "w4a8", G)
    Q.calibrate(pipe, ["a red circle on a blue background", "two green squares"], steps=4, rule=rule)
    return pipe


def test_calibration_gives_different_scales_per_cfg_half(folder):
    pipe = calibrated_w4a8(folder)
    layers = Q.quant_layers(pipe.transformer)
    assert all(m.act == Q.ACT_INT8 and (m.input_scale > 0).all() and (m.output_scale > 0).all() for m in layers.values())
    differ = [n for n, m in layers.items() if not torch.equal(m.input_scale[0], m.input_scale[1])]
    assert len(differ) > len(layers) // 2, differ
    # the timestep embedder sees one shared row: both halves get the same scale
    t1 = layers["time_text_embed.timestep_embedder.linear_1"]
    assert torch.equal(t1.input_scale[0], t1.input_scale[1])
    # each half reads its own scale: coarser uncond scales change the uncond rows only
    x = inputs()
    out = run(pipe.transformer, x)
    for m in layers.values():
        m.input_scale[0] *= 4
    with cfg_branches("both"):
        changed = run(pipe.transformer, x)
    assert not torch.equal(changed[0], out[0]) and torch.equal(changed[1], out[1])


def test_activation_rule_is_explicit(folder):
    pipe = calibrated_w4a8(folder, rule=Q.ActivationRule(int8_fraction=1 / 3, float_layers=("context_embedder",)))
    layers = Q.quant_layers(pipe.transformer)
    acts = {n: m.act for n, m in layers.items()}
    ranked = sorted(layers, key=lambda n: float(layers[n].output_scale.max()))
    int8 = {n for n, a in acts.items() if a == Q.ACT_INT8}
    assert int8 == set(ranked[: len(ranked) // 3]) - {"context_embedder"}  # the smallest output ranges
    assert acts["context_embedder"] == Q.ACT_FLOAT and len(int8) >= len(ranked) // 3 - 1


# ----------------------------------------------------------------------------------------------
# Save / load, QAT


@pytest.mark.parametrize("mode", ["w8", "w4", "w4a8"])
def test_save_load_round_trip_is_exact(folder, tmp_path, mode):
    if mode == "w4a8":
        pipe = calibrated_w4a8(folder)
        model = pipe.transformer
    else:
        model = Q.quantize_model(mgt_core.load_pipeline(folder, load_text=False).transformer, mode, G)
    x = inputs()
    out = run(model, x)
    Q.save_quantized(model, tmp_path / "tq")
    qmap = json.loads((tmp_path / "tq" / Q.QUANT_MAP).read_text())
    assert qmap["mode"] == mode and len(qmap["layers"]) == len(Q.quant_layers(model))
    back = Q.load_quantized_transformer(tmp_path / "tq")
    sa, sb = model.state_dict(), back.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k
    assert {n: m.act for n, m in Q.quant_layers(back).items()} == {n: m.act for n, m in Q.quant_layers(model).items()}
    assert torch.equal(run(back, x), out)


def test_qat_then_secondary_calibration_then_reload_keeps_the_fine_tuned_model(folder, tmp_path):
    pipe = calibrated_w4a8(folder)
    model = pipe.transformer
    before = {n: m.qweight.clone() for n, m in Q.quant_layers(model).items()}
    scales = {n: m.output_scale.clone() for n, m in Q.quant_layers(model).items()}
    g = torch.Generator().manual_seed(0)
    cond = pipe.encode_prompt(["a red circle on a blue background"] * 2)
    uncond = pipe.encode_prompt([""] * 2)
    batches = [Q.QATBatch(torch.randint(0, 64, (2, 8, 8), generator=g), cond, uncond, torch.tensor([[32.0, 32, 0, 0, 6]] * 2)) for _ in range(3)]
    losses = Q.qat_finetune(model, batches, steps=4, lr=5e-3)
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    assert all(m.latent is None for m in Q.quant_layers(model).values())
    assert any(not torch.equal(before[n], m.qweight) for n, m in Q.quant_layers(model).items())
    Q.secondary_calibration(pipe, ["a red circle on a blue background"], steps=4)
    assert any(not torch.equal(scales[n], m.output_scale) for n, m in Q.quant_layers(model).items())
    Q.freeze(model)
    x = inputs()
    out = run(model, x)
    Q.save_quantized(model, tmp_path / "scq")
    back = Q.load_quantized_transformer(tmp_path / "scq")
    assert torch.equal(run(back, x), out)  # FIX 1: the fine-tuned weights and new scales come back
    # and through the pipeline loader, as a variant of the model folder
    os.symlink(tmp_path / "scq", os.path.join(folder, "transformer_scq"))
    try:
        assert Q.quantized_variants(folder) == {"scq": os.path.join(folder, "transformer_scq")}
        p2 = mgt_core.load_pipeline(folder, quantized="scq")
        assert torch.equal(run(p2.transformer, x), out)
        with pytest.raises(MGTLoadError, match="no quantized variant 'w3'"):
            mgt_core.load_pipeline(folder, quantized="w3")
    finally:
        os.remove(os.path.join(folder, "transformer_scq"))


def test_qat_needs_fp32(folder):
    pipe = mgt_core.load_pipeline(folder, dtype=torch.bfloat16, load_text=False)
    Q.quantize_model(pipe.transformer, "w4", G)
    with pytest.raises(MGTInputError, match="fp32"):
        Q.qat_finetune(pipe.transformer, [])


# ----------------------------------------------------------------------------------------------
# Errors


def test_bad_settings_are_clear_errors():
    with pytest.raises(MGTInputError, match="group size 6 does not divide in_features 256"):
        Q.quantize_model(tiny(), "w4", 6)
    with pytest.raises(MGTInputError, match="linear_2: group size 64 does not divide in_features 32"):
        Q.quantize_model(tiny(), "w8", 64)
    with pytest.raises(MGTInputError, match="mode must be one of"):
        Q.quantize_model(tiny(), "w3")
    with pytest.raises(MGTInputError, match="cannot quantize torch.float64"):
        Q.quantize_model(tiny().double(), "w8", G)
    with pytest.raises(MGTInputError, match="meta device"):
        Q.quantize_model(MeissonicTransformer.from_config(tiny_transformer()).to("meta"), "w8", G)
    m = tiny()
    with pytest.raises(MGTInputError, match="even integer"):
        Q.quantize_model(m, "w4", 7)
    assert not Q.quant_layers(m)  # validated before anything changed
    auto = Q.quantize_model(tiny(), "w4", "auto")
    assert auto.context_embedder.group_size == 8 and auto.transformer_blocks[0].ff.net[2].group_size == 128
    with pytest.raises(MGTInputError, match="calibrate"):
        Q.apply_activation_rule(Q.quantize_model(tiny(), "w4a8", G))
    with pytest.raises(MGTInputError, match="w4a8"):
        with Q.calibration(Q.quantize_model(tiny(), "w8", G)):
            pass
    with pytest.raises(MGTInputError, match="int8_fraction"):
        Q.ActivationRule(int8_fraction=1.5)


def write_w8(tmp_path):
    Q.save_quantized(Q.quantize_model(tiny(), "w8", G), tmp_path / "q")
    return tmp_path / "q"


def edit_map(path, fn):
    p = path / Q.QUANT_MAP
    qmap = json.loads(p.read_text())
    fn(qmap)
    p.write_text(json.dumps(qmap))


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda m: m["layers"]["context_embedder"].update(bits=4), "does quantization.json match"),
        (lambda m: m["layers"].pop("context_embedder"), "does quantization.json match"),
        (lambda m: m["layers"].update({"embed.conv": m["layers"]["context_embedder"]}), "not Linear layers"),
        (lambda m: m["layers"]["context_embedder"].update(group_size=10), "group size 10 does not divide in_features 24"),
        (lambda m: m["layers"]["context_embedder"].update(group_size=12), "shape mismatches .*does quantization.json match"),
        (lambda m: m["layers"]["context_embedder"].update(act="int8"), "no activation scales"),
        (lambda m: m.update(mode="w2"), "unknown mode"),
        (lambda m: m.update(format="other"), "not an mgt-quant"),
    ],
)
def test_a_map_that_does_not_match_the_file_is_a_clear_error(tmp_path, edit, match):
    path = write_w8(tmp_path)
    edit_map(path, edit)
    with pytest.raises(MGTLoadError, match=match):
        Q.load_quantized_transformer(path)


def test_wrong_tensor_dtype_in_the_file_is_a_clear_error(tmp_path):
    path = write_w8(tmp_path)
    f = path / Q.WEIGHTS_FILE
    state = load_file(f)
    state["context_embedder.scale"] = state["context_embedder.scale"].float()
    save_file(state, f)
    with pytest.raises(MGTLoadError, match="context_embedder.scale is torch.float32, expected torch.bfloat16"):
        Q.load_quantized_transformer(path)


def test_quantize_tool_writes_a_variant_the_loader_offers(tmp_path):
    from PIL import Image

    from mgt_core.accel import quantize_tool

    folder = make_tiny_folder(tmp_path / "m")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle on a blue background\n\ntwo green squares on a white background\n")
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    for i, colour in enumerate(((200, 30, 30), (30, 200, 30))):
        Image.new("RGB", (48, 40), colour).save(pairs / f"{i}.png")
        (pairs / f"{i}.txt").write_text("a red circle on a blue background")
    (pairs / "orphan.png").write_bytes(b"")  # no caption: skipped
    out = quantize_tool.main([folder, "--mode", "w4a8", "--group-size", "auto", "--prompts", str(prompts),
                              "--qat-pairs", str(pairs), "--qat-steps", "2", "--int8-fraction", "0.5"])
    assert Q.quantized_variants(folder) == {"w4a8": out}
    pipe = mgt_core.load_pipeline(folder, quantized="w4a8")
    acts = [m.act for m in Q.quant_layers(pipe.transformer).values()]
    assert acts.count(Q.ACT_INT8) == len(acts) // 2
    assert pipe("a red circle on a blue background", seed=1).shape == (1, 32, 32, 3)
    assert quantize_tool.main([folder, "--mode", "w8", "--group-size", "8"]).endswith("transformer_w8")
    with pytest.raises(MGTInputError, match="needs --prompts"):
        quantize_tool.main([folder, "--mode", "w4a8"])
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(MGTInputError, match="no prompts"):
        quantize_tool.main([folder, "--prompts", str(tmp_path / "empty.txt")])

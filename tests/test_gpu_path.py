"""The GPU path, checked on the CPU: compiled inference gives the eager tokens (plain and TomeMGT),
compiles once per block class and never per step, falls back cleanly; the sampler loop (with every
design choice and TomeMGT) makes no host sync, proven on the meta device."""

from __future__ import annotations

import pytest
import torch
from mgt_testing import randomize
from torch._dynamo.utils import counters
from torch.utils._python_dispatch import TorchDispatchMode

from mgt_core.accel import cfg_branches, shared_clone
from mgt_core.accel import compile as C
from mgt_core.accel import quant as Q
from mgt_core.accel.tome import apply_tome, tome_generation
from mgt_core.models.configs import tiny_transformer
from mgt_core.models.meissonic.denoiser import MeissonicDenoiser
from mgt_core.models.meissonic.transformer import MeissonicTransformer
from mgt_core.models.text import TextConditioning
from mgt_core.pipeline import make_settings
from mgt_core.sampling.engine import Sampler
from mgt_core.sampling.partial import full_mask


def tiny(layers=2, single=2, seed=1, device="cpu"):
    with torch.device(device):
        model = MeissonicTransformer.from_config(tiny_transformer(True, layers, single))
    return (model if device == "meta" else randomize(model, seed)).eval()


def conditioning(seed, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return TextConditioning(torch.randn(1, 24, 24, generator=g).to(device), torch.randn(1, 32, generator=g).to(device), ["x"])


def generate(model, seed=0, steps=5, grid=(8, 8), **design):
    """Tokens of one CFG generation on the tiny model, TomeMGT seeded like the pipeline does."""
    den = MeissonicDenoiser(model, conditioning(1), conditioning(2), grid, (grid[1] * 8, grid[0] * 8))
    settings = make_settings(steps=steps, guidance_scale=3.0, **design)
    gen = torch.Generator().manual_seed(seed)
    with torch.inference_mode(), tome_generation(model, seed, steps):
        return Sampler(den, settings, gen).run(full_mask(1, grid[0] * grid[1], model.mask_token_id, "cpu")).tokens


def graphs() -> int:
    return counters["stats"]["unique_graphs"]


# ----------------------------------------------------------------------------------------------
# Compiled inference


@pytest.mark.slow
@pytest.mark.skipif(C.compile_unavailable("cpu") is not None, reason="no C++ compiler: inductor cannot run here")
def test_compiled_tokens_equal_eager_tokens_plain_and_tome():
    """fp32 on the CPU: inductor reorders float sums (logits differ by ~1e-6), the tokens do not."""
    model = tiny()
    tome = apply_tome(shared_clone(model), 0.5, single_stream=True)
    eager = [generate(model, s) for s in (0, 1)] + [generate(tome, 0)]
    for m in (model, tome):
        assert C.enable_compile(m) is None
    compiled = [generate(model, s) for s in (0, 1)] + [generate(tome, 0)]
    assert C.compile_status(model) == C.compile_status(tome) == "compiled (inductor)"
    for a, b in zip(eager, compiled, strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(eager[0], eager[2])  # TomeMGT really merged


def test_regions_compile_once_per_block_class_never_per_step():
    model = tiny(layers=3, single=3)
    C.enable_compile(model, backend="eager")  # tracing only: what decides recompiles, without codegen time
    before = graphs()
    generate(model, 0, steps=4)
    first = graphs() - before
    assert first == 2  # DualStreamBlock.forward and SingleStreamBlock.forward, shared by all six blocks
    generate(model, 1, steps=6)  # new seed, new step values: nothing to compile
    clone = shared_clone(model)  # what a node makes per run: the compiled code is shared
    generate(clone, 2, steps=4)
    assert graphs() - before == first
    generate(model, 0, steps=2, grid=(12, 8))  # a new size compiles once, with dynamic sizes
    generate(model, 0, steps=2, grid=(8, 16))
    assert graphs() - before == 2 * first


def test_tome_regions_compile_and_match_eager():
    model = apply_tome(tiny(layers=6, single=6), 0.5, single_stream=True, window=(0.0, 0.75))
    eager = generate(model, 3, steps=6)
    C.enable_compile(model, backend="aot_eager")  # AOT autograd + functionalisation: the graphs inductor gets
    before = graphs()
    assert torch.equal(generate(model, 3, steps=6), eager)
    # the merged dual/single bodies and the plain bodies (unmerged steps of the window), nothing per step
    assert graphs() - before == 4
    generate(model, 4, steps=6)
    assert graphs() - before == 4


def test_no_compiler_is_a_clear_message_and_stays_eager(monkeypatch, caplog):
    model = tiny()
    ref = generate(model)
    monkeypatch.setattr(C, "_has_cxx", lambda: False)
    reason = C.enable_compile(model)
    assert reason is not None and "C++ compiler" in reason
    assert "compiled inference is off on cpu" in caplog.text
    assert model._mgt_compiler is None and C.compile_status(model) == "eager"
    assert C.compile_unavailable("mps") is not None
    assert torch.equal(generate(model), ref)


def test_a_compile_failure_at_run_time_falls_back_once_and_real_errors_still_raise(monkeypatch):
    model = tiny()
    ref = generate(model)
    C.enable_compile(model, backend="eager")

    def broken(fn, settings):
        def run(*args):
            raise RuntimeError("backend exploded")

        return run

    monkeypatch.setattr(C, "compiled", broken)
    with pytest.warns(RuntimeWarning, match="backend exploded"):
        assert torch.equal(generate(model), ref)
    assert C.compile_status(model).startswith("eager (compile failed: RuntimeError: backend exploded")
    compiler = C.RegionCompiler(C.CompileSettings(backend="eager"))

    def bad(x):
        raise ValueError("a bug in the model code")

    with pytest.raises(ValueError, match="a bug"):
        compiler(bad, torch.ones(1))


def test_bad_compile_settings_are_clear_errors():
    with pytest.raises(Exception, match="backend must be one of"):
        C.CompileSettings(backend="tvm")
    with pytest.raises(Exception, match="needs a MeissonicTransformer"):
        C.enable_compile(torch.nn.Linear(2, 2))


# ----------------------------------------------------------------------------------------------
# Host syncs


class SyncRecorder(TorchDispatchMode):
    """Records ops that make the host wait for a device: reading a value back (item, nonzero:
    data-dependent shapes) and blocking copies between host and device."""

    READS = {"aten::_local_scalar_dense", "aten::item", "aten::nonzero", "aten::masked_select", "aten::_unique2"}

    def __init__(self):
        super().__init__()
        self.hits: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func.name()
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        if name in self.READS and any(t.device.type != "cpu" for t in tensors):
            self.hits.append(name)
        moves = name == "aten::_to_copy" or name.startswith("aten::to.")  # to.* is what inference mode dispatches
        if moves and isinstance(out, torch.Tensor) and tensors and tensors[0].device != out.device:
            blocking = not kwargs.get("non_blocking", False) and not (name == "aten::to.device" and len(args) > 3 and args[3])
            if blocking:
                self.hits.append(f"copy {tensors[0].device} -> {out.device}")
        if name == "aten::copy_" and len(tensors) > 1 and tensors[0].device != tensors[1].device:
            if not (len(args) > 2 and args[2]):
                self.hits.append(f"copy {tensors[1].device} -> {tensors[0].device}")
        return out


def test_the_recorder_sees_syncs():
    x = torch.ones(3, device="meta")
    for inference in (False, True):
        with torch.inference_mode(inference), SyncRecorder() as rec:
            torch.ones(3).to("meta")
            torch.ones(3).to(torch.device("meta"), torch.float32)
            torch.ones(3).to("meta", non_blocking=True)  # an asynchronous copy (from pinned memory on CUDA)
        assert rec.hits == ["copy cpu -> meta"] * 2
    for read_back in (lambda: x.sum().item(), x.nonzero, lambda: bool(x.any())):  # cannot even run on meta
        with pytest.raises((RuntimeError, NotImplementedError)):
            read_back()


@pytest.mark.parametrize("tome", [False, True])
def test_sampler_loop_makes_no_host_sync(tome):
    """The whole generation on the meta device (shapes only: any read-back or blocking copy shows),
    with noise regularization, differential sampling, masked Z-Sampling and TomeMGT."""
    model = tiny(layers=6, single=6, device="meta")
    if tome:
        apply_tome(model, 0.5, single_stream=True)
    den = MeissonicDenoiser(model, conditioning(1, "meta"), conditioning(2, "meta"), (8, 8), (64, 64))
    settings = make_settings(steps=6, guidance_scale=3.0, noise_regularization=True, differential_sampling=True,
                             z_sampling=True)
    model.rope(4, 4, 24, torch.device("meta"))  # the RoPE table is built once per size, before the loop
    with torch.inference_mode(), tome_generation(model, 0, 6):
        sampler = Sampler(den, settings, None)
        with SyncRecorder() as rec:
            result = sampler.run(full_mask(1, 64, model.mask_token_id, "meta"))
    assert result.tokens.device.type == "meta" and result.model_calls == 3 * 6 - 2
    assert rec.hits == []


# ----------------------------------------------------------------------------------------------
# The device suite


def test_gpu_suite_tiny_runs_every_row_and_writes_json(tmp_path):
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "gpu_suite.py"
    spec = importlib.util.spec_from_file_location("gpu_suite", path)
    suite = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(suite)
    out = tmp_path / "figures.json"
    result = suite.main(["--tiny", "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    figures = {r["figure"]: r for r in result["rows"]}
    expected = [
        "one CFG forward (batch 2), eager", "one CFG forward, compiled per block", "vanilla, s / image, compiled per block",
        "masked Z-Sampling, s / image, compiled", "sampler work per step without the model (vanilla)",
        "TomeMGT 0.5 dual: forward vs plain, eager", "TomeMGT 0.5 + single-stream: forward vs plain, both compiled",
        "TomeMGT 0.5 + single: generation vs plain, eager", "SCQ W4A8: forward vs float32, eager",
        "SCQ W8: forward vs float32, both compiled", "VQ decode 32^2: tiled vs whole",
    ]
    for name in expected:
        row = figures[name]
        assert row["ours"] is not None and row["ours"] > 0, name
        if row["baseline"] is not None:
            assert row["speedup"] == pytest.approx(row["baseline"] / row["ours"])
    assert "recompiles on new timesteps: 0" in figures["one CFG forward, compiled per block"]["note"]
    assert result["env"]["device"] == "cpu" and result["env"]["steps"] == 4


# ----------------------------------------------------------------------------------------------
# SCQ fast path: W4A8 as one FP8 e4m3 matmul with the calibrated static activation scales


@pytest.fixture
def fp8_forced():
    """Run the FP8 path on the CPU (``torch._scaled_mm`` has CPU kernels in this torch)."""
    Q.FAST_PATHS["force"] = True
    try:
        yield
    finally:
        Q.FAST_PATHS["force"] = False


def calibrated_layer(seed=0, k=64, n=48, mode="w4a8"):
    g = torch.Generator().manual_seed(seed)
    lin = torch.nn.Linear(k, n)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(n, k, generator=g) * k**-0.5)
        lin.bias.copy_(torch.randn(n, generator=g) * 0.1)
    bits, act = Q.MODES[mode]
    layer = Q.QuantLinear.from_linear(lin, bits, 16, act).eval()
    if act:
        calib = torch.cat([torch.randn(1, 40, k, generator=g) * 0.5, torch.randn(1, 40, k, generator=g) * 2.0])
        layer._observers = (Q._Observer(0.9), Q._Observer(0.9))
        with torch.no_grad(), cfg_branches("both"):
            layer(calib)
        obs, layer._observers = layer._observers, None
        layer.input_scale.copy_(obs[0].value / 127)
        layer.output_scale.copy_(obs[1].value / 127)
        layer.act = Q.ACT_INT8
    x = torch.cat([torch.randn(1, 40, k, generator=g) * 0.5, torch.randn(1, 40, k, generator=g) * 2.0])
    return layer, x


def rel(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fp8_layer_matches_the_dequantized_reference(fp8_forced, dtype):
    layer, x = calibrated_layer()
    layer.to(dtype)
    x = x.to(dtype)
    assert layer.fast_path(x) == "fp8"
    with torch.no_grad(), cfg_branches("both"):
        fast = layer(x)
        Q.FAST_PATHS["force"] = False
        assert layer.fast_path(x) == "dequantize"  # not on a CPU by itself
        ref = layer(x)
    assert fast.dtype == ref.dtype == dtype and fast.shape == ref.shape
    assert rel(fast, ref) < 0.06  # e4m3 keeps 3 mantissa bits on both operands: a few percent
    assert not torch.equal(fast, ref)  # it really took the other path


def test_fp8_matmul_equals_its_emulation_with_the_static_scales():
    """The operands the fast path builds, multiplied by torch._scaled_mm and in plain fp32, and the
    activation quantization done by hand: x / (int8 scale * 127 / 448) rounded to float8_e4m3fn."""
    layer, x = calibrated_layer(1)
    w = layer.dequantize(torch.float32)
    rows = Q._row_scales(layer.input_scale, x.shape[0])
    emulated = Q.fp8_linear(x, w, rows, layer.bias, emulate=True)
    direct = Q.fp8_linear(x, w, rows, layer.bias)
    torch.testing.assert_close(direct, emulated, rtol=1e-5, atol=1e-5)
    s = layer.input_scale * 127 / 448  # per CFG half: the two halves use their own scales
    by_hand = torch.cat([(x[i] / s[i]).clamp(-448, 448).to(torch.float8_e4m3fn).float() * s[i] for i in range(2)])
    w8, ws = Q.fp8_weight(w)
    torch.testing.assert_close(emulated.reshape(-1, w.shape[0]), by_hand @ (w8.float() * ws.t()).t() + layer.bias,
                               rtol=1e-5, atol=1e-5)
    assert rel(w8.float() * ws.t(), w) < 0.04


def test_fp8_model_is_as_close_to_the_float_model_as_the_reference_scq(fp8_forced):
    model = tiny(layers=2, single=2)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 64, (2, 8, 8), generator=g)
    ids[:, :4] = 79
    args = (ids, torch.randn(2, 24, 24, generator=g), torch.randn(2, 32, generator=g), 3, torch.tensor([[64.0, 64, 0, 0, 6]] * 2))
    with torch.no_grad(), cfg_branches("both"):
        float_out = model(*args)
        Q.quantize_model(model, "w4a8", 8)
        with Q.calibration(model):
            model(*args)
        Q.apply_activation_rule(model)
        keys = {k: v.dtype for k, v in model.state_dict().items()}
        fast = model(*args)
        assert "fp8 x 48" in Q.fast_path_summary(model)  # all but context_embedder (in_features 24)
        Q.FAST_PATHS["force"] = False
        ref = model(*args)
    assert {k: v.dtype for k, v in model.state_dict().items()} == keys  # nothing cached: the file format and memory stay
    assert rel(fast, ref) < 0.3
    assert rel(fast, float_out) < 1.25 * rel(ref, float_out)


def test_weight_only_layers_never_take_the_fp8_path(fp8_forced):
    layer, x = calibrated_layer(mode="w8")
    assert layer.fast_path(x) == "dequantize"
    w4a8, x = calibrated_layer()
    Q.FAST_PATHS["fp8"] = False
    try:
        assert w4a8.fast_path(x) == "dequantize"  # MGT_SCQ_FP8=0
    finally:
        Q.FAST_PATHS["fp8"] = True


@pytest.mark.parametrize("mode", ["w4", "w4a8"])
def test_quantized_blocks_compile_without_graph_breaks(fp8_forced, mode):
    """SCQ layers inside compiled blocks: the CFG-half context is read without breaking the graph,
    the same logits as eager, no recompile for a new step."""
    model = tiny(layers=2, single=2)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 64, (2, 8, 8), generator=g)
    args = (ids, torch.randn(2, 24, 24, generator=g), torch.randn(2, 32, generator=g), 3, torch.tensor([[64.0, 64, 0, 0, 6]] * 2))
    with torch.no_grad(), cfg_branches("both"):
        Q.quantize_model(model, mode, 8)
        if mode == "w4a8":
            with Q.calibration(model):
                model(*args)
            Q.apply_activation_rule(model)
        eager = model(*args)
        C.enable_compile(model, backend="aot_eager")
        breaks, before = sum(counters["graph_break"].values()), graphs()
        torch.testing.assert_close(model(*args), eager, rtol=1e-5, atol=1e-5)
        compiled = graphs()
        assert compiled > before  # really compiled (not past the recompile limit, run eagerly)
        model(*args[:3], 5, args[4])
        assert graphs() == compiled  # a new step compiles nothing
    with torch.no_grad(), cfg_branches("cond"):
        model(ids[:1], args[1][:1], args[2][:1], 3, args[4][:1])
    assert sum(counters["graph_break"].values()) == breaks
    assert Q._probe_fp8(torch.device("cpu")) is False

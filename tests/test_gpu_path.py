"""The GPU path, checked on the CPU: compiled inference gives the eager tokens (plain and TomeMGT),
compiles once per block class and never per step, falls back cleanly; the sampler loop (with every
design choice and TomeMGT) makes no host sync, proven on the meta device."""

from __future__ import annotations

import pytest
import torch
from mgt_testing import randomize
from torch._dynamo.utils import counters
from torch.utils._python_dispatch import TorchDispatchMode

from mgt_core.accel import compile as C
from mgt_core.accel import shared_clone
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
        if name == "aten::_to_copy" and isinstance(out, torch.Tensor) and tensors and tensors[0].device != out.device:
            if not kwargs.get("non_blocking", False):
                self.hits.append(f"copy {tensors[0].device} -> {out.device}")
        if name == "aten::copy_" and len(tensors) > 1 and tensors[0].device != tensors[1].device:
            if not (len(args) > 2 and args[2]):
                self.hits.append(f"copy {tensors[1].device} -> {tensors[0].device}")
        return out


def test_the_recorder_sees_syncs():
    x = torch.ones(3, device="meta")
    with SyncRecorder() as rec:
        torch.ones(3).to("meta")
        torch.ones(3).to("meta", non_blocking=True)  # an asynchronous copy (from pinned memory on CUDA)
    assert rec.hits == ["copy cpu -> meta"]
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

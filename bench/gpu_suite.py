"""The device suite of issue 13: every figure of its table, ours against eager / plain / bf16, in one run.

Meissonic-1024 configuration with random weights (built on the device in the chosen dtype), CFG 9,
batch 1, 64 steps, the pack's sampler and VQ decode. Each row is a ratio measured in this run
(``speed-up`` = baseline time / our time: above 1 is faster). Forwards take the median of
``--repeats`` timed calls after a warm-up; generations are timed once after a warm-up.

    python bench/gpu_suite.py                       # cuda, bf16, ~5 min on an H200, writes gpu_suite.json
    python bench/gpu_suite.py --tiny                # CPU, reduced sizes: checks the script (a test runs it)
    python bench/gpu_suite.py --official /path/to/Meissonic/src --diffusers /tmp/diff031   # + official forward

The official transformer (viiika/Meissonic ``src/transformer.py`` with diffusers) is timed on the same
weights only when given; it is never required.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mgt_core.accel import quant as Q  # noqa: E402
from mgt_core.accel.compile import compile_status, compile_unavailable, disable_compile, enable_compile  # noqa: E402
from mgt_core.accel.context import cfg_branches, shared_clone  # noqa: E402
from mgt_core.accel.tome import apply_tome, tome_generation  # noqa: E402
from mgt_core.loading.modules import meta_module  # noqa: E402
from mgt_core.loading.pipeline import ModelInfo, vq_dtype_for  # noqa: E402
from mgt_core.models import configs  # noqa: E402
from mgt_core.models.meissonic.transformer import MeissonicConfig, MeissonicTransformer  # noqa: E402
from mgt_core.models.text import TextConditioning  # noqa: E402
from mgt_core.models.vq import VQModel  # noqa: E402
from mgt_core.pipeline import MGTPipeline, make_settings  # noqa: E402
from mgt_core.sampling.engine import Sampler  # noqa: E402
from mgt_core.sampling.partial import full_mask  # noqa: E402

TEXT_LEN = 77
GiB = 2**30


# ----------------------------------------------------------------------------------------------
# Models and inputs


def fill_random(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """N(0, 1/fan_in) matrices, unit norm weights, zero biases, on the module's own device."""
    dev = next(module.parameters()).device
    g = torch.Generator(dev).manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim == 1:
                p.fill_(1.0 if "norm" in name else 0.0)
            else:
                std = 1.0 if name.endswith("embeddings.weight") else p[0].numel() ** -0.5
                p.copy_(torch.randn(p.shape, generator=g, device=dev) * std)
    return module.eval().requires_grad_(False)


def build(args) -> MGTPipeline:
    tcfg = configs.tiny_transformer(True, 2, 2) if args.tiny else dict(configs.MEISSONIC_TRANSFORMER)
    if args.layers is not None:
        tcfg["num_layers"] = args.layers
    if args.single_layers is not None:
        tcfg["num_single_layers"] = args.single_layers
    vcfg = configs.tiny_vq() if args.tiny else configs.MEISSONIC_VQ
    cfg = MeissonicConfig.from_dict(tcfg)
    transformer = meta_module(lambda: MeissonicTransformer(cfg)).to(args.dtype).to_empty(device=args.device)
    vq = meta_module(lambda: VQModel.from_config(vcfg)).to(vq_dtype_for(args.dtype)).to_empty(device=args.device)
    fill_random(transformer, 0)
    fill_random(vq, 1)
    info = ModelInfo("random", "meissonic", "", args.steps, 9.0, args.size, args.size, "", vq_factor=vq.factor)
    return MGTPipeline(transformer, vq, None, None, info)


def text(cfg: MeissonicConfig, device, dtype, seed: int, batch: int = 1) -> TextConditioning:
    g = torch.Generator(device).manual_seed(seed)
    return TextConditioning(
        torch.randn(batch, TEXT_LEN, cfg.joint_attention_dim, generator=g, device=device).to(dtype),
        torch.randn(batch, cfg.pooled_projection_dim, generator=g, device=device).to(dtype), ["x"] * batch,
    )


def forward_inputs(pipe: MGTPipeline, size: int):
    """A CFG batch [uncond; cond] of one image, half the tokens masked: what every step feeds the model."""
    m, dev = pipe.transformer, pipe.device
    h, w = pipe.grid_for(size, size)
    g = torch.Generator(dev).manual_seed(3)
    ids = torch.randint(0, m.config.codebook_size, (2, h, w), generator=g, device=dev)
    ids = torch.where(torch.rand(2, h, w, generator=g, device=dev) < 0.5, m.mask_token_id, ids)
    c = text(m.config, dev, m.dtype, 4, batch=2)
    micro = torch.tensor([[size, size, 0, 0, 6.0]] * 2, dtype=m.dtype, device=dev)
    return ids, c.hidden, c.pooled, micro


# ----------------------------------------------------------------------------------------------
# Timing


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock(fn, device, repeats: int = 1, warmup: int = 1) -> float:
    """Median seconds of ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def first_call(fn, device) -> float:
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


def peak_reset(device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / GiB if device.type == "cuda" else None


def unique_graphs() -> int:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


class Report:
    """Rows of (figure, ours, baseline, speed-up, note), printed as they come and saved as JSON."""

    def __init__(self):
        self.rows: list[dict] = []

    def add(self, figure: str, ours: float | None, baseline: float | None = None, unit: str = "s", note: str = "",
            **extra) -> None:
        speedup = baseline / ours if ours and baseline else None
        row = {"figure": figure, "ours": ours, "baseline": baseline, "unit": unit, "speedup": speedup, "note": note, **extra}
        self.rows.append(row)

        def fmt(v):
            if v is None:
                return "-"
            return f"{v * 1000:.2f} ms" if unit == "s" and v < 1 else f"{v:.3f} {unit}"

        ratio = f"{speedup:.2f}x" if speedup is not None else "-"
        print(f"| {figure} | {fmt(ours)} | {fmt(baseline)} | {ratio} | {note} |", flush=True)


# ----------------------------------------------------------------------------------------------
# Sections


def forwards(pipe, args, rep: Report) -> dict:
    m, dev = pipe.transformer, pipe.device
    ids, hidden, pooled, micro = forward_inputs(pipe, args.size)

    def fwd(model, t=40):
        with torch.inference_mode(), cfg_branches("both"):
            return model(ids, hidden, pooled, t, micro)

    eager = clock(lambda: fwd(m), dev, args.repeats)
    rep.add("one CFG forward (batch 2), eager", eager, note="baseline of the forward rows")
    out = {"eager": eager}
    if args.official:
        try:
            official = official_forward(pipe, args, ids, hidden, pooled, micro)
            rep.add("one CFG forward, official transformer", eager, official, note="ours eager vs official")
        except Exception as e:  # noqa: BLE001 - optional row: say why and go on
            rep.add("one CFG forward, official transformer", None, note=f"skipped: {type(e).__name__}: {e}"[:160])
    if args.no_compile:
        return out
    block = shared_clone(m)
    reason = enable_compile(block, backend=args.backend)
    if reason:
        rep.add("compiled forward", None, note=f"no compiler: {reason}")
        return out
    g0 = unique_graphs()
    compile_s = first_call(lambda: fwd(block), dev)
    g1 = unique_graphs()
    per_block = clock(lambda: fwd(block), dev, args.repeats)
    for t in (10, 20, 30):  # new step values must not compile again
        fwd(block, t)
    rep.add("one CFG forward, compiled per block", per_block, eager,
            note=f"compile + first call {compile_s:.1f} s, {g1 - g0} graphs; recompiles on new timesteps: "
                 f"{unique_graphs() - g1}; {compile_status(block)}")
    out.update(per_block=per_block, compile_s=compile_s)
    if args.whole:
        whole = torch.compile(m, backend=args.backend)
        compile_w = first_call(lambda: fwd(whole), dev)
        t_whole = clock(lambda: fwd(whole), dev, args.repeats)
        rep.add("one CFG forward, compiled whole model", t_whole, eager, note=f"compile + first call {compile_w:.1f} s")
        del whole
    return out


def official_forward(pipe, args, ids, hidden, pooled, micro) -> float:
    sys.path[:0] = [p for p in (args.diffusers, args.official) if p]
    from transformer import Transformer2DModel  # the official module, only when asked for

    m, dev = pipe.transformer, pipe.device
    cfg = {k: v for k, v in m.config.to_dict().items()}
    ref = Transformer2DModel(**cfg).to(dev, m.dtype).eval()
    ref.load_state_dict(m.state_dict(), strict=True)
    gh, gw = ids.shape[1] // m.config.grid_factor, ids.shape[2] // m.config.grid_factor
    img_ids = torch.zeros(gh, gw, 3, device=dev)
    img_ids[..., 1] += torch.arange(gh, device=dev)[:, None]
    img_ids[..., 2] += torch.arange(gw, device=dev)[None]
    txt_ids = torch.zeros(hidden.shape[1], 3, device=dev, dtype=m.dtype)
    timestep = torch.tensor([40], device=dev)

    def run():
        with torch.inference_mode():
            ref(hidden_states=ids, encoder_hidden_states=hidden, pooled_projections=pooled, timestep=timestep,
                img_ids=img_ids.reshape(-1, 3).to(m.dtype), txt_ids=txt_ids, micro_conds=micro, return_dict=False)

    return clock(run, dev, args.repeats)


def generate(pipe, args, model=None, **design) -> tuple[float, float | None]:
    """(seconds, peak GiB) of one image after one warm-up run (sampling + decode)."""
    dev = pipe.device
    p = copy.copy(pipe)
    if model is not None:
        p.transformer = model
    settings = make_settings(steps=args.steps, guidance_scale=9.0, **design)
    cond, uncond = text(p.transformer.config, dev, p.transformer.dtype, 1), text(p.transformer.config, dev, p.transformer.dtype, 2)
    grid = p.grid_for(args.size, args.size)

    def run():
        gen = torch.Generator(dev).manual_seed(0)
        result = p.sample_tokens(cond, uncond, settings, height=args.size, width=args.size, generator=gen)
        p.decode(result.tokens, grid)

    run()
    peak_reset(dev)
    seconds = first_call(run, dev)
    return seconds, peak_gib(dev)


def generations(pipe, args, rep: Report) -> None:
    eager, peak = generate(pipe, args)
    rep.add(f"vanilla, s / image ({args.steps} steps, eager)", eager, note=f"peak {peak:.2f} GiB" if peak else "")
    z_eager, _ = generate(pipe, args, z_sampling=True)
    rep.add("masked Z-Sampling, s / image (eager)", z_eager)
    if args.no_compile:
        return
    compiled = shared_clone(pipe.transformer)
    if enable_compile(compiled, backend=args.backend):
        return
    t, peak_c = generate(pipe, args, compiled)
    rep.add("vanilla, s / image, compiled per block", t, eager, note=f"peak {peak_c:.2f} GiB" if peak_c else "")
    z, _ = generate(pipe, args, compiled, z_sampling=True)
    rep.add("masked Z-Sampling, s / image, compiled", z, z_eager)
    nd, _ = generate(pipe, args, compiled, noise_regularization=True, differential_sampling=True)
    rep.add("noise reg. + differential sampling, s / image, compiled", nd, t, note="baseline: compiled vanilla")


class ConstantDenoiser:
    """Fixed logits in the model's dtype and layout: times the sampler's own work per step."""

    def __init__(self, pipe, grid):
        m = pipe.transformer
        self.grid, self.mask_id = grid, m.mask_token_id
        g = torch.Generator(pipe.device).manual_seed(5)
        self.logits = torch.randn(2, m.config.codebook_size, *grid, generator=g, device=pipe.device).to(m.dtype) * 3

    def __call__(self, tokens, t, branches):
        return self.logits[:1], self.logits[1:]


def sampler_overhead(pipe, args, rep: Report) -> None:
    grid = pipe.grid_for(args.size, args.size)
    den = ConstantDenoiser(pipe, grid)
    for label, design in (("vanilla", {}), ("NR + DS", {"noise_regularization": True, "differential_sampling": True})):
        settings = make_settings(steps=args.steps, guidance_scale=9.0, **design)

        def run(settings=settings):
            gen = torch.Generator(pipe.device).manual_seed(0)
            Sampler(den, settings, gen).run(full_mask(1, grid[0] * grid[1], den.mask_id, pipe.device))

        per_step = clock(run, pipe.device, 1) / args.steps
        rep.add(f"sampler work per step without the model ({label})", per_step, note="target < 1 ms at 1024^2")


def tome_rows(pipe, args, rep: Report, base: dict) -> None:
    m, dev = pipe.transformer, pipe.device
    ids, hidden, pooled, micro = forward_inputs(pipe, args.size)
    compiled_plain = None
    if not args.no_compile and base.get("per_block"):
        compiled_plain = base["per_block"]
    for ratio, single in ((0.25, False), (0.5, False), (0.25, True), (0.5, True)):
        model = apply_tome(shared_clone(m), ratio, single_stream=single)

        def fwd(model=model):
            with torch.inference_mode(), cfg_branches("both"), tome_generation(model, 0, args.steps):
                return model(ids, hidden, pooled, 40, micro)

        label = f"TomeMGT {ratio}{' + single-stream' if single else ' dual'}"
        rep.add(f"{label}: forward vs plain, eager", clock(fwd, dev, args.repeats), base["eager"])
        if compiled_plain is not None and enable_compile(model, backend=args.backend) is None:
            rep.add(f"{label}: forward vs plain, both compiled", clock(fwd, dev, args.repeats), compiled_plain)
    plain, _ = generate(pipe, args)
    for ratio, single in ((0.25, False), (0.5, True)):
        model = apply_tome(shared_clone(m), ratio, single_stream=single)
        t, _ = generate(pipe, args, model)
        rep.add(f"TomeMGT {ratio}{' + single' if single else ' dual'}: generation vs plain, eager", t, plain)


def scq_rows(pipe, args, rep: Report, base: dict) -> None:
    m, dev = pipe.transformer, pipe.device
    ids, hidden, pooled, micro = forward_inputs(pipe, args.size)
    rep.add(f"transformer weights, {args.dtype_name}", Q.weight_bytes(m)["total"] / GiB, unit="GiB")

    def fwd(model):
        with torch.inference_mode(), cfg_branches("both"):
            return model(ids, hidden, pooled, 40, micro)

    for mode in ("w8", "w4", "w4a8"):
        q = Q.quantize_model(copy.deepcopy(m), mode, "auto")
        if mode == "w4a8":  # static per-CFG-half activation scales from one calibration forward
            with Q.calibration(q):
                fwd(q)
            Q.apply_activation_rule(q)
            q._mgt_quant["calibrated"] = True
        gib = Q.weight_bytes(q)["total"] / GiB
        err = float((fwd(q).float() - fwd(m).float()).norm() / fwd(m).float().norm())
        path = Q.fast_path_summary(q) if hasattr(Q, "fast_path_summary") else "dequantize per call"
        rep.add(f"SCQ {mode.upper()}: forward vs {args.dtype_name}, eager", clock(lambda q=q: fwd(q), dev, args.repeats),
                base["eager"], note=f"{gib:.4g} GiB weights; rel. logit error {err:.3g}; {path}")
        if base.get("per_block") and enable_compile(q, backend=args.backend) is None:
            rep.add(f"SCQ {mode.upper()}: forward vs {args.dtype_name}, both compiled",
                    clock(lambda q=q: fwd(q), dev, args.repeats), base["per_block"])
            disable_compile(q)
        del q
        peak_reset(dev)


def vq_rows(pipe, args, rep: Report) -> None:
    grid = pipe.grid_for(args.size, args.size)
    ids = torch.randint(0, pipe.vq.config.num_vq_embeddings, (1, *grid), device=pipe.device)
    whole = clock(lambda: pipe.decode(ids, tiled=False), pipe.device, args.repeats)
    tiled = clock(lambda: pipe.decode(ids, tiled=True), pipe.device, args.repeats)
    rep.add(f"VQ decode {args.size}^2: tiled vs whole", tiled, whole)


# ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default=None, help="default: cuda (cpu with --tiny)")
    ap.add_argument("--dtype", default=None, choices=["bfloat16", "float16", "float32"], help="default: bf16 (fp32 with --tiny)")
    ap.add_argument("--size", type=int, default=None, help="image side in pixels (1024; 32 with --tiny)")
    ap.add_argument("--steps", type=int, default=None, help="sampling steps (64; 4 with --tiny)")
    ap.add_argument("--repeats", type=int, default=None, help="timed calls per forward figure (5; 1 with --tiny)")
    ap.add_argument("--backend", default=None, help="torch.compile backend (inductor; eager with --tiny: tracing only)")
    ap.add_argument("--layers", type=int, help="dual-stream blocks (default: the config's; fewer for a CPU run)")
    ap.add_argument("--single-layers", type=int, help="single-stream blocks (default: the config's)")
    ap.add_argument("--tiny", action="store_true", help="reduced sizes on the CPU: checks the script, not the speed")
    ap.add_argument("--no-compile", action="store_true", help="eager rows only")
    ap.add_argument("--no-whole", dest="whole", action="store_false", help="skip the whole-model compile (~1 min)")
    ap.add_argument("--sections", nargs="+", default=["forward", "generation", "sampler", "tome", "scq", "vq"])
    ap.add_argument("--official", help="folder with the official transformer.py (optional row)")
    ap.add_argument("--diffusers", help="site folder with diffusers for --official")
    ap.add_argument("--json", default="gpu_suite.json", help="where to write the figures")
    args = ap.parse_args(argv)
    tiny = args.tiny
    args.device = torch.device(args.device or ("cpu" if tiny else "cuda"))
    args.dtype_name = args.dtype or ("float32" if tiny else "bfloat16")
    args.dtype = getattr(torch, args.dtype_name)
    args.size = args.size or (32 if tiny else 1024)
    args.steps = args.steps or (4 if tiny else 64)
    args.repeats = args.repeats or (1 if tiny else 5)
    args.backend = args.backend or ("eager" if tiny else "inductor")
    if tiny:
        args.whole = False
    t0 = time.perf_counter()
    env = {
        "torch": torch.__version__, "device": str(args.device), "dtype": args.dtype_name, "size": args.size,
        "steps": args.steps, "backend": args.backend, "layers": args.layers, "single_layers": args.single_layers,
        "gpu": torch.cuda.get_device_name(args.device) if args.device.type == "cuda" else None,
        "compiler": compile_unavailable(args.device, args.backend) or "available",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    print(" ".join(f"{k}={v}" for k, v in env.items()), flush=True)
    print("| figure | ours | baseline | speed-up | note |\n|---|---|---|---|---|", flush=True)
    pipe = build(args)
    rep = Report()
    base = {}
    with contextlib.ExitStack():
        if "forward" in args.sections:
            base = forwards(pipe, args, rep)
        if "generation" in args.sections:
            generations(pipe, args, rep)
        if "sampler" in args.sections:
            sampler_overhead(pipe, args, rep)
        if "tome" in args.sections and base:
            tome_rows(pipe, args, rep, base)
        if "scq" in args.sections and base:
            scq_rows(pipe, args, rep, base)
        if "vq" in args.sections:
            vq_rows(pipe, args, rep)
    env["total_s"] = time.perf_counter() - t0
    print(f"total {env['total_s']:.0f} s", flush=True)
    result = {"env": env, "rows": rep.rows}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()

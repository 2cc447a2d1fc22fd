"""Full-size model benches on random weights in the real layout: loading memory, VQ decode, one forward.

Each measurement runs in a fresh subprocess and reports its peak RSS (getrusage), so the numbers do
not include earlier measurements. Random weights are written once under ``runs/bench/`` (git-ignored).

    python bench/models.py load      # peak RSS loading the 1.0 B transformer in bf16 vs the file size
    python bench/models.py vq        # VQ decode at 1024x1024: whole vs tiled vs diffusers' VQModel.decode
    python bench/models.py forward   # one transformer forward at 1024 px, CFG batch 2, fp32
    python bench/models.py all
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO / "runs" / "bench"
GiB = 1024**3


def peak_rss() -> int:
    """Peak resident memory of this process since start or the last :func:`reset_peak` (VmHWM)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak() -> int:
    """Reset the peak to the current RSS (Linux: write 5 to clear_refs); returns the current RSS."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return current_rss()


def baseline() -> int:
    """RSS of the interpreter with torch, safetensors and mgt_core imported, before any work."""
    import safetensors.torch  # noqa: F401
    import torch  # noqa: F401

    import mgt_core  # noqa: F401

    return peak_rss()


def random_file(kind: str, dtype_name: str) -> Path:
    """Write random weights for the published config once (tensor by tensor, the real key layout)."""
    import torch
    from safetensors.torch import save_file

    from mgt_core.loading.modules import meta_module
    from mgt_core.models.configs import MEISSONIC_TRANSFORMER, MEISSONIC_VQ
    from mgt_core.models.meissonic import MeissonicTransformer
    from mgt_core.models.vq import VQModel

    dtype = getattr(torch, dtype_name)
    path = DATA / f"{kind}-{dtype_name}.safetensors"
    if path.exists():
        return path
    DATA.mkdir(parents=True, exist_ok=True)
    builder = {"transformer": lambda: MeissonicTransformer.from_config(MEISSONIC_TRANSFORMER),
               "vq": lambda: VQModel.from_config(MEISSONIC_VQ)}[kind]
    g = torch.Generator().manual_seed(0)
    state = {}
    for name, t in meta_module(builder).state_dict().items():
        fan_in = max(1, t[0].numel()) if t.ndim > 1 else 1
        std = 1.0 / fan_in**0.5 if t.ndim > 1 else 0.02
        value = torch.randn(t.shape, generator=g) * std
        if name.endswith(("norm.weight", "norm1.weight", "norm2.weight", "norm_q.weight", "norm_k.weight",
                          "norm_added_q.weight", "norm_added_k.weight", "layer_norm.weight", "conv_norm_out.weight")):
            value += 1.0
        state[name] = value.to(dtype)
    save_file(state, str(path), metadata={"format": "pt"})
    return path


# ---------------------------------------------------------------- child measurements (one per process)


def child_load(path: str, how: str) -> dict:
    import torch

    base = baseline()
    t = time.perf_counter()
    if how == "ours":
        from mgt_core.loading.pipeline import load_transformer

        load_transformer(path, dtype=torch.bfloat16)
    else:  # the common way: build the model in fp32, load_file the whole dict, load_state_dict, cast
        from safetensors.torch import load_file

        from mgt_core.models.configs import MEISSONIC_TRANSFORMER
        from mgt_core.models.meissonic import MeissonicTransformer

        model = MeissonicTransformer.from_config(MEISSONIC_TRANSFORMER)
        model.load_state_dict(load_file(path))
        model.to(torch.bfloat16)
    return {"seconds": time.perf_counter() - t, "peak": peak_rss(), "base": base}


def child_vq(path: str, how: str, size: int) -> dict:
    import torch

    base = baseline()
    torch.manual_seed(0)
    ids = torch.randint(0, 8192, (1, size // 16, size // 16))
    if how == "diffusers":
        import diffusers
        from safetensors.torch import load_file

        from mgt_core.models.configs import MEISSONIC_VQ

        vq = diffusers.VQModel(**{k: v for k, v in MEISSONIC_VQ.items() if not k.startswith("_")}).eval()
        vq.load_state_dict(load_file(path))
        base = reset_peak()
        t = time.perf_counter()
        with torch.no_grad():
            img = vq.decode(ids, force_not_quantize=True, shape=(1, size // 16, size // 16, 64)).sample.clamp(0, 1)
    else:
        from mgt_core.loading.pipeline import load_vq

        vq = load_vq(path, dtype=torch.float32)
        base = reset_peak()
        t = time.perf_counter()
        with torch.inference_mode():
            img = vq.decode_tiled(ids) if how == "tiled" else vq.decode(ids)
    seconds = time.perf_counter() - t
    torch.save(img.float(), DATA / f"vq-{how}-{size}.pt")
    return {"seconds": seconds, "peak": peak_rss(), "base": base}


def child_forward(path: str, size: int) -> dict:
    import torch

    from mgt_core.loading.pipeline import load_transformer

    model = load_transformer(path, dtype=torch.float32)
    base = reset_peak()
    g = torch.Generator().manual_seed(0)
    tokens = torch.full((2, size // 16, size // 16), 8255)
    text, pooled = torch.randn(2, 77, 1024, generator=g), torch.randn(2, 1024, generator=g)
    micro = torch.tensor([[size, size, 0, 0, 6.0]] * 2)
    with torch.inference_mode():
        model(tokens, text, pooled, 63, micro)  # warm-up (allocator, RoPE tables)
        t = time.perf_counter()
        model(tokens, text, pooled, 62, micro)
    return {"seconds": time.perf_counter() - t, "peak": peak_rss(), "base": base}


def measure(*args) -> dict:
    out = subprocess.run([sys.executable, __file__, "_child", *map(str, args)], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"child {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- tables


def bench_load() -> None:
    path = random_file("transformer", "bfloat16")
    size = path.stat().st_size
    print(f"\n### Loading the Meissonic transformer in bf16 (file {size / GiB:.2f} GiB)\n")
    print("| loader | peak RSS | peak - interpreter | / file size | time |")
    print("|---|---|---|---|---|")
    for how in ("ours", "naive"):
        r = measure("load", path, how)
        extra = r["peak"] - r["base"]
        label = "mgt_core (meta + per-tensor reads)" if how == "ours" else "fp32 model + load_file + cast"
        print(f"| {label} | {r['peak'] / GiB:.2f} GiB | {extra / GiB:.2f} GiB | {r['peak'] / size:.2f}x "
              f"({extra / size:.2f}x) | {r['seconds']:.1f} s |")


def bench_vq(size: int) -> None:
    import torch

    path = random_file("vq", "float32")
    print(f"\n### VQ decode at {size}x{size} (fp32, CPU; peak RSS above the loaded model)\n")
    print("| decode | time | peak working memory | vs diffusers | max abs diff vs diffusers |")
    print("|---|---|---|---|---|")
    results = {how: measure("vq", path, how, size) for how in ("diffusers", "whole", "tiled")}
    ref = torch.load(DATA / f"vq-diffusers-{size}.pt")
    ref_mem = results["diffusers"]["peak"] - results["diffusers"]["base"]
    for how, r in results.items():
        mem = r["peak"] - r["base"]
        diff = (torch.load(DATA / f"vq-{how}-{size}.pt") - ref).abs().max().item()
        print(f"| {how} | {r['seconds']:.1f} s | {mem / GiB:.2f} GiB | {mem / ref_mem:.2f}x | {diff:.1e} |")


def bench_forward(size: int) -> None:
    path = random_file("transformer", "float32")
    r = measure("forward", path, size)
    print(f"\n### One transformer forward at {size}x{size}, CFG batch 2, fp32 on CPU\n")
    print("| time | peak RSS | activations (peak - loaded model) |")
    print("|---|---|---|")
    print(f"| {r['seconds']:.1f} s | {r['peak'] / GiB:.2f} GiB | {(r['peak'] - r['base']) / GiB:.2f} GiB |")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        kind, *rest = sys.argv[2:]
        fn = {"load": child_load, "vq": child_vq, "forward": child_forward}[kind]
        rest = [int(v) if v.isdigit() else v for v in rest]
        print(json.dumps(fn(*rest)))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["load", "vq", "forward", "all"])
    ap.add_argument("--size", type=int, default=1024)
    args = ap.parse_args()
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    if args.what in ("load", "all"):
        bench_load()
    if args.what in ("vq", "all"):
        bench_vq(args.size)
    if args.what in ("forward", "all"):
        bench_forward(args.size)


if __name__ == "__main__":
    main()

"""The shipped workflows through a real ComfyUI on the machine's own torch and GPU: device, dtype and
time per workflow, as users run them (issue 13).

ComfyUI is started without ``--cpu`` (it picks the GPU), with this repo as a custom node pack and
its built-in demo model; each workflow of ``workflows/`` is converted to an API prompt by comfy-cli's
converter against the live /object_info (what the frontend's "Export (API)" does) and queued twice:
the first run includes loading (and compiling with ``--compile``), the second (next seed) is warm. Device,
dtype and sampling time come from the pack's own log line ("MGT Sampler: ... on cuda:0, bfloat16,
compiled (inductor): 1.23 s").

    python bench/comfy_device.py --comfy /path/to/ComfyUI                 # the machine's python and torch
    python bench/comfy_device.py --comfy ComfyUI --wheels /path/to/wheels   # ComfyUI's other requirements
    python bench/comfy_device.py --comfy ComfyUI --compile --json out.json  # loaders with compile on
    python bench/comfy_device.py --cpu                                      # the dev env's ComfyUI, on the CPU

``--wheels`` installs ComfyUI's requirements except torch/torchvision/torchaudio and the UI packages
(plus comfy-cli for the converter) from that folder only (no index) into a private target folder.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SKIP = ("torch", "torchvision", "torchaudio", "comfyui-frontend-package", "comfyui-workflow-templates",
        "comfyui-embedded-docs")
LINE = re.compile(r"MGT Sampler: (?P<what>.*?) on (?P<device>\S+), (?P<dtype>\w+), (?P<mode>[^:]*?): (?P<s>[\d.]+) s")
CONVERT = (
    "import json, sys; from comfy_cli.workflow_to_api import convert_ui_to_api; "
    "wf = json.load(open(sys.argv[1])); info = json.load(open(sys.argv[2])); "
    "print(json.dumps(convert_ui_to_api(wf, info)))"
)


def load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def install_wheels(python: str, comfy: Path, wheels: Path, target: Path) -> None:
    reqs = []
    for line in (comfy / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        name = re.split(r"[<>=!~;\[ ]", line)[0].lower().replace("_", "-") if line else ""
        if name and name not in SKIP:
            reqs.append(line)
    reqs += ["comfy-cli", "pathspec"]
    subprocess.check_call([python, "-m", "pip", "install", "--no-index", "--find-links", str(wheels), "--target",
                           str(target), "--no-deps", *reqs])


def convert(python: str, workflow: Path, info: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "object_info.json"
        path.write_text(json.dumps(info))
        return json.loads(subprocess.check_output([python, "-c", CONVERT, str(workflow), str(path)], text=True))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--comfy", help="a ComfyUI checkout (default: the dev env's, .cache/env/ComfyUI)")
    ap.add_argument("--python", default=sys.executable, help="the python whose torch runs ComfyUI")
    ap.add_argument("--wheels", help="folder of wheels for ComfyUI's other requirements and comfy-cli")
    ap.add_argument("--compile", action="store_true", help="turn on the loaders' compile input")
    ap.add_argument("--cpu", action="store_true", help="pass --cpu to ComfyUI (a check of this script)")
    ap.add_argument("--workflows", nargs="*", help="workflow names (default: all in workflows/)")
    ap.add_argument("--runs", type=int, default=2, help="runs per workflow (first one cold)")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)
    tool = load("mgt_tool", REPO / "tools" / "mgt.py")
    harness = load("comfy_harness", REPO / "tests" / "comfy_harness.py")
    comfy = Path(args.comfy).resolve() if args.comfy else tool.COMFY_DIR
    python = args.python if args.comfy or args.python != sys.executable else str(tool.PY)
    work = Path(tempfile.mkdtemp(prefix="mgt-device-"))
    if args.wheels:
        site = work / "site"
        install_wheels(python, comfy, Path(args.wheels), site)
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)
    nodes = work / "custom_nodes"
    tool.link_pack(nodes, REPO)
    extra = work / "extra_model_paths.yaml"
    tool.write_extra_model_paths(extra, nodes, tool.MODELS_DIR)
    names = args.workflows or sorted(p.stem for p in (REPO / "workflows").glob("*.json"))
    probe = ("import torch, json; d = torch.cuda.is_available(); print(json.dumps({'torch': torch.__version__, "
             "'cuda': d, 'gpu': torch.cuda.get_device_name(0) if d else None}))")
    env = json.loads(subprocess.check_output([python, "-c", probe], text=True))
    print(f"python {python}; torch {env['torch']}; GPU {env['gpu'] or 'none'}; ComfyUI {comfy}", flush=True)
    server = harness.ComfyServer(python, tool.LAUNCHER, comfy, extra, tool.pack_node_ids(), websocket=False,
                                 cpu=args.cpu)
    rows = []
    with server:
        device_line = next((ln[ln.index("Device:"):] for ln in server.log().splitlines() if "Device:" in ln), "Device: ?")
        print(f"server up in {server.start_seconds:.0f} s; ComfyUI {device_line}", flush=True)
        print("| workflow | run | wall s | sampler | device | dtype | mode | images |\n|---|---|---|---|---|---|---|---|")
        info = server.object_info()
        for name in names:
            prompt = convert(python, REPO / "workflows" / f"{name}.json", info)
            for node in prompt.values():
                if node["class_type"].startswith("MGTModelLoader"):
                    node["inputs"]["compile"] = args.compile
            for run in range(1, args.runs + 1):
                for node in prompt.values():  # a new seed per run, or ComfyUI's cache answers the warm run
                    if node["class_type"] == "MGTSampler" and run > 1:
                        node["inputs"]["seed"] += 1
                before = len(server.log())
                t = time.perf_counter()
                _, entry = server.run(prompt, timeout=args.timeout)
                wall = time.perf_counter() - t
                status = entry["status"].get("status_str")
                lines = [m.groupdict() for m in LINE.finditer(server.log()[before:])]
                images = len(server.output_images(entry)) if status == "success" else 0
                for i, ln in enumerate(lines or [{}]):
                    row = {"workflow": name, "run": run, "status": status, "wall_s": round(wall, 3), "images": images,
                           "sampler": ln.get("what"), "device": ln.get("device"), "dtype": ln.get("dtype"),
                           "mode": ln.get("mode"), "sampler_s": float(ln["s"]) if ln else None}
                    rows.append(row)
                    print(f"| {name}{f' (sampler {i + 1})' if len(lines) > 1 else ''} | {run} | {wall:.2f} | "
                          f"{row['sampler_s']} s ({row['sampler']}) | {row['device']} | {row['dtype']} | "
                          f"{row['mode']} | {images} |", flush=True)
                if status != "success":
                    print(json.dumps(entry["status"].get("messages"))[:3000])
    if args.json:
        Path(args.json).write_text(json.dumps({"env": {**env, "comfy_device": device_line}, "rows": rows}, indent=1))
    ok = all(r["status"] == "success" for r in rows)
    if not args.cpu and env["cuda"] and any(r["device"] and not r["device"].startswith("cuda") for r in rows):
        print("WARNING: a workflow sampled off the GPU")
        ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

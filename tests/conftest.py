"""Import paths for unit tests, and one real ComfyUI server per session for ``comfyui`` tests.

Unit tests import ``mgt_core`` as a top-level package and the pack as ``mgt_design_choices``
(ComfyUI itself uses a synthetic name, which is why the pack's imports are relative).
ComfyUI tests need the env from ``python3 tools/mgt.py setup``; without it they fail, because a
silently skipped integration layer would let a broken pack pass. ``MGT_SKIP_COMFYUI=1`` is the
explicit opt-out.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

_spec = importlib.util.spec_from_file_location("mgt_tool", REPO / "tools" / "mgt.py")
mgt_tool = importlib.util.module_from_spec(_spec)
sys.modules["mgt_tool"] = mgt_tool
_spec.loader.exec_module(mgt_tool)

pack = mgt_tool.load_module("mgt_design_choices", REPO / "__init__.py", REPO)

from comfy_harness import ComfyServer  # noqa: E402 - tests/ is on sys.path from here on

SKIP_VAR = "MGT_SKIP_COMFYUI"
COMFY_FIXTURES = {"comfy", "comfy_0375", "comfy_servers", "comfy_env", "graph", "comfy_models"}


def pytest_collection_modifyitems(config, items):
    """Tests using the ComfyUI fixtures are ``comfyui`` tests, marked or not; honour the opt-out."""
    skip = os.environ.get(SKIP_VAR) == "1"
    for item in items:
        if COMFY_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.comfyui)
        if skip and item.get_closest_marker("comfyui"):
            item.add_marker(pytest.mark.skip(reason=f"{SKIP_VAR}=1: real-ComfyUI tests opted out"))


@pytest.fixture(scope="session")
def comfy_env():
    """The tools/mgt.py module, once its environment is known to be complete."""
    if not mgt_tool.env_ready():
        pytest.fail(
            f"no ComfyUI environment in {mgt_tool.ENV}: run `python3 tools/mgt.py setup` "
            f"(or `python3 tools/mgt.py test`), or set {SKIP_VAR}=1 to skip the ComfyUI tests",
            pytrace=False,
        )
    return mgt_tool


TEST_MODELS = {"tiny-meissonic": True, "tiny-monetico": False}
"""Random reduced-width model folders (real layout) the test server finds in models/mgt."""
TINY_DEFAULTS = {"steps": 6, "guidance_scale": 3.0, "width": 32, "height": 32, "negative_prompt": ""}
TINY_PRESETS = {  # what python -m mgt_core.tune --save writes: the sampler node must offer and apply them
    "tiny-meissonic": {"test-tuned": {"schedule": "pow2", "temperature": [1.0, 0.0], "token_temperature": 0.5,
                                      "noise_regularization": {"amplitude": 0.5, "shape": "linear"},
                                      "_measured": "not measured: a test fixture"}},
    "tiny-monetico": {},
}


@pytest.fixture(scope="session")
def comfy_models(tmp_path_factory):
    """models/mgt with the tiny folders, plus single files (with sidecar configs) of tiny-meissonic in
    diffusion_models/, vae/ and text_encoders/ for the single-file loader, and a small MaskGIT v1 pair in the
    released pickle structures (``MASKGIT_FILES``) for MGT MaskGIT Loader (Files), also converted to a folder."""
    import shutil

    from mgt_testing import MASKGIT_CONVERTED, MASKGIT_FILES, make_released_maskgit, make_tiny_folder

    from mgt_core.convert import convert

    root = tmp_path_factory.mktemp("mgt-models")
    for name, down in TEST_MODELS.items():
        make_tiny_folder(root / "mgt" / name, downsample=down, defaults=TINY_DEFAULTS | {"presets": TINY_PRESETS[name]})
    src = root / "mgt" / "tiny-meissonic"
    for kind, sub, weights in (("diffusion_models", "transformer", "diffusion_pytorch_model"),
                               ("vae", "vqvae", "diffusion_pytorch_model"), ("text_encoders", "text_encoder", "model")):
        (root / kind).mkdir()
        shutil.copy(src / sub / f"{weights}.safetensors", root / kind / "tiny-meissonic.safetensors")
        shutil.copy(src / sub / "config.json", root / kind / "tiny-meissonic.json")
    transformer, vq = (root / kind / name for kind, name in zip(("diffusion_models", "vae"), MASKGIT_FILES, strict=True))
    for path in (transformer, vq):
        path.parent.mkdir(parents=True, exist_ok=True)
    make_released_maskgit(transformer, vq)
    convert([str(transformer), str(vq)], str(root / "mgt" / MASKGIT_CONVERTED))  # the same weights as a folder
    return root


def _server(comfy_env, comfy_models, tmp_path_factory, version: str):
    yaml = tmp_path_factory.mktemp("comfy-config") / "extra_model_paths.yaml"
    keys = "".join(f"  {k}: {json.dumps(str(comfy_models / k))}\n" for k in ("mgt", "diffusion_models", "vae", "text_encoders"))
    yaml.write_text(f"mgt_tests:\n  custom_nodes: {json.dumps(str(comfy_env.CUSTOM_NODES))}\n{keys}")
    server = ComfyServer(comfy_env.PY, comfy_env.LAUNCHER, comfy_env.COMFY_VERSIONS[version], yaml,
                         expected_nodes=pack.NODE_IDS)
    server.version = version
    server.start()
    return server


def _session_server(version: str, doc: str):
    def fixture(comfy_env, comfy_models, tmp_path_factory):
        server = _server(comfy_env, comfy_models, tmp_path_factory, version)
        try:
            yield server
        finally:
            server.stop()

    fixture.__doc__ = doc
    return pytest.fixture(scope="session")(fixture)


comfy = _session_server("0.30.0", """One ComfyUI 0.30.0 server with this repo loaded, shared by the session;
always stopped. Its models/mgt holds the tiny random models of ``comfy_models``.""")
comfy_0375 = _session_server("0.3.75", """The oldest ComfyUI the pack claims (0.3.75), same models and pack;
started only by the tests that compare versions (registration, the shipped workflows, a fresh graph).""")


@pytest.fixture(scope="session")
def comfy_servers(comfy, comfy_0375):
    """Every ComfyUI version the pack claims, by version."""
    return {"0.30.0": comfy, "0.3.75": comfy_0375}


DEMO_MODEL = "mgt-demo (built-in)"


@pytest.fixture(scope="session")
def run_workflow():
    """Run a shipped UI-format workflow on a server, once per (server, workflow): converted by comfy-cli's
    converter against that server's /object_info (what the frontend's API export gives), then executed.
    Returns (API prompt, history entry, PNG paths)."""
    from comfy_cli.workflow_to_api import convert_ui_to_api

    done = {}

    def run(server, path: Path, timeout: float = 600):
        key = (id(server), path.name)
        if key not in done:
            info = server.object_info()
            prompt = convert_ui_to_api(json.loads(path.read_text()), info)
            if DEMO_MODEL not in info["MGTModelLoader"]["input"]["required"]["model"][1]["options"]:
                for node in prompt.values():  # no built-in model: the tiny random one (same graph, same sizes)
                    if node["class_type"] == "MGTModelLoader":
                        node["inputs"]["model"] = "tiny-meissonic"
            _, entry = server.run(prompt, timeout=timeout)
            done[key] = (prompt, entry, server.output_images(entry))
        return done[key]

    return run


@pytest.fixture(scope="session")
def graph(comfy_env):
    """ComfyUI's own GraphBuilder class (a dependency-free file), for building API prompts."""
    path = comfy_env.COMFY_DIR / "comfy_execution" / "graph_utils.py"
    module = mgt_tool.load_module("comfy_graph_utils", path)
    return lambda: module.GraphBuilder(prefix="")

"""Every ComfyUI version the pack claims (0.3.75 and 0.30.0): the pack registers all its nodes, every
shipped workflow runs to the same images, and a sampler dropped onto a fresh graph with the built-in
model draws what its prompt says without a widget changed."""

from __future__ import annotations

import re
from pathlib import Path

import mgt_design_choices as pack
import numpy as np
import pytest
import tomllib
from PIL import Image

from mgt_core.demo import judge as J

pytestmark = pytest.mark.comfyui

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
VERSIONS = ["0.30.0", "0.3.75"]
PACK_MODULE = "custom_nodes.mgt-design-choices"
FRESH_PROMPT = "an orange circle at the bottom right on a beige background"  # one of test_demo_model.FIXED


def test_claimed_range_is_the_tested_one(comfy_env):
    """pyproject's requires-comfyui and the README name exactly the versions the harness runs."""
    claimed = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["comfy"]["requires-comfyui"]
    order = sorted(VERSIONS, key=lambda v: tuple(map(int, v.split("."))))
    assert claimed == f">={order[0]},<={order[-1]}"
    assert sorted(comfy_env.COMFY_VERSIONS) == sorted(VERSIONS)
    readme = (REPO / "README.md").read_text()
    assert all(v in readme for v in VERSIONS)


@pytest.mark.parametrize("version", VERSIONS)
def test_server_reports_its_version_and_lists_exactly_the_pack_nodes(comfy_servers, version):
    server = comfy_servers[version]
    stats = server._request("/system_stats")
    assert stats["system"]["comfyui_version"] == version
    info = server.object_info()
    ours = sorted(name for name, node in info.items() if node["python_module"] == PACK_MODULE)
    assert ours == sorted(pack.NODE_IDS)
    assert not re.search(r"IMPORT FAILED|Error while calling comfy_entrypoint", server.log())


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_workflow_gives_identical_images_on_every_version(comfy_servers, run_workflow, path):
    images = {}
    for version, server in comfy_servers.items():
        _, entry, pngs = run_workflow(server, path)
        assert entry["status"]["status_str"] == "success", (version, entry["status"]["messages"])
        assert pngs, version
        images[version] = [np.asarray(Image.open(p).convert("RGB")) for p in pngs]
    first, *others = images.values()
    for version, imgs in zip(list(images)[1:], others, strict=True):
        assert len(imgs) == len(first) and all(np.array_equal(a, b) for a, b in zip(first, imgs, strict=True)), version


def fresh_widgets(info: dict, node_id: str) -> dict:
    """The widget values a node gets when dropped onto a graph: each input's default, a combo's first option."""
    values = {}
    for name, spec in info[node_id]["input"]["required"].items():
        kind, opts = spec[0], spec[1] if len(spec) > 1 else {}
        if isinstance(kind, list):  # legacy combo format
            values[name] = opts.get("default", kind[0])
        elif kind == "COMBO":
            values[name] = opts.get("default", opts["options"][0])
        elif kind in ("INT", "FLOAT", "STRING", "BOOLEAN"):
            values[name] = opts.get("default", {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}[kind])
    return values


@pytest.mark.parametrize("version", VERSIONS)
def test_fresh_sampler_on_the_built_in_model_draws_the_prompt(comfy_servers, graph, version):
    """Loader, two text encoders, sampler, decode and save as a user drops them: every widget at its
    default except the prompt text. The sampler's 0s take the model's own size, steps and CFG."""
    server = comfy_servers[version]
    info = server.object_info()
    fresh = {n: fresh_widgets(info, n) for n in ("MGTModelLoader", "MGTTextEncode", "MGTSampler", "MGTVQDecode")}
    assert fresh["MGTModelLoader"]["model"] == "mgt-demo (built-in)"
    g = graph()
    loader = g.node("MGTModelLoader", **fresh["MGTModelLoader"])
    pos = g.node("MGTTextEncode", text_encoder=loader.out(1), **(fresh["MGTTextEncode"] | {"text": FRESH_PROMPT}))
    neg = g.node("MGTTextEncode", text_encoder=loader.out(1), **fresh["MGTTextEncode"])
    samp = g.node("MGTSampler", model=loader.out(0), positive=pos.out(0), negative=neg.out(0), **fresh["MGTSampler"])
    dec = g.node("MGTVQDecode", vq=loader.out(2), tokens=samp.out(0), **fresh["MGTVQDecode"])
    g.node("SaveImage", images=dec.out(0), filename_prefix="mgt_fresh")
    _, entry = server.run(g.finalize(), timeout=600)
    assert entry["status"]["status_str"] == "success", entry["status"]["messages"]
    [png] = server.output_images(entry)
    image = np.asarray(Image.open(png).convert("RGB"))
    assert image.shape == (256, 256, 3)  # the built-in model's size, from the sampler's 0 widgets
    verdict = J.judge(image, FRESH_PROMPT)
    assert verdict.all_correct, verdict.checks


def test_text_encode_warns_about_words_the_model_does_not_know(comfy, graph):
    g = graph()
    loader = g.node("MGTModelLoader", model="mgt-demo (built-in)", dtype="auto", text_encoder="model's own")
    enc = g.node("MGTTextEncode", text_encoder=loader.out(1), text="a purple dragon on a white background")
    samp = g.node("MGTSampler", model=loader.out(0), positive=enc.out(0), negative=enc.out(0), seed=0, steps=1,
                  cfg=0.0, width=0, height=0, batch_size=1, schedule="cosine", noise_regularization=False,
                  differential_sampling=False, z_sampling=False)
    dec = g.node("MGTVQDecode", vq=loader.out(2), tokens=samp.out(0), tiled=False)
    g.node("PreviewImage", images=dec.out(0))
    prompt_id, entry = comfy.run(g.finalize(), timeout=300)
    assert entry["status"]["status_str"] == "success", entry["status"]["messages"]
    [text] = entry["outputs"][enc.id]["text"]
    assert "never trained on: dragon" in text
    assert "never trained on: dragon" in comfy.log()


def test_every_node_has_the_same_inputs_and_outputs_on_every_version(comfy_servers):
    """No input exists in one supported ComfyUI and not in another (nodes/compat.py handles the flags)."""
    def shape(info, node_id):
        node = info[node_id]
        return ({k: list(v) for k, v in node["input"].items() if k in ("required", "optional")}, node["output"])

    infos = {v: s.object_info() for v, s in comfy_servers.items()}
    for node_id in pack.NODE_IDS:
        shapes = {v: shape(info, node_id) for v, info in infos.items()}
        first = next(iter(shapes.values()))
        assert all(s == first for s in shapes.values()), (node_id, shapes)

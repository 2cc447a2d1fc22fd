"""The shipped UI-format workflows: converted with comfy-cli's converter against the live
/object_info, executed to PNGs of the right size, and listed in ComfyUI's template browser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

pytestmark = pytest.mark.comfyui

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))


def test_workflows_are_generated_from_the_declared_graphs():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_workflows", REPO / "tools" / "make_workflows.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert {p.stem for p in WORKFLOWS} == set(mod.WORKFLOWS)
    for path in WORKFLOWS:
        assert json.loads(path.read_text()) == mod.WORKFLOWS[path.stem](), f"{path.name} is stale: run tools/make_workflows.py"


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_workflow_converts_and_runs(comfy, run_workflow, path):
    prompt, entry, pngs = run_workflow(comfy, path)
    assert not any(n["class_type"] == "Note" for n in prompt.values())
    samplers = [n["inputs"] for n in prompt.values() if n["class_type"] == "MGTSampler"]
    assert samplers and all(isinstance(s["seed"], int) and "control_after_generate" not in s for s in samplers)
    assert entry["status"]["status_str"] == "success", [d for t, d in entry["status"]["messages"] if t == "execution_error"]
    assert pngs
    size = (samplers[0]["width"], samplers[0]["height"])
    for png in pngs:
        with Image.open(png) as img:
            assert img.size == size


def test_workflows_appear_in_the_template_browser(comfy):
    listed = comfy._request("/workflow_templates")
    ours = [names for names in listed.values() if set(names) >= {p.stem for p in WORKFLOWS}]
    assert ours, listed


def test_workflows_open_fitted_to_the_view():
    """The saved canvas transform shows every node, title bar included, in a 1280x720 canvas right of the
    frontend's side bar (80 px), so nothing opens hidden under it or off screen."""
    for path in WORKFLOWS:
        wf = json.loads(path.read_text())
        ds = wf["extra"]["ds"]
        scale, (ox, oy) = ds["scale"], ds["offset"]
        assert 0.3 <= scale <= 1.0, path.name
        for node in wf["nodes"]:
            (x, y), (w, h) = node["pos"], node["size"]
            left, top = (x + ox) * scale, (y - 30 + oy) * scale
            right, bottom = (x + w + ox) * scale, (y + h + oy) * scale
            assert left >= 80 and top >= 0 and right <= 1280 and bottom <= 720, (path.name, node["type"], left, top, right, bottom)


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_template_thumbnail_is_the_image_the_workflow_makes(comfy, run_workflow, path):
    """workflows/<name>.jpg (what the template browser shows) is the workflow's final image: regenerate
    with `python3 tools/mgt.py demo --thumbnails` when a workflow or the built-in model changes."""
    import numpy as np
    from mgt_tool import final_image

    thumb = path.with_suffix(".jpg")
    assert thumb.is_file(), f"no thumbnail {thumb.name}"
    _, entry, _ = run_workflow(comfy, path)
    with Image.open(final_image(comfy, entry)) as img:
        made = np.asarray(img.convert("RGB"), dtype=np.float32)
    with Image.open(thumb) as img:
        shown = np.asarray(img.convert("RGB"), dtype=np.float32)
    assert shown.shape == made.shape
    assert np.abs(shown - made).mean() < 4.0, f"{thumb.name} is stale"
    served = comfy._request_bytes(f"/api/workflow_templates/mgt-design-choices/{thumb.name}")
    assert served == thumb.read_bytes()

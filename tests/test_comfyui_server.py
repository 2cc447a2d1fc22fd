"""The pack inside a real ComfyUI 0.30.0 server: registration, execution, validation, errors."""

from __future__ import annotations

import mgt_design_choices as pack
import pytest
from comfy_harness import PromptRejected
from PIL import Image

from mgt_core.sampling import BUILTIN_SCHEDULES, mask_counts
from mgt_core.sampling.preview import PLOT_SIZE

pytestmark = pytest.mark.comfyui
PACK_MODULE = "custom_nodes.mgt-design-choices"


def preview_graph(graph, **inputs):
    """MGTSchedulePreview -> SaveImage (plot) and PreviewAny (counts text)."""
    g = graph()
    args = {"schedule": "cosine", "custom": "", "steps": 16, "tokens": 1024} | inputs
    preview = g.node("MGTSchedulePreview", **args)
    save = g.node("SaveImage", images=preview.out(0), filename_prefix="mgt_test")
    text = g.node("PreviewAny", source=preview.out(1))
    return g.finalize(), preview.id, save.id, text.id


def test_server_lists_exactly_the_pack_nodes(comfy):
    info = comfy.object_info()
    ours = sorted(name for name, node in info.items() if node["python_module"] == PACK_MODULE)
    assert ours == sorted(pack.NODE_IDS)


def test_schedule_preview_schema(comfy):
    node = comfy.object_info("MGTSchedulePreview")["MGTSchedulePreview"]
    assert node["display_name"] == "MGT Schedule Preview"
    assert node["category"] == "MGT/sampling"
    required = node["input"]["required"]
    assert list(required) == ["schedule", "custom", "steps", "tokens"]
    assert required["schedule"][1]["options"] == [*BUILTIN_SCHEDULES, "custom"]
    assert required["schedule"][1]["default"] == "cosine"
    assert required["custom"][0] == "STRING"
    assert {k: required["steps"][1][k] for k in ("min", "max", "default")} == {"min": 1, "max": 256, "default": 64}
    assert {k: required["tokens"][1][k] for k in ("min", "max", "default")} == {"min": 1, "max": 65536, "default": 4096}
    assert all(spec[1].get("tooltip") for spec in required.values())
    assert node["output"] == ["IMAGE", "STRING"]


def test_preview_runs_and_saves_png(comfy, graph):
    prompt, preview_id, save_id, text_id = preview_graph(graph, schedule="linear", steps=16, tokens=1024)
    prompt_id, entry = comfy.run(prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    [png] = comfy.output_images(entry)
    with Image.open(png) as img:
        assert img.size == PLOT_SIZE
        assert len(img.convert("RGB").getcolors(maxcolors=1 << 16)) > 2  # a drawing, not a blank image
    assert entry["outputs"][text_id]["text"] == [", ".join(map(str, mask_counts("linear", 16, 1024)))]

    assert comfy.events.wait_for(prompt_id, "execution_success")
    events = comfy.events.for_prompt(prompt_id)
    assert ("executing", preview_id) in [(t, d.get("node")) for t, d in events]
    assert {d.get("node") for t, d in events if t == "executed"} >= {save_id, text_id}


def test_invalid_value_is_rejected_with_400(comfy, graph):
    prompt, preview_id, _, _ = preview_graph(graph, steps=0)
    with pytest.raises(PromptRejected) as e:
        comfy.queue(prompt)
    assert e.value.status == 400
    assert e.value.body["error"]["type"] == "prompt_outputs_failed_validation"
    [error] = e.value.body["node_errors"][preview_id]["errors"]
    assert error["details"] == "steps"


def test_bad_custom_expression_is_a_node_error_then_server_recovers(comfy, graph):
    prompt, preview_id, _, _ = preview_graph(graph, schedule="custom", custom="r ** bogus")
    prompt_id, entry = comfy.run(prompt)
    assert entry["status"]["status_str"] == "error"
    errors = [d for t, d in entry["status"]["messages"] if t == "execution_error"]
    assert errors and errors[0]["node_id"] == preview_id
    assert "unknown name 'bogus'" in errors[0]["exception_message"]
    assert errors[0]["exception_type"].endswith("MGTInputError")
    assert comfy.events.wait_for(prompt_id, "execution_error")["node_id"] == preview_id

    prompt, *_ = preview_graph(graph, schedule="custom", custom="1 - r**2", steps=12)
    _, entry = comfy.run(prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]

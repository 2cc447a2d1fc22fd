"""Without ComfyUI: the pack imports, mgt_core stays free of comfy/diffusers, preview logic, tooling."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap

import mgt_design_choices as pack
import mgt_tool
import numpy as np
import pytest
import torch
from comfy_harness import failure_excerpt

from mgt_core.errors import MGTInputError
from mgt_core.sampling import mask_counts
from mgt_core.sampling.preview import PLOT_SIZE, schedule_preview


def test_pack_imports_without_comfyui():
    assert importlib.util.find_spec("comfy_api") is None  # else this test would prove nothing
    assert pack.comfy_entrypoint is None
    assert pack.NODE_IDS and len(set(pack.NODE_IDS)) == len(pack.NODE_IDS)
    assert all(isinstance(n, str) and n.startswith("MGT") for n in pack.NODE_IDS)


def test_mgt_core_never_imports_comfy_or_diffusers():
    code = textwrap.dedent(f"""
        import importlib.util, json, pkgutil, sys
        sys.path.insert(0, {str(mgt_tool.REPO)!r})
        import mgt_core
        for m in pkgutil.walk_packages(mgt_core.__path__, "mgt_core."):
            importlib.import_module(m.name)
        spec = importlib.util.spec_from_file_location(
            "mgt_design_choices", {str(mgt_tool.REPO / "__init__.py")!r},
            submodule_search_locations=[{str(mgt_tool.REPO)!r}])
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
        print(json.dumps(sorted(sys.modules)))
    """)
    modules = json.loads(subprocess.check_output([sys.executable, "-c", code], text=True))
    assert "mgt_core.sampling.preview" in modules
    assert [m for m in modules if m.startswith(("comfy", "diffusers"))] == []


def _curve_row(image: torch.Tensor, column: int) -> float:
    """Mean row of the blue curve pixels in one column of a preview image."""
    px = image[0, :, column].numpy()
    rows = np.nonzero((px[:, 2] > 0.5) & (px[:, 0] < 0.4))[0]
    assert rows.size, "no curve pixel in this column"
    return float(rows.mean())


def test_preview_image_and_counts():
    image, text = schedule_preview("cosine", 64, 4096)
    assert image.shape == (1, PLOT_SIZE[1], PLOT_SIZE[0], 3) and image.dtype == torch.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert [int(v) for v in text.split(",")] == mask_counts("cosine", 64, 4096)
    linear, _ = schedule_preview("linear", 64, 4096)
    mid = PLOT_SIZE[0] // 2
    # Halfway through, cosine keeps ~71 % masked and linear 50 %: its curve is drawn higher.
    assert _curve_row(image, mid) < _curve_row(linear, mid) - 10


def test_preview_custom_expression_and_table_roundtrip():
    _, text = schedule_preview("1 - r", 20, 1000)
    assert text == ", ".join(map(str, mask_counts("linear", 20, 1000)))
    _, again = schedule_preview(text, 20, 1000)  # the counts text is itself a valid custom table
    assert again == text


@pytest.mark.parametrize(("spec", "message"), [
    ("r ** bogus", "unknown name 'bogus'"),
    ("r +* 2", "is not valid"),
    ("  ", "no expression was given"),
    ("0.5, 0.2, 0", "3 entries but steps is 4"),
])
def test_preview_bad_custom_raises_input_error(spec, message):
    with pytest.raises(MGTInputError, match=message):
        schedule_preview(spec, 4, 100)


def test_pack_requirements_follow_self_extras(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(textwrap.dedent("""
        [project]
        name = "My_Pack"
        dependencies = ["torch>=2.1"]
        [project.optional-dependencies]
        test = ["pytest>=8"]
        dev = ["my-pack[test]", "diffusers<1"]
    """))
    assert mgt_tool.pack_requirements(pyproject) == ["torch>=2.1", "diffusers<1", "pytest>=8"]
    assert "pytest-timeout>=2.3" in mgt_tool.pack_requirements()  # the repo's own [dev] extra


def test_failure_excerpt_keeps_tracebacks_and_import_lines():
    log = textwrap.dedent("""\
        Starting server
        Traceback (most recent call last):
          File "/x/nodes/a.py", line 3
            def broken(:
        SyntaxError: invalid syntax
        Cannot import /x module for custom nodes: invalid syntax
        unrelated line
           0.1 seconds (IMPORT FAILED): /x
    """)
    excerpt = failure_excerpt(log).splitlines()
    assert excerpt[0].startswith("Traceback") and "SyntaxError: invalid syntax" in excerpt
    assert "unrelated line" not in excerpt and "Starting server" not in excerpt
    assert excerpt[-1].endswith("(IMPORT FAILED): /x")


def test_demo_output_names_never_overwrite(tmp_path):
    """`tools/mgt.py demo` copies ComfyUI's x_00001_.png into output/: a second run gets the next counter."""
    assert mgt_tool.free_name(tmp_path, "mgt_t2i_00001_.png") == tmp_path / "mgt_t2i_00001_.png"
    (tmp_path / "mgt_t2i_00001_.png").write_bytes(b"first")
    (tmp_path / "mgt_t2i_00002_.png").write_bytes(b"second")
    assert mgt_tool.free_name(tmp_path, "mgt_t2i_00001_.png") == tmp_path / "mgt_t2i_00003_.png"
    (tmp_path / "plain.png").write_bytes(b"x")
    assert mgt_tool.free_name(tmp_path, "plain.png") == tmp_path / "plain_00001_.png"


def test_ui_packages_follow_each_comfyui_versions_pins():
    """`ui` installs the frontend, templates and docs that each tested ComfyUI pins (no red errors, no 404s)."""
    if not mgt_tool.env_ready():
        pytest.skip("needs the environment (python3 tools/mgt.py setup)")
    for version, folder in mgt_tool.COMFY_VERSIONS.items():
        reqs = mgt_tool.ui_requirements(folder)
        assert sorted(r.split("==")[0] for r in reqs) == sorted(mgt_tool.UI_ONLY), version
        assert all("==" in r for r in reqs), version
    assert mgt_tool.ui_requirements(mgt_tool.COMFY_VERSIONS["0.3.75"]) != mgt_tool.ui_requirements(mgt_tool.COMFY_DIR)

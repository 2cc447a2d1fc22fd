"""A pack that fails to import must fail the suite, although ComfyUI itself keeps running.

ComfyUI only logs "(IMPORT FAILED)" and serves its other nodes; this proves the harness turns that
into an error that names the broken file.
"""

from __future__ import annotations

import shutil

import mgt_design_choices as pack
import pytest
from comfy_harness import ComfyHarnessError, ComfyServer

pytestmark = pytest.mark.comfyui
PACK_CONTENTS = ("__init__.py", "pyproject.toml", "nodes", "mgt_core")


def test_broken_pack_fails_server_start(comfy_env, tmp_path):
    copy = tmp_path / "custom_nodes" / comfy_env.PACK_NAME
    copy.mkdir(parents=True)
    for name in PACK_CONTENTS:
        src = comfy_env.REPO / name
        if src.is_dir():
            shutil.copytree(src, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, copy / name)
    broken = copy / "nodes" / "schedule_preview.py"
    broken.write_text(broken.read_text() + "\ndef broken(:\n")
    paths = tmp_path / "extra_model_paths.yaml"
    comfy_env.write_extra_model_paths(paths, tmp_path / "custom_nodes", tmp_path / "models")

    server = ComfyServer(comfy_env.PY, comfy_env.LAUNCHER, comfy_env.COMFY_DIR, paths,
                         expected_nodes=pack.NODE_IDS, websocket=False)
    with pytest.raises(ComfyHarnessError) as e:
        server.start()
    message = str(e.value)
    assert "MGTSchedulePreview" in message
    assert "IMPORT FAILED" in message
    assert "SyntaxError" in message and "schedule_preview.py" in message
    assert server.proc.poll() is not None, "the harness must stop the server it could not use"
    assert server.tmp is None

"""The built-in MaskGIT demo: real v1 layout through the public loader, draws its classes (judge), small."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import mgt_core
from mgt_core.demo import class_scenes as C
from mgt_core.demo import judge as J

DEMO = Path(__file__).resolve().parents[1] / "mgt_core" / "demo" / "maskgit-demo"


@pytest.fixture(scope="module")
def pipe():
    return mgt_core.load_pipeline(DEMO, dtype=torch.float32)


def test_layout_and_size(pipe):
    files = [p for p in DEMO.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 12 * 1024 * 1024
    assert sorted(str(p.relative_to(DEMO)) for p in files) == [
        "maskgit_index.json", "transformer/config.json", "transformer/model.safetensors", "vq/config.json",
        "vq/model.safetensors"]
    assert pipe.family == "maskgit-v1" and pipe.info.sampler == "confidence"
    assert pipe.grid == (16, 16) and pipe.factor == 16 and pipe.num_classes == len(C.CLASSES)
    assert pipe.class_table.names == C.CLASS_NAMES
    assert pipe.vq.config.layout == "taming"


def test_vanilla_draws_its_classes(pipe):
    """Every class once (one batch, the demo's defaults, seed 0): the judge's all-correct rate. The shipped
    demo scores 37.5% here with the current judge (47.5% before its outline check; README: below the 70%
    target, its VQGAN decoder gets red, yellow and black wrong); the floor catches a broken model or
    sampler, not a small drift."""
    images = pipe(list(range(len(C.CLASSES))), seed=0)
    verdicts = [J.judge((im.numpy() * 255).round().astype(np.uint8), C.class_prompt(y)) for y, im in enumerate(images)]
    rate = np.mean([v.all_correct for v in verdicts])
    assert rate >= 0.3, [(v.prompt, v.checks) for v in verdicts if not v.all_correct]


def test_study_runs_end_to_end(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("qm", Path(__file__).resolve().parents[1] / "bench" / "quality_maskgit.py")
    qm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(qm)
    res = qm.main(["--per-class", "1", "--variants", "noise_reg", "--out", str(tmp_path)])
    rows = res["variants"]
    assert set(rows) == {qm.VANILLA, "noise_reg"} and 0 <= rows["noise_reg"]["win"] <= 1
    assert rows[qm.VANILLA]["calls"] == rows["noise_reg"]["calls"] == pipe_steps()
    assert (tmp_path / "results.md").read_text().count("|") > 10


def pipe_steps() -> int:
    import json

    return json.loads((DEMO / "maskgit_index.json").read_text())["defaults"]["steps"]

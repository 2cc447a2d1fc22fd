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
    demo scores 77.5% here (README: 75.0% on 2 seeds per class, the issue's target is 70%; the misses are
    ragged outlines, colours are all right); the floor is a few points under, so a broken model, sampler or
    VQGAN fails it, not a ragged star or two."""
    images = pipe(list(range(len(C.CLASSES))), seed=0)
    verdicts = [J.judge((im.numpy() * 255).round().astype(np.uint8), C.class_prompt(y)) for y, im in enumerate(images)]
    rate = np.mean([v.all_correct for v in verdicts])
    assert rate >= 0.72, [(v.prompt, v.checks) for v in verdicts if not v.all_correct]


def test_vq_encode_reads_back_class_scenes(pipe):
    """MGT VQ Encode on the demo (img2img / inpainting start there): ground-truth scenes of every class, encoded
    and decoded again, are judged as their class and keep their pixels. Measured: 40/40 judged correct, mean
    abs error 0.8 / 255 (README); the floors leave room for a few ragged stars, not for a broken encoder."""
    pairs = C.eval_classes(1)
    scenes = np.stack([C.render_classes([y], np.random.default_rng(s))[0] for y, s in pairs])
    tokens = pipe.encode_image(torch.from_numpy(scenes).float() / 255)
    assert tokens.shape == (len(pairs), 16, 16)
    back = (pipe.decode(tokens).numpy() * 255).round().astype(np.uint8)
    verdicts = [J.judge(im, C.class_prompt(y)) for im, (y, _) in zip(back, pairs, strict=True)]
    assert np.mean([v.all_correct for v in verdicts]) >= 0.95, [(v.prompt, v.checks) for v in verdicts if not v.all_correct]
    assert np.abs(back.astype(float) - scenes).mean() < 3.0


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

"""MGT MaskGIT Loader (Files) in a real ComfyUI server: released-style MaskGIT v1 files (pickles with optimizer
state, ``module.`` keys, taming's loss networks) in models/diffusion_models and models/vae are listed by the node,
load weights-only with configs inferred from their shapes, and a class-conditional graph through them draws an
image, the same one as the same files converted to a folder and loaded by MGT Model Loader."""

from __future__ import annotations

import numpy as np
import pytest
from mgt_testing import MASKGIT_CONVERTED, MASKGIT_FILES
from PIL import Image

pytestmark = pytest.mark.comfyui


def _graph(graph, loader_node: str, prefix: str, **loader_inputs):
    g = graph()
    loader = g.node(loader_node, **loader_inputs)
    label = g.node("MGTClassLabel", class_name="3: tiger shark", more_classes="7")
    samp = g.node("MGTSampler", model=loader.out(0), positive=label.out(0), seed=5, steps=0, cfg=0.0, width=0, height=0,
                  batch_size=1, schedule="model default", noise_regularization=False, differential_sampling=False,
                  z_sampling=False)
    dec = g.node("MGTVQDecode", vq=loader.out(2), tokens=samp.out(0), tiled=False)
    g.node("SaveImage", images=dec.out(0), filename_prefix=prefix)
    return g.finalize()


def _images(comfy, prompt) -> list[np.ndarray]:
    _, entry = comfy.run(prompt, timeout=300)
    errors = [d for t, d in entry["status"]["messages"] if t == "execution_error"]
    assert entry["status"]["status_str"] == "success", errors
    out = []
    for png in sorted(comfy.output_images(entry)):
        with Image.open(png) as img:
            out.append(np.asarray(img.convert("RGB")))
    return out


def test_maskgit_files_loader_lists_loads_and_draws(comfy, graph):
    transformer, vq = MASKGIT_FILES
    info = comfy.object_info()["MGTMaskGITLoaderFiles"]["input"]["required"]
    assert transformer in info["transformer"][1]["options"] and vq in info["vq"][1]["options"]

    files = _images(comfy, _graph(graph, "MGTMaskGITLoaderFiles", "maskgit_files", transformer=transformer, vq=vq,
                                  dtype="fp32"))
    assert len(files) == 2 and all(im.shape == (8, 8, 3) for im in files)  # 4x4 tokens, factor 2; one per class
    assert not np.array_equal(files[0], files[1])  # the class token reaches the model

    # the same files converted (python -m mgt_core.convert) and loaded from models/mgt give the same images
    assert MASKGIT_CONVERTED in comfy.object_info()["MGTModelLoader"]["input"]["required"]["model"][1]["options"]
    converted = _images(comfy, _graph(graph, "MGTModelLoader", "maskgit_converted", model=MASKGIT_CONVERTED,
                                      dtype="fp32", text_encoder="model's own", quantization="none"))
    assert all(np.array_equal(a, b) for a, b in zip(files, converted, strict=True))

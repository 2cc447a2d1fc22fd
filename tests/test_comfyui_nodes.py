"""The pack's nodes in a real ComfyUI server: schemas, text-to-image, img2img/inpainting, progress,
Cancel, caching and errors (tiny random models in the real folder layout)."""

from __future__ import annotations

import threading

import mgt_design_choices as pack
import pytest
from comfy_harness import PromptRejected
from PIL import Image

pytestmark = pytest.mark.comfyui

SOCKETS = {
    "MGTModelLoader": ([], ["MGT_MODEL", "MGT_TEXT_ENCODER", "MGT_VQ"]),
    "MGTModelLoaderFiles": ([], ["MGT_MODEL", "MGT_TEXT_ENCODER", "MGT_VQ"]),
    "MGTTextEncode": (["MGT_TEXT_ENCODER"], ["MGT_CONDITIONING"]),
    "MGTSampler": (["MGT_MODEL", "MGT_CONDITIONING"], ["MGT_TOKENS"]),  # negative is optional (MaskGIT needs none)
    "MGTVQDecode": (["MGT_VQ", "MGT_TOKENS"], ["IMAGE"]),
    "MGTVQEncode": (["MGT_VQ", "IMAGE"], ["MGT_TOKENS"]),
    "MGTTomeMGT": (["MGT_MODEL"], ["MGT_MODEL"]),
    "MGTClassLabel": ([], ["MGT_CONDITIONING"]),
    "MGTMaskGITLoaderFiles": ([], ["MGT_MODEL", "MGT_TEXT_ENCODER", "MGT_VQ"]),
}


def t2i(graph, model="tiny-meissonic", prompt="a red circle", negative="", quantization="none", tome=None, **sampler):
    g = graph()
    loader = g.node("MGTModelLoader", model=model, dtype="auto", text_encoder="model's own", quantization=quantization)
    model_out = loader.out(0)
    if tome is not None:
        model_out = g.node("MGTTomeMGT", model=model_out, **tome).out(0)
    pos = g.node("MGTTextEncode", text_encoder=loader.out(1), text=prompt)
    neg = g.node("MGTTextEncode", text_encoder=loader.out(1), text=negative)
    args = dict(seed=1, steps=4, cfg=3.0, width=32, height=48, batch_size=1, schedule="cosine",
                noise_regularization=False, differential_sampling=False, z_sampling=False) | sampler
    samp = g.node("MGTSampler", model=model_out, positive=pos.out(0), negative=neg.out(0), **args)
    dec = g.node("MGTVQDecode", vq=loader.out(2), tokens=samp.out(0), tiled=False)
    save = g.node("SaveImage", images=dec.out(0), filename_prefix="mgt_t2i")
    return g, dict(loader=loader, pos=pos, neg=neg, sampler=samp, decode=dec, save=save)


def run_ok(comfy, prompt, timeout=300):
    prompt_id, entry = comfy.run(prompt, timeout=timeout)
    errors = [d for t, d in entry["status"]["messages"] if t == "execution_error"]
    detail = [(e.get("node_type"), e.get("exception_message"), "".join(e.get("traceback", []))[-1500:]) for e in errors]
    assert entry["status"]["status_str"] == "success", detail
    return prompt_id, entry


def test_every_node_has_typed_sockets_and_tooltips(comfy):
    info = comfy.object_info()
    for node_id in pack.NODE_IDS:
        node = info[node_id]
        assert node["category"].startswith("MGT")
        inputs = {**node["input"]["required"], **node["input"].get("optional", {})}
        assert all(spec[1].get("tooltip") for spec in inputs.values()), node_id
        if node_id in SOCKETS:
            want_in, want_out = SOCKETS[node_id]
            socket_types = [spec[0] for spec in node["input"]["required"].values() if isinstance(spec[0], str) and spec[0].isupper() and spec[0] not in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")]
            assert socket_types == want_in, node_id
            assert node["output"] == want_out, node_id
    loader = info["MGTModelLoader"]["input"]["required"]["model"]
    assert {"tiny-meissonic", "tiny-monetico"} <= set(loader[1]["options"] if isinstance(loader[1], dict) and "options" in loader[1] else loader[0])
    sampler = info["MGTSampler"]["input"]
    assert all(sampler["required"][k][1]["default"] == 0 for k in ("steps", "cfg", "width", "height"))  # = the model's
    assert sampler["required"]["width"][1]["step"] == 32 and "0 = the connected model's default" in sampler["required"]["steps"][1]["tooltip"]
    assert set(sampler["optional"]) >= {"init_tokens", "denoise", "nr_amplitude", "ds_fraction", "z_inversion_cfg"}


@pytest.mark.parametrize("model, size", [("tiny-meissonic", (32, 48)), ("tiny-monetico", (24, 40))])
def test_text_to_image_saves_png_of_the_requested_size(comfy, graph, model, size):
    g, n = t2i(graph, model=model, width=size[0], height=size[1], batch_size=2, z_sampling=True,
               noise_regularization=True, differential_sampling=True)
    prompt_id, entry = run_ok(comfy, g.finalize())
    pngs = comfy.output_images(entry)
    assert len(pngs) == 2
    for png in pngs:
        with Image.open(png) as img:
            assert img.size == size
    events = comfy.events.for_prompt(prompt_id)
    progress = [d for t, d in events if t == "progress" and d.get("node") == n["sampler"].id]
    assert progress and progress[-1]["value"] == progress[-1]["max"] == 4


@pytest.mark.parametrize("method", ["none", "latent2rgb", "taesd"])
def test_live_previews_follow_comfyui_preview_setting(comfy, graph, method):
    g, n = t2i(graph, steps=6, seed=31 + ["none", "latent2rgb", "taesd"].index(method))  # not served from cache
    before = comfy.events.binary_frames
    prompt_id, _ = comfy.run(g.finalize(), timeout=300, extra_data={"preview_method": method})
    comfy.events.wait_for(prompt_id, "execution_success")
    frames = comfy.events.binary_frames - before
    assert (frames > 0) == (method != "none"), frames


def test_same_inputs_are_cached_and_a_new_seed_resamples(comfy, graph):
    g, n = t2i(graph, seed=5)
    run_ok(comfy, g.finalize())
    prompt_id, _ = run_ok(comfy, g.finalize())
    cached = comfy.events.wait_for(prompt_id, "execution_cached")["nodes"]
    assert n["sampler"].id in cached and n["decode"].id in cached
    g2, n2 = t2i(graph, seed=6)
    prompt_id, _ = run_ok(comfy, g2.finalize())
    cached = comfy.events.wait_for(prompt_id, "execution_cached")["nodes"]
    assert n2["loader"].id in cached and n2["sampler"].id not in cached


def test_single_file_loader_and_text_encoder_override(comfy, graph):
    g = graph()
    files = g.node("MGTModelLoaderFiles", transformer="tiny-meissonic.safetensors", vq="tiny-meissonic.safetensors",
                   text_encoder="tiny-meissonic.safetensors", tokenizer_from="tiny-meissonic", dtype="fp32")
    folder = g.node("MGTModelLoader", model="tiny-meissonic", dtype="fp32", text_encoder="tiny-meissonic.safetensors")
    outs = []
    for loader in (files, folder):
        pos = g.node("MGTTextEncode", text_encoder=loader.out(1), text="a red circle")
        neg = g.node("MGTTextEncode", text_encoder=loader.out(1), text="")
        samp = g.node("MGTSampler", model=loader.out(0), positive=pos.out(0), negative=neg.out(0), seed=4, steps=3,
                      cfg=3.0, width=32, height=32, batch_size=1, schedule="cosine", noise_regularization=False,
                      differential_sampling=False, z_sampling=False)
        dec = g.node("MGTVQDecode", vq=loader.out(2), tokens=samp.out(0), tiled=False)
        outs.append(g.node("SaveImage", images=dec.out(0), filename_prefix=f"mgt_files_{len(outs)}"))
    _, entry = run_ok(comfy, g.finalize())
    a, b = (Image.open(p).convert("RGB").tobytes() for p in sorted(comfy.output_images(entry)))
    assert a == b  # the same weights through both loaders give the same image


def image_bytes(comfy, entry) -> bytes:
    [png] = comfy.output_images(entry)
    with Image.open(png) as img:
        return img.convert("RGB").tobytes()


def test_tomemgt_patches_a_copy_and_quantization_loads(comfy, graph):
    size = dict(width=64, height=64, steps=4, seed=12)  # an 8x8 transformer grid, room to merge
    plain = image_bytes(comfy, run_ok(comfy, t2i(graph, **size)[0].finalize())[1])
    merged = image_bytes(comfy, run_ok(comfy, t2i(graph, tome={"ratio": 0.5, "single_stream": True}, **size)[0].finalize())[1])
    assert merged != plain
    g, n = t2i(graph, **size)  # the same plain graph once more, not from cache: a new SaveImage prefix
    g.lookup_node(n["save"].id).set_input("filename_prefix", "mgt_after_tome")
    assert image_bytes(comfy, run_ok(comfy, g.finalize())[1]) == plain  # the loaded model was not changed
    for quant in ("w8 (quantize on load)", "w4 (quantize on load)"):
        run_ok(comfy, t2i(graph, quantization=quant, **size)[0].finalize())
    g, n = t2i(graph, tome={"ratio": 0.9, "single_stream": False}, **size)
    with pytest.raises(PromptRejected):  # ratio above 0.75: rejected by validation
        comfy.queue(g.finalize())


def test_sampler_preset_from_the_model_folder(comfy, graph):
    """The preset combo lists the models' own presets (mgt_defaults.json) and the built-in ones; a
    preset gives exactly the image its settings give through the widgets."""
    options = comfy.object_info()["MGTSampler"]["input"]["optional"]["preset"]
    names = options[1]["options"] if isinstance(options[1], dict) and "options" in options[1] else options[0]
    assert names[0] == "none" and {"test-tuned", "z_sampling", "vanilla"} <= set(names)
    g = graph()
    loader = g.node("MGTModelLoader", model="tiny-meissonic", dtype="auto", text_encoder="model's own")
    pos = g.node("MGTTextEncode", text_encoder=loader.out(1), text="a red circle")
    neg = g.node("MGTTextEncode", text_encoder=loader.out(1), text="")
    base = dict(seed=5, steps=4, cfg=3.0, width=32, height=32, batch_size=1, schedule="cosine",
                noise_regularization=False, differential_sampling=False, z_sampling=False)
    tuned = g.node("MGTSampler", model=loader.out(0), positive=pos.out(0), negative=neg.out(0), preset="test-tuned", **base)
    explicit = g.node("MGTSampler", model=loader.out(0), positive=pos.out(0), negative=neg.out(0),
                      **(base | dict(schedule="pow2", temperature_start=1.0, temperature_end=0.0, token_temperature=0.5,
                                     noise_regularization=True, nr_amplitude=0.5, nr_shape="linear")))
    plain = g.node("MGTSampler", model=loader.out(0), positive=pos.out(0), negative=neg.out(0), **base)
    for name, node in (("mgt_tuned", tuned), ("mgt_explicit", explicit), ("mgt_plain", plain)):
        dec = g.node("MGTVQDecode", vq=loader.out(2), tokens=node.out(0), tiled=False)
        g.node("SaveImage", images=dec.out(0), filename_prefix=name)
    _, entry = run_ok(comfy, g.finalize())
    files = {p.name.split("_0")[0]: p for p in comfy.output_images(entry)}
    with Image.open(files["mgt_tuned"]) as a, Image.open(files["mgt_explicit"]) as b, Image.open(files["mgt_plain"]) as c:
        assert a.tobytes() == b.tobytes() and a.tobytes() != c.tobytes()
    g, _ = t2i(graph, model="tiny-monetico", preset="test-tuned", width=32, height=32)  # not that model's preset
    prompt_id, entry = comfy.run(g.finalize(), timeout=300)
    errors = [d for t, d in entry["status"]["messages"] if t == "execution_error"]
    assert errors and "test-tuned" in errors[0]["exception_message"]


def test_inpainting_keeps_the_unmasked_tokens(comfy, graph):
    g = graph()
    loader = g.node("MGTModelLoader", model="tiny-meissonic", dtype="auto", text_encoder="model's own")
    pos = g.node("MGTTextEncode", text_encoder=loader.out(1), text="a blue square")
    neg = g.node("MGTTextEncode", text_encoder=loader.out(1), text="")
    base = dict(seed=3, steps=4, cfg=3.0, width=32, height=32, batch_size=1, schedule="cosine",
                noise_regularization=False, differential_sampling=False, z_sampling=False)
    first = g.node("MGTSampler", model=loader.out(0), positive=pos.out(0), negative=neg.out(0), **base)
    image = g.node("MGTVQDecode", vq=loader.out(2), tokens=first.out(0), tiled=False)
    mask = g.node("SolidMask", value=1.0, width=16, height=32)  # left half
    canvas = g.node("SolidMask", value=0.0, width=32, height=32)
    full = g.node("MaskComposite", destination=canvas.out(0), source=mask.out(0), x=0, y=0, operation="add")
    enc = g.node("MGTVQEncode", vq=loader.out(2), image=image.out(0), mask=full.out(0))
    second = g.node("MGTSampler", model=loader.out(0), positive=pos.out(0), negative=neg.out(0),
                    init_tokens=enc.out(0), denoise=1.0, **(base | {"seed": 9}))
    out = g.node("MGTVQDecode", vq=loader.out(2), tokens=second.out(0), tiled=True)
    g.node("SaveImage", images=out.out(0), filename_prefix="mgt_inpaint")
    g.node("SaveImage", images=g.node("MGTVQDecode", vq=loader.out(2), tokens=enc.out(0), tiled=False).out(0), filename_prefix="mgt_ref")
    _, entry = run_ok(comfy, g.finalize())
    files = {p.name.split("_0")[0]: p for p in comfy.output_images(entry)}
    with Image.open(files["mgt_inpaint"]) as a, Image.open(files["mgt_ref"]) as b:
        a, b = a.convert("RGB"), b.convert("RGB")
        assert a.size == b.size == (32, 32)
        # right half: tokens kept, so the decode matches away from the seam (the VQ decoder mixes neighbours)
        right_a = a.crop((28, 0, 32, 32)).tobytes()
        right_b = b.crop((28, 0, 32, 32)).tobytes()
        assert sum(abs(x - y) for x, y in zip(right_a, right_b, strict=True)) / len(right_a) < 40


def test_wrong_socket_type_is_rejected_with_400(comfy, graph):
    g, n = t2i(graph)
    prompt = g.finalize()
    prompt[n["sampler"].id]["inputs"]["model"] = [n["loader"].id, 2]  # the VQ into the model socket
    with pytest.raises(PromptRejected) as e:
        comfy.queue(prompt)
    assert e.value.status == 400
    assert n["sampler"].id in e.value.body["node_errors"]


def test_bad_size_is_a_clear_node_error_and_the_queue_goes_on(comfy, graph):
    g, n = t2i(graph, width=36)
    prompt_id, entry = comfy.run(g.finalize(), timeout=120)
    assert entry["status"]["status_str"] == "error"
    [err] = [d for t, d in entry["status"]["messages"] if t == "execution_error"]
    assert err["node_id"] == n["sampler"].id
    assert "must be a positive multiple of 8" in err["exception_message"]
    g2, _ = t2i(graph, seed=11)
    run_ok(comfy, g2.finalize())


def test_interrupt_stops_sampling_and_the_next_prompt_runs(comfy, graph):
    g, n = t2i(graph, steps=400, width=256, height=256, z_sampling=True, seed=21)
    prompt_id = comfy.queue(g.finalize())
    comfy.events.wait_for(prompt_id, "progress", timeout=300)
    threading.Timer(0.2, comfy.interrupt).start()
    entry = comfy.wait(prompt_id, timeout=120)
    assert entry["status"]["status_str"] == "error"
    assert comfy.events.wait_for(prompt_id, "execution_interrupted")["node_id"] == n["sampler"].id
    progress = [d["value"] for t, d in comfy.events.for_prompt(prompt_id) if t == "progress" and d.get("node") == n["sampler"].id]
    assert max(progress) < 400
    g2, _ = t2i(graph, seed=22)
    run_ok(comfy, g2.finalize())

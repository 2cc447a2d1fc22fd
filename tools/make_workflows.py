"""Write the shipped ComfyUI workflows (UI format, drag-and-drop) into ``workflows/``.

The graphs are declared here once, so every workflow stays consistent with the node schemas;
``tests/test_workflows.py`` converts each file to an API prompt with comfy-cli's converter against
a live server's ``/object_info`` and runs it. Rerun after changing a node's inputs:

    python3 tools/make_workflows.py
"""

from __future__ import annotations

import json
import math
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "workflows"
DEMO = "mgt-demo (built-in)"
DEFAULTS_FILE = REPO / "mgt_core" / "demo" / "mgt-demo" / "mgt_defaults.json"

# Widget inputs of each node in schema order (required, then optional), with the workflow's values.
# Socket inputs are listed separately; the seed widget carries ComfyUI's control_after_generate slot.
SOCKETS_IN = {
    "MGTModelLoader": [],
    "MGTTextEncode": [("text_encoder", "MGT_TEXT_ENCODER")],
    "MGTSampler": [("model", "MGT_MODEL"), ("positive", "MGT_CONDITIONING"), ("negative", "MGT_CONDITIONING"),
                   ("init_tokens", "MGT_TOKENS")],
    "MGTVQDecode": [("vq", "MGT_VQ"), ("tokens", "MGT_TOKENS")],
    "MGTVQEncode": [("vq", "MGT_VQ"), ("image", "IMAGE"), ("mask", "MASK")],
    "SaveImage": [("images", "IMAGE")],
    "SolidMask": [],
    "MaskComposite": [("destination", "MASK"), ("source", "MASK")],
    "MGTTomeMGT": [("model", "MGT_MODEL")],
    "MGTClassLabel": [],
    "Note": [],
}
SOCKETS_OUT = {
    "MGTModelLoader": [("model", "MGT_MODEL"), ("text_encoder", "MGT_TEXT_ENCODER"), ("vq", "MGT_VQ")],
    "MGTTextEncode": [("conditioning", "MGT_CONDITIONING")],
    "MGTSampler": [("tokens", "MGT_TOKENS")],
    "MGTVQDecode": [("image", "IMAGE")],
    "MGTVQEncode": [("tokens", "MGT_TOKENS")],
    "SaveImage": [],
    "SolidMask": [("MASK", "MASK")],
    "MaskComposite": [("MASK", "MASK")],
    "MGTTomeMGT": [("model", "MGT_MODEL")],
    "MGTClassLabel": [("conditioning", "MGT_CONDITIONING")],
    "Note": [],
}

NOTE_WEIGHTS = (
    "Runs as is on the built-in demo model (coloured shapes, 256 px, CPU friendly).\n\n"
    "For real images put a model folder in ComfyUI/models/mgt/ and pick it in MGT Model Loader:\n"
    "- MeissonFlow/Meissonic (1024 px): width/height 1024, steps 64, cfg 9, and in the negative MGT Text Encode "
    "switch on reference_negative (the official negative prompt). The official scripts use the text tower of "
    "laion/CLIP-ViT-H-14-laion2B-s32B-b79K: put its model.safetensors in models/text_encoders and pick it as "
    "text_encoder.\n"
    "- Collov-Labs/Monetico (512 px): width/height 512, steps 48, cfg 9.\n"
    "Keep the folders exactly as published (transformer/, vqvae/, text_encoder/, tokenizer/, scheduler/)."
)


def demo_defaults() -> dict:
    d = {"steps": 16, "guidance_scale": 3.0, "width": 256, "height": 256}
    if DEFAULTS_FILE.exists():
        d.update(json.loads(DEFAULTS_FILE.read_text()))
    return d


class Graph:
    def __init__(self):
        self.nodes, self.links = [], []

    def add(self, type_: str, widgets: list, pos, size=(320, 160), title: str | None = None):
        node = {
            "id": len(self.nodes) + 1, "type": type_, "pos": list(pos), "size": list(size), "flags": {},
            "order": len(self.nodes), "mode": 0,
            "inputs": [{"name": n, "type": t, "link": None} for n, t in SOCKETS_IN[type_]],
            "outputs": [{"name": n, "type": t, "links": [], "slot_index": i} for i, (n, t) in enumerate(SOCKETS_OUT[type_])],
            "properties": {"Node name for S&R": type_}, "widgets_values": list(widgets),
        }
        if title:
            node["title"] = title
        self.nodes.append(node)
        return node

    def link(self, src: dict, src_slot: int, dst: dict, dst_name: str) -> None:
        link_id = len(self.links) + 1
        slot = next(i for i, inp in enumerate(dst["inputs"]) if inp["name"] == dst_name)
        typ = src["outputs"][src_slot]["type"]
        self.links.append([link_id, src["id"], src_slot, dst["id"], slot, typ])
        dst["inputs"][slot]["link"] = link_id
        src["outputs"][src_slot]["links"].append(link_id)

    def to_json(self) -> dict:
        return {
            "last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes, "links": self.links,
            "groups": [], "config": {}, "extra": {"ds": fit_view(self.nodes)}, "version": 0.4,
        }


VIEW = (1280, 720)  # the canvas a workflow must fit when opened (a laptop window, less the menu bar)
VIEW_MARGIN = (80, 40)  # left: clear of the frontend's side bar; top: room for the first node titles
TITLE_HEIGHT = 30  # node title bars sit above pos


def fit_view(nodes: list[dict]) -> dict:
    """The saved canvas transform (LiteGraph: screen = (graph + offset) * scale) that shows every node,
    title bars included, inside VIEW right of the side bar, at no more than 100%."""
    x0 = min(n["pos"][0] for n in nodes)
    y0 = min(n["pos"][1] for n in nodes) - TITLE_HEIGHT
    x1 = max(n["pos"][0] + n["size"][0] for n in nodes)
    y1 = max(n["pos"][1] + n["size"][1] for n in nodes)
    room_w, room_h = VIEW[0] - VIEW_MARGIN[0] - 20, VIEW[1] - VIEW_MARGIN[1] - 20
    scale = math.floor(min(1.0, room_w / (x1 - x0), room_h / (y1 - y0)) * 1000) / 1000  # rounded inwards:
    return {"scale": scale, "offset": [math.ceil((VIEW_MARGIN[0] / scale - x0) * 10) / 10,  # never past a margin
                                       math.ceil((VIEW_MARGIN[1] / scale - y0) * 10) / 10]}


def sampler_widgets(d: dict, seed: int, *, nr=False, ds=False, zs=False, denoise=1.0, preset="none",
                    schedule="cosine", token_temperature=1.0) -> list:
    """seed (+ control), steps, cfg, width, height, batch, schedule, NR, DS, Z; then the optional widgets
    (denoise, custom schedule, Gumbel temperatures, token temperature, NR amplitude/shape, DS fraction,
    Z inversion CFG/start/stop, preset)."""
    return [seed, "fixed", d["steps"], d["guidance_scale"], d["width"], d["height"], 1, schedule, nr, ds, zs,
            denoise, "", 2.0, 0.0, token_temperature, 2.0, "abs_cos", 0.75, 0.0, 0, -1, preset]


MASKGIT_DEMO = "maskgit-demo (built-in)"
MASKGIT_INDEX = REPO / "mgt_core" / "demo" / "maskgit-demo" / "maskgit_index.json"
NOTE_MASKGIT = (
    "Class-conditional MaskGIT. Runs as is on the built-in maskgit-demo (40 classes '<colour> <shape>', 256 px, "
    "CPU friendly): pick a 'demo: ...' class in MGT Class Label.\n\n"
    "For ImageNet: convert the released files (python -m mgt_core.convert MaskGIT_ImageNet_256.pth last.ckpt OUT, "
    "or a Halton-MaskGIT ImageNet_*.pth + vq_ds16_c2i.pt) into ComfyUI/models/mgt/, or load the files directly "
    "with MGT MaskGIT Loader (Files); pick an ImageNet class (type to search). MaskGIT v1 256 px: steps 8, cfg 4 "
    "(w = 3); Halton: steps 32, cfg 3 (w = 2). 'model default' schedule = the family's own (v1 arccos / Halton). "
    "The design-choice switches work too (Z-Sampling on the v1 sampler only)."
)


def maskgit_class_to_image(name: str, label: str, seed: int) -> dict:
    d = {"steps": 12, "guidance_scale": 4.0, "width": 256, "height": 256}
    if MASKGIT_INDEX.exists():
        dd = json.loads(MASKGIT_INDEX.read_text()).get("defaults", {})
        d.update({k: v for k, v in (("steps", dd.get("steps")), ("guidance_scale", 1 + dd.get("cfg_w", 3.0))) if v})
    g = Graph()
    g.add("Note", [NOTE_MASKGIT], (20, 360), size=(420, 300), title="Which weights, where")
    loader = g.add("MGTModelLoader", [MASKGIT_DEMO, "auto", "model's own", "none"], (20, 40), size=(320, 150))
    label_node = g.add("MGTClassLabel", [label, ""], (380, 40), size=(340, 120), title="Class")
    samp = g.add("MGTSampler", sampler_widgets(d, seed, schedule="model default"), (760, 20), size=(340, 440))
    g.link(loader, 0, samp, "model")
    g.link(label_node, 0, samp, "positive")
    decode_and_save(g, loader, samp, name, x=1130)
    return g.to_json()


def text_to_image(name: str, prompt: str, *, nr=False, ds=False, zs=False, note: str = NOTE_WEIGHTS, tome=None,
                  quant: str = "none", seed: int = 42) -> dict:
    d = demo_defaults()
    g = Graph()
    g.add("Note", [note], (20, 520), size=(420, 260), title="Which weights, where")
    loader = g.add("MGTModelLoader", [DEMO, "auto", "model's own", quant], (20, 40), size=(320, 150))
    pos = g.add("MGTTextEncode", [prompt, False], (380, 20), size=(360, 140), title="Prompt")
    neg = g.add("MGTTextEncode", ["", False], (380, 200), size=(360, 140), title="Negative prompt")
    model_src = loader
    if tome is not None:
        model_src = g.add("MGTTomeMGT", tome, (380, 430), size=(320, 130))
        g.link(loader, 0, model_src, "model")
    samp = g.add("MGTSampler", sampler_widgets(d, seed, nr=nr, ds=ds, zs=zs), (780, 20), size=(340, 440))
    g.link(model_src, 0, samp, "model")
    g.link(loader, 1, pos, "text_encoder")
    g.link(loader, 1, neg, "text_encoder")
    g.link(pos, 0, samp, "positive")
    g.link(neg, 0, samp, "negative")
    decode_and_save(g, loader, samp, name, x=1160)
    return g.to_json()


def decode_and_save(g: Graph, loader: dict, sampler: dict, name: str, x: int) -> None:
    """The tail every single-sampler workflow shares: VQ decode of the tokens, then Save Image."""
    dec = g.add("MGTVQDecode", [False], (x, 20), size=(300, 100))
    save = g.add("SaveImage", [name], (x, 170), size=(340, 360))
    g.link(sampler, 0, dec, "tokens")
    g.link(loader, 2, dec, "vq")
    g.link(dec, 0, save, "images")


def inpainting() -> dict:
    """Self-contained: a first image, then its left half regenerated under a new prompt."""
    d, quant = demo_defaults(), "none"
    g = Graph()
    g.add("Note", [
        "Inpainting: the first sampler makes an image; the mask (white = regenerate, here the left half) goes "
        "into MGT VQ Encode with that image, and the second sampler regenerates the masked tokens only.\n\n"
        "For your own picture: replace the first sampler and decode with Load Image, paint a mask in its mask "
        "editor, and connect IMAGE and MASK to MGT VQ Encode (sizes must be multiples of the VQ factor).\n\n"
        + NOTE_WEIGHTS], (20, 620), size=(440, 320), title="How it works")
    loader = g.add("MGTModelLoader", [DEMO, "auto", "model's own", quant], (20, 40), size=(320, 150))
    pos1 = g.add("MGTTextEncode", ["a large blue square on a white background", False], (380, 20), size=(360, 150),
                 title="Prompt (first image)")
    pos2 = g.add("MGTTextEncode", ["a large red circle on a white background", False], (380, 210), size=(360, 150),
                 title="Prompt (inpainted region)")
    neg = g.add("MGTTextEncode", ["", False], (380, 400), size=(360, 150), title="Negative prompt")
    # seed 2: the source square is drawn all-correct by the strict judge (seeds 2, 3, 6, 8, 9, 11, 12, 14 of 0-15 on the
    # shipped model, stage 3i; 2, 3, 4, 6, 11, 12, 14 on 3h; 2, 3, 5, 8, 11, 14, 15 on the depth-grown one before them;
    # seed 4 before the uniform-mask fine-tune)
    first = g.add("MGTSampler", sampler_widgets(d, 2), (780, 20), size=(340, 440))
    image = g.add("MGTVQDecode", [False], (1160, 20), size=(280, 100))
    half = g.add("SolidMask", [1.0, d["width"] // 2, d["height"]], (1160, 170), size=(280, 130), title="Mask (left half)")
    canvas = g.add("SolidMask", [0.0, d["width"], d["height"]], (1160, 340), size=(280, 130), title="Canvas")
    mask = g.add("MaskComposite", [0, 0, "add"], (1480, 200), size=(280, 150))
    enc = g.add("MGTVQEncode", [], (1480, 20), size=(280, 120))
    # seed 0: the inpainted circle is all-correct by the strict judge (13 of seeds 0-15 on the shipped model, 14 on 3h;
    # seed 8, used before, drew it ragged)
    second = g.add("MGTSampler", sampler_widgets(d, 0), (1800, 20), size=(340, 440))
    out = g.add("MGTVQDecode", [False], (2180, 20), size=(300, 100))
    save_first = g.add("SaveImage", ["mgt_inpaint_source"], (1480, 400), size=(320, 340))
    save = g.add("SaveImage", ["mgt_inpainted"], (2180, 170), size=(340, 360))
    for s in (first, second):
        g.link(loader, 0, s, "model")
        g.link(neg, 0, s, "negative")
    for t in (pos1, pos2, neg):
        g.link(loader, 1, t, "text_encoder")
    g.link(pos1, 0, first, "positive")
    g.link(pos2, 0, second, "positive")
    g.link(first, 0, image, "tokens")
    g.link(loader, 2, image, "vq")
    g.link(canvas, 0, mask, "destination")
    g.link(half, 0, mask, "source")
    g.link(loader, 2, enc, "vq")
    g.link(image, 0, enc, "image")
    g.link(mask, 0, enc, "mask")
    g.link(enc, 0, second, "init_tokens")
    g.link(second, 0, out, "tokens")
    g.link(loader, 2, out, "vq")
    g.link(image, 0, save_first, "images")
    g.link(out, 0, save, "images")
    return g.to_json()


WORKFLOWS = {
    # seed 11 draws this prompt all-correct (strict judge) on the shipped demo model (seeds 3, 5, 9, 11 of 0-11; 11 has
    # the roundest outline, template IoU 0.94; 5, used on 3h, came out lumpy at 0.88), 3, 5, 6, 8, 9, 11 on 3h; 5, 6, 10,
    # 11 on the depth-grown model; seed 3 before that, seed 0 before the uniform-mask fine-tune)
    "mgt_text_to_image": lambda: text_to_image("mgt_t2i", "a yellow circle on a blue background", seed=11),
    # seed 8 draws this two-object prompt all-correct with Z + NR under the strict judge (seeds 0, 8, 9, 12, 20 of 0-20
    # on the shipped model; 8 scores highest, 20, used on 3h, has blue specks on the circle); 9, 12, 16, 17, 20 on 3h;
    # 14 and 20 on the one before; seed 9 before the uniform-mask fine-tune)
    "mgt_text_to_image_enhanced": lambda: text_to_image(
        "mgt_t2i_enhanced", "a red circle left of a blue square on a white background", nr=True, zs=True, seed=8,
        note="Enhanced inference: masked Z-Sampling + noise regularization (the reference's zigzag+noise "
             "combination; ~3x the model calls of the plain workflow). Toggle differential_sampling too to stack "
             "all three.\n\n" + NOTE_WEIGHTS),
    "mgt_inpainting": inpainting,
    # checked by tests/test_maskgit_workflow.py: the judge reads this class at this seed in the saved image
    # (blue square at seeds 0-2 on the demo as exported; red, yellow and black classes came out in the wrong colour)
    "maskgit_class_to_image": lambda: maskgit_class_to_image("maskgit_class", "demo: blue square", seed=0),
    # a triangle: with TomeMGT 0.25 + W8 small stars came out wrong at all 12 seeds tried; with the strict judge this
    # one is right at seed 0 on the shipped model (stage 3i; checked in the served output) and on 3h and 3g (10 of
    # seeds 0-15 on 3g; seed 5 before the uniform-mask fine-tune)
    "mgt_low_memory_tomemgt_scq": lambda: text_to_image(
        "mgt_low_memory", "a purple triangle at the bottom right on a gray background",
        tome=[0.25, False, 0.0, 1.0], quant="w8 (quantize on load)", seed=0,
        note="Low memory / fewer FLOPs: the loader quantizes the transformer's linear layers to 8 bits while "
             "loading (0.53x the bf16 weight bytes; 'w4' 0.28x; a calibrated W4A8 variant from "
             "python -m mgt_core.accel.quantize_tool appears as 'saved: w4a8'), and MGT TomeMGT merges 25% of the "
             "image tokens in the dual-stream blocks. For 1024 px on a small GPU also switch on tiled in "
             "MGT VQ Decode.\n\n" + NOTE_WEIGHTS),
}


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, build in WORKFLOWS.items():
        path = OUT / f"{name}.json"
        path.write_text(json.dumps(build(), indent=1) + "\n")
        print(f"wrote {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()

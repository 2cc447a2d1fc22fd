"""Smoke runs of the demo training scripts and the train/sample consistency they rely on.

The masking check runs the pack's real sampler and records what the transformer is given at each
step, so training and sampling cannot drift apart silently.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import train_demo_t2i as T2I  # noqa: E402
import train_demo_vq as VQ  # noqa: E402

TINY = [
    "--width",
    "32",
    "--heads",
    "2",
    "--layers",
    "1",
    "--single-layers",
    "1",
    "--text-width",
    "32",
    "--text-layers",
    "2",
]
REAL_VQ_KEYS = [
    "_class_name", "_diffusers_version", "act_fn", "block_out_channels", "down_block_types", "in_channels",
    "latent_channels", "layers_per_block", "lookup_from_codebook", "mid_block_add_attention", "norm_num_groups",
    "norm_type", "num_vq_embeddings", "out_channels", "sample_size", "scaling_factor", "up_block_types",
    "vq_embed_dim", "force_upcast",
]  # fmt: skip
"""Key order of Meissonic's vqvae/config.json (models.md section 4)."""
REAL_TRANSFORMER_KEYS = [
    "_class_name", "_diffusers_version", "attention_head_dim", "axes_dims_rope", "codebook_size", "downsample",
    "guidance_embeds", "in_channels", "joint_attention_dim", "num_attention_heads", "num_layers",
    "num_single_layers", "patch_size", "pooled_projection_dim", "upsample", "vocab_size",
]  # fmt: skip


def test_training_masks_match_what_the_sampler_feeds_the_model(tmp_path):
    """For every step count users pick, the masked-token count at the input of step i and the
    timestep value must be those the pack's sampler actually passes to the transformer."""
    a = T2I.parse_args(TINY)
    model, text = T2I.build_models(a)
    seen: list[tuple[int, int]] = []
    forward = model.forward

    def spy(tokens, text_hidden, pooled, timestep, micro_conds):
        seen.append((int((tokens[0] == T2I.MASK_ID).sum()), int(torch.as_tensor(timestep).reshape(-1)[0])))
        return forward(tokens, text_hidden, pooled, timestep, micro_conds)

    model.forward = spy
    from mgt_core.demo.tokenizer import load_tokenizer, write_tokenizer

    tok = load_tokenizer(write_tokenizer(tmp_path / "tokenizer"))
    pipe = T2I.pipeline_for(model.eval(), text.eval(), tok, VQ.VQModel.from_config(VQ.VQ_CONFIG).eval())
    counts = T2I.input_mask_counts()
    for steps in (8, 12, 64):
        seen.clear()
        pipe.sample_tokens(
            pipe.encode_prompt(["a red circle on a gray background"]), None,
            _settings(steps), height=256, width=256, generator=torch.Generator().manual_seed(0),
        )  # fmt: skip
        assert [m for m, _ in seen] == counts[steps].tolist()
        assert [t for _, t in seen] == list(range(steps - 1, -1, -1))
        # the formula of design-choices.md section 2.2, in float32 (the reference scheduler's dtype;
        # float64 differs where L cos(...) is whole, e.g. T = 12, i = 8), with the reveal-one clamp
        r = torch.arange(1, steps, dtype=torch.float32) / steps
        want = [256]
        for m in torch.floor(256 * torch.cos(r * (math.pi / 2))).long().tolist():
            want.append(max(1, min(want[-1] - 1, m)))
        assert counts[steps].tolist() == want

    gen = torch.Generator().manual_seed(0)
    mask, timestep = T2I.training_mask(512, gen, counts)
    per_row = mask.sum(1)
    for m, t in zip(per_row.tolist(), timestep.tolist(), strict=True):
        candidates = [T for T in T2I.STEP_CHOICES if t < T and counts[T][T - 1 - t] == m]
        assert candidates, (m, t)
    assert (per_row == 256).any() and (timestep == 0).any()  # fully masked first steps and last steps occur


def test_object_first_masks_leave_the_hole_the_sampler_leaves():
    """Object-first rows mask every non-background token before any background one (the sampler
    reveals the confident background first); the counts stay the sampler's."""
    counts = T2I.input_mask_counts()
    target = torch.full((256, 256), 3)
    target[:, 40:60] = 100  # a 20-token object on background code 3
    gen = torch.Generator().manual_seed(0)
    mask, timestep = T2I.training_mask(256, gen, counts, target, p_object_first=0.5)
    plain, _ = T2I.training_mask(256, torch.Generator().manual_seed(0), counts)
    n, n_obj = mask.sum(1), mask[:, 40:60].sum(1)
    object_first = n_obj == torch.clamp(n, max=20)  # object fully masked, or only object tokens
    assert 0.35 < object_first.float().mean() < 0.8  # about half the rows (plus uniform rows that match by chance)
    assert torch.equal(n, plain.sum(1))
    uniform = ~object_first
    assert (n_obj[uniform] < torch.clamp(n[uniform], max=20)).all()
    # p = 0 is the uniform draw, bit for bit
    again, _ = T2I.training_mask(256, torch.Generator().manual_seed(0), counts, target, p_object_first=0.0)
    assert torch.equal(again, plain)


def _settings(steps: int):
    from mgt_core.pipeline import make_settings

    return make_settings(steps=steps, guidance_scale=1.0)


@pytest.fixture(scope="module")
def codebook(tmp_path_factory):
    import demo_codebook as CB

    path = tmp_path_factory.mktemp("codebook") / "codebook.pt"
    book = CB.build(n_images=12, iters=2, seed=0)
    assert book.shape == (CB.CODEBOOK, 16 * 16 * 3)
    torch.save(book, path)
    return path


def test_codebook_tokenizes_flat_colours_exactly_and_round_trips(codebook):
    import demo_codebook as CB
    import numpy as np

    from mgt_core.demo import scenes as S

    book = torch.load(codebook)
    flat = np.broadcast_to(np.array(S.BACKGROUNDS["beige"], np.uint8), (1, 32, 48, 3)).copy()
    codes = CB.tokenize(flat, book)
    assert codes.shape == (1, 2, 3) and len(set(codes.flatten().tolist())) == 1
    assert (CB.decode(codes, book) == flat).all()  # flat palette patches are exact codes
    image = S.render(S.realize(S.parse_prompt("a large red square on a gray background"), np.random.default_rng(0)))
    back = CB.decode(CB.tokenize(image[None], book), book)[0]
    assert np.abs(back.astype(int) - image).mean() < 12  # even a 12-image codebook is close


@pytest.mark.slow
def test_vq_script_trains_resumes_and_exports(tmp_path, codebook):
    out = tmp_path / "vq"
    common = ["--out", str(out), "--codebook", str(codebook), "--batch", "1", "--log-every", "1",
              "--eval-every", "2", "--eval-n", "2", "--final-n", "2", "--threads", "1"]  # fmt: skip
    VQ.main([*common, "--part", "decoder", "--steps", "2"])
    with pytest.raises(SystemExit):  # an existing run is never overwritten silently
        VQ.main([*common, "--part", "decoder", "--steps", "2"])
    VQ.main([*common, "--part", "decoder", "--steps", "3", "--resume"])
    VQ.main([*common, "--part", "encoder", "--steps", "2"])
    rows = (out / "decoder_log.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3"]
    VQ.main([*common, "--export"])
    cfg = json.loads((out / "vqvae" / "config.json").read_text())
    assert list(cfg) == REAL_VQ_KEYS
    from mgt_core.loading.pipeline import load_vq

    vq = load_vq(str(out / "vqvae" / "diffusion_pytorch_model.safetensors"), config=cfg)  # strict load
    assert vq.factor == 16 and vq.config.num_vq_embeddings == T2I.CODEBOOK
    book = torch.load(codebook)
    assert torch.allclose(vq.quantize.embedding.weight, VQ.code_embeddings(book, vq.config.embed_dim))
    ids = vq.encode(torch.rand(1, 3, 256, 256))
    assert ids.shape == (1, 16, 16)
    assert "export" in (out / "eval.csv").read_text()


@pytest.mark.slow
def test_t2i_script_trains_and_exports_a_loadable_model_folder(tmp_path, codebook):
    torch.manual_seed(0)
    folder = tmp_path / "vq"
    folder.mkdir()
    for part in VQ.PARTS:  # an untrained VQ is enough to check the export
        torch.save({"model": VQ.part_state(VQ.new_model(torch.load(codebook)), part)}, folder / f"{part}.pt")
    VQ.main(["--out", str(folder), "--codebook", str(codebook), "--export", "--final-n", "1"])
    common = ["--out", str(tmp_path / "run"), "--codebook", str(codebook), "--vq", str(folder / "vqvae"),
              "--data", str(tmp_path / "data"), "--chunk", "8", "--init-chunks", "1", "--steps-per-chunk", "1",
              "--batch", "4", "--log-every", "1", "--eval-every", "100", "--eval-n", "2", "--eval-steps", "2",
              "--threads", "1", *TINY]  # fmt: skip
    T2I.main([*common, "--steps", "2"])
    T2I.main([*common, "--steps", "3", "--resume"])
    assert len(list((tmp_path / "data").rglob("*.pt"))) == 3  # one chunk per step after the first
    dst = tmp_path / "mgt-demo"
    T2I.main([*common, "--export", str(dst), "--default-steps", "6", "--default-cfg", "2.5"])
    index = json.loads((dst / "model_index.json").read_text())
    assert index["transformer"] == ["transformer", "Transformer2DModel"] and index["vqvae"] == ["diffusers", "VQModel"]
    assert list(json.loads((dst / "transformer" / "config.json").read_text())) == REAL_TRANSFORMER_KEYS
    sched = json.loads((dst / "scheduler" / "scheduler_config.json").read_text())
    assert sched["mask_token_id"] == 512 and sched["masking_schedule"] == "cosine"
    from mgt_core import load_pipeline

    pipe = load_pipeline(dst)
    assert (pipe.info.steps, pipe.info.guidance_scale, pipe.info.negative_prompt) == (6, 2.5, "")
    image = pipe("a red circle on a gray background", steps=2)
    assert image.shape == (1, 256, 256, 3)

    # Fine-tuning an exported folder on several canvases, its tokens from the folder's VQ encoder: the run
    # starts exactly at the folder's weights (lr 0 keeps them), each canvas gets its own data stream.
    tune = ["--out", str(tmp_path / "tune"), "--init", str(dst), "--tokenize-vq", str(dst / "vqvae"),
            "--aspects", "256x256:1,384x256:1", "--data", str(tmp_path / "data2"), "--chunk", "8",
            "--init-chunks", "2", "--batch", "2", "--lr", "0", "--warmup", "1", "--eval-every", "100",
            "--eval-n", "1", "--eval-steps", "2", "--threads", "1", "--seed", "3"]  # fmt: skip
    T2I.main([*tune, "--steps", "4"])
    folders = sorted(p.name for p in (tmp_path / "data2").iterdir())
    assert len(folders) == 2 and all(f.startswith("vq") for f in folders) and folders[1].endswith("-384x256")
    T2I.main([*tune, "--export", str(tmp_path / "again")])
    # Exporting over the folder the VQ comes from would delete the VQ before copying it: refused, folder intact.
    with pytest.raises(SystemExit, match="lies inside --export"):
        T2I.main([*tune[:5], str(tmp_path / "again" / "vqvae"), *tune[6:], "--export", str(tmp_path / "again")])
    assert (tmp_path / "again" / "vqvae" / "config.json").is_file()
    from safetensors.torch import load_file

    for sub, name in (("transformer", "diffusion_pytorch_model.safetensors"), ("text_encoder", "model.safetensors")):
        before, after = load_file(str(dst / sub / name)), load_file(str(tmp_path / "again" / sub / name))
        assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before), sub
    wide = load_pipeline(tmp_path / "again")("a red circle on a gray background", steps=2, width=384, height=256)
    assert wide.shape == (1, 256, 384, 3)

    # Depth growth: blocks appended with their adaLN gates at zero leave the model's output exactly as it was.
    grow = [*tune[:1], str(tmp_path / "grow"), *tune[2:3], str(tmp_path / "again"), *tune[4:]]
    T2I.main([*grow, "--steps", "1", "--grow-single-layers", "2"])
    T2I.main([*grow, "--export", str(tmp_path / "grown")])
    cfg = json.loads((tmp_path / "grown" / "transformer" / "config.json").read_text())
    assert cfg["num_single_layers"] == json.loads((dst / "transformer" / "config.json").read_text())["num_single_layers"] + 2
    prompt = "a red circle on a gray background"
    grown = load_pipeline(tmp_path / "grown")(prompt, steps=3, seed=5, width=384, height=256)
    assert torch.equal(grown, load_pipeline(tmp_path / "again")(prompt, steps=3, seed=5, width=384, height=256))


def test_append_csv_keeps_columns_aligned_when_a_row_brings_new_ones(tmp_path):
    """A sweep of the compositional split after the simple one: its `relation` must not land under `position`."""
    import csv

    path = tmp_path / "sweep.csv"
    VQ.append_csv(path, {"split": "simple", "all": 0.6, "position": 1.0, "seconds": 22})
    VQ.append_csv(path, {"split": "compositional", "all": 0.3, "relation": 0.8, "seconds": 23})
    VQ.append_csv(path, {"split": "simple", "all": 0.5, "position": 0.9, "seconds": 21})
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["split"] for r in rows] == ["simple", "compositional", "simple"]
    assert rows[1]["relation"] == "0.8" and rows[1]["position"] == "" and rows[1]["seconds"] == "23"
    assert rows[2]["position"] == "0.9" and rows[2]["relation"] == "" and rows[0]["seconds"] == "22"

"""MGTPipeline end to end on a tiny random model: text-to-image, img2img, inpainting, settings."""

from __future__ import annotations

import pytest
import torch
from mgt_testing import make_tiny_folder

import mgt_core
from mgt_core.errors import MGTInputError
from mgt_core.pipeline import make_settings
from mgt_core.sampling.differential import DifferentialSampling
from mgt_core.sampling.noise_reg import NoiseRegularization
from mgt_core.sampling.partial import start_from_tokens
from mgt_core.sampling.schedules import get_schedule
from mgt_core.sampling.zsampling import ZSampling


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return mgt_core.load_pipeline(make_tiny_folder(tmp_path_factory.mktemp("p") / "m"))


def test_text_to_image_shapes_seeds_and_batches(pipe):
    img, tok = pipe(["a red circle", "a blue square"], num_images_per_prompt=2, height=32, width=48, seed=3, return_tokens=True)
    assert img.shape == (4, 32, 48, 3) and img.dtype == torch.float32 and img.device.type == "cpu"
    assert 0 <= img.min() and img.max() <= 1
    assert tok.shape == (4, 8, 12) and (tok < 64).all()
    again = pipe(["a red circle", "a blue square"], num_images_per_prompt=2, height=32, width=48, seed=3)
    other = pipe(["a red circle", "a blue square"], num_images_per_prompt=2, height=32, width=48, seed=4)
    assert torch.equal(img, again) and not torch.equal(img, other)


def test_defaults_come_from_the_model_folder(pipe):
    steps = []
    img = pipe("a red circle", callback=lambda info: steps.append(info.i))
    assert img.shape == (1, 32, 32, 3) and steps == list(range(pipe.info.steps))


def test_inpainting_keeps_unmasked_tokens(pipe):
    init, tokens = pipe("a red circle", seed=1, return_tokens=True)
    mask = torch.zeros(1, 32, 32)
    mask[:, :, :16] = 1  # left half
    out, new = pipe("a green star", init_image=init, mask=mask, seed=2, return_tokens=True)
    reencoded = pipe.encode_image(init)
    assert torch.equal(new[..., 4:], reencoded[..., 4:])
    assert not torch.equal(new[..., :4], reencoded[..., :4])


def test_img2img_runs_the_strength_share_of_steps(pipe):
    init = pipe("a red circle", seed=1)
    steps = []
    pipe("a red circle", init_image=init, strength=0.5, seed=2, callback=lambda info: steps.append(info.i))
    assert steps == list(range(pipe.info.steps - pipe.info.steps // 2, pipe.info.steps))


def test_make_settings_takes_booleans_dicts_instances_and_presets():
    s = make_settings(steps=8, guidance_scale=9, noise_regularization=True, differential_sampling={"fraction": 0.5},
                      z_sampling=ZSampling(inversion_cfg=1.0))
    assert s.noise_regularization == NoiseRegularization()
    assert s.differential_sampling == DifferentialSampling(fraction=0.5)
    assert s.z_sampling.inversion_cfg == 1.0 and s.model_calls() == 22
    p = make_settings(steps=8, guidance_scale=9, preset_name="enhanced")
    assert p.noise_regularization and p.differential_sampling and p.z_sampling
    off = make_settings(steps=8, guidance_scale=9, noise_regularization=False, z_sampling=None)
    assert off.noise_regularization is None and off.z_sampling is None and off.model_calls() == 8
    with pytest.raises(MGTInputError, match="preset"):
        make_settings(steps=8, guidance_scale=9, preset_name="best")
    with pytest.raises(MGTInputError, match="expected True/False"):
        make_settings(steps=8, guidance_scale=9, noise_regularization="yes")


def test_token_temperature_divides_the_logits_and_is_off_at_one(pipe):
    """tau = 1 is the reference (no transform: the same tokens as leaving it unset); tau < 1 draws from
    softmax(logits / tau), checked against the engine with the logits scaled by hand."""
    from mgt_core.sampling.engine import Sampler

    assert make_settings(steps=4, guidance_scale=3, token_temperature=1.0).logit_temperature is None
    s = make_settings(steps=4, guidance_scale=3, token_temperature=0.5)
    logits = torch.randn(2, 16, 8)
    ctx_args = dict(i=0, counts=[12, 8, 4, 0])
    x = torch.full((2, 16), 8)
    plain = Sampler(type("D", (), {"mask_id": 8, "grid": (4, 4)})(), make_settings(steps=4, guidance_scale=3), torch.Generator().manual_seed(1))
    sharp = Sampler(type("D", (), {"mask_id": 8, "grid": (4, 4)})(), s, torch.Generator().manual_seed(1))
    a = sharp.unmask(logits, x, ctx_args["i"], ctx_args["counts"])
    b = plain.unmask(logits * 2.0, x, ctx_args["i"], ctx_args["counts"])
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    p = "a red circle"
    assert torch.equal(pipe(p, seed=4, token_temperature=1.0), pipe(p, seed=4))
    assert not torch.equal(pipe(p, seed=4, token_temperature=0.2), pipe(p, seed=4))
    for bad in (0, -1, float("nan"), "low", True):
        with pytest.raises(MGTInputError, match="token temperature must be a number > 0"):
            pipe(p, token_temperature=bad)


def test_start_from_tokens_broadcasts_and_checks_batches():
    tokens = torch.randint(0, 10, (1, 4, 4))
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, 0] = True
    st = start_from_tokens(tokens, mask, 8, 1.0, get_schedule("cosine"), 3, 99, None)
    assert st.tokens.shape == (3, 16) and (st.tokens[:, :4] == 99).all() and st.start_ratio == pytest.approx(0.25)
    with pytest.raises(MGTInputError, match="init token grids"):
        start_from_tokens(torch.zeros(2, 4, 4, dtype=torch.long), None, 8, 0.5, get_schedule("cosine"), 3, 99, None)


def test_bad_sizes_and_prompts(pipe):
    with pytest.raises(MGTInputError, match="multiple of 8"):
        pipe("x", height=30, width=32)
    with pytest.raises(MGTInputError, match="negative prompts"):
        pipe(["a", "b"], negative_prompt=["only one"])


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"steps": 0}, r"steps must be an integer >= 1 \(or None for the model's default, 6\), got 0"),
    ({"width": 0}, r"width must be an integer >= 1 \(or None for the model's default, 32\), got 0"),
    ({"height": 0}, r"height must be an integer >= 1 \(or None"),
    ({"steps": 2.5}, r"steps must be an integer"),
    ({"num_images_per_prompt": 0}, r"num_images_per_prompt must be an integer >= 1, got 0"),
    ({"seed": 2**64}, r"seed must be an integer from 0 to 2\*\*64-1"),
    ({"seed": -1}, r"seed must be an integer from 0 to 2\*\*64-1"),
    ({"prompt": None}, r"prompt must be a string or a non-empty list of strings, got None"),
    ({"prompt": []}, r"prompt must be a string or a non-empty list"),
    ({"negative_prompt": 3}, r"negative_prompt must be a string"),
    ({"init_image": torch.rand(1, 32, 32, 3), "width": 48}, r"init_image is 32x32 .* ask for 48x"),
    ({"init_image": torch.rand(32, 32, 3)}, r"init_image must be a tensor \[B, H, W, 3\]"),
    ({"init_image": torch.rand(1, 32, 32, 3), "mask": torch.ones(1, 16, 16)}, r"mask must be .* \(32x32\)"),
])
def test_bad_arguments_are_named_errors_before_any_work(pipe, kwargs, message):
    """Nothing is silently replaced by a default, and no error comes from deep inside torch."""
    prompt = kwargs.pop("prompt", "a red circle")
    with pytest.raises(MGTInputError, match=message):
        pipe(prompt, **kwargs)


def test_seed_covers_comfyuis_whole_range(pipe):
    top = pipe("a red circle", seed=2**64 - 1, steps=2)
    assert top.shape == (1, 32, 32, 3)
    assert not torch.equal(top, pipe("a red circle", seed=2**63, steps=2))


def test_init_image_sets_the_size_when_width_and_height_are_left_out(pipe):
    init = pipe("a red circle", seed=1, height=32, width=48)
    assert pipe("a red circle", init_image=init, strength=0.5, seed=2).shape == (1, 32, 48, 3)


def test_truncated_prompt_warns(pipe):
    with pytest.warns(mgt_core.errors.MGTPromptWarning, match=r"tokens but the text encoder reads \d+"):
        pipe("a red circle " * 30, steps=1)

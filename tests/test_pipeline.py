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

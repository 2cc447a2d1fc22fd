"""MaskGIT pipeline call: class labels (ImageNet indices or names), family samplers, design choices."""

from __future__ import annotations

import pytest
import torch

from mgt_core import load_pipeline
from mgt_core.classes import imagenet, table_for
from mgt_core.errors import MGTInputError, MGTLoadError
from mgt_core.loading.maskgit import save_maskgit_folder
from mgt_core.models import configs as C
from mgt_core.models.halton import HaltonTransformer
from mgt_core.models.maskgit import MaskGITTransformer
from mgt_core.models.vq.vqgan import VQGAN
from mgt_core.sampling.zsampling import ZSampling


def _random(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return module


def tiny_folder(tmp_path, family="maskgit-v1", nclass=1000, defaults=None):
    if family == "halton":
        cfg = {**C.tiny_halton(), "nclass": nclass}
        model, vcfg = _random(HaltonTransformer.from_config(cfg), 1), C.tiny_llamagen()
    else:
        cfg = {**C.tiny_maskgit(), "nclass": nclass}
        model, vcfg = _random(MaskGITTransformer.from_config(cfg), 1), C.tiny_taming()
    vq = _random(VQGAN.from_config(vcfg), 2)
    out = tmp_path / family
    save_maskgit_folder(out, family, model.config.to_dict(), model.state_dict(), vq.config.to_dict(), vq.state_dict(),
                        defaults={"steps": 4, **(defaults or {})})
    return load_pipeline(str(out), dtype=torch.float32)


def test_imagenet_table_lookup_and_errors():
    t = imagenet()
    assert len(t) == 1000 and t.names[1] == "goldfish" and t.names[282] == "tiger cat"
    assert t.indices(["goldfish", "1: goldfish", " Tiger  Cat ", 7, "404"]) == [1, 1, 282, 7, 404]
    with pytest.raises(MGTInputError, match="close matches: 'goldfish'"):
        t.index("golfish")
    with pytest.raises(MGTInputError, match="out of range"):
        t.index(1000)
    with pytest.raises(MGTInputError, match="class 1 is 'goldfish'"):
        t.index("1: tench")
    assert table_for(None, 10).names[3] == "class 3"
    with pytest.raises(MGTInputError, match="lists 2"):
        table_for(["a", "b"], 3)


@pytest.mark.parametrize("family", ["maskgit-v1", "halton"])
def test_pipeline_call_with_class_names_and_indices(tmp_path, family):
    pipe = tiny_folder(tmp_path, family)
    imgs, toks = pipe(["goldfish", 282], seed=3, return_tokens=True)
    side = pipe.grid[0] * pipe.factor
    assert imgs.shape == (2, side, side, 3) and 0 <= float(imgs.min()) and float(imgs.max()) <= 1
    assert (toks < pipe.vq.codebook_size).all()
    again = pipe([1, "tiger cat"], seed=3, return_tokens=True)[1]
    assert torch.equal(toks, again)  # names and indices are the same labels; seeded
    other = pipe([1, 282], seed=4, return_tokens=True)[1]
    assert not torch.equal(toks, other)
    with pytest.raises(MGTInputError, match="unknown ImageNet class 'goldfsh'; close matches: 'goldfish'"):
        pipe("goldfsh")


def test_pipeline_design_choices_and_model_calls(tmp_path):
    pipe = tiny_folder(tmp_path)
    s = pipe.sampler_settings()
    assert s.family == "maskgit_v1" and s.steps == 4 and s.schedule.name == "v1_arccos"
    calls = []
    base = pipe.sample_tokens([5], s, torch.Generator().manual_seed(0))
    zs = pipe.sampler_settings(z_sampling=ZSampling())
    res = pipe.sample_tokens([5], zs, torch.Generator().manual_seed(0), callback=lambda i: calls.append(i.i))
    assert base.model_calls == 4 and res.model_calls == 3 * 4 - 2 and calls == [0, 1, 2, 3]
    for kw in ({"preset": "enhanced"}, {"noise_regularization": True, "schedule": "cosine"}, {"sampler": "halton"}):
        img = pipe(3, seed=1, **kw)
        assert torch.isfinite(img).all()
    with pytest.raises(MGTInputError, match="Z-Sampling needs a confidence sampler"):
        pipe(3, sampler="halton", z_sampling=True)
    with pytest.raises(MGTInputError, match="sampler must be"):
        pipe(3, sampler="ddim")


def test_reference_rng_keeps_the_mask_logit(tmp_path):
    pipe = tiny_folder(tmp_path)
    s = pipe.sampler_settings(reference_rng=True)
    res = pipe.sample_tokens([2], s, torch.Generator().manual_seed(0))
    assert res.tokens.shape == (1, pipe.grid[0] * pipe.grid[1])
    assert pipe.denoiser([2], mask_logit=True)(res.tokens.view(1, *pipe.grid), 0, "cond")[1].shape[1] == pipe.vq.codebook_size + 1


def test_own_class_names_from_the_folder(tmp_path):
    names = [f"thing {i}" for i in range(10)]
    pipe = tiny_folder(tmp_path, nclass=10, defaults={"class_names": names})
    assert pipe.class_table.names == tuple(names)
    assert pipe(["thing 3"], seed=0).shape[0] == 1
    with pytest.raises(MGTInputError, match="close matches: 'thing 3'"):
        pipe("thing 33")


def test_vqgan_norm_groups_option_keeps_keys_and_default_configs():
    base = {**C.tiny_taming()}
    a, b = VQGAN.from_config(base), VQGAN.from_config({**base, "norm_groups": 1})
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}
    groups = {m.num_groups for m in b.modules() if isinstance(m, torch.nn.GroupNorm)}
    assert groups == {1} and {m.num_groups for m in a.modules() if isinstance(m, torch.nn.GroupNorm)} == {32}
    assert "norm_groups" not in a.config.to_dict() and b.config.to_dict()["norm_groups"] == 1
    b.load_state_dict(a.state_dict())
    ids = torch.randint(0, 16, (1, 4, 4))
    assert not torch.allclose(a.decode(ids), b.decode(ids))  # the groups change the computation, not the weights


def test_vqgan_norm_groups_0_is_the_affine_part_only():
    base = {**C.tiny_taming()}
    a, z = VQGAN.from_config(base), VQGAN.from_config({**base, "norm_groups": 0})
    assert z.config.to_dict()["norm_groups"] == 0
    z.load_state_dict(a.state_dict())  # same keys and shapes
    norms = [m for m in z.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(m.num_groups == 0 for m in norms)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, norms[0].num_channels, 3, 5, generator=g) * 3 + 2
    with torch.no_grad():
        norms[0].weight.copy_(torch.randn(norms[0].num_channels, generator=g))
        norms[0].bias.copy_(torch.randn(norms[0].num_channels, generator=g))
    w, b = norms[0].weight[:, None, None], norms[0].bias[:, None, None]
    assert torch.allclose(norms[0](x), x * w + b)  # no statistics: a pixel's value does not depend on the others
    ids = torch.randint(0, 16, (1, 4, 4))
    assert not torch.allclose(a.decode(ids), z.decode(ids))
    with pytest.raises(MGTLoadError, match="GroupNorm groups"):
        VQGAN.from_config({**base, "norm_groups": -1})

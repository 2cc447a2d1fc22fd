"""MaskGIT-family samplers on the engine: official-token parity (reference RNG), reveal counts, design choices.

The reference loops below are transcriptions of design-choices.md 4.2 / 4.3 (the official
``sample`` of MaskGIT-pytorch v1 and ``HaltonSampler.__call__``), written independently of
``mgt_core.sampling.maskgit``: global RNG, ``torch.distributions.Categorical``, ``np.random.gumbel``,
topk + ``>=`` threshold, float Halton points deduplicated with ``np.unique``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mgt_core.errors import MGTInputError
from mgt_core.sampling.differential import DifferentialSampling
from mgt_core.sampling.engine import Sampler
from mgt_core.sampling.maskgit import halton_order, halton_settings, v1_settings
from mgt_core.sampling.noise_reg import NoiseRegularization
from mgt_core.sampling.partial import full_mask
from mgt_core.sampling.schedules import get_schedule, halton_revealed_counts, v1_reveal_counts
from mgt_core.sampling.zsampling import ZSampling


class MaskGITFake:
    """Seeded logits [B, codebook + 1, h, w] (the mask logit last, as v1/Halton heads), depending on
    the step value, the branch and the tokens (so guidance and Z-Sampling see a changing model)."""

    def __init__(self, grid=(4, 4), codebook=12, seed=0, scale=2.5, mask_logit=-30.0):
        self.grid, self.codebook, self.mask_id = grid, codebook, codebook
        self.seed, self.scale, self.mask_logit, self.calls = seed, scale, mask_logit, []

    def logits(self, tokens, t, branch):
        b = tokens.shape[0]
        g = torch.Generator().manual_seed(self.seed * 1000 + t * 2 + branch)
        base = torch.randn(b, self.codebook + 1, *self.grid, generator=g) * self.scale
        mix = torch.randn(self.codebook + 1, self.codebook + 1, generator=g) * 0.3
        onehot = torch.nn.functional.one_hot(tokens.clamp_max(self.codebook), self.codebook + 1).float()
        base = base + torch.einsum("bhwk,kj->bjhw", onehot, mix)
        base[:, self.codebook] = self.mask_logit
        return base

    def __call__(self, tokens, t, branches):
        self.calls.append((t, branches))
        lu = self.logits(tokens, t, 0) if branches in ("both", "uncond") else None
        lc = self.logits(tokens, t, 1) if branches in ("both", "cond") else None
        return lu, lc


def trajectory(den, settings, seed, batch=2):
    h, w = den.grid
    s = Sampler(den, settings, torch.Generator().manual_seed(seed))
    return s.run(full_mask(batch, h * w, den.mask_id, "cpu"), keep_trajectory=True)


# ---------------------------------------------------------------- transcriptions of the official loops


def v1_reference(den, steps, w, r_temp, sm_temp, seed, batch, mode="arccos"):
    n = den.grid[0] * den.grid[1]
    r = torch.linspace(1, 0, steps)
    val = {"arccos": torch.arccos(r) / (math.pi * 0.5), "cosine": torch.cos(r * math.pi * 0.5), "linear": 1 - r}[mode]
    sche = (val / val.sum() * n).round()
    sche[sche == 0] = 1
    sche[-1] += n - sche.sum()
    out = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        np.random.seed(seed)
        code = torch.full((batch, *den.grid), den.mask_id)
        mask = torch.ones(batch, n)
        for indice, t in enumerate(sche.int()):
            if mask.sum() < t:
                t = int(mask.sum().item())
            if mask.sum() == 0:
                break
            tv = steps - 1 - indice  # the fake model's step value (the engine passes T - 1 - i)
            lc, lu = den.logits(code, tv, 1), den.logits(code, tv, 0)
            lc = lc.flatten(2).permute(0, 2, 1)
            lu = lu.flatten(2).permute(0, 2, 1)
            _w = w * (indice / (len(sche) - 1))
            logit = (1 + _w) * lc - _w * lu
            prob = torch.softmax(logit * sm_temp, -1)
            pred = torch.distributions.Categorical(probs=prob).sample()
            conf = torch.gather(prob, 2, pred.view(batch, n, 1))
            ratio = indice / (len(sche) - 1)
            rand = r_temp * np.random.gumbel(size=(batch, n)) * (1 - ratio)
            conf = torch.log(conf.squeeze(-1)) + torch.from_numpy(rand)
            conf[~mask.bool()] = -math.inf
            thr, idx = torch.topk(conf.view(batch, -1), k=int(t), dim=-1)
            sel = (conf >= thr[:, -1:]) & mask.bool()
            flat = code.view(batch, n)
            flat[sel] = pred[sel]
            for b in range(batch):
                mask[b, idx[b]] = 0
            out.append(flat.clone())
    return out


def halton_points_reference(s, nb_point=10_000):
    def radical(b, count):
        res = []
        for k in range(1, count + 1):
            f, v, q = 1.0, 0.0, k
            while q:
                f /= b
                v += f * (q % b)
                q //= b
            res.append(v)
        return res

    pts = np.floor(np.stack([radical(2, nb_point), radical(3, nb_point)], 1) * s)
    first = np.unique(pts, return_index=True, axis=0)[1]
    return [tuple(int(c) for c in pts[i]) for i in sorted(first)]


def halton_reference(den, steps, w, temps, temp_pow, warmup, randomize, seed, batch):
    s = den.grid[0]
    n = s * s
    order = torch.tensor(halton_points_reference(s))
    temperature = torch.linspace(temps[0], temps[1], steps)
    out = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        code = torch.full((batch, s, s), den.mask_id)
        if randomize:
            shifts = torch.randint(0, n, (batch,))
            hm = torch.stack([torch.roll(order, int(shifts[b]), 0) for b in range(batch)])
        else:
            hm = order[None].expand(batch, n, 2)
        for index in range(steps):
            r = 1 - (torch.arccos(torch.tensor((index + 1) / steps)) / (math.pi * 0.5))
            r = max(index + 1, int(r * n))
            m = torch.zeros(batch, s, s, dtype=torch.bool)
            for b in range(batch):
                m[b, hm[b, :r, 0], hm[b, :r, 1]] = True
            temp = temperature[index] ** temp_pow
            if index < warmup:
                temp *= 0.5
            tv = steps - 1 - index
            lc = den.logits(code, tv, 1).permute(0, 2, 3, 1)
            lu = den.logits(code, tv, 0).permute(0, 2, 3, 1)
            logit = (1 + w) * lc - w * lu
            prob = torch.softmax(logit * temp, -1)
            pred = torch.distributions.Categorical(probs=prob).sample()
            code[m] = pred[m]
            out.append(code.reshape(batch, -1).clone())
    return out


# ---------------------------------------------------------------- parity


@pytest.mark.parametrize(("steps", "w", "r_temp", "sm_temp", "mode"), [(8, 3.0, 4.5, 1.0, "arccos"), (5, 2.8, 7.0, 1.3, "cosine")])
def test_v1_confidence_sampler_reproduces_the_official_tokens(steps, w, r_temp, sm_temp, mode):
    den = MaskGITFake(grid=(4, 4), seed=2)
    s = v1_settings(steps=steps, w=w, r_temp=r_temp, sm_temp=sm_temp, schedule=f"v1_{mode}", reference_rng=True)
    ours = trajectory(den, s, seed=13).trajectory
    ref = v1_reference(den, steps, w, r_temp, sm_temp, 13, 2, mode)
    assert len(ours) == len(ref) == steps
    for i, (a, b) in enumerate(zip(ours, ref, strict=True)):
        assert torch.equal(a, b), f"step {i} differs"
    assert (ours[-1] != den.mask_id).all()


@pytest.mark.parametrize(("randomize", "warmup"), [(False, 0), (True, 3)])
def test_halton_sampler_reproduces_the_official_tokens(randomize, warmup):
    den = MaskGITFake(grid=(8, 8), seed=4)
    s = halton_settings(steps=10, w=2.0, sm_temp=(1.0, 1.2), temp_warmup=warmup, randomize=randomize, reference_rng=True)
    ours = trajectory(den, s, seed=21).trajectory
    ref = halton_reference(den, 10, 2.0, (1.0, 1.2), 1.0, warmup, randomize, 21, 2)
    for i, (a, b) in enumerate(zip(ours, ref, strict=True)):
        assert torch.equal(a, b), f"step {i} differs"


def test_halton_order_matches_the_float_points_and_covers_every_cell():
    for s in (16, 24, 32):
        ref = halton_points_reference(s)
        assert len(ref) == s * s
        assert halton_order(s, s).tolist() == [r * s + c for r, c in ref]
    assert len(halton_points_reference(64)) == 4090  # the official 10,000 points miss 6 cells at S = 64
    o = halton_order(64, 64)
    assert sorted(o.tolist()) == list(range(64 * 64))  # FIX: every cell, still in first-seen order
    assert o[:4090].tolist() == [r * 64 + c for r, c in halton_points_reference(64)]


# ---------------------------------------------------------------- reveal counts


def test_reveal_count_goldens():
    assert v1_reveal_counts(8, 256) == [1, 18, 26, 32, 38, 43, 48, 50]
    k = v1_reveal_counts(15, 1024)
    assert k[:3] == [1, 26, 38] and k[-2:] == [104, 109] and sum(k) == 1024
    n = halton_revealed_counts(32, 256)
    assert n[:8] == [5, 10, 15, 20, 25, 30, 35, 41] and n[-4:] == [184, 198, 215, 256]


@pytest.mark.parametrize("which", ["v1", "halton"])
def test_samplers_reveal_the_spec_counts_each_step(which):
    den = MaskGITFake(grid=(16, 16), codebook=8, seed=1)
    if which == "v1":
        res = trajectory(den, v1_settings(steps=8), seed=3)
        want = np.cumsum(v1_reveal_counts(8, 256)).tolist()
    else:
        res = trajectory(den, halton_settings(steps=32), seed=3)
        want = halton_revealed_counts(32, 256)
    got = [(x != den.mask_id).sum(-1).tolist() for x in res.trajectory]
    assert got == [[n, n] for n in want]
    assert res.model_calls == len(want)


def test_count_schedules_are_engine_schedules():
    assert get_schedule("v1_arccos").counts(8, 256) == [255, 237, 211, 179, 141, 98, 50, 0]
    assert get_schedule("halton").counts(32, 256)[:2] == [251, 246]
    with pytest.raises(MGTInputError, match="cannot spread"):
        v1_reveal_counts(40, 16)


# ---------------------------------------------------------------- design choices on MaskGIT


def test_guidance_ramp_and_class_dropped_branch():
    den = MaskGITFake(seed=3)
    trajectory(den, v1_settings(steps=4, w=0.0), seed=0)
    assert {b for _, b in den.calls} == {"cond"}  # w = 0: no class-dropped call
    den.calls.clear()
    res = trajectory(den, v1_settings(steps=4, w=3.0, z_sampling=ZSampling()), seed=0)
    assert res.model_calls == 3 * 4 - 2
    # zig (both), inversion at the next step value on the class-dropped branch mixed with s_inv 0, zig again
    assert den.calls[:3] == [(3, "both"), (2, "both"), (3, "both")]
    den.calls.clear()
    trajectory(den, v1_settings(steps=4, w=3.0, z_sampling=ZSampling(uncond_only_inversion=True)), seed=0)
    assert den.calls[1] == (2, "uncond")


@pytest.mark.parametrize("family", ["v1", "halton"])
@pytest.mark.parametrize(
    "choices",
    [{}, {"noise_regularization": NoiseRegularization()}, {"differential_sampling": DifferentialSampling()},
     {"schedule": "cosine"}, {"schedule": "pow2"}, {"z_sampling": ZSampling()},
     {"z_sampling": ZSampling(), "noise_regularization": NoiseRegularization()}],
)
def test_every_design_choice_runs_on_both_samplers(family, choices):
    den = MaskGITFake(grid=(6, 6), seed=5)
    make = v1_settings if family == "v1" else halton_settings
    if family == "halton" and "z_sampling" in choices:
        with pytest.raises(MGTInputError, match="Z-Sampling needs a confidence sampler"):
            make(steps=6, **choices)
        return
    a = trajectory(den, make(steps=6, **choices), seed=9)
    b = trajectory(den, make(steps=6, **choices), seed=9)
    assert torch.equal(a.tokens, b.tokens)
    assert (a.tokens != den.mask_id).all() and (a.tokens < den.codebook).all()
    if choices:
        base = trajectory(den, make(steps=6), seed=9)
        differs = not torch.equal(base.tokens, a.tokens) or any(
            not torch.equal(x, y) for x, y in zip(base.trajectory, a.trajectory, strict=False)
        )
        assert differs or choices.get("schedule") == "cosine" and family == "halton"


def test_non_reference_mode_never_draws_the_mask_id():
    den = MaskGITFake(grid=(6, 6), seed=6, mask_logit=8.0)  # the mask logit dominates
    for s in (v1_settings(steps=5), halton_settings(steps=5)):
        res = trajectory(den, s, seed=1)
        assert (res.tokens < den.codebook).all()


def test_single_step_and_bad_options():
    den = MaskGITFake(seed=7)
    res = trajectory(den, v1_settings(steps=1), seed=0)
    assert (res.tokens != den.mask_id).all()
    with pytest.raises(MGTInputError, match="randomize"):
        v1_settings(randomize="sometimes")
    with pytest.raises(MGTInputError, match="w must be"):
        v1_settings(w=-1.0)
    with pytest.raises(MGTInputError, match="temperature"):
        halton_settings(sm_temp=(0.0, 1.0))

"""The sampler engine: reference parity, schedules, NR, DS, Z-Sampling, partial starts, validation."""

from __future__ import annotations

import math

import pytest
import torch
from mgt_testing import ExplodingDenoiser, FakeDenoiser

from mgt_core.errors import MGTInputError
from mgt_core.sampling.context import StepContext
from mgt_core.sampling.differential import DifferentialSampling, DSState
from mgt_core.sampling.engine import Sampler, SamplerSettings, sample
from mgt_core.sampling.noise_reg import NoiseRegularization
from mgt_core.sampling.partial import full_mask, img2img_start, inpaint_start, token_mask_from_pixels
from mgt_core.sampling.schedules import get_schedule, mask_counts
from mgt_core.sampling.step import categorical
from mgt_core.sampling.zsampling import ZSampling


def run(den, settings, seed=0, batch=None, start=None):
    batch = batch or den.batch
    h, w = den.grid
    start = start or full_mask(batch, h * w, den.mask_id, "cpu")
    return sample(den, settings, start, torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- reference parity


def reference_tokens(den: FakeDenoiser, steps: int, scale: float, seed: int, batch: int):
    """Tokens after every step from diffusers' AmusedScheduler (the same step as Meissonic's)."""
    AmusedScheduler = pytest.importorskip("diffusers").AmusedScheduler

    sched = AmusedScheduler(mask_token_id=den.mask_id, masking_schedule="cosine")
    sched.set_timesteps(steps, temperature=(2, 0))
    g = torch.Generator().manual_seed(seed)
    x = torch.full((batch, *den.grid), den.mask_id, dtype=torch.long)
    out = []
    for t in sched.timesteps:
        lu, lc = den.logits(int(t), 0, batch), den.logits(int(t), 1, batch)
        logits = lu + scale * (lc - lu) if scale > 1 else lc
        x = sched.step(logits, t, x, generator=g).prev_sample
        out.append(x.reshape(batch, -1).clone())
    return out


@pytest.mark.parametrize("grid", [(4, 4), (6, 10)])
@pytest.mark.parametrize("scale", [1.0, 9.0])
def test_vanilla_matches_reference_scheduler_every_step(grid, scale):
    steps, batch = 12, 2
    den = FakeDenoiser(batch, grid, codebook=16, seed=3)
    s = SamplerSettings(steps=steps, guidance_scale=scale, reference_rng=True)
    sampler = Sampler(den, s, torch.Generator().manual_seed(7))
    ours = sampler.run(full_mask(batch, grid[0] * grid[1], den.mask_id, "cpu"), keep_trajectory=True).trajectory
    ref = reference_tokens(den, steps, scale, 7, batch)
    for i, (a, b) in enumerate(zip(ours, ref, strict=True)):
        assert torch.equal(a, b), f"step {i} differs"
    assert (ours[-1] != den.mask_id).all()


@pytest.mark.parametrize("channels_last", [False, True], ids=["channels_first", "channels_last"])
def test_noise_regularization_matches_reference_draw_order(channels_last):
    """NR draws normal noise with the strides of the [B, L, K] view first, then the step's draws, for
    logits in either memory layout (the real transformer's are channels-last)."""
    AmusedScheduler = pytest.importorskip("diffusers").AmusedScheduler

    steps, batch, grid = 8, 2, (4, 6)
    den = FakeDenoiser(batch, grid, seed=5, channels_last=channels_last)
    nr = NoiseRegularization()
    ours = Sampler(den, SamplerSettings(steps=steps, guidance_scale=4.0, noise_regularization=nr, reference_rng=True),
                   torch.Generator().manual_seed(11))
    traj = ours.run(full_mask(batch, 24, den.mask_id, "cpu"), keep_trajectory=True).trajectory

    sched = AmusedScheduler(mask_token_id=den.mask_id)
    sched.set_timesteps(steps)
    torch.manual_seed(11)  # the reference uses the global generator
    x = torch.full((batch, *grid), den.mask_id, dtype=torch.long)
    for i, t in enumerate(sched.timesteps):
        lu, lc = den.logits(int(t), 0, batch), den.logits(int(t), 1, batch)
        logits = lu + 4.0 * (lc - lu)
        view = logits.reshape(batch, den.codebook, -1).permute(0, 2, 1)
        assert view.is_contiguous() == channels_last  # the layouts really differ
        sigma = 2 * torch.abs(torch.cos(math.pi * t / (steps - 1)))
        view += sigma * torch.randn_like(view)
        x = sched.step(logits, t, x, generator=None).prev_sample
        assert torch.equal(x.reshape(batch, -1), traj[i]), f"step {i}"


# ---------------------------------------------------------------- schedules


def test_cosine_mask_count_goldens():
    c = mask_counts("cosine", 64, 4096)
    assert c[:6] == [4094, 4091, 4084, 4076, 4065, 4051]
    assert c[-5:] == [401, 301, 200, 100, 0]
    c = mask_counts("cosine", 48, 1024)
    assert c[:6] == [1023, 1021, 1019, 1015, 1010, 1004]
    assert c[-5:] == [133, 100, 66, 33, 0]


@pytest.mark.parametrize("name", ["cosine", "linear", "pow2", "pow2.5", "log", "exp", "arccos", "cospow:1.5,2"])
def test_every_schedule_is_monotone_and_ends_at_zero(name):
    for steps in (1, 2, 7, 64):
        c = mask_counts(name, steps, 1024)
        assert len(c) == steps and c[-1] == 0
        assert all(a >= b for a, b in zip(c, c[1:], strict=False))


def test_schedule_forms_agree():
    assert mask_counts("cos(pi/2*r)", 64, 4096) == mask_counts("cosine", 64, 4096)
    assert mask_counts("cospow:1,1", 16, 256) == mask_counts("cosine", 16, 256)
    assert mask_counts("1 - r", 10, 100) == mask_counts("linear", 10, 100)
    assert mask_counts([5, 3, 1, 0], 4, 8) == [5, 3, 1, 0]
    assert mask_counts("0.5, 0.25, 0", 3, 8) == [4, 2, 0]


@pytest.mark.parametrize(
    "spec, match",
    [("__import__('os')", "can be called|not allowed"), ("r +", "not valid"), ("foo(r)", "only"),
     ([3, 5, 0], "must not increase"), ([3, 2, 1], "last step"), ("pow-1", "positive")],
)
def test_bad_schedules_are_rejected(spec, match):
    with pytest.raises(MGTInputError, match=match):
        mask_counts(spec, 3, 8)


# ---------------------------------------------------------------- noise regularization


def test_noise_scale_sequence():
    nr = NoiseRegularization()
    sig = [float(nr.sigma(t, 64)) for t in range(63, -1, -1)]
    assert sig[0] == pytest.approx(2.0) and sig[-1] == pytest.approx(2.0)
    assert [round(v, 3) for v in sig[1:4]] == [1.998, 1.990, 1.978]
    low = min(range(64), key=lambda i: sig[i])
    assert sig[low] == pytest.approx(0.0499, abs=1e-4) and 63 - low in (31, 32)
    assert float(nr.sigma(0, 1)) == 2.0  # T = 1 guard


@pytest.mark.parametrize("nr", [None, NoiseRegularization(amplitude=0.0)])
def test_noise_regularization_off_is_bit_identical_to_vanilla(nr):
    den = FakeDenoiser(2, (4, 4))
    a = run(den, SamplerSettings(steps=6, guidance_scale=3.0), seed=2).tokens
    b = run(den, SamplerSettings(steps=6, guidance_scale=3.0, noise_regularization=nr), seed=2).tokens
    assert torch.equal(a, b)


# ---------------------------------------------------------------- differential sampling


def test_ds_selects_the_fraction_with_smallest_kl_and_uses_the_positive_difference():
    torch.manual_seed(0)
    b, length, k = 2, 40, 7
    q = torch.softmax(torch.randn(b, length, k), -1)
    p = torch.softmax(torch.randn(b, length, k), -1)
    ds = DifferentialSampling(fraction=0.75)
    state = DSState(previous=q.clone())
    ctx = StepContext(1, 8, None, torch.ones(b, length, dtype=torch.bool))
    out = ds(p.clone(), ctx, state)
    changed = (out != p).any(-1)
    assert changed.sum(-1).tolist() == [30, 30]
    kl = (p * (p.log() - q.log())).sum(-1)
    for row in range(b):
        chosen = set(torch.nonzero(changed[row]).flatten().tolist())
        assert chosen == set(torch.argsort(kl[row])[:30].tolist())
    diff = (p - q).clamp_min(1e-6)
    expected = diff / diff.sum(-1, keepdim=True)
    assert torch.allclose(out[changed], expected[changed])
    assert torch.allclose(out.sum(-1), torch.ones(b, length))
    assert torch.equal(state.previous, out)  # stores the modified distribution (reference)


def test_ds_rows_are_independent_and_first_and_last_calls_are_plain():
    torch.manual_seed(1)
    q = torch.softmax(torch.randn(2, 12, 5), -1)
    p = torch.softmax(torch.randn(2, 12, 5), -1)
    ds = DifferentialSampling()
    ctx = StepContext(2, 8, None, torch.ones(2, 12, dtype=torch.bool))
    both = ds(p, ctx, DSState(q))
    for r in range(2):
        alone = ds(p[r : r + 1], StepContext(2, 8, None, ctx.unknown[r : r + 1]), DSState(q[r : r + 1]))
        assert torch.equal(alone[0], both[r])
    assert torch.equal(ds(p, ctx, DSState()), p)  # no stored distribution yet
    final = StepContext(7, 8, None, ctx.unknown)
    assert torch.equal(ds(p, final, DSState(q)), p)  # never on the last step


def test_ds_state_does_not_leak_between_generations():
    den = FakeDenoiser(1, (4, 4), seed=9)
    s = SamplerSettings(steps=6, guidance_scale=2.0, differential_sampling=DifferentialSampling())
    alone = run(den, s, seed=4).tokens
    run(FakeDenoiser(1, (4, 4), seed=1), s, seed=8)  # another image first
    after = run(den, s, seed=4).tokens
    assert torch.equal(alone, after)
    assert not torch.equal(alone, run(den, SamplerSettings(steps=6, guidance_scale=2.0), seed=4).tokens)


# ---------------------------------------------------------------- Z-Sampling


def test_z_sampling_makes_3t_minus_2_calls_and_inverts_at_the_next_timestep():
    den = FakeDenoiser(2, (4, 4))
    steps = 6
    s = SamplerSettings(steps=steps, guidance_scale=3.0, z_sampling=ZSampling())
    out = run(den, s)
    assert out.model_calls == len(den.calls) == 3 * steps - 2 == s.model_calls()
    ts = [t for t, _ in den.calls]
    expected = []
    for t in range(steps - 1, 0, -1):
        expected += [t, t - 1, t]
    assert ts == expected + [0]
    assert (out.tokens != den.mask_id).all()


def test_z_sampling_remasks_top_confident_decoded_tokens_per_image():
    """After the zag, each image has its pre-step masks - 1, and the re-masked positions are the
    decoded ones with the largest max-probability under the inversion logits."""
    z = ZSampling()
    mask = 99
    x_f = torch.tensor([[1, mask, 2, 3, 4, mask], [mask, mask, 8, 5, 6, 7]])
    probs = torch.softmax(torch.randn(2, 6, 8), -1)
    pre = torch.tensor([[mask] * 6, [mask] * 6])  # state before the step: all masked
    n = z.remask_counts(pre, mask, m_i=2)  # (6 - 1) - 2 = 3 for both rows
    assert n.tolist() == [3, 3]
    ctx = StepContext(0, 6, None, x_f == mask)
    out = z.invert(probs, x_f, n, mask, ctx)
    assert ((out == mask).sum(-1) == 5).all()  # |U_before| - 1
    for r in range(2):
        known = (x_f[r] != mask).nonzero().flatten()
        top = known[torch.argsort(probs[r, known].amax(-1), descending=True)[:3]]
        assert set((out[r] == mask).nonzero().flatten().tolist()) == set(top.tolist()) | set((x_f[r] == mask).nonzero().flatten().tolist())


def test_z_sampling_land_exact_and_window():
    assert ZSampling(land_exact=True).remask_counts(torch.full((1, 6), 9), 9, 2).tolist() == [4]
    z = ZSampling(start=2, stop=4)
    assert [i for i in range(8) if z.applies(i, 8)] == [2, 3]
    assert SamplerSettings(steps=8, z_sampling=z).model_calls() == 12


def test_uncond_only_inversion_gives_the_same_tokens():
    den = FakeDenoiser(2, (4, 4))
    a = run(den, SamplerSettings(steps=5, z_sampling=ZSampling()), seed=3).tokens
    den2 = FakeDenoiser(2, (4, 4))
    b = run(den2, SamplerSettings(steps=5, z_sampling=ZSampling(uncond_only_inversion=True)), seed=3).tokens
    assert torch.equal(a, b)
    assert ("uncond" in {br for _, br in den2.calls}) and ("uncond" not in {br for _, br in den.calls})


# ---------------------------------------------------------------- every combination


@pytest.mark.parametrize("nr", [None, NoiseRegularization()])
@pytest.mark.parametrize("ds", [None, DifferentialSampling()])
@pytest.mark.parametrize("zs", [None, ZSampling()])
@pytest.mark.parametrize("schedule", ["cosine", "arccos"])
def test_every_combination_decodes_fully_and_is_deterministic(nr, ds, zs, schedule):
    s = SamplerSettings(steps=5, guidance_scale=4.0, schedule=schedule, noise_regularization=nr, differential_sampling=ds, z_sampling=zs)
    a = run(FakeDenoiser(2, (4, 6)), s, seed=1).tokens
    b = run(FakeDenoiser(2, (4, 6)), s, seed=1).tokens
    assert torch.equal(a, b)
    assert (a != 19).all() and (a < 16).all()


def test_reference_rng_mode_consumes_the_inversion_draws(monkeypatch):
    """Reference mode draws one multinomial per STEP and one per inversion (3T - 2 under Z-Sampling);
    the default mode uses the inverse-CDF sampler instead."""
    calls = []
    real = torch.multinomial
    monkeypatch.setattr(torch, "multinomial", lambda *a, **k: calls.append(1) or real(*a, **k))
    steps = 5
    for reference, z, want in [(True, ZSampling(), 3 * steps - 2), (True, None, steps), (False, ZSampling(), 0)]:
        calls.clear()
        s = SamplerSettings(steps=steps, guidance_scale=3.0, z_sampling=z, reference_rng=reference)
        out = run(FakeDenoiser(1, (4, 4)), s, seed=1).tokens
        assert len(calls) == want and (out != 19).all()


def test_fast_categorical_draws_from_the_distribution():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05, 0.0])
    rows = probs.expand(1, 40000, 5).contiguous()
    draw = categorical(rows, torch.Generator().manual_seed(0), exact=False)
    freq = torch.bincount(draw.flatten(), minlength=5).float() / draw.numel()
    assert torch.allclose(freq, probs, atol=0.01) and freq[4] == 0
    exact = categorical(rows, torch.Generator().manual_seed(0), exact=True)
    assert torch.allclose(torch.bincount(exact.flatten(), minlength=5).float() / exact.numel(), probs, atol=0.01)


# ---------------------------------------------------------------- partial starts


def test_inpaint_keeps_unmasked_tokens_and_scales_the_schedule():
    den = FakeDenoiser(1, (4, 4))
    init = torch.randint(0, 16, (1, 16))
    tmask = torch.zeros(1, 16, dtype=torch.bool)
    tmask[0, :6] = True
    start = inpaint_start(init, tmask, steps=8, strength=1.0, mask_id=den.mask_id)
    assert start.start_ratio == pytest.approx(6 / 16) and start.first_step == 0
    out = run(den, SamplerSettings(steps=8, guidance_scale=2.0), start=start).tokens
    assert torch.equal(out[0, 6:], init[0, 6:]) and (out != den.mask_id).all()
    with pytest.raises(MGTInputError, match="covers"):
        inpaint_start(init, tmask[:, :8], 8, 1.0, den.mask_id)
    with pytest.raises(MGTInputError, match="empty"):
        inpaint_start(init, torch.zeros_like(tmask), 8, 1.0, den.mask_id)


def test_img2img_start_masks_with_the_schedule_probability():
    tokens = torch.zeros(4, 4096, dtype=torch.long)
    sch = get_schedule("cosine")
    st = img2img_start(tokens, 64, 0.5, sch, 99, torch.Generator().manual_seed(0))
    assert st.first_step == 32
    frac = (st.tokens == 99).float().mean().item()
    assert frac == pytest.approx(math.cos(math.pi / 2 * 32 / 64), abs=0.02)
    assert (img2img_start(tokens, 8, 1.0, sch, 99, None).tokens == 99).all()  # strength 1: text-to-image


def test_token_mask_from_pixels_covers_every_touched_token():
    m = torch.zeros(1, 32, 32)
    m[0, 0, 0] = 1.0  # one pixel
    m[0, 20:32, 20:32] = 1.0
    t = token_mask_from_pixels(m, (4, 4))
    assert t[0, 0, 0] and t[0, 2:, 2:].all() and t.sum() == 5
    with pytest.raises(MGTInputError, match="token grid"):
        token_mask_from_pixels(torch.zeros(1, 30, 32), (4, 4))


# ---------------------------------------------------------------- bad input, before any model call


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(steps=0), "steps"), (dict(guidance_scale=-1.0), "guidance"), (dict(temperature=(-1, 0)), "temperature"),
     (dict(schedule=[3, 4, 0]), "increase"), (dict(schedule="pow0"), "positive")],
)
def test_bad_settings_fail_before_any_model_call(kwargs, match):
    with pytest.raises(MGTInputError, match=match):
        s = SamplerSettings(**{"steps": 3, **kwargs})
        run(ExplodingDenoiser(1, (2, 2)), s)


def test_bad_design_choice_options():
    with pytest.raises(MGTInputError, match="fraction"):
        DifferentialSampling(fraction=1.5)
    with pytest.raises(MGTInputError, match="shape"):
        NoiseRegularization(shape="square")
    with pytest.raises(MGTInputError, match="inversion"):
        ZSampling(inversion_cfg=-1)


def test_start_grid_mismatch_fails_before_any_model_call():
    den = ExplodingDenoiser(1, (4, 4))
    with pytest.raises(MGTInputError, match=r"\[B, 16\]"):
        sample(den, SamplerSettings(steps=3), full_mask(1, 12, den.mask_id, "cpu"), None)

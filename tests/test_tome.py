"""TomeMGT: matching and its inverse properties, the patched model (CFG, grids, removal, seeding,
reuse, step window, single-stream option), the analytic cost, and every bad setting's error."""

from __future__ import annotations

import pytest
import torch
from mgt_testing import make_tiny_folder, randomize

import mgt_core
from mgt_core.accel import shared_clone
from mgt_core.accel import tome as T
from mgt_core.errors import MGTInputError
from mgt_core.models.configs import MEISSONIC_TRANSFORMER, tiny_transformer
from mgt_core.models.meissonic.transformer import MeissonicConfig, MeissonicTransformer


def tiny(down=True, layers=6, single=6, seed=1):
    return randomize(MeissonicTransformer.from_config(tiny_transformer(down, layers, single)), seed).eval()


def inputs(b=2, h=8, w=8, seed=0, text=24):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 80, (b, h, w), generator=g)
    ids[:, : h // 2] = 79
    return ids, torch.randn(b, text, 24, generator=g), torch.randn(b, 32, generator=g), torch.tensor([[64.0, 64, 0, 0, 6]] * b)


def run(model, x, t=3):
    with torch.no_grad():
        return model(x[0], x[1], x[2], t, x[3])


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------------------
# Matching


@pytest.mark.parametrize("grid", [(4, 4), (5, 7), (8, 6), (3, 2), (6, 1), (32, 32)])
@pytest.mark.parametrize("batch", [1, 2, 3])
@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75])
def test_merge_unmerge_shapes_and_inverse(grid, batch, ratio):
    n = grid[0] * grid[1]
    x = torch.randn(batch, n, 8, generator=gen(1))
    m = T.bipartite_matching(x, grid, ratio, gen(2))
    r, nd = T.merge_count(n, grid, ratio)
    if r == 0:  # a grid with no complete 2x2 window (6x1): nothing merges
        assert m is None and nd == 0
        return
    assert m.r == r == min(int(n * ratio), n - nd)
    merged = m.merge(x)
    assert merged.shape == (batch, n - r, 8)
    y = torch.randn(batch, n - r, 8, generator=gen(3))
    back = m.unmerge(y)
    assert back.shape == (batch, n, 8)
    torch.testing.assert_close(m.merge(back), y)  # merge(unmerge(y)) = y: copies average to themselves
    torch.testing.assert_close(m.unmerge(m.merge(back)), back)  # exact on cluster-constant inputs
    # kept src rows pass through untouched; every position is written by unmerge
    kept = m.keep.shape[1]
    assert torch.equal(merged[:, :kept], x.gather(1, m.keep[..., None].expand(-1, -1, 8)))
    assert torch.isfinite(m.unmerge(merged)).all()


def test_dst_is_one_random_position_per_complete_window():
    grid = (5, 7)
    dst = T.dst_positions(grid, 2, 2, gen(0))
    assert dst.numel() == 2 * 3
    rows, cols = dst // 7, dst % 7
    windows = sorted(zip((rows // 2).tolist(), (cols // 2).tolist(), strict=True))
    assert windows == [(a, b) for a in range(2) for b in range(3)]  # one per window, none in leftovers
    assert (rows < 4).all() and (cols < 6).all()
    draws = {tuple(T.dst_positions((8, 8), 2, 2, gen(s)).tolist()) for s in range(6)}
    assert len(draws) > 1


def test_dst_mean_and_per_row_matching():
    grid = (4, 4)
    x = torch.randn(2, 16, 6, generator=gen(0))
    x[1] = torch.randn(16, 6, generator=gen(9))  # the rows differ: the matchings should too
    m = T.bipartite_matching(x, grid, 0.5, gen(1))
    assert m.merged.shape == (2, 8)
    assert not torch.equal(m.merged[0].sort().values, m.merged[1].sort().values) or not torch.equal(m.target[0], m.target[1])
    merged = m.merge(x)
    kept = m.keep.shape[1]
    for b in range(2):
        for j, d in enumerate(m.dst.tolist()):
            members = [d] + [s for s, tgt in zip(m.merged[b].tolist(), m.target[b].tolist(), strict=True) if tgt == j]
            torch.testing.assert_close(merged[b, kept + j], x[b, members].mean(0))


def test_merged_tokens_are_the_most_similar():
    grid = (2, 4)
    x = torch.randn(1, 8, 4, generator=gen(0))
    m = T.bipartite_matching(x, grid, 0.25, gen(5))
    xn = torch.nn.functional.normalize(x[0], dim=-1)
    best = {s: (xn[s] @ xn[m.dst].T).max().item() for s in range(8) if s not in m.dst.tolist()}
    chosen = [best[s] for s in m.merged[0].tolist()]
    rest = [best[s] for s in m.keep[0].tolist()]
    assert min(chosen) >= max(rest)


# ----------------------------------------------------------------------------------------------
# The patched model


@pytest.mark.parametrize(("down", "hw"), [(True, (8, 8)), (False, (8, 8)), (True, (12, 8)), (False, (6, 10)), (True, (10, 14))])
def test_cfg_batch_on_any_grid_and_removal_is_bit_identical(down, hw):
    model = tiny(down)
    x = inputs(2, *hw)
    ref = run(model, x)
    classes = [type(m) for m in model.modules()]
    keys = list(model.state_dict())
    T.apply_tome(model, 0.5)
    out = run(model, x)
    assert out.shape == ref.shape and torch.isfinite(out).all()
    assert not torch.equal(out, ref)  # merging really happened
    T.remove_tome(model)
    assert [type(m) for m in model.modules()] == classes and list(model.state_dict()) == keys
    assert not any("_tome" in k for m in model.modules() for k in vars(m))
    assert torch.equal(run(model, x), ref)


def test_context_manager_and_ratio_zero_are_exact():
    model = tiny()
    x = inputs()
    ref = run(model, x)
    with T.tome_patched(model, 0.0):
        assert torch.equal(run(model, x), ref)
    with T.tome_patched(model, 0.25):
        assert not torch.equal(run(model, x), ref)
    assert type(model) is MeissonicTransformer and torch.equal(run(model, x), ref)


def test_shared_clone_patches_the_clone_only():
    model = tiny()
    x = inputs()
    ref = run(model, x)
    clone = T.apply_tome(shared_clone(model), 0.5)
    assert type(model) is MeissonicTransformer and type(model.transformer_blocks[0]).__name__ == "DualStreamBlock"
    assert clone.transformer_blocks[0].attn.to_q.weight is model.transformer_blocks[0].attn.to_q.weight
    assert not torch.equal(run(clone, x), ref)
    assert torch.equal(run(model, x), ref)


def test_cfg_rows_merge_independently():
    """Row b of a batch gives the same output as that row alone: matching is per row, RoPE per row."""
    model = T.apply_tome(tiny(), 0.5)
    x = inputs(2)
    both = run(model, x)
    for b in range(2):
        alone = run(model, tuple(v[b : b + 1] for v in x))
        torch.testing.assert_close(alone[0], both[b], rtol=1e-4, atol=1e-4)


def test_seeding_is_per_generation_and_never_drifts():
    model = T.apply_tome(tiny(), 0.5)
    x = inputs()
    rng = torch.get_rng_state()
    with T.tome_generation(model, seed=7, steps=10):
        a = run(model, x, t=5)
        run(model, x, t=4)
        run(model, inputs(seed=3), t=5)  # another image and step in between
        b = run(model, x, t=5)
    assert torch.equal(a, b)  # no state carried across forwards
    assert torch.equal(torch.get_rng_state(), rng)  # the global RNG (and any sampler generator) is untouched
    with T.tome_generation(model, seed=8, steps=10):
        assert not torch.equal(run(model, x, t=5), a)
    with T.tome_generation(model, seed=7):
        assert torch.equal(run(model, x, t=5), a)
    assert model._tome.seed == 0 and model._tome.steps is None  # restored after each generation


def test_matching_recomputed_at_blocks_0_5_10_of_every_forward(monkeypatch):
    model = T.apply_tome(tiny(layers=14, single=2), 0.25)
    calls = []
    real = T.bipartite_matching

    def spy(metric, *a, **k):
        calls.append(metric.clone())
        return real(metric, *a, **k)

    monkeypatch.setattr(T, "bipartite_matching", spy)
    x = inputs()
    run(model, x, t=3)
    assert len(calls) == 3
    run(model, x, t=3)
    assert len(calls) == 6
    for a, b in zip(calls[:3], calls[3:], strict=True):
        assert torch.equal(a, b)  # the same forward recomputes the same matchings
    assert model._tome.current is None


def test_step_window_uses_the_step_count():
    model = tiny()
    x = inputs()
    plain = {t: run(model, x, t) for t in (9, 2)}
    T.apply_tome(model, 0.5, window=(0.0, 0.5))
    with pytest.raises(MGTInputError, match="tome_generation"):
        run(model, x, 9)
    with T.tome_generation(model, seed=0, steps=10):
        assert not torch.equal(run(model, x, 9), plain[9])  # step 0: progress 0.0, merging on
        assert torch.equal(run(model, x, 2), plain[2])  # step 7: progress 0.7, off


def test_single_stream_option_merges_more():
    model = tiny()
    x = inputs()
    ref = run(model, x)
    dual = run(T.apply_tome(model, 0.5), x)
    both = run(T.apply_tome(model, 0.5, single_stream=True), x)
    only_single = run(T.apply_tome(model, 0.0, single_stream=True, single_ratio=0.5), x)
    assert not torch.equal(both, dual) and not torch.equal(only_single, ref) and not torch.equal(only_single, both)
    assert torch.isfinite(both).all()
    T.remove_tome(model)
    assert torch.equal(run(model, x), ref)


def test_pipeline_seeds_tome_from_the_image_seed(tmp_path):
    pipe = mgt_core.load_pipeline(make_tiny_folder(tmp_path / "m"))
    T.apply_tome(pipe.transformer, 0.5)
    a = pipe("a red circle", seed=3, return_tokens=True)[1]
    b = pipe("a red circle", seed=3, return_tokens=True)[1]
    assert torch.equal(a, b)
    seen = []
    real = T._Pass.__init__

    def spy(self, runtime, *args):
        seen.append(runtime.seed)
        real(self, runtime, *args)

    T._Pass.__init__ = spy
    try:
        pipe("a red circle", seed=11)
    finally:
        T._Pass.__init__ = real
    assert set(seen) == {11}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ratio": 0.8}, r"ratio must lie in \[0, 0.75\]"),
        ({"ratio": -0.1}, r"ratio must lie in \[0, 0.75\]"),
        ({"ratio": 0.25, "single_ratio": 0.9}, "single_ratio"),
        ({"ratio": 0.25, "window": (0.5, 0.5)}, "window"),
        ({"ratio": 0.25, "window": (0.0, 1.5)}, "window"),
        ({"ratio": 0.25, "reuse": 0}, "reuse"),
        ({"ratio": 0.25, "sx": 1, "sy": 1}, "strides"),
    ],
)
def test_bad_settings_are_clear_errors(kwargs, match):
    model = tiny()
    with pytest.raises(MGTInputError, match=match):
        T.apply_tome(model, **kwargs)
    assert type(model) is MeissonicTransformer  # nothing half-applied


def test_patching_something_else_is_an_error():
    with pytest.raises(MGTInputError, match="MeissonicTransformer"):
        T.apply_tome(torch.nn.Linear(2, 2))


def test_analytic_macs_match_the_spec():
    cfg = MeissonicConfig.from_dict(MEISSONIC_TRANSFORMER)
    base = T.transformer_macs(cfg, (64, 64))
    assert base["dual"] / 14 == pytest.approx(16.3e9, rel=0.01)
    assert base["single"] / 28 == pytest.approx(16.3e9, rel=0.01)
    assert base["dual"] + base["single"] == pytest.approx(686e9, rel=0.01)
    assert base["io"] == pytest.approx(54e9, rel=0.02)
    q = T.transformer_macs(cfg, (64, 64), merging=T.TomeConfig(0.25))
    assert q["image_tokens_dual"] == 768 and q["dual"] / 14 == pytest.approx(12.1e9, rel=0.01)
    assert 1 - (q["total"] - q["matching"]) / base["total"] == pytest.approx(0.08, abs=0.005)
    # Monetico 512: the same 32x32 transformer grid, so the same block cost
    mono = MeissonicConfig.from_dict({**MEISSONIC_TRANSFORMER, "downsample": False, "upsample": False})
    assert T.transformer_macs(mono, (32, 32), merging=T.TomeConfig(0.25))["image_tokens_dual"] == 768

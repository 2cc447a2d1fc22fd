"""The tuner (``python -m mgt_core.tune``) end to end on a tiny budget, and the presets it saves:
read back by the loader, used by the API (``preset=``) and validated."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from mgt_testing import make_tiny_folder

import mgt_core
from mgt_core import tune
from mgt_core.errors import MGTInputError
from mgt_core.pipeline import make_settings
from mgt_core.sampling.presets import check_preset, read_model_presets, save_model_preset

DEMO = Path(__file__).resolve().parents[1] / "mgt_core" / "demo" / "mgt-demo"


def _demo_copy(tmp_path: Path) -> Path:
    """The built-in model's folder with its weights linked, so a test can write its mgt_defaults.json."""
    folder = tmp_path / "mgt-demo"
    folder.mkdir()
    for sub in DEMO.iterdir():
        if sub.is_dir():
            (folder / sub.name).symlink_to(sub)
        else:
            shutil.copy(sub, folder / sub.name)
    data = json.loads((folder / "mgt_defaults.json").read_text())
    data.pop("presets", None)  # start from no presets whatever the shipped file holds
    (folder / "mgt_defaults.json").write_text(json.dumps(data))
    return folder


def test_search_space_covers_every_family_and_costs():
    cands = tune.search_space(16)
    fams = {c.family for c in cands}
    assert fams == set(tune.FAMILIES)
    names = [c.name for c in cands]
    assert len(set(names)) == len(names)
    assert any(c.options.get("schedule", "").startswith("cospow:") for c in cands)
    z = [c for c in cands if c.family == "z_sampling"]
    assert {c.options["z_sampling"]["inversion_cfg"] for c in z} == {0.0, 1.0}
    assert {(c.options["z_sampling"]["start"], c.options["z_sampling"]["stop"]) for c in z} >= {(0, None), (0, 8)}
    for c in cands:  # every candidate is a valid preset
        check_preset(c.name, c.options)
        make_settings(steps=16, guidance_scale=1.5, **c.options)
    quick = tune.search_space(16, quick=True)
    assert all(sum(c.family == f for c in quick) == 2 for f in tune.FAMILIES)


def test_preferences_and_interval():
    p = tune.preferences([3, 1, 2, 2], [1, 3, 2, 0])
    assert p.tolist() == [1.0, 0.0, 0.5, 1.0]
    mean, half = tune.interval(p)
    assert mean == 0.625 and 0 < half < 1
    assert tune.interval([1.0]) == (1.0, 0.0)


def test_judge_scorer_orders_like_the_judge():
    from mgt_core.demo import scenes as S

    rng = np.random.default_rng(0)
    scene = S.sample_scene(rng, "compositional")
    p = S.prompt_of(scene)
    good = S.render(scene)
    broken = S.broken_render(scene, "hole", rng)
    assert tune.judge_scorer(good, p) > tune.judge_scorer(broken, p)
    assert tune.load_scorer("judge") is tune.judge_scorer
    assert tune.load_scorer("mgt_testing:mean_brightness")(good, p) == pytest.approx(good.mean())
    with pytest.raises(MGTInputError):
        tune.load_scorer("no_colon")
    with pytest.raises(MGTInputError):
        tune.load_scorer("mgt_testing:nothing_here")


def test_tuner_end_to_end_on_the_demo_model(tmp_path):
    """Tiny budget: the judge scores, held-out rows carry intervals, a Z row is compared with vanilla at
    the same number of model calls, and the winners are saved as presets the API then uses."""
    model = _demo_copy(tmp_path)
    rep = tune.main(["--model", str(model), "--quick", "--families", "schedule", "z_sampling", "--n-train", "3",
                     "--n-test", "3", "--batch", "3", "--save", "mine", "--out", str(tmp_path / "out")])
    assert rep["n_train"] == 3 and rep["n_test"] == 3 and rep["vanilla_calls"] == 16
    assert {r["family"] for r in rep["candidates"]} >= {"schedule", "z_sampling"}
    for r in rep["finalists"]:
        assert 0 <= r["test"]["win"] <= 1 and r["test"]["ci"] >= 0
        if r["calls"] > 16:
            assert r["test"]["matched_steps"] == r["calls"] and 0 <= r["test"]["win_vs_matched"] <= 1
    assert any(r["calls"] > 16 for r in rep["finalists"])  # a Z row made it, so the matched comparison ran
    assert str(max(r["calls"] for r in rep["finalists"])) in rep["vanilla_matched"]
    best_1x = next(r for r in rep["candidates"] if r["name"] == rep["best_1x"])
    assert best_1x["calls"] == 16
    presets = read_model_presets(str(model))
    assert set(presets) == {"mine", "mine-1x"} and "held-out win" in presets["mine"]["_measured"]
    assert (tmp_path / "out" / "report.md").read_text().count("|") > 20
    # the API: the saved preset gives the image its options give
    pipe = mgt_core.load_pipeline(model, dtype=torch.float32)
    assert set(pipe.info.presets) == {"mine", "mine-1x"}
    options = {k: v for k, v in presets["mine-1x"].items() if not k.startswith("_")}
    p = "a red circle left of a blue square on a white background"
    assert torch.equal(pipe(p, seed=5, preset="mine-1x"), pipe(p, seed=5, **options))
    # another finalist (e.g. the best held out) saved from the report, without searching again; on a tiny
    # budget every finalist may already be saved (best and best 1x), and any finalist can be saved again
    saved = (rep["best"], rep["best_1x"])
    other = next((r for r in rep["finalists"] if r["name"] not in saved), rep["finalists"][-1])
    again = ["--model", str(model), "--from-report", str(tmp_path / "out" / "report.json"), "--out", str(tmp_path / "o2")]
    tune.main([*again, "--save", "picked", "--finalist", other["name"]])
    presets = read_model_presets(str(model))
    assert set(presets) == {"mine", "mine-1x", "picked"}
    assert {k: v for k, v in presets["picked"].items() if k != "_measured"} == other["options"]
    assert presets["picked"]["_measured"].startswith(other["name"] + ": held-out win")
    with pytest.raises(MGTInputError, match="no finalist 'nope'"):
        tune.main([*again, "--save", "x", "--finalist", "nope"])
    with pytest.raises(MGTInputError, match="--save"):
        tune.main([*again, "--finalist", other["name"]])


def test_tuner_with_a_user_scorer_and_prompt_file(tmp_path):
    """A real model's path: prompts from a file, any image-prompt scoring callable."""
    model = make_tiny_folder(tmp_path / "m")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"a {c} circle on a gray background\n" for c in ("red", "blue", "green", "black", "white", "yellow")))
    rep = tune.main(["--model", model, "--prompts", str(prompts), "--scorer", "mgt_testing:mean_brightness",
                     "--quick", "--families", "temperature", "--n-train", "3", "--n-test", "3", "--batch", "3",
                     "--out", str(tmp_path / "out")])
    assert rep["n_train"] == 3 and rep["n_test"] == 3
    assert all(r["calls"] == 6 for r in rep["candidates"])
    assert read_model_presets(model) == {}  # nothing saved without --save


def test_model_presets_load_validate_and_lose_to_explicit_options(tmp_path):
    model = make_tiny_folder(tmp_path / "m", defaults={
        "steps": 6, "guidance_scale": 3.0, "width": 32, "height": 32, "negative_prompt": "",
        "presets": {"mine": {"schedule": "cospow:1.5,1", "temperature": [1, 0], "token_temperature": 0.7,
                             "noise_regularization": {"amplitude": 0.5, "shape": "linear"}, "_measured": "a note"}},
    })
    pipe = mgt_core.load_pipeline(model)
    s = make_settings(steps=6, guidance_scale=3, preset_name="mine", model_presets=pipe.info.presets)
    assert s.schedule.name == "cospow:1.5,1" and tuple(s.temperature) == (1.0, 0.0)
    assert s.logit_temperature.start == pytest.approx(1 / 0.7)
    assert s.noise_regularization.amplitude == 0.5 and s.z_sampling is None
    explicit = make_settings(steps=6, guidance_scale=3, preset_name="mine", model_presets=pipe.info.presets,
                             schedule="linear")
    assert explicit.schedule.name == "linear"
    builtin = make_settings(steps=6, guidance_scale=3, preset_name="z_sampling", model_presets=pipe.info.presets)
    assert builtin.z_sampling is not None
    img = pipe("a red circle", seed=2, preset="mine")
    same = pipe("a red circle", seed=2, schedule="cospow:1.5,1", temperature=(1.0, 0.0), token_temperature=0.7,
                noise_regularization={"amplitude": 0.5, "shape": "linear"})
    assert torch.equal(img, same)
    with pytest.raises(MGTInputError, match="mine"):
        pipe("a red circle", preset="yours")
    with pytest.raises(MGTInputError, match="unknown option"):
        check_preset("bad", {"steps": 4})
    with pytest.raises(MGTInputError, match="schedule"):
        check_preset("bad", {"schedule": "cospow:0,1"})
    with pytest.raises(MGTInputError, match="token_temperature"):
        check_preset("bad", {"token_temperature": 0})
    with pytest.raises(MGTInputError):
        check_preset("bad", {"noise_regularization": {"amplitude": -1}})
    with pytest.raises(MGTInputError):
        save_model_preset(model, "vanilla", {})
    save_model_preset(model, "second", {"differential_sampling": {"fraction": 0.25}})
    data = json.loads((Path(model) / "mgt_defaults.json").read_text())
    assert set(data["presets"]) == {"mine", "second"} and data["steps"] == 6


class _ScriptedEvaluator(tune.Evaluator):
    """The search logic alone: a setting's score on pair i is 1 when i < its number of won pairs, which
    the options it contains decide (token temperature 6, Gumbel temperature 3, Z 2); vanilla wins none."""

    def __init__(self):
        from types import SimpleNamespace

        super().__init__(SimpleNamespace(info=SimpleNamespace(steps=16, guidance_scale=1.5, name="scripted")), None,
                         log=lambda _: None)  # fmt: skip

    def scores(self, options, pairs):
        won = 6 * ("token_temperature" in options) + 3 * ("temperature" in options) + 2 * ("z_sampling" in options)
        return (np.arange(len(pairs)) < won).astype(float)


def test_greedy_combination_never_overrides_a_chosen_option():
    """Token temperature's best candidate also sets the Gumbel temperature, so the temperature family's
    best must not be combined with it (it would silently replace that option); Z, which sets nothing
    chosen yet, is combined and kept because it raises the training win rate."""
    pairs = [(f"p{i}", i) for i in range(12)]
    rep = tune.tune(_ScriptedEvaluator(), pairs, pairs, families=("temperature", "token_temperature", "z_sampling"),
                    quick=True)  # fmt: skip
    combos = [r for r in rep["candidates"] if r["family"] == "combination"]
    assert [r["name"] for r in combos] == ["token temperature 0.5 + temperature 0.5->0 + Z 0-15 inv0"]
    assert combos[0]["options"]["temperature"] == [0.5, 0.0]
    assert rep["best"] == combos[0]["name"] and rep["best_1x"] == "token temperature 0.5 + temperature 0.5->0"

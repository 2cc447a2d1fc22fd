"""Tune the design choices' parameters for one model, and save the winners as a named preset.

    python -m mgt_core.tune --split compositional --n-train 64 --n-test 200 --save tuned-2obj
    python -m mgt_core.tune --model models/mgt/Meissonic --prompts my_prompts.txt --scorer my_pkg.hps:score

The reference's parameters (NR amplitude 2, DS fraction 0.75, Z over every step) were tuned for a
1B model at CFG 9; on another model each choice has to be re-tuned before it can be judged. The
search, on a training set of prompt-seed pairs:
  1. one family at a time, each parameter grid against vanilla (schedule incl. ``cospow:a,b``,
     Gumbel temperature, token (softmax) temperature, NR amplitude x shape, DS fraction, Z window x
     inversion CFG);
  2. greedy combination: the best of each family that beat vanilla, added in order while the
     training win rate rises.
Every candidate is ranked by its win rate against vanilla on the training pairs only. The
finalists (the best overall within ``--max-calls`` x vanilla's model calls, the best at 1x, and
the best of each family) are then scored once on held-out pairs (other prompts, other seeds): win
rate vs vanilla with a 95% interval, and, for a finalist costing more calls, win rate vs vanilla
given the same number of model calls (more steps), so a win is not just compute.

Scorer: for models of the demo domain the exact judge (``--scorer judge``); for a real model any
callable ``score(image: uint8 [H, W, 3], prompt: str) -> float`` (higher is better), named as
``module:function``. A pair is won when the candidate's image scores higher, ties count half.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import MGTInputError

Scorer = Callable[[np.ndarray, str], float]
Pair = tuple[str, int]  # (prompt, seed)

FAMILIES = ("schedule", "temperature", "token_temperature", "noise_reg", "diff_sampling", "z_sampling")


@dataclass
class Candidate:
    """A setting to try: ``options`` are MGTPipeline.__call__ keywords (JSON-able, preset-ready)."""

    name: str
    family: str
    options: dict
    calls: int = 0
    train_win: float | None = None
    train_ci: float | None = None
    test: dict = field(default_factory=dict)


def search_space(steps: int, families: Sequence[str] = FAMILIES, quick: bool = False) -> list[Candidate]:
    """The parameter grids of each family (``quick``: two per family, for tests and smoke runs)."""
    out: list[Candidate] = []

    def add(family, name, options):
        if family in families:
            out.append(Candidate(name, family, options))

    cospow = [(a, b) for a in (0.7, 1.0, 1.5, 2.0) for b in (0.5, 1.0, 2.0) if (a, b) != (1.0, 1.0)]
    for name in [*(f"cospow:{a:g},{b:g}" for a, b in cospow), "pow2", "pow3", "arccos", "exp"]:
        add("schedule", f"schedule {name}", {"schedule": name})
    for t in ((0.5, 0.0), (1.0, 0.0), (3.0, 0.0), (4.5, 0.0), (2.0, 1.0), (1.0, 1.0)):
        add("temperature", f"temperature {t[0]:g}->{t[1]:g}", {"temperature": list(t)})
    for tau in (0.5, 0.7, 0.35):  # jointly with the Gumbel start: sharper draws want a calmer ranking
        for g in (None, 0.5, 1.0):
            name = f"token temperature {tau:g}" + (f" + temperature {g:g}->0" if g else "")
            add("token_temperature", name, {"token_temperature": tau, **({"temperature": [g, 0.0]} if g else {})})
    for shape in ("abs_cos", "linear", "constant"):
        for amp in (0.25, 0.5, 1.0):
            add("noise_reg", f"NR {shape} {amp:g}", {"noise_regularization": {"amplitude": amp, "shape": shape}})
    for frac in (0.1, 0.25, 0.5):
        add("diff_sampling", f"DS {frac:g}", {"differential_sampling": {"fraction": frac}})
    half, quarter = steps // 2, max(1, steps // 4)
    for start, stop in ((0, None), (0, half), (0, quarter), (quarter, half), (half, None)):
        for cfg in (0.0, 1.0):
            win = f"{start}-{stop if stop is not None else steps - 1}"
            add("z_sampling", f"Z {win} inv{cfg:g}",
                {"z_sampling": {"start": start, "stop": stop, "inversion_cfg": cfg}})
    if quick:
        out = [c for c in out if sum(d.family == c.family for d in out[: out.index(c)]) < 2]
    return out


def combine(cands: Sequence[Candidate]) -> Candidate:
    """One candidate with every option of ``cands`` (each from a different family)."""
    options: dict = {}
    for c in cands:
        options.update(c.options)
    return Candidate(" + ".join(c.name for c in cands), "combination", options)


# ----------------------------------------------------------------------------------------------
# Scoring


def judge_scorer(image: np.ndarray, prompt: str) -> float:
    """The demo judge as a scalar: checks passed, then the soft score (what ``preference`` ranks by)."""
    from .demo.judge import judge

    v = judge(image, prompt)
    return sum(v.checks.values()) + 0.999 * v.score


def load_scorer(spec: str) -> Scorer:
    """``judge`` or ``module:function`` (the function takes a uint8 [H, W, 3] image and a prompt)."""
    if spec == "judge":
        return judge_scorer
    if ":" not in spec:
        raise MGTInputError(f"scorer {spec!r}: use 'judge' or 'module:function'")
    mod, fn = spec.split(":", 1)
    scorer = getattr(importlib.import_module(mod), fn, None)
    if not callable(scorer):
        raise MGTInputError(f"scorer {spec!r}: {mod} has no callable {fn}")
    return scorer


def preferences(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    """Per pair 1 if a scored higher, 0 if lower, 0.5 if equal."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    return np.where(a > b, 1.0, np.where(a < b, 0.0, 0.5))


def interval(prefs: Sequence[float]) -> tuple[float, float]:
    """Mean and 95% half-width (normal approximation) of per-pair preferences."""
    x = np.asarray(prefs, float)
    if len(x) < 2:
        return float(x.mean()) if len(x) else 0.5, 0.0
    return float(x.mean()), 1.96 * float(x.std(ddof=1) / math.sqrt(len(x)))


class Evaluator:
    """Generates and scores images for (options, pairs), caching scores by setting."""

    def __init__(self, pipe, scorer: Scorer, batch: int = 25, log: Callable[[str], None] = print):
        self.pipe, self.scorer, self.batch, self.log = pipe, scorer, batch, log
        self.cache: dict[str, np.ndarray] = {}

    def calls(self, options: dict) -> int:
        from .pipeline import make_settings

        opts = {k: v for k, v in options.items() if k != "steps"}
        steps = options.get("steps", self.pipe.info.steps)
        return make_settings(steps=steps, guidance_scale=self.pipe.info.guidance_scale, **opts).model_calls()

    def scores(self, options: dict, pairs: Sequence[Pair]) -> np.ndarray:
        """Scores of the images ``options`` gives for ``pairs``; each batch is seeded with its first
        pair's seed, so every setting sees the same prompts with the same seeds."""
        key = json.dumps([options, list(pairs)], sort_keys=True)
        if key not in self.cache:
            out = []
            for i in range(0, len(pairs), self.batch):
                chunk = pairs[i : i + self.batch]
                images = self.pipe([p for p, _ in chunk], seed=chunk[0][1], **options)
                for img, (p, _) in zip(images, chunk, strict=True):
                    out.append(float(self.scorer((img.numpy() * 255).round().astype(np.uint8), p)))
            self.cache[key] = np.asarray(out)
        return self.cache[key]


# ----------------------------------------------------------------------------------------------
# Search


def tune(
    ev: Evaluator,
    train: Sequence[Pair],
    test: Sequence[Pair],
    *,
    families: Sequence[str] = FAMILIES,
    max_calls: float = 3.0,
    quick: bool = False,
) -> dict:
    """The search (module docstring); returns a JSON-able report with every row measured."""
    steps = ev.pipe.info.steps
    base_calls = ev.calls({})
    t0 = time.perf_counter()
    vanilla_train = ev.scores({}, train)
    cands = search_space(steps, families, quick)

    def run(c: Candidate) -> Candidate:
        c.calls = ev.calls(c.options)
        c.train_win, c.train_ci = interval(preferences(ev.scores(c.options, train), vanilla_train))
        ev.log(f"  train {c.name:44s} calls {c.calls:3d}  win {100 * c.train_win:5.1f}% ± {100 * c.train_ci:4.1f}"
               f"  ({time.perf_counter() - t0:.0f} s)")
        return c

    ev.log(f"stage 1: {len(cands)} single-family candidates on {len(train)} training pairs")
    for c in cands:
        run(c)
    affordable = [c for c in cands if c.calls <= max_calls * base_calls]
    best_of = {}
    for c in affordable:
        if c.train_win > 0.5 and (c.family not in best_of or c.train_win > best_of[c.family].train_win):
            best_of[c.family] = c
    order = sorted(best_of.values(), key=lambda c: -c.train_win)
    combos: list[Candidate] = []
    ev.log(f"stage 2: greedy combination of {[c.name for c in order]}")
    if len(order) >= 2:
        chosen, best = [order[0]], order[0].train_win
        for c in order[1:]:
            if any(k in o.options for o in chosen for k in c.options):
                continue  # it would override an option already chosen (token temperature sets the Gumbel one too)
            trial = combine([*chosen, c])
            if ev.calls(trial.options) > max_calls * base_calls:
                continue
            run(trial)
            combos.append(trial)
            if trial.train_win > best:
                chosen, best = [*chosen, c], trial.train_win
    everything = cands + combos
    within = [c for c in everything if c.calls <= max_calls * base_calls]
    at_1x = [c for c in everything if c.calls <= base_calls]
    best = max(within, key=lambda c: c.train_win) if within else None
    best_1x = max(at_1x, key=lambda c: c.train_win) if at_1x else None
    family_best = {}
    for c in everything:
        if c.family not in family_best or c.train_win > family_best[c.family].train_win:
            family_best[c.family] = c
    finalists = []
    for c in [best, best_1x, *family_best.values()]:
        if c is not None and c not in finalists:
            finalists.append(c)

    ev.log(f"stage 3: {len(finalists)} finalists on {len(test)} held-out pairs")
    vanilla_test = ev.scores({}, test)
    matched_rows = {}
    for c in finalists:
        s = ev.scores(c.options, test)
        win, ci = interval(preferences(s, vanilla_test))
        c.test = {"win": win, "ci": ci, "ties": int((preferences(s, vanilla_test) == 0.5).sum())}
        if c.calls > base_calls:
            matched = {"steps": c.calls}
            ms = ev.scores(matched, test)
            c.test["matched_steps"] = c.calls
            c.test["win_vs_matched"], c.test["ci_vs_matched"] = interval(preferences(s, ms))
            if c.calls not in matched_rows:
                mw, mci = interval(preferences(ms, vanilla_test))
                matched_rows[c.calls] = {"win": mw, "ci": mci}
        extra = (f"; vs vanilla at {c.calls} steps {100 * c.test['win_vs_matched']:.1f}% ± {100 * c.test['ci_vs_matched']:.1f}"
                 if "win_vs_matched" in c.test else "")
        ev.log(f"  test  {c.name:44s} calls {c.calls:3d}  win {100 * win:5.1f}% ± {100 * ci:4.1f}{extra}")
    return {
        "model": ev.pipe.info.name, "steps": steps, "guidance_scale": ev.pipe.info.guidance_scale,
        "vanilla_calls": base_calls, "max_calls": max_calls, "n_train": len(train), "n_test": len(test),
        "seconds": time.perf_counter() - t0,
        "best": best.name if best else None, "best_1x": best_1x.name if best_1x else None,
        "candidates": [_row(c) for c in everything], "finalists": [_row(c) for c in finalists],
        "vanilla_matched": {str(k): v for k, v in matched_rows.items()},
    }


def _row(c: Candidate) -> dict:
    return {"name": c.name, "family": c.family, "options": c.options, "calls": c.calls,
            "train_win": c.train_win, "train_ci": c.train_ci, "test": c.test}


def report_markdown(rep: dict) -> str:
    """The held-out table (finalists) and the training table (every candidate)."""
    lines = [f"Model `{rep['model']}` ({rep['steps']} steps, CFG {rep['guidance_scale']}); {rep['n_train']} training "
             f"pairs, {rep['n_test']} held-out pairs; {rep['seconds'] / 60:.0f} min.", "",
             "| finalist | calls/img | train win | held-out win vs vanilla (95% CI, ties) | vs vanilla at the same calls |",
             "|---|---|---|---|---|"]
    for r in rep["finalists"]:
        t = r["test"]
        tag = " (best)" if r["name"] == rep["best"] else ""
        tag += " (best 1x)" if r["name"] == rep["best_1x"] else ""
        matched = (f"{100 * t['win_vs_matched']:.1f}% ± {100 * t['ci_vs_matched']:.1f} ({t['matched_steps']} steps)"
                   if "win_vs_matched" in t else "-")
        lines.append(f"| {r['name']}{tag} | {r['calls']} | {100 * r['train_win']:.1f}% | "
                     f"{100 * t['win']:.1f}% ± {100 * t['ci']:.1f} ({t['ties']}) | {matched} |")
    for calls, m in rep["vanilla_matched"].items():
        lines.append(f"| vanilla at {calls} steps | {calls} | - | {100 * m['win']:.1f}% ± {100 * m['ci']:.1f} | - |")
    lines += ["", "| candidate (training pairs) | family | calls/img | train win vs vanilla |", "|---|---|---|---|"]
    for r in sorted(rep["candidates"], key=lambda r: -r["train_win"]):
        lines.append(f"| {r['name']} | {r['family']} | {r['calls']} | {100 * r['train_win']:.1f}% ± {100 * r['train_ci']:.1f} |")
    return "\n".join(lines)


def preset_of(rep: dict, finalist: str) -> dict:
    """The options of a finalist of the report (by name), with what was measured held out."""
    row = next((r for r in rep["finalists"] if r["name"] == finalist), None)
    if row is None:
        raise MGTInputError(f"no finalist {finalist!r} in the report; its finalists: {[r['name'] for r in rep['finalists']]}")
    t = row["test"]
    measured = (f"{row['name']}: held-out win {100 * t['win']:.1f}% ± {100 * t['ci']:.1f} vs vanilla over "
                f"{rep['n_test']} pairs, {row['calls']} model calls (vanilla {rep['vanilla_calls']})")
    if "win_vs_matched" in t:
        measured += f"; {100 * t['win_vs_matched']:.1f}% vs vanilla at {t['matched_steps']} steps"
    return {**row["options"], "_measured": measured}


# ----------------------------------------------------------------------------------------------
# Prompts


def prompt_pairs(args) -> tuple[list[Pair], list[Pair]]:
    """(train, held-out) prompt-seed pairs: from a split of the demo grammar, or a prompt file
    (one prompt a line) split in two. Held-out pairs share no prompt with the training pairs."""
    if args.prompts:
        lines = [ln.strip() for ln in Path(args.prompts).read_text(encoding="utf-8").splitlines() if ln.strip()]
        rng = np.random.default_rng(args.seed)
        order = rng.permutation(len(lines))
        n_train = min(args.n_train, len(lines) // 2)
        seeds = rng.integers(0, 2**31 - 1, size=len(lines))
        train = [(lines[i], int(seeds[i])) for i in order[:n_train]]
        test = [(lines[i], int(seeds[i])) for i in order[n_train : n_train + args.n_test]]
        return train, test
    from .demo.scenes import eval_prompts

    train = eval_prompts(args.split, args.n_train, seed=1000 + args.seed)
    taken = {p for p, _ in train}
    pool = eval_prompts(args.split, args.n_test + len(train), seed=2000 + args.seed)
    test = [(p, s) for p, s in pool if p not in taken][: args.n_test]
    return train, test


def main(argv: list[str] | None = None) -> dict:
    import torch

    from .loading.pipeline import load_pipeline
    from .sampling.presets import save_model_preset

    demo = Path(__file__).resolve().parent / "demo" / "mgt-demo"
    ap = argparse.ArgumentParser(prog="python -m mgt_core.tune", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(demo), help="model folder (default: the built-in demo model)")
    ap.add_argument("--split", default="compositional", help="demo-grammar split to tune on (demo models)")
    ap.add_argument("--prompts", help="a text file of prompts, one a line (instead of --split)")
    ap.add_argument("--scorer", default="judge", help="'judge' (demo models) or module:function(image, prompt)")
    ap.add_argument("--n-train", type=int, default=64)
    ap.add_argument("--n-test", type=int, default=200)
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    ap.add_argument("--max-calls", type=float, default=3.0, help="budget: x vanilla's model calls")
    ap.add_argument("--quick", action="store_true", help="two candidates per family (smoke test)")
    ap.add_argument("--batch", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save", help="save the best setting as this preset (and the best at 1x as <name>-1x) "
                                   "in the model folder's mgt_defaults.json")
    ap.add_argument("--finalist", help="with --save: save this finalist (by name) as the one preset instead, e.g. "
                                       "the best held-out one; the best is chosen on training pairs only")
    ap.add_argument("--from-report", help="reuse this report.json instead of searching again (with --save)")
    ap.add_argument("--out", default="runs/tune", help="folder for report.json / report.md")
    args = ap.parse_args(argv)

    if args.finalist and not args.save:
        raise MGTInputError("--finalist names what --save saves: pass --save NAME too")
    if args.from_report:
        rep = json.loads(Path(args.from_report).read_text(encoding="utf-8"))
    else:
        torch.manual_seed(0)
        pipe = load_pipeline(args.model, dtype=torch.float32)
        ev = Evaluator(pipe, load_scorer(args.scorer), args.batch, log=lambda s: print(s, flush=True))
        train, test = prompt_pairs(args)
        rep = tune(ev, train, test, families=args.families, max_calls=args.max_calls, quick=args.quick)
        rep["command"] = "python -m mgt_core.tune " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.save:
        if args.finalist:
            targets = [(args.save, args.finalist)]
        else:
            targets = [(name, rep[which]) for which, name in (("best", args.save), ("best_1x", f"{args.save}-1x"))
                       if rep[which]]  # fmt: skip
        for name, finalist in targets:
            path = save_model_preset(args.model, name, preset_of(rep, finalist))
            rep.setdefault("saved", {})[name] = finalist
            print(f"saved preset {name!r} ({finalist}) in {path}", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(rep, indent=1) + "\n")
    md = report_markdown(rep)
    (out / "report.md").write_text(md + "\n")
    print(md)
    return rep


if __name__ == "__main__":
    main()

"""Benchmark: the tutorial's 200-trial binning study, sigtune vs nextstat + Optuna, in one run.

Both studies use the same workspace builder (``examples/binning/tutorial.py``), the same TPE
sampler and seed. nextstat's Z0 is computed the way its discovery tool does it (an
unconditional fit plus a profile point at mu = 0); sigtune's is the full profile-likelihood Z0
of ``sigtune.hep`` (``sigtune.pipelines.binning.expected_z0``). A third line times Optuna's TPE
alone (a trivial objective over the same space), the floor neither study can go below.

Both studies run with the same sampler class, ``TimedTPE`` (Optuna's TPESampler, seed 42, which
also adds up the time spent inside the sampler), so that the time outside the sampler, what
sigtune controls, is measured directly: ``sampler-free time = wall - time inside the sampler``.

Floors (what no study with this sampler can go below): ``Optuna TPE alone`` (a trivial objective
over the same space) for the whole study; for the time outside the sampler, ``Optuna + builder``
(the tutorial's objective without a Z0: Optuna's own per-trial bookkeeping plus the workspace
builder that both studies run per trial). ``sampler-free time above that floor`` is then what
each engine adds: its Z0 and its study machinery. The Z0 call column times the Z0 function alone
on 200 tutorial workspaces (min of ``--repeat``); the bookkeeping line times Optuna's
``study.optimize`` and ``sigtune.optimize`` per trial with a no-op objective and a sampler that
costs nothing.

Then the corrected study (``examples/binning/corrected.yaml`` settings: 100k weighted events per
sample, fine-histogram re-binning, staterror, histosys, constraints) is timed for 200 trials, and
the realistic study (``examples/binning/realistic.yaml``: signal region + two control regions,
five samples of 100k weighted events, 12 systematics, lumi, staterror, free normalisations) for
300 TPE trials against nextstat + Optuna (same objective code, sampler and seed; nextstat builds
its model from the same workspace dictionary per trial, as its tutorial does). Last, a batched
exhaustive scan of uniform binnings of the realistic study, timed after a warm-up scan (one
model per structure is built on first sight) against the same candidates one by one; the realistic
study's ``large floor`` is the time its TPE sampler alone takes in the sigtune study.

    .venv/bin/python bench/binning.py [--trials 200] [--repeat 3] [--large-trials 300]

nextstat (AGPL) is imported only here, never by the package.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import optuna

import sigtune
from sigtune.pipelines.binning import BinningObjective, exhaustive_scan, expected_z0

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "binning"
optuna.logging.set_verbosity(optuna.logging.WARNING)


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


tutorial = _load("tutorial")
corrected = _load("corrected")
realistic = _load("realistic")


class TimedTPE(optuna.samplers.TPESampler):
    """Optuna's TPESampler that adds up the seconds spent in its own methods."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seconds = 0.0

    def _timed(self, name: str, *args: Any) -> Any:
        start = time.perf_counter()
        try:
            return getattr(super(), name)(*args)
        finally:
            self.seconds += time.perf_counter() - start

    def infer_relative_search_space(self, *args: Any) -> Any:
        return self._timed("infer_relative_search_space", *args)

    def sample_relative(self, *args: Any) -> Any:
        return self._timed("sample_relative", *args)

    def sample_independent(self, *args: Any) -> Any:
        return self._timed("sample_independent", *args)

    def before_trial(self, *args: Any) -> Any:
        return self._timed("before_trial", *args)

    def after_trial(self, *args: Any) -> Any:
        return self._timed("after_trial", *args)


def nextstat_z0(spec: dict[str, Any]) -> float:
    """Discovery Z0 with nextstat: free fit and profile at mu = 0."""
    import nextstat

    model = nextstat.from_pyhf(json.dumps(spec))
    free = nextstat.fit(model)
    mu_hat = float(free.parameters[model.poi_index()])
    point = nextstat.profile_scan(model, [0.0])["points"][0]
    q0 = 2.0 * (float(point["nll_mu"]) - float(free.nll))
    return math.sqrt(max(q0, 0.0)) if mu_hat > 0 else 0.0


def nextstat_objective(trial: optuna.Trial) -> float:
    n_bins = trial.suggest_int("n_bins", 3, 40)
    lo = trial.suggest_float("lo", 0.0, 0.3)
    hi = trial.suggest_float("hi", 0.7, 1.0)
    return nextstat_z0(tutorial.build_workspace(n_bins, lo, hi))


def tpe_only_objective(trial: optuna.Trial) -> float:
    n_bins = trial.suggest_int("n_bins", 3, 40)
    lo = trial.suggest_float("lo", 0.0, 0.3)
    hi = trial.suggest_float("hi", 0.7, 1.0)
    return n_bins * (hi - lo)


def builder_only_objective(trial: optuna.Trial) -> float:
    """The tutorial's objective without a Z0: suggests and builds the workspace only."""
    n_bins = trial.suggest_int("n_bins", 3, 40)
    lo = trial.suggest_float("lo", 0.0, 0.3)
    hi = trial.suggest_float("hi", 0.7, 1.0)
    tutorial.build_workspace(n_bins, lo, hi)
    return n_bins * (hi - lo)


def run_nextstat(n: int) -> tuple[float, float, float]:
    sampler = TimedTPE(seed=42)
    start = time.perf_counter()
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(nextstat_objective, n_trials=n)
    return time.perf_counter() - start, float(study.best_value), sampler.seconds


def run_sigtune(n: int) -> tuple[float, float, float]:
    sampler = TimedTPE(seed=42)
    start = time.perf_counter()
    study = sigtune.optimize(tutorial.objective, n_trials=n, direction="maximize", sampler=sampler)
    return time.perf_counter() - start, float(study.best_value), sampler.seconds


def run_tpe_only(n: int) -> tuple[float, float, float]:
    sampler = TimedTPE(seed=42)
    start = time.perf_counter()
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(tpe_only_objective, n_trials=n)
    return time.perf_counter() - start, float("nan"), sampler.seconds


def run_builder_only(n: int) -> tuple[float, float, float]:
    sampler = TimedTPE(seed=42)
    start = time.perf_counter()
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(builder_only_objective, n_trials=n)
    return time.perf_counter() - start, float("nan"), sampler.seconds


def bookkeeping_per_trial(n: int, repeat: int) -> tuple[float, float]:
    """Seconds per trial outside the objective and the sampler: Optuna's study.optimize and
    sigtune.optimize with a no-op objective and a sampler that costs nothing (min of runs)."""

    class Fixed(optuna.samplers.BaseSampler):
        def infer_relative_search_space(self, *args: Any) -> dict[str, Any]:
            return {}

        def sample_relative(self, *args: Any) -> dict[str, Any]:
            return {}

        def sample_independent(self, study: Any, trial: Any, name: str, dist: Any) -> Any:
            return dist.low

    def noop(trial: optuna.Trial) -> float:
        return tpe_only_objective(trial)

    def opt() -> None:
        optuna.create_study(direction="maximize", sampler=Fixed()).optimize(noop, n_trials=n)

    def sig() -> None:
        sigtune.optimize(noop, n_trials=n, direction="maximize", sampler=Fixed())

    out = []
    for fn in (opt, sig):
        fn()
        runs = []
        for _ in range(repeat):
            start = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - start)
        out.append(min(runs) / n)
    return out[0], out[1]


def run_corrected(n: int) -> tuple[float, float]:
    start = time.perf_counter()
    objective = BinningObjective(
        corrected.make_samples(n_events=100_000, weight_spread=2.0, seed=42),
        signal=["signal"],
        fine_edges=np.linspace(0.0, 1.0, 1001),
        binning={"kind": "uniform", "n_bins": (3, 40), "lo": (0.0, 0.3), "hi": (0.7, 1.0)},
        workspace=corrected.WORKSPACE,
        max_rel_stat=0.15,
        min_background=0.5,
    )
    study = sigtune.optimize(
        objective, n_trials=n, directions=objective.directions, sampler="tpe", seed=42
    )
    return time.perf_counter() - start, float(study.best_value)


def realistic_objective(binning: dict[str, Any] | None = None) -> BinningObjective:
    """The objective of ``examples/binning/realistic.yaml``."""
    return BinningObjective(
        realistic.make_samples(n_events=100_000, seed=42),
        signal=["signal"],
        fine_edges=np.linspace(0.0, 1.0, 201),
        binning=binning or {"kind": "variable", "n_bins": (2, 20), "min_ratio": 0.05},
        workspace=realistic.WORKSPACE,
        region_column="region",
        control_regions=realistic.CONTROL_REGIONS,
        min_background=1.0,
        max_rel_stat=0.2,
    )


def _best_feasible(study: optuna.Study) -> float:
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    feasible = [t for t in done if all(c <= 0 for c in t.user_attrs["constraints"])]
    return max(float(t.value) for t in (feasible or done))


def run_large(objective: BinningObjective, n: int, engine: str) -> tuple[float, float, float]:
    """The realistic study with sigtune, or the same objective code with nextstat's Z0."""

    def ns_objective(trial: optuna.Trial) -> float:
        hist, _, edges = objective.candidate_histograms(trial)
        cons = objective.constraints(hist)
        trial.set_user_attr("constraints", list(cons))
        for name, value in zip(objective.constraint_names, cons, strict=True):
            trial.set_constraint(name, value)
        trial.set_user_attr("edges", [float(e) for e in edges])
        return nextstat_z0(objective.workspace_of(hist, lists=True))

    sampler = TimedTPE(seed=42)
    start = time.perf_counter()
    if engine == "sigtune":
        study = sigtune.optimize(objective, n_trials=n, direction="maximize", sampler=sampler)
        ostudy = study.optuna
    else:
        ostudy = optuna.create_study(direction="maximize", sampler=sampler)
        ostudy.optimize(ns_objective, n_trials=n)
    return time.perf_counter() - start, _best_feasible(ostudy), sampler.seconds


def per_call_ms(fn: Callable[[dict[str, Any]], float], n: int = 200, repeat: int = 3) -> float:
    """Milliseconds per Z0 call over the same 200 tutorial workspaces (min of ``repeat``)."""
    rng = np.random.default_rng(0)
    specs = [
        tutorial.build_workspace(int(rng.integers(3, 41)), rng.uniform(0, 0.3), rng.uniform(0.7, 1))
        for _ in range(n)
    ]
    best = math.inf
    for _ in range(repeat):
        start = time.perf_counter()
        for s in specs:
            fn(s)
        best = min(best, time.perf_counter() - start)
    return best / n * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs per line")
    parser.add_argument("--large-trials", type=int, default=300)
    args = parser.parse_args()
    n = args.trials

    # warm up imports and caches of both engines (not timed)
    nextstat_z0(tutorial.build_workspace(5, 0.1, 0.9))
    expected_z0(tutorial.build_workspace(5, 0.1, 0.9))

    rows = {}
    for name, fn in [
        ("nextstat + Optuna", run_nextstat),
        ("sigtune", run_sigtune),
        ("Optuna TPE alone", run_tpe_only),
        ("Optuna + builder", run_builder_only),
    ]:
        runs = [fn(n) for _ in range(args.repeat)]
        best = min(runs, key=lambda r: r[0])
        rows[name] = (best[0], runs[0][1], best[2])
    ns_t, ns_z, ns_s = rows["nextstat + Optuna"]
    st_t, st_z, st_s = rows["sigtune"]
    tpe_t, _, tpe_s = rows["Optuna TPE alone"]
    bo_t, _, bo_s = rows["Optuna + builder"]
    ns_call = per_call_ms(nextstat_z0, repeat=args.repeat)
    st_call = per_call_ms(lambda spec: expected_z0(spec, validate=False), repeat=args.repeat)
    print(f"Tutorial study: {n} TPE trials, seed 42 (best of {args.repeat} runs)")
    print(f"{'':<20} {'wall [s]':>9} {'sampler [s]':>12} {'best Z0':>9} {'Z0 call [ms]':>13}")
    print(f"{'nextstat + Optuna':<20} {ns_t:>9.3f} {ns_s:>12.3f} {ns_z:>9.4f} {ns_call:>13.3f}")
    print(f"{'sigtune':<20} {st_t:>9.3f} {st_s:>12.3f} {st_z:>9.4f} {st_call:>13.3f}")
    print(f"{'Optuna TPE alone':<20} {tpe_t:>9.3f} {tpe_s:>12.3f}")
    print(f"{'Optuna + builder':<20} {bo_t:>9.3f} {bo_s:>12.3f}   (tutorial workspace, no Z0)")
    print(f"ratio sigtune / nextstat+Optuna = {st_t / ns_t:.2f}  (target <= 0.95)")
    print(
        f"floor: Optuna TPE alone / nextstat+Optuna = {tpe_t / ns_t:.2f}  (no study with this "
        "sampler and seed can be faster)"
    )
    print(f"|best Z0 difference| = {abs(st_z - ns_z):.4f}  (target <= 0.01)")
    st_free, ns_free = st_t - st_s, ns_t - ns_s
    print(
        f"sampler-free time: sigtune {st_free:.3f} s, nextstat {ns_free:.3f} s  "
        f"(ratio {st_free / ns_free:.2f}, target <= 0.5)"
    )
    floor_free = bo_t - bo_s
    print(
        f"floor: Optuna bookkeeping alone (no-op objective) = {tpe_t - tpe_s:.3f} s; with the "
        f"tutorial's workspace builder = {floor_free:.3f} s -> sampler-free ratio floor "
        f"{floor_free / ns_free:.2f}"
    )
    print(
        f"sampler-free time above that floor: sigtune {st_free - floor_free:.3f} s, nextstat "
        f"{ns_free - floor_free:.3f} s  (ratio {(st_free - floor_free) / (ns_free - floor_free):.2f})"
    )
    print(f"Z0 call: sigtune / nextstat = {st_call / ns_call:.2f}  (target <= 0.5)")
    opt_pt, sig_pt = bookkeeping_per_trial(n, args.repeat)
    print(
        f"study bookkeeping per trial (no-op objective, free sampler): Optuna {opt_pt * 1e6:.0f} us,"
        f" sigtune.optimize {sig_pt * 1e6:.0f} us (sigtune core adds {(sig_pt - opt_pt) * 1e6:.0f} us)"
    )
    t, z = run_corrected(n)
    print(
        f"Corrected study (100k weighted events per sample, fine re-binning): "
        f"{n} trials in {t:.2f} s incl. event generation and filling, best Z0 {z:.4f} "
        "(target < 5 s)"
    )

    m = args.large_trials
    large = realistic_objective()
    large.replay({"n_bins": 5, **{f"w{i}": 1.0 for i in range(5)}})  # warm-up (compiles)
    lt_ns, lz_ns, ls_ns = run_large(large, m, "nextstat")
    lt_st, lz_st, ls_st = run_large(large, m, "sigtune")
    print(
        f"Realistic study: SR (variable binning, <= 20 bins) + 2 CRs, 5 samples x 100k events, "
        f"12 systematics; {m} TPE trials, seed 42"
    )
    print(f"{'':<20} {'wall [s]':>9} {'sampler [s]':>12} {'best Z0':>9}")
    print(f"{'nextstat + Optuna':<20} {lt_ns:>9.3f} {ls_ns:>12.3f} {lz_ns:>9.4f}")
    print(f"{'sigtune':<20} {lt_st:>9.3f} {ls_st:>12.3f} {lz_st:>9.4f}")
    print(
        f"large ratio sigtune / nextstat+Optuna = {lt_st / lt_ns:.2f}  (target <= 0.2); "
        f"best Z0 sigtune {lz_st:.4f}, nextstat {lz_ns:.4f}"
    )
    print(
        f"large floor: sigtune's TPE alone / nextstat+Optuna = {ls_st / lt_ns:.2f}  (the sampler's "
        "own time in the sigtune study; no study with this sampler can be faster)"
    )
    print(
        f"large sampler-free time: sigtune {lt_st - ls_st:.3f} s, nextstat {lt_ns - ls_ns:.3f} s  "
        f"(ratio {(lt_st - ls_st) / (lt_ns - ls_ns):.2f})"
    )

    scan_obj = realistic_objective({"kind": "uniform", "n_bins": (2, 20), "lo": (0.0, 0.4)})
    grid = {"n_bins": list(range(2, 21)), "lo": [0.0, 0.1, 0.2, 0.3, 0.4]}
    # warm-up: one model per structure (number of bins) is built on first sight; both timed
    # passes below see the same warm caches
    exhaustive_scan(scan_obj, grid, batch_size=256)
    scans = [exhaustive_scan(scan_obj, grid, batch_size=256) for _ in range(args.repeat)]
    scan = min(scans, key=lambda r: r.wall_time)
    n_cand = len(scan.candidates) + len(scan.failures)
    ones = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        for c in scan.candidates:
            scan_obj.evaluate(optuna.trial.FixedTrial(c.params))  # type: ignore[arg-type]
        ones.append((time.perf_counter() - start) / len(scan.candidates))
    one = min(ones)
    print(
        f"batched exhaustive scan: {n_cand} candidates in {scan.wall_time:.2f} s "
        f"({scan.wall_time / n_cand * 1e6:.0f} us per candidate; one by one "
        f"{one * 1e6:.0f} us)"
    )


if __name__ == "__main__":
    main()

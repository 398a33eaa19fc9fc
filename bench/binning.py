"""Benchmark: the tutorial's 200-trial binning study, sigtune vs nextstat + Optuna, in one run.

Both studies use the same workspace builder (``examples/binning/tutorial.py``), the same TPE
sampler and seed. nextstat's Z0 is computed the way its discovery tool does it (an
unconditional fit plus a profile point at mu = 0); sigtune's is the full profile-likelihood Z0
of ``sigtune.hep`` (``sigtune.pipelines.binning.expected_z0``). A third line times Optuna's TPE
alone (a trivial objective over the same space), the floor neither study can go below.

Then the corrected study (``examples/binning/corrected.yaml`` settings: 100k weighted events per
sample, fine-histogram re-binning, staterror, histosys, constraints) is timed for 200 trials.

    .venv/bin/python bench/binning.py [--trials 200] [--repeat 3]

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
from sigtune.pipelines.binning import BinningObjective, expected_z0

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


def run_nextstat(n: int) -> tuple[float, float]:
    start = time.perf_counter()
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=42))
    study.optimize(nextstat_objective, n_trials=n)
    return time.perf_counter() - start, float(study.best_value)


def run_sigtune(n: int) -> tuple[float, float]:
    start = time.perf_counter()
    study = sigtune.optimize(
        tutorial.objective, n_trials=n, direction="maximize", sampler="tpe", seed=42
    )
    return time.perf_counter() - start, float(study.best_value)


def run_tpe_only(n: int) -> tuple[float, float]:
    start = time.perf_counter()
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=42))
    study.optimize(tpe_only_objective, n_trials=n)
    return time.perf_counter() - start, float("nan")


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


def per_call_ms(fn: Callable[[dict[str, Any]], float], n: int = 200) -> float:
    rng = np.random.default_rng(0)
    specs = [
        tutorial.build_workspace(int(rng.integers(3, 41)), rng.uniform(0, 0.3), rng.uniform(0.7, 1))
        for _ in range(n)
    ]
    start = time.perf_counter()
    for s in specs:
        fn(s)
    return (time.perf_counter() - start) / n * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs per line")
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
    ]:
        runs = [fn(n) for _ in range(args.repeat)]
        rows[name] = (min(r[0] for r in runs), runs[0][1])
    ns_t, ns_z = rows["nextstat + Optuna"]
    st_t, st_z = rows["sigtune"]
    tpe_t = rows["Optuna TPE alone"][0]
    print(f"Tutorial study: {n} TPE trials, seed 42 (best of {args.repeat} runs)")
    print(f"{'':<20} {'wall [s]':>9} {'best Z0':>9} {'Z0 call [ms]':>13}")
    print(f"{'nextstat + Optuna':<20} {ns_t:>9.3f} {ns_z:>9.4f} {per_call_ms(nextstat_z0):>13.3f}")
    st_call = per_call_ms(lambda spec: expected_z0(spec, validate=False))  # as tutorial.objective
    print(f"{'sigtune':<20} {st_t:>9.3f} {st_z:>9.4f} {st_call:>13.3f}")
    print(f"{'Optuna TPE alone':<20} {tpe_t:>9.3f} {'':>9} {'':>13}")
    print(f"ratio sigtune / nextstat+Optuna = {st_t / ns_t:.2f}  (target <= 0.80)")
    print(
        f"floor: Optuna TPE alone / nextstat+Optuna = {tpe_t / ns_t:.2f}  (no study with this "
        "sampler and seed can be faster)"
    )
    print(f"|best Z0 difference| = {abs(st_z - ns_z):.4f}  (target <= 0.01)")
    print(f"sampler-free time: sigtune {st_t - tpe_t:.3f} s, nextstat {ns_t - tpe_t:.3f} s")
    t, z = run_corrected(n)
    print(
        f"Corrected study (100k weighted events per sample, fine re-binning): "
        f"{n} trials in {t:.2f} s incl. event generation and filling, best Z0 {z:.4f} "
        "(target < 5 s)"
    )


if __name__ == "__main__":
    main()

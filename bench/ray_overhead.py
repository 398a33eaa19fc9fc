"""Overhead of the Ray engine: sigtune local vs sigtune on Ray vs Ray Tune + OptunaSearch.

A trivial objective (one ``suggest_float``, ``x**2``), so the wall time is the framework's cost.
All three run in this process against one local Ray instance started once (not timed; every Ray
user pays it once per cluster):

* **sigtune local**: ``sigtune.optimize(..., engine="local")`` (in-process, journal file storage);
* **sigtune ray**: ``sigtune.optimize(..., engine="ray")`` (trials as Ray tasks, the same journal
  file storage on the driver);
* **tune+optunasearch**: ``ray.tune.Tuner`` with ``OptunaSearch`` (what users do today), same
  sampler, ``num_samples`` trials.

Rows: 100 trials with TPE (the comparison with Ray Tune + OptunaSearch) and 1,000 trials with the
random sampler (the engine's per-trial cost against the local engine, without the sampler's cost
growing with the study). Each sigtune case is run ``--repeats`` times and the minimum kept; Ray
Tune is run once per row (it takes far longer). Prints a Markdown table and the two lines::

    ratio sigtune-ray / tune+optunasearch at 100 trials = X
    ratio sigtune-ray / sigtune-local per trial at 1000 trials = Y

Usage::

    python bench/ray_overhead.py                  # 100 (TPE, with Ray Tune) and 1,000 (random)
    python bench/ray_overhead.py --cpus 4 --repeats 3
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import optuna

import sigtune


def objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -1.0, 1.0)
    return x * x


def _sigtune(engine: str, n: int, sampler: str, workdir: Path, tag: str) -> float:
    run_dir = workdir / f"{tag}-{engine}-{n}-{time.monotonic_ns()}"
    t0 = time.perf_counter()
    study = sigtune.optimize(
        objective,
        n_trials=n,
        sampler=sampler,
        seed=0,
        run_dir=run_dir,
        engine=engine,
    )
    wall = time.perf_counter() - t0
    assert study.n_finished() == n, study.count()
    shutil.rmtree(run_dir, ignore_errors=True)
    return wall


def _tune(n: int, workdir: Path) -> float:
    from optuna.distributions import FloatDistribution
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    def trainable(config: dict[str, float]) -> dict[str, float]:
        return {"loss": config["x"] ** 2}

    search = OptunaSearch(
        space={"x": FloatDistribution(-1.0, 1.0)},
        metric="loss",
        mode="min",
        sampler=optuna.samplers.TPESampler(seed=0),
    )
    t0 = time.perf_counter()
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=search, num_samples=n),
        run_config=tune.RunConfig(
            storage_path=str(workdir / f"tune-{time.monotonic_ns()}"), verbose=0
        ),
    )
    results = tuner.fit()
    wall = time.perf_counter() - t0
    assert len(results) == n, len(results)
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="CPUs of the local Ray")
    ap.add_argument("--repeats", type=int, default=3, help="repeats of the sigtune cases")
    ap.add_argument("--small", type=int, default=100, help="trials of the Tune comparison")
    ap.add_argument("--large", type=int, default=1000, help="trials of the per-trial row")
    args = ap.parse_args()

    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    warnings.filterwarnings("ignore")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("ray").setLevel(logging.ERROR)
    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, logging_level="ERROR")
    workdir = Path(tempfile.mkdtemp(prefix="sigtune-ray-bench-"))
    try:
        _sigtune("ray", 20, "random", workdir, "warmup")  # start the workers, imports
        rows = []
        for n, sampler in ((args.small, "tpe"), (args.large, "random")):
            local = min(_sigtune("local", n, sampler, workdir, "b") for _ in range(args.repeats))
            on_ray = min(_sigtune("ray", n, sampler, workdir, "b") for _ in range(args.repeats))
            rows.append([n, sampler, local, on_ray, None])
            print(f"# {n} trials ({sampler}): local {local:.2f} s, ray {on_ray:.2f} s", flush=True)
        # Ray Tune last: on a loaded machine it takes far longer than everything else
        rows[0][4] = _tune(args.small, workdir)
    finally:
        ray.shutdown()
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"Ray: local instance, {args.cpus} CPUs; storage: journal file; trivial objective")
    print()
    print(
        "| trials | sampler | sigtune local (s) | sigtune ray (s) | tune+optunasearch (s) "
        "| local ms/trial | ray ms/trial | ray / local | ray / tune |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for n, sampler, local, on_ray, tune_s in rows:
        tune_txt = f"{tune_s:.2f}" if tune_s is not None else "not run"
        vs_tune = f"{on_ray / tune_s:.3f}" if tune_s is not None else "-"
        print(
            f"| {n} | {sampler} | {local:.2f} | {on_ray:.2f} | {tune_txt} | "
            f"{1000 * local / n:.2f} | {1000 * on_ray / n:.2f} | {on_ray / local:.2f} | {vs_tune} |"
        )
    print()
    small = next(r for r in rows if r[0] == args.small)
    large = next(r for r in rows if r[0] == args.large)
    assert small[4] is not None
    print(
        f"ratio sigtune-ray / tune+optunasearch at {args.small} trials = {small[3] / small[4]:.3f}"
    )
    print(
        f"ratio sigtune-ray / sigtune-local per trial at {args.large} trials = "
        f"{(large[3] / args.large) / (large[2] / args.large):.2f}"
    )


if __name__ == "__main__":
    main()

"""Soak run: many trials on the embedded journal; is memory and per-trial time flat?

Runs ``sigtune.optimize`` once on a trivial objective with the embedded journal and prints, for
every ``--chunk`` trials, the time per trial and this process's peak RSS. The random sampler measures the framework's own growth; TPE
(``--tpe-trials``, a shorter run) shows the growth of the sampler's cost, reported separately.

Usage::

    python bench/soak.py                       # 10,000 random trials, 2,000 TPE trials
    python bench/soak.py --trials 2000 --chunk 500 --tpe-trials 0
    python bench/soak.py --raw                 # + raw Optuna ask/tell on the same journal
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import optuna

import sigtune


def objective(trial: optuna.Trial) -> float:
    return trial.suggest_float("x", -1.0, 1.0) ** 2


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def soak(sampler: str, trials: int, chunk: int, run_dir: Path) -> list[tuple[int, float, float]]:
    """One run of ``trials``; a callback stamps the time and peak RSS after every ``chunk``."""
    rows: list[tuple[int, float, float]] = []
    last = [time.perf_counter()]

    def stamp(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        done = trial.number + 1
        if done % chunk == 0:
            now = time.perf_counter()
            rows.append((done, (now - last[0]) / chunk * 1e3, _rss_mb()))
            last[0] = now

    if sampler == "raw-random":  # Optuna's own ask/tell on the same journal storage
        from sigtune._storage import resolve_storage

        run_dir.mkdir(parents=True)
        storage = resolve_storage(None, run_dir=run_dir).open(track_owner=False)
        study = optuna.create_study(storage=storage, sampler=optuna.samplers.RandomSampler(seed=0))
        for _ in range(trials):
            trial = study.ask()
            frozen = study.tell(trial, objective(trial))
            stamp(study, frozen)
        return rows
    sigtune.optimize(objective, trials, sampler=sampler, seed=0, run_dir=run_dir, callbacks=[stamp])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--chunk", type=int, default=1_000)
    parser.add_argument("--tpe-trials", type=int, default=2_000)
    parser.add_argument(
        "--raw", action="store_true", help="also raw Optuna ask/tell, same storage and trials"
    )
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    runs = [("random", args.trials), ("tpe", args.tpe_trials)]
    if args.raw:
        runs.insert(1, ("raw-random", args.trials))
    for sampler, n in runs:
        if n <= 0:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            rows = soak(sampler, n, min(args.chunk, n), Path(tmp) / "run")
        print(f"\n{sampler} sampler, embedded journal, {n} trials")
        print("| trials | ms / trial (this chunk) | peak RSS MB |")
        print("|---:|---:|---:|")
        for done, ms, rss in rows:
            print(f"| {done} | {ms:.3f} | {rss:.1f} |")
        first, last = rows[0][1], rows[-1][1]
        print(
            f"per-trial time last/first chunk: {last / first:.2f}x; "
            f"peak RSS first/last chunk: {rows[0][2]:.1f} / {rows[-1][2]:.1f} MB"
        )


if __name__ == "__main__":
    main()

"""Per-trial framework overhead of sigtune vs raw Optuna ask/tell on the same sampler and storage.

For each (storage, workers, sampler) case the script times, in the same run and interleaved:

* **raw Optuna**: ``workers`` forked processes, each doing ``study.ask()`` / ``study.tell()`` with
  the same sampler class on the same kind of storage, ``trials / workers`` trials each;
* **sigtune**: ``sigtune.optimize(objective, trials, n_jobs=workers, ...)`` (tickets, failure
  policy, owner stamps, signal guard, worker management included).

The objective is trivial (one ``suggest_float``), so the time per trial is the framework's cost.
Two clocks are reported: wall time, and CPU time of this process plus its worker processes
(``getrusage``). On a shared machine the wall time of the file storages is dominated by waiting for
``fsync`` and for CPU, so the CPU ratio is the steadier measure of the framework's own work. Each
measurement is repeated (raw and sigtune interleaved; in-memory cases 4x as often) and the minimum
is kept. Prints a Markdown
table; ratio = sigtune / raw.

Usage::

    python bench/overhead.py                      # 1,000 trials; memory + journal; 1, 2, 8 workers
    python bench/overhead.py --storages memory,journal,sqlite --samplers random,tpe --repeats 5
    python bench/overhead.py --storages journal,sqlite --read-trials 10000 --trials 0
                                                  # read side: `best` vs Optuna's best_value

``--read-trials N`` times the read-only commands on a study of N finished trials: ``best``
(``sigtune.load_study(...).best_trial`` as ``sigtune best`` runs it: the database's indexed query
on SQLite, one pass over the trials elsewhere), the full feasible-first scan it replaces, and raw
Optuna's ``load_study(...).best_trial``, each from a fresh process-local storage object.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna

import sigtune
from sigtune._storage import resolve_storage


def objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -1.0, 1.0)
    return x * x


def _sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    raise SystemExit(f"unknown sampler {name!r}")


def _url(storage: str, workdir: Path) -> str | None:
    if storage == "memory":
        return None
    if storage == "journal":
        return f"journal:///{workdir}/study.journal"
    if storage == "sqlite":
        return f"sqlite:///{workdir}/study.db"
    raise SystemExit(f"unknown storage {storage!r}")


Timing = tuple[float, float]  # wall s, CPU s (this process + its joined workers)


def _cpu() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _raw_worker(url: str, sampler: str, seed: int, n: int) -> None:
    # Same storage configuration as sigtune (WAL/busy timeout for SQLite), without owner stamps.
    storage = resolve_storage(url).open(track_owner=False)
    study = optuna.load_study(study_name="bench", storage=storage, sampler=_sampler(sampler, seed))
    for _ in range(n):
        trial = study.ask()
        study.tell(trial, objective(trial))


def run_raw(storage: str, workers: int, sampler: str, trials: int, workdir: Path) -> Timing:
    url = _url(storage, workdir)
    start, cpu0 = time.perf_counter(), _cpu()
    if url is None:
        study = optuna.create_study(sampler=_sampler(sampler, 0))
        for _ in range(trials):
            trial = study.ask()
            study.tell(trial, objective(trial))
        return time.perf_counter() - start, _cpu() - cpu0
    optuna.create_study(storage=resolve_storage(url).open(track_owner=False), study_name="bench")
    if workers == 1:
        _raw_worker(url, sampler, 0, trials)
        return time.perf_counter() - start, _cpu() - cpu0
    ctx = mp.get_context("fork")
    shares = [trials // workers + (i < trials % workers) for i in range(workers)]
    procs = [
        ctx.Process(target=_raw_worker, args=(url, sampler, i, shares[i])) for i in range(workers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    return time.perf_counter() - start, _cpu() - cpu0


def run_sigtune(storage: str, workers: int, sampler: str, trials: int, workdir: Path) -> Timing:
    url = _url(storage, workdir)
    start, cpu0 = time.perf_counter(), _cpu()
    study = sigtune.optimize(
        objective,
        trials,
        sampler=sampler,
        seed=0,
        storage=url,
        study_name="bench",
        n_jobs=workers,
    )
    timing = time.perf_counter() - start, _cpu() - cpu0
    # Checked after the clocks stop (reading every trial back is not part of the run).
    assert len(study.optuna.trials) == trials
    return timing


def _fill(url: str, n: int) -> None:
    storage = resolve_storage(url).open(track_owner=False)
    study = optuna.create_study(storage=storage, study_name="bench")
    rng = np.random.default_rng(0)
    dist = {"x": optuna.distributions.FloatDistribution(-1.0, 1.0)}
    trials = []
    for _ in range(n):
        x = float(rng.uniform(-1.0, 1.0))
        trials.append(optuna.trial.create_trial(params={"x": x}, distributions=dist, value=x * x))
    study.add_trials(trials)


def _read_sigtune(url: str) -> int:
    return sigtune.load_study("bench", url).best_trial.number


def _read_full_scan(url: str) -> int:
    from sigtune import _best

    study = sigtune.load_study("bench", url).optuna
    best = _best.best_trial(study.get_trials(deepcopy=False), study.directions)
    assert best is not None
    return best.number


def _read_raw(url: str) -> int:
    storage = resolve_storage(url).open(track_owner=False, create=False)
    return optuna.load_study(study_name="bench", storage=storage).best_trial.number


def read_bench(storages: list[str], n: int, repeats: int) -> None:
    """``best`` on a study of ``n`` trials: sigtune vs the full scan vs raw Optuna."""
    print(f"\nbest on a study of {n} COMPLETE trials, best of {repeats} (interleaved)\n")
    print("| storage | raw Optuna best_trial s | sigtune best s | full scan s | sigtune / raw |")
    print("|---|---:|---:|---:|---:|")
    for storage in storages:
        if storage == "memory":
            continue
        workdir = Path(tempfile.mkdtemp(prefix="sigtune-bench-"))
        try:
            url = _url(storage, workdir)
            assert url is not None
            _fill(url, n)
            fns = {"raw": _read_raw, "sigtune": _read_sigtune, "scan": _read_full_scan}
            best = {k: float("inf") for k in fns}
            answers = set()
            for rep in range(repeats):
                order = list(fns) if rep % 2 == 0 else list(reversed(fns))
                for k in order:
                    t0 = time.perf_counter()
                    answers.add(fns[k](url))
                    best[k] = min(best[k], time.perf_counter() - t0)
            assert len(answers) == 1, answers  # all three name the same trial
            print(
                f"| {storage} | {best['raw']:.3f} | {best['sigtune']:.3f} | {best['scan']:.3f} "
                f"| {best['sigtune'] / best['raw']:.2f} |",
                flush=True,
            )
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--storages", default="memory,journal")
    parser.add_argument("--workers", default="1,2,8")
    parser.add_argument("--samplers", default="random")
    parser.add_argument("--read-trials", type=int, default=0)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.read_trials:
        read_bench(args.storages.split(","), args.read_trials, args.repeats)
    if args.trials <= 0:
        return

    rows = []
    for storage in args.storages.split(","):
        for workers in (int(w) for w in args.workers.split(",")):
            if storage == "memory" and workers > 1:
                continue  # in-memory storage cannot be shared by processes
            for sampler in args.samplers.split(","):
                wall = {"raw": float("inf"), "sigtune": float("inf")}
                cpu = dict(wall)
                workdirs: list[Path] = []
                try:
                    # In-memory runs take ~0.1 s: repeat them more to beat the timer noise.
                    repeats = args.repeats * (4 if storage == "memory" else 1)
                    for rep in range(repeats):
                        order = ("raw", "sigtune") if rep % 2 == 0 else ("sigtune", "raw")
                        for which in order:
                            workdirs.append(Path(tempfile.mkdtemp(prefix="sigtune-bench-")))
                            fn = run_raw if which == "raw" else run_sigtune
                            t, c = fn(storage, workers, sampler, args.trials, workdirs[-1])
                            wall[which] = min(wall[which], t)
                            cpu[which] = min(cpu[which], c)
                finally:
                    for d in workdirs:
                        shutil.rmtree(d, ignore_errors=True)
                ms = {k: v / args.trials * 1e3 for k, v in wall.items()}
                cms = {k: v / args.trials * 1e3 for k, v in cpu.items()}
                rows.append((storage, workers, sampler, ms, cms))
                print(
                    f"  {storage:8s} workers={workers} {sampler:6s} wall raw {ms['raw']:.3f} "
                    f"sigtune {ms['sigtune']:.3f} ms/trial ({ms['sigtune'] / ms['raw']:.2f}x); "
                    f"cpu raw {cms['raw']:.3f} sigtune {cms['sigtune']:.3f} ms/trial "
                    f"({cms['sigtune'] / cms['raw']:.2f}x)",
                    flush=True,
                )

    print()
    print(
        f"{args.trials} trials of a trivial objective, best of {args.repeats}; "
        "ratio = sigtune / raw Optuna ask/tell (same sampler, same storage)"
    )
    print()
    print(
        "| storage | workers | sampler | wall raw ms/trial | wall sigtune ms/trial | wall ratio "
        "| CPU raw ms/trial | CPU sigtune ms/trial | CPU ratio |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for storage, workers, sampler, ms, cms in rows:
        print(
            f"| {storage} | {workers} | {sampler} | {ms['raw']:.3f} | {ms['sigtune']:.3f} | "
            f"{ms['sigtune'] / ms['raw']:.2f} | {cms['raw']:.3f} | {cms['sigtune']:.3f} | "
            f"{cms['sigtune'] / cms['raw']:.2f} |"
        )


if __name__ == "__main__":
    main()

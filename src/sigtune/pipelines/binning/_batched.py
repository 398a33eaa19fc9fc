"""Batched binning studies: ask K trials, evaluate them in one batched call, tell the results.

:func:`optimize_batched` runs a study with Optuna's ask/tell interface: ``batch_size`` trials are
asked at once, their candidates evaluated by :meth:`BinningObjective.evaluate_many` (the
conditional fits of candidates that share a structure run as one
:func:`sigtune.hep.fit_batch` call) and told back. For samplers that do not learn from earlier
trials (``grid``, ``bruteforce``, ``qmc``, ``random``) this is the same study as a sequential
run; TPE asks its batch with the usual constant liar (``constant_liar=True``: running trials
count as if they had the worst value seen), so the sequence differs from a sequential run.

:func:`exhaustive_scan` evaluates every point of a small grid of parameters in batches.

In a run-config, ``objective: {type: binning, batch_size: K}`` selects the batched runner;
``grid`` and ``bruteforce`` samplers use batches of 64 unless ``batch_size`` says otherwise.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import optuna
from optuna.trial import TrialState

from sigtune._exceptions import ConfigError, RunFailedError
from sigtune._samplers import make_sampler
from sigtune._storage import FAIL_REASON_KEY, resolve_storage
from sigtune.pipelines.binning._exceptions import BinningError
from sigtune.pipelines.binning._objective import FIGURES, BinningObjective, Candidate

__all__ = ["BatchRunner", "ScanResult", "exhaustive_scan", "optimize_batched"]

_LIAR_SAMPLERS = ("tpe",)


def _sampler(
    name: str | optuna.samplers.BaseSampler,
    options: Mapping[str, Any] | None,
    seed: int | None,
    batch_size: int,
    n_trials: int,
    n_objectives: int,
) -> optuna.samplers.BaseSampler:
    if isinstance(name, optuna.samplers.BaseSampler):
        return name
    opts = dict(options or {})
    if name in _LIAR_SAMPLERS and batch_size > 1:
        opts.setdefault("constant_liar", True)
    return make_sampler(name, seed=seed, options=opts, n_trials=n_trials, n_objectives=n_objectives)


def _finished(study: optuna.Study) -> int:
    done = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
    return sum(t.state in done for t in study.get_trials(deepcopy=False))


def _best_value(study: optuna.Study, maximize: bool) -> float | None:
    values = [
        float(t.values[0])
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.values
    ]
    if not values:
        return None
    return max(values) if maximize else min(values)


def optimize_batched(
    objective: BinningObjective,
    n_trials: int,
    *,
    batch_size: int = 16,
    sampler: str | optuna.samplers.BaseSampler = "tpe",
    sampler_options: Mapping[str, Any] | None = None,
    seed: int | None = None,
    storage: Any = None,
    study_name: str | None = None,
    run_dir: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
    max_failures: int | None = None,
    progress: Any = None,
) -> Any:
    """Run a binning study ``batch_size`` trials at a time (see the module docstring).

    Args:
        objective: The binning objective.
        n_trials: Total trials of the study (trials already in a loaded study count).
        batch_size: Trials asked and evaluated together.
        sampler: Sampler name (:func:`sigtune.make_sampler`) or an Optuna sampler.
        sampler_options: Options of the sampler.
        seed: Sampler seed.
        storage: Storage URL / path (as :func:`sigtune.optimize`); None: in memory, or the
            run directory's journal when ``run_dir`` is given.
        study_name: Study name (loaded if it exists).
        run_dir: Run directory.
        timeout: Stop asking new batches after this many seconds.
        max_failures: Stop after this many failed trials (None: never).
        progress: Optional progress sink (``start(total, done)``, ``update(done, failed, best)``).

    Returns:
        A :class:`sigtune.Study`.

    Raises:
        ConfigError: on a bad ``batch_size`` or ``n_trials``.
        RunFailedError: when ``max_failures`` is reached.
    """
    from sigtune._study import Study

    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if not isinstance(n_trials, int) or n_trials < 1:
        raise ConfigError(f"n_trials must be an integer >= 1, got {n_trials!r}")
    if run_dir is not None:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
    ref = resolve_storage(storage, run_dir=run_dir, n_jobs=1)
    if study_name is None and ref.kind != "memory":
        study_name = "sigtune"
    directions = objective.directions
    ostudy = optuna.create_study(
        storage=ref.open(),
        study_name=study_name,
        directions=cast(Any, directions),
        sampler=_sampler(sampler, sampler_options, seed, batch_size, n_trials, len(directions)),
        load_if_exists=True,
    )
    maximize = FIGURES[objective.figure] == "maximize"
    already = _finished(ostudy)
    if progress is not None:
        progress.start(n_trials, already)
    started = time.perf_counter()
    done = failed = 0
    exhausted = False  # the sampler asked to stop (grid / bruteforce: every point tried)
    while already + done < n_trials and not exhausted:
        if timeout is not None and time.perf_counter() - started >= timeout:
            break
        k = min(batch_size, n_trials - already - done)
        trials = [ostudy.ask() for _ in range(k)]
        results = objective.evaluate_many(trials)
        for trial, result in zip(trials, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    ostudy.tell(trial, state=TrialState.FAIL)
                    raise result
                trial.set_user_attr(FAIL_REASON_KEY, f"{type(result).__name__}: {result}")
                ostudy.tell(trial, state=TrialState.FAIL)
                failed += 1
            else:
                exhausted |= _tell(ostudy, trial, objective.record(trial, result))
            done += 1
        if progress is not None:
            progress.update(done, failed, _best_value(ostudy, maximize))
        if max_failures is not None and failed >= max_failures:
            raise RunFailedError(
                f"{failed} trials failed (max_failures = {max_failures}); first reason: "
                f"{_first_reason(ostudy)}"
            )
    return Study(ostudy, storage=ref)


def _tell(study: optuna.Study, trial: optuna.Trial, values: Any) -> bool:
    """Tell a result; True when the sampler asked the study to stop (its space is exhausted:
    Optuna's grid / brute-force samplers call ``study.stop()``, which outside ``optimize``
    raises after the trial is stored)."""
    try:
        study.tell(trial, values)
    except RuntimeError as exc:
        if "Study.stop" not in str(exc):
            raise
        return True
    return False


def _first_reason(study: optuna.Study) -> str:
    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        reason = t.user_attrs.get(FAIL_REASON_KEY)
        if reason:
            return str(reason)
    return "unknown"


class BatchRunner:
    """A drop-in for :func:`sigtune._study.run_study` (same call signature) that runs a binning
    study in batches (the ``batch_size`` key of the run-config's binning section).

    Args:
        objective: The binning objective.
        batch_size: Trials per batch.
    """

    def __init__(self, objective: BinningObjective, batch_size: int) -> None:
        self.objective = objective
        self.batch_size = batch_size

    def __call__(
        self,
        trial_fn: Callable[[optuna.Trial], Any],
        settings: Any,
        *,
        space: Any = None,
        progress: Any = None,
        require_existing: bool = False,
        **options: Any,
    ) -> Any:
        from sigtune._settings import RunSettings

        s = (
            settings
            if isinstance(settings, RunSettings)
            else RunSettings(n_trials=settings, **options)
        )
        unsupported = {
            "n_jobs > 1": s.n_jobs > 1,
            "trial_timeout": s.trial_timeout is not None,
            "enqueue": bool(s.enqueue),
            "warm_start": s.warm_start is not None,
            "callbacks": bool(s.callbacks),
            f"engine {s.engine!r}": s.engine != "local",
        }
        bad = [k for k, v in unsupported.items() if v]
        if bad:
            raise ConfigError(
                f"objective.batch_size > 1 (batched binning runs) does not support {bad}; "
                "remove them or set batch_size: 1"
            )
        max_failures = s.max_failures
        if max_failures is not None and not isinstance(max_failures, int):
            max_failures = max(1, math.ceil(float(max_failures) * s.n_trials))
        if require_existing:
            _require_study(s.storage, s.run_dir, s.study_name)
        return optimize_batched(
            self.objective,
            s.n_trials,
            batch_size=self.batch_size,
            sampler=s.sampler,
            sampler_options=s.sampler_options,
            seed=s.seed,
            storage=s.storage,
            study_name=s.study_name,
            run_dir=s.run_dir,
            timeout=s.timeout,
            max_failures=cast(Any, max_failures),
            progress=progress if hasattr(progress, "update") else None,
        )


def _require_study(storage: Any, run_dir: Any, study_name: str | None) -> None:
    from sigtune._exceptions import StorageError

    ref = resolve_storage(storage, run_dir=run_dir, n_jobs=1)
    names = [st.study_name for st in ref.open().get_all_studies()]
    if (study_name or "sigtune") not in names:
        raise StorageError(
            f"no study {study_name!r} in storage {ref.describe()} (found: "
            f"{', '.join(names) or 'none'}); start it with `sigtune run` first"
        )


@dataclass(frozen=True, eq=False)
class ScanResult:
    """Every candidate of an exhaustive scan.

    Attributes:
        candidates: The evaluated candidates, in grid order.
        failures: ``(params, reason)`` of the grid points that could not be evaluated.
        wall_time: Seconds spent.
    """

    candidates: list[Candidate]
    failures: list[tuple[dict[str, Any], str]]
    wall_time: float

    def best(self, direction: str) -> Candidate:
        """The best candidate by the study's one definition (:func:`sigtune._best.best_trial`:
        smallest constraint violation first, then the best first value).

        Raises:
            BinningError: if no candidate was evaluated.
        """
        from sigtune import _best

        trials = [
            optuna.trial.create_trial(
                values=list(c.values),
                user_attrs={"constraints": list(c.constraints), "index": i},
            )
            for i, c in enumerate(self.candidates)
        ]
        directions = [direction] + ["minimize"] * (len(trials[0].values) - 1) if trials else []
        best = _best.best_trial(trials, directions)
        if best is None:
            raise BinningError("the scan evaluated no candidate; see its failures.")
        return self.candidates[int(best.user_attrs["index"])]


def exhaustive_scan(
    objective: BinningObjective, grid: Mapping[str, Sequence[Any]], *, batch_size: int = 256
) -> ScanResult:
    """Evaluate every combination of ``grid`` (parameter name -> values) in batches.

    Args:
        objective: The binning objective; ``grid`` must give every parameter it suggests.
        grid: Values per parameter, e.g. ``{"n_bins": range(3, 41), "lo": [0, 0.1], "hi": [1]}``.
        batch_size: Candidates evaluated together.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size!r}")
    names = list(grid)
    points = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*grid.values())]
    started = time.perf_counter()
    candidates: list[Candidate] = []
    failures: list[tuple[dict[str, Any], str]] = []
    for i in range(0, len(points), batch_size):
        chunk = points[i : i + batch_size]
        trials = [optuna.trial.FixedTrial(p) for p in chunk]
        results = objective.evaluate_many(cast(Any, trials))
        for params, result in zip(chunk, results, strict=True):
            if isinstance(result, BaseException):
                failures.append((params, f"{type(result).__name__}: {result}"))
            else:
                candidates.append(result)
    return ScanResult(candidates, failures, time.perf_counter() - started)

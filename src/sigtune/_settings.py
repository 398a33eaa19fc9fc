"""One frozen, typed object holding everything a run is configured with.

:class:`RunSettings` replaces the ~20 keyword arguments that used to travel through
:func:`sigtune.optimize`, :func:`sigtune._study.run_study`, the CLI and the ML pipeline. It is built

* from keyword arguments (``RunSettings(n_trials=50, sampler="tpe", ...)``, which is what
  :func:`sigtune.optimize` does with its own keyword arguments), or
* from a validated run-config: :meth:`RunSettings.from_config` (the CLI, the ML pipeline).

Validation happens once, when the object is built (:class:`~sigtune.ConfigError` with a message
that names the argument); the object is then passed unchanged to every layer.

Example:
    >>> from sigtune._settings import RunSettings
    >>> s = RunSettings(n_trials=20, direction="maximize", sampler="tpe", seed=1)
    >>> s.directions, s.engine, s.n_jobs
    (('maximize',), 'local', 1)
    >>> s.replace(n_jobs=4).n_jobs
    4
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sigtune._exceptions import ConfigError

if TYPE_CHECKING:
    from optuna.pruners import BasePruner
    from optuna.samplers import BaseSampler
    from optuna.storages import BaseStorage
    from optuna.trial import FrozenTrial

    from sigtune._config import ObjectiveSpec, RunConfig
    from sigtune._run import TrialCallback
    from sigtune._storage import StorageRef

__all__ = ["RunSettings", "WarmStart"]

WarmStart = Any
"""``Study`` | ``optuna.Study`` | ``(storage, study_name)`` | ``{"storage":, "study_name":}``."""

_UNSET: Any = object()


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """How a run goes (everything but the objective and its search space).

    Attributes:
        n_trials: Finished trials (COMPLETE + PRUNED + FAIL) wanted in the study in total.
        directions: ``"minimize"`` / ``"maximize"`` per objective (default one minimised
            objective). ``direction=`` (one objective) is accepted by the constructor as a
            shorthand.
        sampler: A name for :func:`~sigtune.make_sampler` or an Optuna sampler.
        sampler_options: Options of a named sampler.
        pruner: A name for :func:`~sigtune.make_pruner`, an Optuna pruner or ``None``.
        pruner_options: Options of a named pruner.
        seed: Sampler seed (worker ``i`` of a parallel run uses ``seed + i``).
        storage: Storage URL, path, Optuna storage or :class:`~sigtune._storage.StorageRef`.
        study_name: Name of the study.
        run_dir: Run directory (created when the run starts).
        n_jobs: Workers (processes for the local engine).
        timeout: Seconds for the run; no trial starts after it.
        trial_timeout: Seconds per trial.
        max_failures: ``int`` count or ``float`` fraction in (0, 1) of failed trials that stops
            the run.
        constraints: ``fn(FrozenTrial) -> Sequence[float]`` (<= 0 feasible).
        enqueue: Parameter dicts evaluated first.
        warm_start: Study whose COMPLETE trials are copied once before the run.
        on_stale_running: ``"fail"`` or ``"requeue"`` RUNNING trials of dead processes.
        callbacks: ``callback(study, frozen_trial)`` after each recorded trial (Optuna's
            signature; see ``docs/dev/callbacks.md``).
        engine: Name of the engine (:func:`sigtune._run.engine_names`); ``"local"`` by default.
        engine_options: Keyword arguments of the engine's factory.
        isolate: Run each trial in a child process also with ``n_jobs=1`` (a crash of the
            objective, e.g. a segfault, is a FAIL trial; ``trial_timeout`` can end C code).
        force: When the study exists with another search space or objective, start a new study
            (``<name>-2``, ``<name>-3`` ... in ``<run_dir>-2`` ...) instead of refusing.
        objective_key: A fingerprint of the objective (the run-config's ``objective:``
            section); a study run with another one is refused (or forked with ``force``).
    """

    n_trials: int = 100
    directions: tuple[str, ...] = ()
    sampler: str | BaseSampler = "auto"
    sampler_options: Mapping[str, Any] = field(default_factory=dict)
    pruner: str | BasePruner | None = "none"
    pruner_options: Mapping[str, Any] = field(default_factory=dict)
    seed: int | None = None
    storage: str | os.PathLike[str] | BaseStorage | StorageRef | None = None
    study_name: str | None = None
    run_dir: Path | None = None
    n_jobs: int = 1
    timeout: float | None = None
    trial_timeout: float | None = None
    max_failures: int | float | None = None
    constraints: Callable[[FrozenTrial], Sequence[float]] | None = None
    enqueue: tuple[Mapping[str, Any], ...] = ()
    warm_start: WarmStart = None
    on_stale_running: Literal["fail", "requeue"] = "fail"
    callbacks: tuple[TrialCallback, ...] = ()
    engine: str = "local"
    engine_options: Mapping[str, Any] = field(default_factory=dict)
    isolate: bool = False
    force: bool = False
    objective_key: str | None = None
    direction: dataclasses.InitVar[str | None] = None

    def __post_init__(self, direction: str | None) -> None:
        put = object.__setattr__
        put(self, "n_trials", _check_int("n_trials", self.n_trials, 1))
        put(self, "n_jobs", _check_int("n_jobs", self.n_jobs, 1))
        put(self, "directions", _check_directions(direction, self.directions))
        put(self, "timeout", _check_positive("timeout", self.timeout))
        put(self, "trial_timeout", _check_positive("trial_timeout", self.trial_timeout))
        put(self, "max_failures", _check_max_failures(self.max_failures))
        if self.on_stale_running not in ("fail", "requeue"):
            raise ConfigError(
                f"on_stale_running must be 'fail' or 'requeue', got {self.on_stale_running!r}"
            )
        if self.seed is not None:
            put(self, "seed", _check_int("seed", self.seed, 0))
        if self.run_dir is not None:
            put(self, "run_dir", Path(self.run_dir))
        put(self, "sampler_options", dict(self.sampler_options or {}))
        put(self, "pruner_options", dict(self.pruner_options or {}))
        put(self, "engine_options", dict(self.engine_options or {}))
        put(self, "enqueue", tuple(self.enqueue or ()))
        callbacks = tuple(self.callbacks or ())
        for i, cb in enumerate(callbacks):
            if not callable(cb):
                raise ConfigError(
                    f"callbacks[{i}] must be callable as callback(study, frozen_trial), got {cb!r}"
                )
        put(self, "callbacks", callbacks)
        if self.constraints is not None and not callable(self.constraints):
            raise ConfigError(f"constraints must be callable, got {self.constraints!r}")
        if not isinstance(self.engine, str) or not self.engine:
            raise ConfigError(f"engine must be an engine name, got {self.engine!r}")

    @property
    def maximize(self) -> tuple[bool, ...]:
        """Per objective, whether it is maximised."""
        return tuple(d == "maximize" for d in self.directions)

    def replace(self, **changes: Any) -> RunSettings:
        """A copy with some fields changed (validated again)."""
        if "direction" in changes:
            changes.setdefault("directions", ())
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_config(cls, cfg: RunConfig, spec: ObjectiveSpec | None = None) -> RunSettings:
        """The settings of a validated run-config.

        Args:
            cfg: The config (:func:`sigtune._config.load_config`).
            spec: Its built objective (:func:`sigtune._config.build_objective`): the directions
                and constraints an objective type imposes win over the config's.

        Raises:
            ObjectiveError: A ``constraints`` or ``callbacks`` reference cannot be imported.
        """
        from sigtune._imports import resolve_callable

        directions = (spec.directions if spec is not None else None) or cfg.resolved_directions
        constraints = spec.constraints if spec is not None else None
        if constraints is None and cfg.constraints is not None:
            constraints = resolve_callable(cfg.constraints, cfg.base_dir)
        callbacks = tuple(resolve_callable(ref, cfg.base_dir) for ref in cfg.callbacks)
        return cls(
            n_trials=cfg.n_trials,
            directions=tuple(directions),
            sampler=cfg.sampler.name,
            sampler_options=cfg.sampler.options,
            pruner=cfg.pruner.name,
            pruner_options=cfg.pruner.options,
            seed=cfg.seed,
            storage=cfg.storage,
            study_name=cfg.study_name,
            run_dir=Path(cfg.run_dir) if cfg.run_dir is not None else None,
            n_jobs=cfg.n_jobs,
            timeout=cfg.timeout,
            trial_timeout=cfg.trial_timeout,
            max_failures=cfg.max_failures,
            constraints=constraints,
            enqueue=tuple(cfg.enqueue),
            warm_start=cfg.warm_start,
            on_stale_running=cfg.on_stale_running,
            callbacks=callbacks,
            engine=cfg.engine.name,
            engine_options=cfg.engine_options,
            isolate=cfg.isolate,
            objective_key=cfg.objective_key,
        )


# ---------------------------------------------------------------------- argument checks


def _check_directions(direction: str | None, directions: Sequence[Any] | None) -> tuple[str, ...]:
    from optuna.study import StudyDirection

    if isinstance(directions, str):
        directions = [directions]
    if direction is not None and directions:
        raise ConfigError("give either direction= or directions=, not both")
    raw = list(directions) if directions else [direction or "minimize"]
    out = []
    for d in raw:
        name = str(d.name if isinstance(d, StudyDirection) else d).lower()
        if name not in ("minimize", "maximize"):
            raise ConfigError(f"direction must be 'minimize' or 'maximize', got {d!r}")
        out.append(name)
    return tuple(out)


def _check_positive(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


def _check_max_failures(value: int | float | None) -> int | float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(
            f"max_failures must be an int count or a fraction in (0, 1), got {value!r}"
        )
    if isinstance(value, float):
        if 0.0 < value < 1.0:
            return value
        if value.is_integer() and value >= 0:
            return int(value)
        raise ConfigError(f"max_failures as a fraction must be in (0, 1), got {value}")
    if value < 0:
        raise ConfigError(f"max_failures must be >= 0, got {value}")
    return value


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value

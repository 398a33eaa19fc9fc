"""Samplers by name, and the ``auto`` policy.

:func:`make_sampler` builds an Optuna sampler from a name and an options mapping (the
``sampler:`` section of a run-config). Options are the keyword arguments of the Optuna class;
unknown names are rejected with the list of valid ones.

The ``auto`` policy
-------------------
``auto`` (:class:`AutoSampler`) picks one Optuna sampler once, deterministically, from what is
known about the problem, and delegates every call to it. The rules, first match wins:

1. **Several objectives**: ``gp`` (EHVI, with a lighter acquisition optimisation:
   :data:`MO_GP_ACQUISITION`) for two objectives on a declared numeric space of
   dimension at most ``gp_max_dim`` with a budget of at most ``mo_gp_max_trials`` (100);
   else ``nsga3`` for 4 or more objectives and ``nsga2`` otherwise, when the budget is unknown
   or at least ``mo_min_trials_for_nsga`` (default 300) trials; below that, ``tpe``
   (multivariate), which needs far fewer trials.
2. **Discrete space whose grid fits the budget** (every parameter is a choice, an int range or
   a float range with a step; the number of points is at most ``n_trials``): ``grid`` for a
   flat space, ``bruteforce`` when parameters are conditional.
3. **Conditional or categorical parameters**: ``tpe`` with ``multivariate: true`` and
   ``group: true`` (group only when conditional).
4. **Numeric, unconditional space, budget known**:
   ``gp`` when the dimension is at most ``gp_max_dim`` (10) and the budget at most
   ``gp_max_trials`` (200) and torch is installed; from dimension ``refine_min_dim`` (5) on,
   the last ``refine_fraction`` (25 %) of the budget is CMA-ES started at the GP's best point
   with a small step (``sigma0`` 0.05 of the range), a local refinement; ``cmaes`` (started by
   ``cmaes_startup_trials`` = 10 % of the budget, at least 10, TPE trials) when the dimension
   is at least 2 and the budget larger.
5. Otherwise: ``tpe`` with ``multivariate: true``.

Constraints (``constraints_func``) are passed to the chosen sampler when it takes them
(``gp``, ``tpe``, ``nsga2``/``nsga3``); a constrained numeric space gets the ``gp`` of rule 4
with the lighter acquisition of rule 1 and without the CMA-ES refinement. A choice may also be staged (:class:`AutoChoice`
``then``/``switch_after``/``switch_patience``): e.g. a custom policy can run ``gp`` first and
then a CMA-ES warm-started from the trials so far; the default rules do not (see
docs/performance.md for the measurements).

"Known" space means a declarative :class:`~sigtune.SearchSpace` was given. For a define-by-run
objective the space is learnt from the first completed trial (sampled at random); the choice
is made then. Thresholds are options of ``auto``; ``policy: "module:function"`` replaces the
rules by a function ``f(AutoContext) -> AutoChoice | tuple[name, options]``. The decision is
stored in ``AutoSampler.choice`` (with the reason) and logged, and every trial records the
sampler used for it and why in its user attributes ``auto:sampler`` and ``auto:reason``.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from sigtune._exceptions import ConfigError, SearchSpaceError
from sigtune._optuna_compat import study_storage, trial_id
from sigtune._space import SearchSpace

if TYPE_CHECKING:
    from optuna.study import Study

__all__ = [
    "AUTO_REASON_ATTR",
    "AUTO_SAMPLER_ATTR",
    "SAMPLER_NAMES",
    "AutoChoice",
    "AutoContext",
    "AutoSampler",
    "auto_policy",
    "auto_summary",
    "make_sampler",
    "sampler_option_errors",
]

log = logging.getLogger(__name__)

_CLASSES: Mapping[str, str] = {
    "random": "RandomSampler",
    "grid": "GridSampler",
    "tpe": "TPESampler",
    "gp": "GPSampler",
    "cmaes": "CmaEsSampler",
    "qmc": "QMCSampler",
    "nsga2": "NSGAIISampler",
    "nsga3": "NSGAIIISampler",
    "bruteforce": "BruteForceSampler",
}
#: Every name :func:`make_sampler` accepts.
SAMPLER_NAMES: tuple[str, ...] = (*_CLASSES, "auto")

_CROSSOVERS: Mapping[str, str] = {
    "uniform": "UniformCrossover",
    "blxalpha": "BLXAlphaCrossover",
    "sbx": "SBXCrossover",
    "vsbx": "VSBXCrossover",
    "undx": "UNDXCrossover",
    "spx": "SPXCrossover",
}

#: Trial user attributes where ``auto`` records the sampler it used for the trial and why.
AUTO_SAMPLER_ATTR = "auto:sampler"
AUTO_REASON_ATTR = "auto:reason"

_AUTO_OPTIONS: Mapping[str, Any] = {
    "gp_max_dim": 10,
    "gp_max_trials": 200,
    "mo_min_trials_for_nsga": 300,
    "mo_gp_max_trials": 100,
    "refine_min_dim": 5,
    "refine_fraction": 0.25,
    "cmaes_startup_trials": None,
    "policy": None,
    "constraints_func": None,
}


def make_sampler(
    name: str = "auto",
    *,
    seed: int | None = None,
    options: Mapping[str, Any] | None = None,
    space: SearchSpace | Mapping[str, Any] | None = None,
    n_trials: int | None = None,
    n_objectives: int = 1,
) -> BaseSampler:
    """Build an Optuna sampler by name.

    Args:
        name: One of :data:`SAMPLER_NAMES` (``random grid tpe gp cmaes qmc nsga2 nsga3
            bruteforce auto``).
        seed: Seed of the sampler's random generator (same seed, same sequential run).
        options: Keyword arguments of the Optuna sampler class (e.g. ``multivariate`` for
            ``tpe``). ``grid`` also takes ``search_space`` (name -> list of values);
            ``independent_sampler`` may be a sampler name or ``{name:, options:}``; the NSGA
            ``crossover`` may be a name (``uniform blxalpha sbx vsbx undx spx``); see
            :class:`AutoSampler` for the options of ``auto``.
        space: The declarative search space, if any (needed by ``grid`` unless
            ``options.search_space`` is given; used by ``auto``).
        n_trials: The trial budget (used by ``auto``).
        n_objectives: Number of objectives (used by ``auto``).

    Returns:
        The sampler.

    Raises:
        ConfigError: Unknown name or option, or an option value Optuna rejects.
    """
    if not isinstance(name, str) or name.lower() not in SAMPLER_NAMES:
        raise ConfigError(
            f"sampler: unknown sampler {name!r}; valid names: {', '.join(SAMPLER_NAMES)}"
        )
    name = name.lower()
    opts = dict(options or {})
    space_obj = SearchSpace.from_dict(space) if space is not None else None
    if name == "auto":
        _check_options("auto", opts, set(_AUTO_OPTIONS))
        return AutoSampler(
            seed=seed, space=space_obj, n_trials=n_trials, n_objectives=n_objectives, **opts
        )
    return _build(name, seed, opts, space_obj)


def auto_summary(
    *,
    space: SearchSpace | Mapping[str, Any] | None,
    n_trials: int | None,
    n_objectives: int = 1,
    options: Mapping[str, Any] | None = None,
    seed: int | None = None,
) -> str:
    """The line a run prints at its start: what ``auto`` will use and why.

    E.g. ``auto sampler: gp (numeric space of dimension 2, budget 40)``.
    """
    sampler = make_sampler(
        "auto",
        seed=seed,
        options=options,
        space=space,
        n_trials=n_trials,
        n_objectives=n_objectives,
    )
    assert isinstance(sampler, AutoSampler)
    if sampler.choice is None:
        return (
            "auto sampler: chosen after the first trial (search space not declared; "
            "the first trial is sampled at random)"
        )
    return f"auto sampler: {sampler.choice.describe()}"


def _check_options(name: str, opts: Mapping[str, Any], valid: set[str]) -> None:
    unknown = sorted(set(opts) - valid)
    if unknown:
        raise ConfigError(
            f"sampler.options: unknown option(s) {', '.join(unknown)} for sampler {name!r}; "
            f"valid options: {', '.join(sorted(valid)) or '(none)'}"
        )


def _valid_options(cls: type) -> set[str]:
    params = inspect.signature(cls).parameters
    return {p for p in params if p not in ("self", "seed")}


_SCALARS: Mapping[str, type] = {
    "int": int,
    "float": float,
    "bool": bool,
    "str": str,
    "None": type(None),
}


def _annotation_kind(annotation: Any) -> Any:
    """A type pydantic can check for a constructor annotation, ``callable``, or ``None``."""
    if annotation in (int, float, bool, str):
        return annotation
    if not isinstance(annotation, str):
        return None
    parts = [p.strip() for p in annotation.split("|")]
    if parts[0].startswith("Callable"):
        return callable
    if all(p in _SCALARS for p in parts):
        kinds = [_SCALARS[p] for p in parts]
        result: Any = kinds[0]
        for k in kinds[1:]:
            result = result | k
        return result
    return None


def validate_options(
    cls: type, options: Mapping[str, Any], where: str, *, skip: Sequence[str] = ()
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Check option values against the scalar/callable annotations of ``cls.__init__``.

    Strings given for callable options are resolved as ``"module:function"`` references.

    Args:
        cls: The Optuna class whose keyword arguments the options are.
        options: The options (names already checked).
        where: Config path of the options, e.g. ``"sampler.options"``.
        skip: Options handled elsewhere.

    Returns:
        The coerced options and a list of ``(path, message)`` problems.
    """
    from pydantic import TypeAdapter, ValidationError

    params = inspect.signature(cls).parameters
    coerced: dict[str, Any] = {}
    errors: list[tuple[str, str]] = []
    for key, value in options.items():
        kind = _annotation_kind(params[key].annotation) if key in params else None
        if key in skip or kind is None:
            coerced[key] = value
        elif kind is callable:
            if value is None or callable(value):
                coerced[key] = value
            elif isinstance(value, str):
                from sigtune._imports import resolve_callable

                try:
                    coerced[key] = resolve_callable(value)
                except Exception as exc:
                    errors.append((f"{where}.{key}", str(exc)))
            else:
                errors.append((f"{where}.{key}", f"must be 'module:function', got {value!r}"))
        else:
            try:
                coerced[key] = TypeAdapter(kind).validate_python(value)
            except ValidationError as exc:
                errors.append((f"{where}.{key}", exc.errors()[0]["msg"]))
    return coerced, errors


def _raise(errors: Sequence[tuple[str, str]]) -> None:
    if errors:
        raise ConfigError("; ".join(f"{path}: {msg}" for path, msg in errors))


def _build(
    name: str, seed: int | None, opts: dict[str, Any], space: SearchSpace | None
) -> BaseSampler:
    cls = getattr(optuna.samplers, _CLASSES[name])
    _check_options(name, opts, _valid_options(cls))
    opts, errors = validate_options(
        cls, opts, "sampler.options", skip=("independent_sampler", "crossover")
    )
    _raise(errors)
    if name == "grid":
        grid = opts.pop("search_space", None)
        if grid is None:
            if space is None:
                raise ConfigError(
                    "sampler: 'grid' needs a discrete search space: give `search_space` "
                    "(only choice / int range / float range with step) or "
                    "`sampler.options.search_space` (name -> list of values)"
                )
            try:
                grid = space.grid()
            except SearchSpaceError as exc:
                raise ConfigError(f"sampler: 'grid' cannot be used: {exc}") from None
        if not isinstance(grid, Mapping) or not all(
            isinstance(v, list | tuple) and len(v) > 0 for v in grid.values()
        ):
            raise ConfigError(
                f"sampler.options.search_space: must map parameter names to non-empty lists, "
                f"but got {grid!r}"
            )
        opts["search_space"] = {str(k): list(v) for k, v in grid.items()}
    if name == "gp" and importlib.util.find_spec("torch") is None:
        raise ConfigError(
            "sampler: 'gp' needs PyTorch; install it (pip install 'sigtune[ml]') or use 'tpe'"
        )
    if name == "cmaes" and importlib.util.find_spec("cmaes") is None:
        raise ConfigError(
            "sampler: 'cmaes' needs the 'cmaes' package; install it (pip install cmaes) "
            "or use 'tpe'"
        )
    if "independent_sampler" in opts:
        opts["independent_sampler"] = _nested_sampler(opts["independent_sampler"], seed, space)
    if "crossover" in opts and isinstance(opts["crossover"], str):
        opts["crossover"] = _crossover(opts["crossover"])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler: BaseSampler = cls(seed=seed, **opts)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"sampler.options: invalid options for {name!r}: {exc}") from exc
    return sampler


def sampler_option_errors(name: str, options: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Problems of a sampler section, as ``(path, message)`` pairs (no sampler is built).

    Used to validate a run-config at load time without constructing the sampler.
    """
    if not isinstance(name, str) or name.lower() not in SAMPLER_NAMES:
        return [
            ("sampler.name", f"unknown sampler {name!r}; valid names: {', '.join(SAMPLER_NAMES)}")
        ]
    key = name.lower()
    if key == "auto":
        valid = set(_AUTO_OPTIONS)
        cls: type = AutoSampler
    else:
        cls = getattr(optuna.samplers, _CLASSES[key])
        valid = _valid_options(cls)
    unknown = sorted(set(options) - valid)
    if unknown:
        return [
            (
                f"sampler.options.{u}",
                f"unknown option for sampler {key!r}; valid options: "
                f"{', '.join(sorted(valid)) or '(none)'}",
            )
            for u in unknown
        ]
    _, errors = validate_options(
        cls, options, "sampler.options", skip=("independent_sampler", "crossover", "policy")
    )
    return errors


def _nested_sampler(raw: Any, seed: int | None, space: SearchSpace | None) -> BaseSampler:
    if isinstance(raw, BaseSampler):
        return raw
    if isinstance(raw, str):
        return make_sampler(raw, seed=seed, space=space)
    if isinstance(raw, Mapping) and "name" in raw and set(raw) <= {"name", "options"}:
        return make_sampler(raw["name"], seed=seed, options=raw.get("options"), space=space)
    raise ConfigError(
        f"sampler.options.independent_sampler: must be a sampler name or "
        f"{{name: ..., options: {{...}}}}, but got {raw!r}"
    )


def _crossover(name: str) -> Any:
    key = name.lower()
    if key not in _CROSSOVERS:
        raise ConfigError(
            f"sampler.options.crossover: unknown crossover {name!r}; valid: "
            f"{', '.join(_CROSSOVERS)}"
        )
    return getattr(optuna.samplers.nsgaii, _CROSSOVERS[key])()


# ---------------------------------------------------------------------- auto policy

#: Effort of the GP's acquisition optimisation that ``auto`` may lower (``AutoChoice`` option
#: ``acquisition`` of a ``gp`` stage): random candidates scored before the local search, number
#: of local searches, and QMC samples of the (multi-objective) EHVI. Optuna keeps these as
#: attributes of its GPSampler (defaults 2048, 10, 128 in Optuna 5); one that the installed
#: Optuna does not have is left alone (its own setting is used).
GP_ACQUISITION_KNOBS: Mapping[str, str] = {
    "n_preliminary_samples": "_n_preliminary_samples",
    "n_local_search": "_n_local_search",
    "n_qmc_samples_ehvi": "_n_qmc_samples_ehvi",
}

#: The lighter acquisition optimisation ``auto`` uses with two objectives (EHVI) and with
#: constraints: measured in bench/hpo_quality (``moc`` suite and ``overhead``), see
#: docs/performance.md.
MO_GP_ACQUISITION: Mapping[str, int] = {
    "n_preliminary_samples": 256,
    "n_local_search": 4,
    "n_qmc_samples_ehvi": 32,
}


def _set_gp_acquisition(sampler: BaseSampler, acquisition: Any) -> None:
    """Apply an ``acquisition`` mapping (see :data:`GP_ACQUISITION_KNOBS`) to a GPSampler."""
    if not isinstance(acquisition, Mapping):
        raise ConfigError(
            f"sampler (auto): option 'acquisition' must be a mapping, got {acquisition!r}"
        )
    if not isinstance(sampler, optuna.samplers.GPSampler):
        raise ConfigError("sampler (auto): option 'acquisition' applies to 'gp' only")
    for key, value in acquisition.items():
        if key not in GP_ACQUISITION_KNOBS:
            raise ConfigError(
                f"sampler (auto): unknown acquisition setting {key!r}; valid: "
                f"{', '.join(GP_ACQUISITION_KNOBS)}"
            )
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(
                f"sampler (auto): acquisition setting {key} must be an integer >= 1, got {value!r}"
            )
        attr = GP_ACQUISITION_KNOBS[key]
        if hasattr(sampler, attr):
            setattr(sampler, attr, value)


@dataclass(frozen=True)
class AutoContext:
    """What the ``auto`` policy knows when it chooses.

    Attributes:
        n_objectives: Number of objectives.
        n_trials: Trial budget (``None``: unknown).
        space_known: Whether the space below is known (declarative or learnt from a trial).
        dimension: Number of sampled parameters.
        conditional: Some parameter is only sometimes active.
        categorical: Some parameter is a choice.
        discrete: Every parameter takes finitely many values.
        grid_size: Number of grid points if discrete, else ``None``.
        static_grid: The grid is known up front (declarative space without dynamic bounds),
            so ``grid`` can be used; otherwise only ``bruteforce`` enumerates it.
        gp_available: torch is importable.
        options: The threshold options of ``auto`` (after defaults).
        constrained: A ``constraints_func`` is given (passed to the chosen sampler).
    """

    n_objectives: int
    n_trials: int | None
    space_known: bool
    dimension: int = 0
    conditional: bool = False
    categorical: bool = False
    discrete: bool = False
    grid_size: int | None = None
    static_grid: bool = False
    gp_available: bool = True
    options: Mapping[str, Any] = field(default_factory=dict)
    constrained: bool = False


@dataclass(frozen=True)
class AutoChoice:
    """The sampler ``auto`` delegates to: a :func:`make_sampler` name, its options, and why.

    A choice may name a next stage: ``then`` is used from the first trial at which at least
    ``switch_after`` trials are complete and, when ``switch_patience`` is set, the best value
    has not improved during the last ``switch_patience`` complete trials (single objective).
    In ``then.options`` the value ``"completed"`` of ``source_trials`` is replaced by the
    complete trials when the switch happens (CMA-ES warm start; the switch waits for 10), and
    the value ``"incumbent"`` of ``x0`` by the best trial's parameters.
    """

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)
    reason: str = ""
    then: AutoChoice | None = None
    switch_after: int = 0
    switch_patience: int | None = None

    def describe(self) -> str:
        """One line: ``gp (why)``, then each next stage and when it starts."""
        text = f"{self.name} ({self.reason})" if self.reason else self.name
        if self.then is not None:
            when = f"after {self.switch_after} complete trials"
            if self.switch_patience is not None:
                when += f" once {self.switch_patience} trials bring no improvement"
            text += f", then {when}: {self.then.describe()}"
        return text


def auto_policy(ctx: AutoContext) -> AutoChoice:
    """The default ``auto`` rules (see the module docstring); pure and deterministic."""
    opt = {**_AUTO_OPTIONS, **ctx.options}
    budget = ctx.n_trials
    if ctx.n_objectives > 1:
        if (
            ctx.n_objectives == 2
            and ctx.space_known
            and not (ctx.conditional or ctx.categorical)
            and 0 < ctx.dimension <= int(opt["gp_max_dim"])
            and budget is not None
            and budget <= int(opt["mo_gp_max_trials"])
            and ctx.gp_available
        ):
            # EHVI with a lighter acquisition optimisation: about 3 times cheaper per ask,
            # same hypervolume on the moc suite (docs/performance.md)
            return AutoChoice(
                "gp",
                {"acquisition": dict(MO_GP_ACQUISITION)},
                f"2 objectives, numeric space of dimension {ctx.dimension}, budget {budget}",
            )
        if budget is None or budget >= int(opt["mo_min_trials_for_nsga"]):
            name = "nsga3" if ctx.n_objectives >= 4 else "nsga2"
            return AutoChoice(name, {}, f"{ctx.n_objectives} objectives, budget {budget}")
        return AutoChoice(
            "tpe",
            {"multivariate": True},
            f"{ctx.n_objectives} objectives with a small budget ({budget} trials)",
        )
    if not ctx.space_known:
        return AutoChoice("tpe", {"multivariate": True}, "search space unknown")
    if ctx.dimension == 0:
        return AutoChoice("random", {}, "nothing to tune")
    if (
        ctx.discrete
        and ctx.grid_size is not None
        and budget is not None
        and ctx.grid_size <= budget
    ):
        if ctx.conditional or not ctx.static_grid:
            return AutoChoice(
                "bruteforce", {}, f"discrete space of at most {ctx.grid_size} points fits"
            )
        return AutoChoice("grid", {}, f"grid of {ctx.grid_size} points fits the budget {budget}")
    if ctx.conditional or ctx.categorical:
        return AutoChoice(
            "tpe",
            {"multivariate": True, "group": ctx.conditional},
            "conditional parameters" if ctx.conditional else "categorical parameters",
        )
    if budget is not None:
        if ctx.dimension <= int(opt["gp_max_dim"]) and budget <= int(opt["gp_max_trials"]):
            if ctx.gp_available:
                if ctx.constrained:
                    # constrained GP (log EI x probability of feasibility), with the lighter
                    # acquisition optimisation (same scores on the moc suite, cheaper asks);
                    # no CMA-ES refinement: CMA-ES does not take the constraints
                    return AutoChoice(
                        "gp",
                        {"acquisition": dict(MO_GP_ACQUISITION)},
                        f"constrained, numeric space of dimension {ctx.dimension}, budget {budget}",
                    )
                gp = AutoChoice(
                    "gp", {}, f"numeric space of dimension {ctx.dimension}, budget {budget}"
                )
                refine_dim = opt["refine_min_dim"]
                n_refine = int(budget * float(opt["refine_fraction"]))
                if refine_dim is not None and ctx.dimension >= int(refine_dim) and n_refine >= 5:
                    # local refinement of the GP's incumbent by CMA-ES with a small step for
                    # the last trials (measured better from d = 5; worse at d = 2)
                    then = AutoChoice(
                        "cmaes",
                        {"x0": "incumbent", "sigma0": 0.05},
                        "CMA-ES around the GP's best point (local refinement)",
                    )
                    return AutoChoice(
                        gp.name, gp.options, gp.reason, then=then, switch_after=budget - n_refine
                    )
                return gp
        elif ctx.dimension >= 2 and budget > int(opt["gp_max_trials"]):
            startup = opt["cmaes_startup_trials"]
            if startup is None:
                startup = max(10, budget // 10)
            return AutoChoice(
                "cmaes",
                {"n_startup_trials": int(startup), "independent_sampler": "tpe"},
                f"numeric space of dimension {ctx.dimension}, large budget {budget}",
            )
    return AutoChoice("tpe", {"multivariate": True}, "numeric space")


def _summary_from_space(space: SearchSpace) -> dict[str, Any]:
    return {
        "dimension": space.dimension,
        "conditional": space.is_conditional,
        "categorical": space.has_categorical,
        "discrete": space.is_discrete,
        "grid_size": space.grid_size,
        "static_grid": space.grid_size is not None,
    }


def _summary_from_trials(trials: Sequence[FrozenTrial]) -> dict[str, Any]:
    """Describe a define-by-run space from the distributions trials used."""
    dists: dict[str, BaseDistribution] = {}
    name_sets = set()
    for t in trials:
        dists.update(t.distributions)
        name_sets.add(frozenset(t.distributions))
    discrete = all(
        isinstance(d, CategoricalDistribution | IntDistribution)
        or (isinstance(d, FloatDistribution) and d.step is not None)
        for d in dists.values()
    )
    grid_size: int | None = None
    if discrete:
        sizes = []
        for d in dists.values():
            if isinstance(d, CategoricalDistribution):
                sizes.append(len(d.choices))
            elif isinstance(d, IntDistribution):
                sizes.append((d.high - d.low) // d.step + 1 if not d.log else d.high - d.low + 1)
            else:
                assert isinstance(d, FloatDistribution) and d.step is not None
                sizes.append(math.floor((d.high - d.low) / d.step + 1e-9) + 1)
        grid_size = math.prod(sizes)
    return {
        "dimension": len(dists),
        "conditional": len(name_sets) > 1,
        "categorical": any(isinstance(d, CategoricalDistribution) for d in dists.values()),
        "discrete": discrete,
        "grid_size": grid_size,
        "static_grid": False,  # ranges seen so far may change: only bruteforce is safe
    }


class AutoSampler(BaseSampler):
    """Chooses an Optuna sampler by :func:`auto_policy` and delegates to it.

    Args:
        seed: Seed of the chosen sampler.
        space: The declarative search space (``None`` for define-by-run objectives: the space
            is learnt from the first completed trial, sampled at random).
        n_trials: The trial budget (``None``: unknown).
        n_objectives: Number of objectives (``None``: read from the study).
        gp_max_dim: Largest dimension for ``gp``.
        gp_max_trials: Largest budget for ``gp``.
        mo_min_trials_for_nsga: Smallest budget for NSGA-II/III with several objectives.
        mo_gp_max_trials: Largest budget for ``gp`` with two objectives (numeric space).
        refine_min_dim: From this dimension on, ``gp`` is followed by CMA-ES around the best
            point for the last ``refine_fraction`` of the budget (``None``: never).
        refine_fraction: Share of the budget for that refinement.
        cmaes_startup_trials: TPE trials before CMA-ES (default ``max(10, n_trials // 10)``).
        policy: Replaces :func:`auto_policy`: a callable or ``"module:function"`` taking an
            :class:`AutoContext` and returning an :class:`AutoChoice` or ``(name, options)``.
        constraints_func: Passed to the chosen sampler when it supports constraints.
    """

    def __init__(
        self,
        *,
        seed: int | None = None,
        space: SearchSpace | None = None,
        n_trials: int | None = None,
        n_objectives: int | None = None,
        gp_max_dim: int = 10,
        gp_max_trials: int = 200,
        mo_min_trials_for_nsga: int = 300,
        mo_gp_max_trials: int = 100,
        refine_min_dim: int | None = 5,
        refine_fraction: float = 0.25,
        cmaes_startup_trials: int | None = None,
        policy: str | Callable[[AutoContext], Any] | None = None,
        constraints_func: Callable[[FrozenTrial], Sequence[float]] | None = None,
    ) -> None:
        for label, value in (
            ("gp_max_dim", gp_max_dim),
            ("gp_max_trials", gp_max_trials),
            ("mo_min_trials_for_nsga", mo_min_trials_for_nsga),
            ("mo_gp_max_trials", mo_gp_max_trials),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(
                    f"sampler.options.{label}: must be an integer >= 0, got {value!r}"
                )
        if refine_min_dim is not None and (
            not isinstance(refine_min_dim, int) or isinstance(refine_min_dim, bool)
        ):
            raise ConfigError(
                f"sampler.options.refine_min_dim: must be an integer or null, got {refine_min_dim!r}"
            )
        if not isinstance(refine_fraction, int | float) or not 0 <= refine_fraction < 1:
            raise ConfigError(
                f"sampler.options.refine_fraction: must be a number in [0, 1), "
                f"got {refine_fraction!r}"
            )
        if cmaes_startup_trials is not None and (
            not isinstance(cmaes_startup_trials, int) or cmaes_startup_trials < 1
        ):
            raise ConfigError(
                f"sampler.options.cmaes_startup_trials: must be an integer >= 1, "
                f"got {cmaes_startup_trials!r}"
            )
        self._seed = seed
        self._space = space
        self._n_trials = n_trials
        self._n_objectives = n_objectives
        self._thresholds = {
            "gp_max_dim": gp_max_dim,
            "gp_max_trials": gp_max_trials,
            "mo_min_trials_for_nsga": mo_min_trials_for_nsga,
            "mo_gp_max_trials": mo_gp_max_trials,
            "refine_min_dim": refine_min_dim,
            "refine_fraction": refine_fraction,
            "cmaes_startup_trials": cmaes_startup_trials,
        }
        self._policy = self._resolve_policy(policy)
        self._constraints_func = constraints_func
        self._choice: AutoChoice | None = None
        self._active: AutoChoice | None = None
        self._active_reason = ""
        self._decided_for = 0
        self._delegate: BaseSampler = optuna.samplers.RandomSampler(seed=seed)
        if n_objectives is not None and (space is not None or n_objectives > 1):
            self._decide(self._context(n_objectives, space_summary=self._known_summary()))

    @staticmethod
    def _resolve_policy(
        policy: str | Callable[[AutoContext], Any] | None,
    ) -> Callable[[AutoContext], Any]:
        if policy is None:
            return auto_policy
        if isinstance(policy, str):
            from sigtune._imports import resolve_callable

            try:
                return resolve_callable(policy)
            except Exception as exc:
                raise ConfigError(f"sampler.options.policy: {exc}") from exc
        if callable(policy):
            return policy
        raise ConfigError(
            f"sampler.options.policy: must be 'module:function' or a callable, got {policy!r}"
        )

    @property
    def choice(self) -> AutoChoice | None:
        """The decision (``None`` until made)."""
        return self._choice

    @property
    def sampler(self) -> BaseSampler:
        """The sampler currently delegated to."""
        return self._delegate

    def _known_summary(self) -> dict[str, Any] | None:
        return _summary_from_space(self._space) if self._space is not None else None

    def _context(self, n_objectives: int, space_summary: dict[str, Any] | None) -> AutoContext:
        return AutoContext(
            n_objectives=n_objectives,
            n_trials=self._n_trials,
            space_known=space_summary is not None,
            gp_available=importlib.util.find_spec("torch") is not None,
            options=self._thresholds,
            constrained=self._constraints_func is not None,
            **(space_summary or {}),
        )

    def _decide(self, ctx: AutoContext) -> None:
        self._decided_for = ctx.n_objectives
        result = self._policy(ctx)
        if isinstance(result, AutoChoice):
            choice = result
        elif isinstance(result, tuple) and len(result) == 2:
            choice = AutoChoice(str(result[0]), dict(result[1] or {}), "custom policy")
        else:
            raise ConfigError(
                f"sampler.options.policy: must return an AutoChoice or (name, options), "
                f"got {result!r}"
            )
        stage: AutoChoice | None = choice
        while stage is not None:
            if stage.name == "auto" or stage.name not in SAMPLER_NAMES:
                raise ConfigError(
                    f"sampler (auto): the policy chose {stage.name!r}; it must choose one of "
                    f"{', '.join(n for n in SAMPLER_NAMES if n != 'auto')}"
                )
            stage = stage.then
        self._delegate = self._build_stage(choice, None)
        self._choice = choice
        self._active = choice
        self._active_reason = choice.reason
        log.info("sampler auto -> %s %s (%s)", choice.name, dict(choice.options), choice.reason)

    def _build_stage(self, choice: AutoChoice, study: Study | None) -> BaseSampler:
        opts = dict(choice.options)
        if study is not None:
            complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if opts.get("x0") == "incumbent":
                opts["x0"] = dict(study.best_trial.params)
            if opts.get("source_trials") == "completed":
                # the cmaes warm start keeps the best 10 %: at least 10 trials are needed
                if len(complete) < 10:
                    raise ValueError(f"{len(complete)} complete trials, the warm start needs 10")
                opts["source_trials"] = list(complete)
        acquisition = opts.pop("acquisition", None)
        cls = getattr(optuna.samplers, _CLASSES[choice.name])
        if self._constraints_func is not None and "constraints_func" in _valid_options(cls):
            opts["constraints_func"] = self._constraints_func
        with warnings.catch_warnings():
            # CmaEsSampler's x0/sigma0 are deprecated (Optuna >= 4.9, removal planned for 6.0);
            # if they are gone, building fails and the switch is skipped (see _maybe_switch)
            warnings.simplefilter("ignore", FutureWarning)
            sampler = _build(choice.name, self._seed, opts, self._space)
        if acquisition is not None:
            _set_gp_acquisition(sampler, acquisition)
        return sampler

    def _maybe_switch(self, study: Study) -> None:
        """Move to the active choice's next stage when its switch condition holds."""
        active = self._active
        if active is None or active.then is None:
            return
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        n = len(complete)
        if n < active.switch_after:
            return
        why = f"{active.name} for {n} complete trials"
        if active.switch_patience is not None:
            if len(study.directions) != 1:
                return
            k = active.switch_patience
            sign = 1.0 if study.direction == optuna.study.StudyDirection.MINIMIZE else -1.0
            values = [sign * float(t.value) for t in sorted(complete, key=lambda t: t.number)]  # type: ignore[arg-type]
            if n <= k or min(values[-k:]) < min(values[:-k]):
                return
            why += f", no improvement in the last {k}"
        nxt = active.then
        try:
            self._delegate = self._build_stage(nxt, study)
        except (ValueError, ConfigError) as exc:  # e.g. no best trial: stay with this stage
            log.info("sampler auto: not switching to %s: %s", nxt.name, exc)
            return
        self._active = nxt
        self._active_reason = f"{nxt.reason} ({why})" if nxt.reason else why
        log.info("sampler auto -> %s (%s)", nxt.name, self._active_reason)

    def _maybe_decide(self, study: Study) -> None:
        n_obj = len(study.directions)
        if self._choice is not None:
            if self._decided_for == n_obj:
                return
            # made for another number of objectives than the study has: choose again
            log.info("sampler auto: the study has %d objective(s); choosing again", n_obj)
            self._choice = None
            self._active = None
            self._delegate = optuna.samplers.RandomSampler(seed=self._seed)
        if self._space is not None or n_obj > 1:
            self._decide(self._context(n_obj, self._known_summary()))
            return
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if complete:
            self._decide(self._context(n_obj, _summary_from_trials(complete)))

    # BaseSampler interface: delegate.

    @property
    def active(self) -> AutoChoice | None:
        """The stage of :attr:`choice` in use now (``None`` until the decision is made)."""
        return self._active

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._maybe_decide(study)
        self._maybe_switch(study)
        if self._active is not None:
            name, reason = self._active.name, self._active_reason
        else:
            name, reason = "random", "search space not known yet: learnt from the first trial"
        # explainability: which sampler auto used for this trial, and why
        storage = study_storage(study)
        storage.set_trial_user_attr(trial_id(trial), AUTO_SAMPLER_ATTR, name)
        storage.set_trial_user_attr(trial_id(trial), AUTO_REASON_ATTR, reason)
        self._delegate.before_trial(study, trial)

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        result: dict[str, BaseDistribution] = self._delegate.infer_relative_search_space(
            study, trial
        )
        return result

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        result: dict[str, Any] = self._delegate.sample_relative(study, trial, search_space)
        return result

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self._delegate.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self._delegate.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._delegate.reseed_rng()

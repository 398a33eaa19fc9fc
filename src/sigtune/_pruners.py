"""Pruners by name.

:func:`make_pruner` builds an Optuna pruner from a name and an options mapping (the
``pruner:`` section of a run-config). Objectives report intermediate values with
``trial.report(value, step)`` and stop when ``trial.should_prune()`` is true.

==================== ========================================= =================================
name                 Optuna class                              prunes a trial when ...
==================== ========================================= =================================
none                 ``NopPruner``                             never
median               ``MedianPruner``                          its value at a step is worse than
                                                               the median of earlier trials
percentile           ``PercentilePruner`` (``percentile``)     ... worse than that percentile
successive_halving   ``SuccessiveHalvingPruner`` (ASHA)        it is not in the top
                                                               ``1/reduction_factor`` at a rung
hyperband            ``HyperbandPruner``                       ASHA over several brackets
patient              ``PatientPruner`` (``wrapped``,            it has not improved for
                     ``patience``, ``min_delta``)               ``patience`` steps and the
                                                               wrapped pruner agrees
threshold            ``ThresholdPruner`` (``lower``/``upper``) its value leaves the bounds
==================== ========================================= =================================

``patient`` wraps another pruner: ``wrapped`` is a name or ``{name:, options:}`` (default
``none``: prune on patience alone).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.pruners import BasePruner

from sigtune._exceptions import ConfigError

__all__ = ["PRUNER_NAMES", "make_pruner", "pruner_option_errors"]

_CLASSES: Mapping[str, str] = {
    "none": "NopPruner",
    "median": "MedianPruner",
    "percentile": "PercentilePruner",
    "successive_halving": "SuccessiveHalvingPruner",
    "hyperband": "HyperbandPruner",
    "patient": "PatientPruner",
    "threshold": "ThresholdPruner",
}
#: Every name :func:`make_pruner` accepts.
PRUNER_NAMES: tuple[str, ...] = tuple(_CLASSES)

_ALIASES: Mapping[str, str] = {
    "nop": "none",
    "asha": "successive_halving",
    "sha": "successive_halving",
}


def _valid_options(name: str, cls: type) -> set[str]:
    if name == "none":
        return set()
    params = set(inspect.signature(cls).parameters) - {"self"}
    if name == "patient":
        return (params - {"wrapped_pruner"}) | {"wrapped"}
    return params


def make_pruner(name: str = "none", options: Mapping[str, Any] | None = None) -> BasePruner:
    """Build an Optuna pruner by name.

    Args:
        name: One of :data:`PRUNER_NAMES` (``none median percentile successive_halving
            hyperband patient threshold``; ``asha`` is an alias of ``successive_halving``).
        options: Keyword arguments of the Optuna pruner class, e.g. ``{"n_warmup_steps": 5}``
            for ``median``; for ``patient``, ``wrapped`` names the inner pruner.

    Returns:
        The pruner.

    Raises:
        ConfigError: Unknown name or option, missing required option, or a value Optuna
            rejects.
    """
    key, cls, opts, errors = _prepare(name, options)
    if errors:
        raise ConfigError("; ".join(f"{path}: {msg}" for path, msg in errors))
    if key == "patient":
        opts["wrapped_pruner"] = _wrapped(opts.pop("wrapped", None))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            pruner: BasePruner = cls(**opts)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"pruner.options: invalid options for {key!r}: {exc}") from exc
    return pruner


def _prepare(
    name: str, options: Mapping[str, Any] | None
) -> tuple[str, type, dict[str, Any], list[tuple[str, str]]]:
    """Check name and options; return (name, class, coerced options, problems)."""
    key = name.lower() if isinstance(name, str) else name
    key = _ALIASES.get(key, key)
    if key not in _CLASSES:
        problem = f"unknown pruner {name!r}; valid names: {', '.join(PRUNER_NAMES)}"
        return str(key), type(None), {}, [("pruner.name", problem)]
    cls = getattr(optuna.pruners, _CLASSES[key])
    opts = dict(options or {})
    valid = _valid_options(key, cls)
    unknown = sorted(set(opts) - valid)
    if unknown:
        listed = ", ".join(sorted(valid)) or "(none)"
        return (
            key,
            cls,
            opts,
            [
                (
                    f"pruner.options.{u}",
                    f"unknown option for pruner {key!r}; valid options: {listed}",
                )
                for u in unknown
            ],
        )
    from sigtune._samplers import validate_options

    opts, errors = validate_options(cls, opts, "pruner.options", skip=("wrapped",))
    if key == "percentile" and "percentile" not in opts:
        errors.append(("pruner.options.percentile", "required for 'percentile' (0 to 100)"))
    if key == "patient" and "patience" not in opts:
        errors.append(("pruner.options.patience", "required for 'patient' (an integer >= 0)"))
    if key == "threshold" and opts.get("lower") is None and opts.get("upper") is None:
        errors.append(("pruner.options", "'threshold' needs `lower` and/or `upper`"))
    return key, cls, opts, errors


def pruner_option_errors(name: str, options: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Problems of a pruner section as ``(path, message)`` pairs (used at config load)."""
    errors = _prepare(name, options)[3]
    if errors:
        return errors
    try:
        make_pruner(name, options)
    except ConfigError as exc:
        path, _, message = str(exc).partition(": ")
        return [(path, message)]
    return []


def _wrapped(raw: Any) -> BasePruner | None:
    if raw is None:
        return None
    if isinstance(raw, BasePruner):
        return raw
    if isinstance(raw, str):
        if raw.lower() in ("none", "nop"):
            return None
        return make_pruner(raw)
    if isinstance(raw, Mapping) and "name" in raw and set(raw) <= {"name", "options"}:
        if str(raw["name"]).lower() in ("none", "nop"):
            return None
        return make_pruner(raw["name"], raw.get("options"))
    raise ConfigError(
        f"pruner.options.wrapped: must be a pruner name or {{name: ..., options: {{...}}}}, "
        f"but got {raw!r}"
    )

"""Declarative search spaces (OPTIMA semantics) on top of Optuna's define-by-run API.

A search space is a mapping ``name -> definition``. A definition that is not a mapping is a
*fixed* value, passed to the objective unchanged. A mapping defines a tuned parameter:

=================  ==========================================================================
key                meaning
=================  ==========================================================================
``type``           ``range`` (default, or ``choice`` when ``values`` is given) or ``fixed``
``value_type``     ``float`` (default) or ``int`` (``range`` only)
``bounds``         ``[low, high]`` (inclusive); each entry may be an expression string
``sampling``       ``uniform`` (default), ``log`` or ``normal`` (``range`` only)
``mean``/``std``   centre and width of ``sampling: normal``
``step``           quantisation step (``range`` only; not with ``log``)
``values``         the choices of a ``choice`` parameter (a list, or an expression string)
``only``           condition: ``"expr"``, ``[dep, ..., "expr"]`` or ``[dep, ..., callable]``
``value``          the value of ``type: fixed`` (to fix a parameter to a mapping)
``mutable``        ``true``: Population Based Training may change it during a training
                   (``range``/``choice`` only; read by the ML pipeline's PBT stage,
                   :mod:`sigtune.pipelines.ml._pbt`; no effect on other searches)
=================  ==========================================================================

Dependencies: an expression string (see :mod:`sigtune._expr`) reads other parameters by name;
in Python a ``(deps, callable)`` pair calls ``callable(*values_of_deps)`` and a bare callable
receives a dict with the values of every parameter declared before it. Parameters are sampled
in dependency order (a topological sort, declaration order among independent ones); a cycle
is an error that lists it.

A parameter is *inactive* (its value is ``None``) when its ``only`` condition is false or when
a parameter named in its expressions or ``(deps, callable)`` pairs is inactive (a bare
callable instead sees ``None`` for inactive parameters); inactive parameters are not suggested
to Optuna.

``sampling: normal`` is sampled in an Optuna-compatible way: the stored Optuna parameter
``<name>__cdf`` is uniform on the normal CDF range of the bounds, ``u ~ U(Phi(a), Phi(b))``
with ``a = (low - mean) / std`` and ``b = (high - mean) / std`` (``(1e-12, 1 - 1e-12)``
without bounds), and the value is ``mean + std * Phi^-1(u)``: a normal truncated to the bounds
(clipped to them against rounding), quantised to ``step`` and rounded for ``value_type: int``.
Choices whose values depend on other parameters are stored as the index ``<name>__index``.
Every other parameter is stored in Optuna under its own name, also when its bounds change
from trial to trial (Optuna's samplers accept changing ranges for one name).
"""

from __future__ import annotations

import keyword
import math
import statistics
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal, Protocol

from sigtune._exceptions import SearchSpaceError
from sigtune._expr import Expression
from sigtune._space_schema import PARAM_KEYS, PARAM_TYPES, SAMPLINGS, VALUE_TYPES

__all__ = ["ParamSpec", "SearchSpace"]

# The vocabulary (types, keys, value types, samplings) is defined once, in _space_schema.
_TYPES = PARAM_TYPES
_VALUE_TYPES = VALUE_TYPES
_SAMPLINGS = SAMPLINGS
_KEYS: Mapping[str, frozenset[str]] = PARAM_KEYS
_CDF_EPS = 1e-12
_CDF_SUFFIX = "__cdf"
_INDEX_SUFFIX = "__index"
_CATEGORICAL_TYPES = (bool, int, float, str, type(None))


class _Suggester(Protocol):
    """The part of :class:`optuna.Trial` a search space uses."""

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float: ...

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int: ...

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...


@dataclass(frozen=True)
class _Dynamic:
    """A value computed from other parameters (expression or callable)."""

    deps: tuple[str, ...]
    compute: Callable[[Mapping[str, Any]], Any]
    where: str
    implicit: bool = False  # bare callable: sees every earlier parameter, None if inactive

    def __call__(self, values: Mapping[str, Any]) -> Any:
        try:
            return self.compute(values)
        except SearchSpaceError:
            raise
        except Exception as exc:
            shown = {d: values.get(d) for d in self.deps}
            raise SearchSpaceError(
                f"{self.where}: computing the value from {shown} failed: {type(exc).__name__}: {exc}"
            ) from exc


def _from_expression(expr: Expression) -> _Dynamic:
    return _Dynamic(deps=tuple(sorted(expr.names)), compute=expr.evaluate, where=expr.where)


def _from_callable(
    fn: Callable[..., Any], deps: Sequence[str] | None, earlier: Sequence[str], where: str
) -> _Dynamic:
    if deps is None:  # bare callable: receives a dict of every earlier parameter
        names = tuple(earlier)
        return _Dynamic(names, lambda v: fn({n: v.get(n) for n in names}), where, implicit=True)
    names = tuple(deps)
    return _Dynamic(names, lambda v: fn(*(v.get(n) for n in names)), where)


def _is_deps_callable_pair(raw: Any) -> bool:
    return (
        isinstance(raw, list | tuple)
        and len(raw) == 2
        and isinstance(raw[0], list | tuple)
        and all(isinstance(d, str) for d in raw[0])
        and callable(raw[1])
    )


def _dynamic_or_static(raw: Any, where: str, earlier: Sequence[str]) -> Any:
    """Turn an expression string / callable / ``(deps, callable)`` into a _Dynamic."""
    if isinstance(raw, str):
        return _from_expression(Expression.parse(raw, where=where))
    if _is_deps_callable_pair(raw):
        return _from_callable(raw[1], list(raw[0]), earlier, where)
    if callable(raw):
        return _from_callable(raw, None, earlier, where)
    return raw


@dataclass(frozen=True)
class ParamSpec:
    """One validated parameter of a :class:`SearchSpace`.

    Static attributes hold plain values; attributes that depend on other parameters hold a
    private callable that computes them. Use :class:`SearchSpace` rather than building these.
    """

    name: str
    kind: Literal["range", "choice", "fixed"]
    value_type: Literal["int", "float"] = "float"
    sampling: Literal["uniform", "log", "normal"] = "uniform"
    low: Any = None
    high: Any = None
    bounds: _Dynamic | None = None
    mean: float | None = None
    std: float | None = None
    step: float | int | None = None
    values: Any = None
    value: Any = None
    only: _Dynamic | None = None
    deps: frozenset[str] = field(default_factory=frozenset)
    mutable: bool = False

    @property
    def where(self) -> str:
        return f"search_space.{self.name}"

    @property
    def is_dynamic(self) -> bool:
        """Bounds or choices depend on other parameters."""
        return (
            self.bounds is not None
            or isinstance(self.low, _Dynamic)
            or isinstance(self.high, _Dynamic)
            or isinstance(self.values, _Dynamic)
        )

    @property
    def required(self) -> frozenset[str]:
        """Parameters that must be active for this one to be active.

        Every parameter named by an expression or a ``(deps, callable)`` pair; not those seen
        by a bare callable (which receives ``None`` for inactive ones).
        """
        parts = (self.only, self.bounds, self.low, self.high, self.values)
        return frozenset(
            d for p in parts if isinstance(p, _Dynamic) and not p.implicit for d in p.deps
        )

    @property
    def is_discrete(self) -> bool:
        """The parameter takes finitely many values."""
        if self.kind in ("choice", "fixed"):
            return True
        if self.sampling == "normal":
            return False
        return self.value_type == "int" or self.step is not None

    @property
    def optuna_name(self) -> str:
        """Name of the Optuna parameter that stores this parameter."""
        if self.kind == "range" and self.sampling == "normal":
            return self.name + _CDF_SUFFIX
        if self.kind == "choice" and isinstance(self.values, _Dynamic):
            return self.name + _INDEX_SUFFIX
        return self.name

    # ------------------------------------------------------------------ sampling

    def _bounds(self, values: Mapping[str, Any]) -> tuple[Any, Any]:
        if self.bounds is not None:
            got = self.bounds(values)
            if not isinstance(got, list | tuple) or len(got) != 2:
                raise SearchSpaceError(
                    f"{self.where}.bounds: must evaluate to [low, high], but got {got!r}"
                )
            low, high = got
        elif isinstance(self.low, _Dynamic) or isinstance(self.high, _Dynamic):
            low = self.low(values) if isinstance(self.low, _Dynamic) else self.low
            high = self.high(values) if isinstance(self.high, _Dynamic) else self.high
        else:
            return self.low, self.high  # static: checked when the space was built
        if low is not None or high is not None:
            _check_bounds(self.name, low, high, self.value_type, self.sampling, self.step)
        return low, high

    def _choices(self, values: Mapping[str, Any]) -> list[Any]:
        if isinstance(self.values, _Dynamic):
            got = self.values(values)
            if not isinstance(got, list | tuple | range) or len(got) == 0:
                raise SearchSpaceError(
                    f"{self.where}.values: must evaluate to a non-empty list, but got {got!r}"
                )
            return list(got)
        return list(self.values)

    def sample(self, trial: _Suggester, values: Mapping[str, Any]) -> Any:
        """Suggest this (active) parameter through ``trial`` given the values of its deps."""
        if self.kind == "fixed":
            return self.value
        if self.kind == "choice":
            choices = self._choices(values)
            if isinstance(self.values, _Dynamic):
                index = trial.suggest_int(self.optuna_name, 0, len(choices) - 1)
                return choices[index]
            return trial.suggest_categorical(self.name, choices)
        low, high = self._bounds(values)
        if self.sampling == "normal":
            return self._sample_normal(trial, low, high)
        if self.step is not None:
            # the largest grid value below high: Optuna's rule, without its warning
            top = _on_grid(low, math.floor((high - low) / self.step + 1e-9), self.step)
            if top <= high:
                high = top
        if self.value_type == "int":
            return trial.suggest_int(
                self.name,
                int(low),
                int(high),
                step=int(self.step) if self.step is not None else 1,
                log=self.sampling == "log",
            )
        value = trial.suggest_float(
            self.name,
            float(low),
            float(high),
            step=float(self.step) if self.step is not None else None,
            log=self.sampling == "log",
        )
        if self.step is not None:  # 0.30000000000000004 -> 0.3: the exact decimal grid point
            value = float(_on_grid(low, round((value - low) / self.step), self.step))
        return value

    def _sample_normal(self, trial: _Suggester, low: Any, high: Any) -> Any:
        assert self.mean is not None and self.std is not None  # checked at load
        dist = statistics.NormalDist(self.mean, self.std)
        u_low = _CDF_EPS if low is None else max(_CDF_EPS, min(1 - _CDF_EPS, dist.cdf(low)))
        u_high = 1 - _CDF_EPS if high is None else max(_CDF_EPS, min(1 - _CDF_EPS, dist.cdf(high)))
        u = trial.suggest_float(self.optuna_name, u_low, u_high)
        return self.normal_value(u, low, high)

    def normal_value(self, u: float, low: Any, high: Any) -> Any:
        """Map the stored CDF value ``u`` to the parameter value (see the module docstring)."""
        assert self.mean is not None and self.std is not None
        x = statistics.NormalDist(self.mean, self.std).inv_cdf(min(max(u, _CDF_EPS), 1 - _CDF_EPS))
        x = _clip(x, low, high)
        if self.step is not None:
            base = low if low is not None else self.mean
            x = float(_on_grid(base, round((x - base) / self.step), self.step))
            if high is not None and x > high + 1e-12 * max(1.0, abs(high)):
                x -= self.step
            x = _clip(x, low, high)
        if self.value_type == "int":
            xi = round(x)
            if low is not None and xi < low:
                xi = math.ceil(low)
            if high is not None and xi > high:
                xi = math.floor(high)
            return int(xi)
        return float(x)

    def internal_value(self, value: Any, values: Mapping[str, Any]) -> Any:
        """Inverse of :meth:`sample`: the Optuna-stored value that gives ``value``."""
        if self.kind == "choice" and isinstance(self.values, _Dynamic):
            choices = self._choices(values)
            if value not in choices:
                raise SearchSpaceError(
                    f"{self.where}: {value!r} is not one of the current choices {choices}"
                )
            return choices.index(value)
        if self.kind == "range" and self.sampling == "normal":
            assert self.mean is not None and self.std is not None
            u = statistics.NormalDist(self.mean, self.std).cdf(float(value))
            return min(max(u, _CDF_EPS), 1 - _CDF_EPS)
        return value

    def grid_values(self) -> list[Any]:
        """All values of a static discrete parameter, in increasing order for ranges."""
        if self.kind == "choice":
            return list(self.values)
        if self.kind == "fixed":
            return [self.value]
        low, high = self.low, self.high
        if self.value_type == "int":
            step = int(self.step) if self.step is not None else 1
            return list(range(int(low), int(high) + 1, step))
        assert self.step is not None
        n = math.floor((high - low) / self.step + 1e-9)
        return [float(_on_grid(low, k, self.step)) for k in range(n + 1)]


def _on_grid(low: Any, k: int, step: Any) -> Any:
    """``low + k * step`` computed in decimal, so 0.1 + 2 * 0.1 gives 0.3, not 0.30000000000000004.

    Integers stay integers.
    """
    if isinstance(low, int) and isinstance(step, int):
        return low + k * step
    return float(Decimal(repr(float(low))) + k * Decimal(repr(float(step))))


def _clip(x: float, low: Any, high: Any) -> float:
    if low is not None and x < low:
        return float(low)
    if high is not None and x > high:
        return float(high)
    return x


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _check_bounds(
    name: str, low: Any, high: Any, value_type: str, sampling: str, step: Any
) -> None:
    where = f"search_space.{name}"
    for label, bound in (("low", low), ("high", high)):
        if not _is_number(bound):
            raise SearchSpaceError(f"{where}.bounds: {label} must be a number, but got {bound!r}")
        if not math.isfinite(bound) and sampling != "normal":
            raise SearchSpaceError(f"{where}.bounds: {label} must be finite, but got {bound!r}")
        if value_type == "int" and math.isfinite(bound) and float(bound) != int(bound):
            raise SearchSpaceError(
                f"{where}.bounds: {label} must be an integer for value_type int, but got {bound!r}"
            )
    if low > high:
        raise SearchSpaceError(
            f"{where}: `low <= high` must hold, but got (low={low}, high={high})"
        )
    if sampling == "log" and low <= 0:
        raise SearchSpaceError(
            f"{where}: sampling 'log' needs `low > 0`, but got (low={low}, high={high})"
        )


def _parse_only(raw: Any, where: str, earlier: Sequence[str]) -> _Dynamic:
    """``only``: expression, ``[dep..., condition]``, ``(deps, callable)`` or a bare callable."""
    if isinstance(raw, str) or callable(raw) or _is_deps_callable_pair(raw):
        result = _dynamic_or_static(raw, where, earlier)
        assert isinstance(result, _Dynamic)
        return result
    if isinstance(raw, list | tuple) and len(raw) >= 1:
        *deps, condition = raw
        if not all(isinstance(d, str) for d in deps):
            raise SearchSpaceError(
                f"{where}: the dependencies before the condition must be parameter names, "
                f"but got {deps!r}"
            )
        if callable(condition):
            return _from_callable(condition, deps, earlier, where)
        if isinstance(condition, str):
            expr = Expression.parse(condition, where=where)
            return _Dynamic(tuple(sorted(set(deps) | expr.names)), expr.evaluate, where)
        raise SearchSpaceError(
            f"{where}: the last entry of `only` must be a condition (expression string or "
            f"callable), but got {condition!r}"
        )
    raise SearchSpaceError(
        f'{where}: `only` must be an expression string such as "num_layers >= 4", '
        f"a list [dep, ..., condition] or a callable, but got {raw!r}"
    )


def _parse_param(name: str, raw: Any, earlier: Sequence[str]) -> ParamSpec:
    where = f"search_space.{name}"
    if not isinstance(raw, Mapping):
        return ParamSpec(name=name, kind="fixed", value=raw)
    bad = [k for k in raw if not isinstance(k, str)]
    if bad:
        raise SearchSpaceError(f"{where}: keys must be strings, got {bad!r}")
    kind = raw.get("type", "choice" if "values" in raw else "range")
    if kind not in _TYPES:
        raise SearchSpaceError(
            f"{where}.type: must be one of {', '.join(_TYPES)}, but got {kind!r}"
        )
    unknown = sorted(set(raw) - _KEYS[kind])
    if unknown:
        raise SearchSpaceError(
            f"{where}: unknown key(s) {', '.join(unknown)} for type {kind!r}; "
            f"allowed: {', '.join(sorted(_KEYS[kind]))}"
        )
    only = _parse_only(raw["only"], f"{where}.only", earlier) if "only" in raw else None
    mutable = raw.get("mutable", False)
    if not isinstance(mutable, bool):
        raise SearchSpaceError(f"{where}.mutable: must be true or false, but got {mutable!r}")

    if kind == "fixed":
        if "value" not in raw:
            raise SearchSpaceError(f"{where}: type 'fixed' needs a `value`")
        return ParamSpec(
            name=name,
            kind="fixed",
            value=raw["value"],
            only=only,
            deps=frozenset(only.deps) if only else frozenset(),
        )

    if kind == "choice":
        if "values" not in raw:
            raise SearchSpaceError(f"{where}: type 'choice' needs `values` (a non-empty list)")
        values = _dynamic_or_static(raw["values"], f"{where}.values", earlier)
        if not isinstance(values, _Dynamic):
            if not isinstance(values, list | tuple) or len(values) == 0:
                raise SearchSpaceError(
                    f"{where}.values: must be a non-empty list of choices, but got {values!r}"
                )
            bad_choices = [v for v in values if not isinstance(v, _CATEGORICAL_TYPES)]
            if bad_choices:
                raise SearchSpaceError(
                    f"{where}.values: choices must be None, bool, int, float or str, but got "
                    f"{bad_choices!r}"
                )
            if len({(type(v), v) for v in values}) != len(values):
                raise SearchSpaceError(f"{where}.values: choices must be unique, got {values!r}")
            if "value_type" in raw:  # accepted for OPTIMA compatibility: checks the choices
                wanted = raw["value_type"]
                if wanted not in _VALUE_TYPES:
                    raise SearchSpaceError(
                        f"{where}.value_type: must be one of {', '.join(_VALUE_TYPES)}, "
                        f"but got {wanted!r}"
                    )
                kinds = (int,) if wanted == "int" else (int, float)
                wrong = [v for v in values if isinstance(v, bool) or not isinstance(v, kinds)]
                if wrong:
                    raise SearchSpaceError(
                        f"{where}.values: value_type is {wanted!r}, but got choices {wrong!r}"
                    )
            values = tuple(values)
        choice_deps = set(values.deps) if isinstance(values, _Dynamic) else set()
        if only:
            choice_deps |= set(only.deps)
        return ParamSpec(
            name=name,
            kind="choice",
            values=values,
            only=only,
            deps=frozenset(choice_deps),
            mutable=mutable,
        )

    # range
    value_type = raw.get("value_type", "float")
    if value_type not in _VALUE_TYPES:
        raise SearchSpaceError(
            f"{where}.value_type: must be one of {', '.join(_VALUE_TYPES)}, but got {value_type!r}"
        )
    sampling = raw.get("sampling", "uniform")
    if sampling not in _SAMPLINGS:
        raise SearchSpaceError(
            f"{where}.sampling: must be one of {', '.join(_SAMPLINGS)}, but got {sampling!r}"
        )
    for key in ("mean", "std"):
        if key in raw and sampling != "normal":
            raise SearchSpaceError(f"{where}: `{key}` is only allowed with sampling 'normal'")
    mean = std = None
    if sampling == "normal":
        for key in ("mean", "std"):
            if key not in raw:
                raise SearchSpaceError(f"{where}: sampling 'normal' needs `{key}`")
            if not _is_number(raw[key]) or not math.isfinite(raw[key]):
                raise SearchSpaceError(
                    f"{where}.{key}: must be a finite number, but got {raw[key]!r}"
                )
        mean, std = float(raw["mean"]), float(raw["std"])
        if std <= 0:
            raise SearchSpaceError(f"{where}.std: must be > 0, but got {raw['std']!r}")
    step = raw.get("step")
    if step is not None:
        if not _is_number(step) or not math.isfinite(step) or step <= 0:
            raise SearchSpaceError(f"{where}.step: must be a number > 0, but got {step!r}")
        if sampling == "log":
            raise SearchSpaceError(
                f"{where}: `step` cannot be combined with sampling 'log' (Optuna does not "
                f"support quantised log sampling); remove one of them"
            )
        if value_type == "int" and float(step) != int(step):
            raise SearchSpaceError(
                f"{where}.step: must be an integer for value_type int, but got {step!r}"
            )

    low: Any = None
    high: Any = None
    bounds_dyn: _Dynamic | None = None
    deps: set[str] = set(only.deps) if only else set()
    if "bounds" not in raw:
        if sampling != "normal":
            raise SearchSpaceError(f"{where}: type 'range' needs `bounds: [low, high]`")
    else:
        raw_bounds = raw["bounds"]
        parsed = _dynamic_or_static(raw_bounds, f"{where}.bounds", earlier)
        if isinstance(parsed, _Dynamic):
            bounds_dyn = parsed
            deps |= set(parsed.deps)
        elif isinstance(raw_bounds, list | tuple) and len(raw_bounds) == 2:
            low = _dynamic_or_static(raw_bounds[0], f"{where}.bounds[0]", earlier)
            high = _dynamic_or_static(raw_bounds[1], f"{where}.bounds[1]", earlier)
            for bound in (low, high):
                if isinstance(bound, _Dynamic):
                    deps |= set(bound.deps)
            if not isinstance(low, _Dynamic) and not isinstance(high, _Dynamic):
                _check_bounds(name, low, high, value_type, sampling, step)
            else:
                for label, bound in (("low", low), ("high", high)):
                    if not isinstance(bound, _Dynamic) and not _is_number(bound):
                        raise SearchSpaceError(
                            f"{where}.bounds: {label} must be a number or an expression, "
                            f"but got {bound!r}"
                        )
                if sampling == "log" and not isinstance(low, _Dynamic) and low <= 0:
                    raise SearchSpaceError(
                        f"{where}: sampling 'log' needs `low > 0`, but got (low={low})"
                    )
        else:
            raise SearchSpaceError(f"{where}.bounds: must be [low, high], but got {raw_bounds!r}")
    return ParamSpec(
        name=name,
        kind="range",
        value_type=value_type,
        sampling=sampling,
        low=low,
        high=high,
        bounds=bounds_dyn,
        mean=mean,
        std=std,
        step=step,
        only=only,
        deps=frozenset(deps),
        mutable=mutable,
    )


def _topological_order(specs: Mapping[str, ParamSpec]) -> list[str]:
    """Dependency order (stable: declaration order among ready parameters); cycles are errors."""
    for spec in specs.values():
        missing = sorted(d for d in spec.deps if d not in specs)
        if missing:
            raise SearchSpaceError(
                f"{spec.where}: refers to unknown parameter(s) {', '.join(missing)}; "
                f"defined parameters: {', '.join(specs)}"
            )
    order: list[str] = []
    done: set[str] = set()
    remaining = list(specs)
    while remaining:
        ready = [n for n in remaining if specs[n].deps <= done]
        if not ready:
            raise SearchSpaceError(
                f"search_space: cyclic dependency {' -> '.join(_find_cycle(specs, remaining))}"
            )
        for n in ready:
            order.append(n)
            done.add(n)
        remaining = [n for n in remaining if n not in done]
    return order


def _find_cycle(specs: Mapping[str, ParamSpec], remaining: Sequence[str]) -> list[str]:
    """A cycle among ``remaining`` as ``[a, b, ..., a]``."""
    rem = set(remaining)
    start = remaining[0]
    path: list[str] = [start]
    seen = {start: 0}
    node = start
    while True:
        nxt = sorted(d for d in specs[node].deps if d in rem)[0]
        if nxt in seen:
            return [*path[seen[nxt] :], nxt]
        seen[nxt] = len(path)
        path.append(nxt)
        node = nxt


class _Replay:
    """Answers ``suggest_*`` calls from stored Optuna params (to rebuild a params dict)."""

    def __init__(self, stored: Mapping[str, Any]) -> None:
        self._stored = stored

    def _get(self, name: str) -> Any:
        if name not in self._stored:
            raise KeyError(name)
        return self._stored[name]

    def suggest_float(self, name: str, low: float, high: float, **_: Any) -> float:
        return float(self._get(name))

    def suggest_int(self, name: str, low: int, high: int, **_: Any) -> int:
        return int(self._get(name))

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self._get(name)


class SearchSpace:
    """A validated declarative search space.

    Build it with :meth:`from_dict`; call :meth:`suggest` inside an Optuna objective::

        space = SearchSpace.from_dict({
            "num_layers": {"type": "range", "value_type": "int", "bounds": [2, 6]},
            "units": {"type": "range", "value_type": "int", "bounds": [8, 256], "sampling": "log"},
            "dropout": {"bounds": [0.0, 0.5], "only": "num_layers >= 4"},
            "activation": {"values": ["relu", "tanh"]},
            "epochs": 50,
        })
        params = space.suggest(trial)   # {"num_layers": 3, ..., "dropout": None, "epochs": 50}
    """

    def __init__(self, specs: Mapping[str, ParamSpec]) -> None:
        """Store already-validated parameter specs (use :meth:`from_dict`)."""
        self._specs: dict[str, ParamSpec] = dict(specs)
        self._order = _topological_order(self._specs)

    @classmethod
    def from_dict(cls, definition: Mapping[str, Any] | SearchSpace) -> SearchSpace:
        """Validate an OPTIMA-style mapping and build the space.

        Args:
            definition: ``name -> definition`` (see the module docstring). A SearchSpace is
                returned unchanged.

        Returns:
            The search space.

        Raises:
            SearchSpaceError: Naming the parameter, for any invalid definition.
        """
        if isinstance(definition, SearchSpace):
            return definition
        if not isinstance(definition, Mapping):
            raise SearchSpaceError(
                f"search_space: must be a mapping of parameter name -> definition, "
                f"but got {type(definition).__name__}"
            )
        specs: dict[str, ParamSpec] = {}
        for name, raw in definition.items():
            if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
                raise SearchSpaceError(
                    f"search_space: parameter names must be identifiers (letters, digits, _; "
                    f"not a Python keyword), but got {name!r}"
                )
            if name.endswith((_CDF_SUFFIX, _INDEX_SUFFIX)):
                raise SearchSpaceError(
                    f"search_space.{name}: names ending in {_CDF_SUFFIX!r} or {_INDEX_SUFFIX!r} "
                    f"are reserved"
                )
            specs[name] = _parse_param(name, raw, list(specs))
        return cls(specs)

    # ------------------------------------------------------------------ introspection

    @property
    def names(self) -> tuple[str, ...]:
        """All parameter names (fixed ones included) in declaration order."""
        return tuple(self._specs)

    @property
    def order(self) -> tuple[str, ...]:
        """Parameter names in sampling (dependency) order."""
        return tuple(self._order)

    @property
    def params(self) -> Mapping[str, ParamSpec]:
        """The validated parameter specs by name."""
        return dict(self._specs)

    @property
    def tuned(self) -> tuple[str, ...]:
        """Names of the parameters that are sampled (not fixed)."""
        return tuple(n for n, s in self._specs.items() if s.kind != "fixed")

    @property
    def dimension(self) -> int:
        """Number of sampled parameters."""
        return len(self.tuned)

    @property
    def is_conditional(self) -> bool:
        """Some sampled parameter has an ``only`` condition (directly or through a dependency)."""
        return any(s.only is not None for s in self._specs.values())

    @property
    def has_categorical(self) -> bool:
        """Some parameter is a ``choice``."""
        return any(s.kind == "choice" for s in self._specs.values())

    @property
    def is_dynamic(self) -> bool:
        """Some bounds or choices depend on other parameters."""
        return any(s.is_dynamic for s in self._specs.values())

    @property
    def is_discrete(self) -> bool:
        """Every sampled parameter takes finitely many values."""
        return all(s.is_discrete for s in self._specs.values())

    @property
    def grid_size(self) -> int | None:
        """Number of points of :meth:`grid` (``None`` if the space has no static grid)."""
        if not self.is_discrete or self.is_dynamic:
            return None
        return math.prod(len(v) for v in self.grid().values())

    def grid(self) -> dict[str, list[Any]]:
        """Values of each sampled parameter, for Optuna's ``GridSampler``.

        Keys are the Optuna parameter names. Conditional parameters are included (the grid
        then repeats points that differ only in inactive parameters; prefer ``bruteforce``).

        Raises:
            SearchSpaceError: If a parameter is continuous or depends on another parameter.
        """
        bad = [n for n in self.tuned if not self._specs[n].is_discrete]
        if bad:
            raise SearchSpaceError(
                f"search_space: a grid needs discrete parameters (choice, int range, or float "
                f"range with step), but {', '.join(bad)} is continuous"
            )
        dyn = [n for n in self.tuned if self._specs[n].is_dynamic]
        if dyn:
            raise SearchSpaceError(
                f"search_space: a grid needs static bounds/values, but {', '.join(dyn)} depends "
                f"on other parameters; use the bruteforce sampler"
            )
        return {self._specs[n].optuna_name: self._specs[n].grid_values() for n in self.tuned}

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __repr__(self) -> str:
        return f"SearchSpace({', '.join(self._specs)})"

    # ------------------------------------------------------------------ sampling

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Sample every parameter through ``trial`` (an :class:`optuna.Trial`).

        Returns:
            ``name -> value`` for every parameter in declaration order; fixed parameters have
            their value, inactive conditional ones ``None``.

        Raises:
            SearchSpaceError: If a dynamic bound/condition cannot be evaluated or is invalid.
        """
        return self._walk(trial)

    def params_from_trial(self, trial_or_params: Any) -> dict[str, Any]:
        """Rebuild the params dict from what Optuna stored (a FrozenTrial or its ``params``).

        Parameters that were never suggested (e.g. a failed trial) come back as ``None``.
        """
        stored = getattr(trial_or_params, "params", trial_or_params)
        return self._walk(_Replay(stored), missing_ok=True)

    def to_optuna_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Map a user params dict to Optuna parameter names/values (for ``enqueue_trial``).

        Missing or ``None`` values are left out (Optuna then samples them).
        """
        unknown = sorted(set(params) - set(self._specs))
        if unknown:
            raise SearchSpaceError(
                f"search_space: unknown parameter(s) {', '.join(unknown)} in {dict(params)!r}; "
                f"defined parameters: {', '.join(self._specs)}"
            )
        result: dict[str, Any] = {}
        values: dict[str, Any] = {}
        for name in self._order:
            spec = self._specs[name]
            if spec.kind == "fixed":
                values[name] = spec.value
                continue
            value = params.get(name)
            if value is None or any(d not in values for d in spec.required):
                continue
            values[name] = value
            result[spec.optuna_name] = spec.internal_value(value, values)
        return result

    def _walk(self, trial: _Suggester, *, missing_ok: bool = False) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name in self._order:
            spec = self._specs[name]
            if any(d not in values for d in spec.required):
                continue  # a dependency is inactive -> inactive
            if spec.only is not None and not spec.only(values):
                continue
            try:
                values[name] = spec.sample(trial, values)
            except KeyError:
                if not missing_ok:
                    raise
        return {name: values.get(name) for name in self._specs}

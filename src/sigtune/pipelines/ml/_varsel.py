"""Input-variable selection by backward elimination (OPTIMA's variable optimisation).

Each iteration evaluates, for every remaining variable ``v``, the metric of the set without ``v``
and drops the variable whose removal hurts least. How "the metric without ``v``" is computed is
the *mode*:

* ``shuffle`` — permutation importance on the cross-validated models: the models trained with all
  variables predict the validation folds with ``v`` (and every variable dropped before) randomly
  permuted across events, ``num_repeats`` permutations averaged. No retraining: cheap.
* ``retrain`` — a model is trained on every fold without the variable (``num_repeats`` trainings
  averaged). Expensive, but it measures what a model *can* do without ``v``.
* ``hybrid`` — ``shuffle`` until it stops, revert to the best set it found, then continue with
  ``retrain`` from there.
* ``custom`` — a user callable ``fn(variables) -> metric`` evaluates a variable set.

After choosing the candidate, its metric can be re-evaluated with fresh permutations / trainings
(``reevaluate=True``): the minimum over many noisy estimates is biased towards "harmless", a fresh
estimate is not. The drop is then *accepted* or not:

* ``improvement`` — the metric is not worse than the best accepted metric so far;
* ``threshold`` — the relative change against the all-variables baseline is at most
  ``max_rel_change`` in the bad direction;
* ``degradation`` — OPTIMA's rule: the metric is not worse than the best accepted metric by more
  than one sigma, sigma being the per-fold standard deviation of the best accepted set (with an
  evaluator that gives one number, sigma is 0 and this is ``improvement``).

Every estimate keeps its per-fold values: the history records the mean and the per-fold standard
deviation (``metric_err``, ``candidates_err``). ``groups`` name sets of variables that are
removed together (a candidate is a whole group, or a variable in no group). With
``final_retrain`` the chosen set is evaluated once more by retraining on every fold (an unbiased
estimate for shuffle mode, whose models saw every variable).

A rejected drop still happens (elimination goes on); after ``patience`` consecutive rejections the
selection stops. The result is the ``best`` accepted set (best metric; ties: fewer variables) or
the ``last`` accepted one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

import numpy as np

from sigtune._exceptions import ConfigError

__all__ = [
    "VarSelIteration",
    "VariableSelectionResult",
    "backward_elimination",
    "permutation_metric",
    "select_variables",
]

log = logging.getLogger(__name__)

Mode = Literal["shuffle", "retrain", "hybrid", "custom"]
Acceptance = Literal["improvement", "threshold", "degradation"]
Direction = Literal["minimize", "maximize"]


@dataclass(frozen=True)
class VarSelIteration:
    """One backward-elimination step.

    Attributes:
        iteration: 0 for the baseline (all variables), then 1, 2, ...
        mode: ``"shuffle"``, ``"retrain"`` or ``"custom"`` (the evaluator used).
        dropped: The variable removed in this step (``None`` for the baseline).
        variables: The variables remaining after the step.
        metric: The metric of ``variables`` (re-evaluated if enabled).
        accepted: Whether the acceptance criterion held.
        candidates: Metric of the set without each candidate variable.
    """

    iteration: int
    mode: str
    dropped: str | None
    variables: tuple[str, ...]
    metric: float
    accepted: bool
    candidates: dict[str, float] = field(default_factory=dict)
    metric_err: float = 0.0
    candidates_err: dict[str, float] = field(default_factory=dict)
    dropped_variables: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable representation."""
        return {
            "iteration": self.iteration,
            "mode": self.mode,
            "dropped": self.dropped,
            "dropped_variables": list(self.dropped_variables),
            "variables": list(self.variables),
            "metric": self.metric,
            "metric_err": self.metric_err,
            "accepted": self.accepted,
            "candidates": dict(self.candidates),
            "candidates_err": dict(self.candidates_err),
        }


@dataclass(frozen=True)
class VariableSelectionResult:
    """Result of :func:`select_variables`.

    Attributes:
        selected: The chosen variables (in the original order).
        dropped: Variables not selected, in the order they were removed.
        metric: The metric of the chosen set.
        baseline: The metric with all variables.
        metric_name: Name of the metric.
        direction: ``"minimize"`` or ``"maximize"``.
        history: Every iteration, starting with the baseline.
        final: ``{"metric", "metric_err"}`` of the chosen set re-evaluated by retraining
            (``final_retrain``), else ``None``.
    """

    selected: tuple[str, ...]
    dropped: tuple[str, ...]
    metric: float
    baseline: float
    metric_name: str
    direction: Direction
    history: tuple[VarSelIteration, ...]
    final: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable representation."""
        return {
            "selected": list(self.selected),
            "dropped": list(self.dropped),
            "metric": self.metric,
            "baseline": self.baseline,
            "metric_name": self.metric_name,
            "direction": self.direction,
            "history": [it.to_dict() for it in self.history],
            "final": self.final,
        }


class SetEvaluator(Protocol):
    """Computes the metric of a variable set (the ``mode``)."""

    name: str

    def __call__(self, variables: tuple[str, ...], repeat_seed: int) -> Any:
        """The metric of the set: one number, or one value per fold."""
        ...


def _measure(ev: SetEvaluator, variables: tuple[str, ...], seed: int) -> tuple[float, float]:
    """Mean and per-fold standard deviation (``ddof=1``; 0 for one value) of an estimate."""
    arr = np.atleast_1d(np.asarray(ev(variables, seed), dtype=float))
    err = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return float(arr.mean()), err


def _worse_by(value: float, reference: float, direction: Direction) -> float:
    """Relative change of ``value`` against ``reference``; positive = worse."""
    scale = abs(reference) if reference != 0 else 1.0
    sign = 1.0 if direction == "minimize" else -1.0
    return sign * (value - reference) / scale


@dataclass
class _State:
    variables: tuple[str, ...]
    baseline: float
    best_metric: float
    best_set: tuple[str, ...]
    last_metric: float
    last_set: tuple[str, ...]
    best_err: float = 0.0


def _eliminate(
    evaluator: SetEvaluator,
    state: _State,
    history: list[VarSelIteration],
    *,
    direction: Direction,
    acceptance: Acceptance,
    max_rel_change: float,
    patience: int,
    reevaluate: bool,
    min_variables: int,
    seed: int,
    groups: Mapping[str, tuple[str, ...]],
) -> None:
    """Run backward elimination with one evaluator, updating ``state`` and ``history``."""
    sign = 1.0 if direction == "minimize" else -1.0
    rejections = 0
    while True:
        units = _units(state.variables, groups)
        units = {k: v for k, v in units.items() if len(state.variables) - len(v) >= min_variables}
        if not units:
            break
        it = len(history)
        candidates: dict[str, float] = {}
        errors: dict[str, float] = {}
        for name, members in units.items():
            remaining = tuple(x for x in state.variables if x not in members)
            candidates[name], errors[name] = _measure(evaluator, remaining, seed + 1000 * it)
        order = list(units)
        drop = min(order, key=lambda u: (sign * candidates[u], order.index(u)))
        remaining = tuple(x for x in state.variables if x not in units[drop])
        metric, err = candidates[drop], errors[drop]
        if reevaluate:
            metric, err = _measure(evaluator, remaining, seed + 1000 * it + 500)
        if acceptance == "improvement":
            accepted = _worse_by(metric, state.best_metric, direction) <= 0.0
        elif acceptance == "threshold":
            accepted = _worse_by(metric, state.baseline, direction) <= max_rel_change
        else:  # degradation: at most one sigma (per-fold spread of the best set) worse
            accepted = sign * (metric - state.best_metric) <= state.best_err
        state.variables = remaining
        history.append(
            VarSelIteration(
                it,
                evaluator.name,
                drop,
                remaining,
                metric,
                accepted,
                candidates,
                metric_err=err,
                candidates_err=errors,
                dropped_variables=units[drop],
            )
        )
        log.info(
            "variable selection %d (%s): drop %s -> %.6g (%s)",
            it,
            evaluator.name,
            drop,
            metric,
            "accepted" if accepted else "rejected",
        )
        if accepted:
            rejections = 0
            state.last_metric, state.last_set = metric, remaining
            if sign * metric < sign * state.best_metric or (
                sign * metric == sign * state.best_metric and len(remaining) < len(state.best_set)
            ):
                state.best_metric, state.best_set, state.best_err = metric, remaining, err
        else:
            rejections += 1
            if rejections >= patience:
                break


def _units(
    variables: tuple[str, ...], groups: Mapping[str, tuple[str, ...]]
) -> dict[str, tuple[str, ...]]:
    """Drop candidates: each group whose variables are all present, and every ungrouped one."""
    present = set(variables)
    grouped = {v for members in groups.values() for v in members}
    out = {
        name: tuple(m for m in variables if m in members)
        for name, members in groups.items()
        if set(members) <= present
    }
    out.update({v: (v,) for v in variables if v not in grouped})
    return out


def backward_elimination(
    features: Sequence[str],
    *,
    mode: Mode = "shuffle",
    shuffle: SetEvaluator | None = None,
    retrain: SetEvaluator | None = None,
    custom: Callable[[tuple[str, ...]], float] | None = None,
    metric_name: str = "metric",
    direction: Direction = "minimize",
    acceptance: Acceptance = "threshold",
    max_rel_change: float = 0.01,
    patience: int = 2,
    reevaluate: bool = True,
    choose: Literal["best", "last"] = "last",
    min_variables: int = 1,
    seed: int = 0,
    groups: Mapping[str, Sequence[str]] | None = None,
) -> VariableSelectionResult:
    """Backward elimination of input variables.

    This is the algorithm; :func:`select_variables` builds the ``shuffle`` / ``retrain``
    evaluators from data, a trainable and k folds.

    Args:
        features: All candidate variables.
        mode: ``shuffle``, ``retrain``, ``hybrid`` or ``custom``.
        shuffle: Evaluator for ``shuffle`` / ``hybrid`` (``fn(variables, seed) -> metric``).
        retrain: Evaluator for ``retrain`` / ``hybrid``.
        custom: For ``custom``: ``fn(variables) -> metric`` (a number, or one value per fold).
        metric_name: Name of the metric (reported).
        direction: Whether the metric is minimised or maximised.
        acceptance: ``improvement``, ``threshold`` or ``degradation`` (see the module docs).
        max_rel_change: Allowed relative worsening for ``threshold`` / ``degradation``.
        patience: Stop after this many consecutive rejected drops (>= 1).
        reevaluate: Re-evaluate the chosen candidate with fresh randomness before accepting.
        choose: Return the ``best`` accepted set or the ``last`` accepted one.
        min_variables: Never go below this many variables (>= 1).
        seed: Base seed passed on to the evaluators (permutations, training seeds).
        groups: ``{name: [variables]}`` removed together (a variable in at most one group).

    Returns:
        The selected variables and the metric at every iteration.

    Raises:
        ConfigError: For an unknown mode/acceptance/choice, a missing evaluator, or bad numbers.
    """
    feats = tuple(str(f) for f in features)
    group_map = _check_groups(groups, feats)
    if not feats:
        raise ConfigError("variable selection needs at least one input variable")
    if len(set(feats)) != len(feats):
        raise ConfigError(f"duplicate input variables: {list(feats)}")
    if mode not in ("shuffle", "retrain", "hybrid", "custom"):
        raise ConfigError(f"varsel.mode must be shuffle, retrain, hybrid or custom, got {mode!r}")
    if acceptance not in ("improvement", "threshold", "degradation"):
        raise ConfigError(
            f"varsel.acceptance must be improvement, threshold or degradation, got {acceptance!r}"
        )
    if choose not in ("best", "last"):
        raise ConfigError(f"varsel.choose must be 'best' or 'last', got {choose!r}")
    if direction not in ("minimize", "maximize"):
        raise ConfigError(f"direction must be 'minimize' or 'maximize', got {direction!r}")
    if patience < 1:
        raise ConfigError(f"varsel.patience must be >= 1, got {patience}")
    if not max_rel_change >= 0:
        raise ConfigError(f"varsel.max_rel_change must be >= 0, got {max_rel_change}")
    if not 1 <= min_variables <= len(feats):
        raise ConfigError(f"varsel.min_variables must be in [1, {len(feats)}], got {min_variables}")

    phases: list[SetEvaluator] = []
    if mode == "custom":
        if custom is None or not callable(custom):
            raise ConfigError("varsel.mode='custom' needs a callable `custom(variables) -> metric`")
        user = custom

        class _Custom:
            name = "custom"

            def __call__(self, variables: tuple[str, ...], repeat_seed: int) -> Any:
                return user(variables)  # a number, or one value per fold

        phases = [_Custom()]
    else:
        needed = {"shuffle": ["shuffle"], "retrain": ["retrain"], "hybrid": ["shuffle", "retrain"]}
        evaluators = {"shuffle": shuffle, "retrain": retrain}
        for key in needed[mode]:
            ev = evaluators[key]
            if ev is None:
                raise ConfigError(f"varsel.mode={mode!r} needs a {key} evaluator")
            phases.append(ev)

    baseline, base_err = _measure(phases[0], feats, seed)
    history = [VarSelIteration(0, phases[0].name, None, feats, baseline, True, metric_err=base_err)]
    state = _State(feats, baseline, baseline, feats, baseline, feats, base_err)
    kwargs: dict[str, Any] = {
        "direction": direction,
        "acceptance": acceptance,
        "max_rel_change": max_rel_change,
        "patience": patience,
        "reevaluate": reevaluate,
        "min_variables": min_variables,
        "seed": seed,
        "groups": group_map,
    }
    _eliminate(phases[0], state, history, **kwargs)
    if len(phases) == 2:
        # hybrid: revert to the best set of the shuffle phase, continue by retraining
        start = state.best_set
        value, err = _measure(phases[1], start, seed)
        history.append(
            VarSelIteration(len(history), phases[1].name, None, start, value, True, metric_err=err)
        )
        state.variables = start
        state.best_metric, state.best_set, state.best_err = value, start, err
        state.last_metric, state.last_set = value, start
        _eliminate(phases[1], state, history, **kwargs)

    chosen, metric = (
        (state.best_set, state.best_metric)
        if choose == "best"
        else (state.last_set, state.last_metric)
    )
    order = {f: i for i, f in enumerate(feats)}
    selected = tuple(sorted(chosen, key=order.__getitem__))
    removed = [v for it in history for v in it.dropped_variables if v not in chosen]
    # a variable can only be dropped once per phase; keep the first removal order
    dropped = tuple(dict.fromkeys(removed))
    return VariableSelectionResult(
        selected=selected,
        dropped=dropped,
        metric=metric,
        baseline=baseline,
        metric_name=metric_name,
        direction=direction,
        history=tuple(history),
    )


def _check_groups(
    groups: Mapping[str, Sequence[str]] | None, feats: tuple[str, ...]
) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    seen: set[str] = set()
    for name, members in (groups or {}).items():
        ms = tuple(str(m) for m in ([members] if isinstance(members, str) else members))
        unknown = [m for m in ms if m not in feats]
        if unknown or not ms:
            raise ConfigError(f"varsel group {name!r}: unknown or no variables {unknown or ms}")
        if seen & set(ms):
            raise ConfigError(f"varsel group {name!r}: {sorted(seen & set(ms))} in two groups")
        if str(name) in feats and (str(name),) != ms:
            raise ConfigError(f"varsel group name {name!r} is also a variable name")
        seen |= set(ms)
        out[str(name)] = ms
    return out


def permutation_metric(
    predict: Callable[[np.ndarray], np.ndarray],
    X: np.ndarray,
    columns: Sequence[int],
    score: Callable[[np.ndarray], float],
    rng: np.random.Generator,
    num_repeats: int,
) -> float:
    """Mean metric of ``predict`` with ``columns`` of ``X`` permuted across events.

    Args:
        predict: Model prediction on (already scaled) inputs.
        X: Inputs, ``(n, d)``.
        columns: Column indices to permute (each independently).
        score: Predictions -> metric.
        rng: Source of the permutations.
        num_repeats: Permutations averaged (1 if no column is permuted).

    Returns:
        The averaged metric.
    """
    if not columns:
        return float(score(predict(X)))
    values = []
    for _ in range(max(1, num_repeats)):
        Xp = np.array(X, dtype=float, copy=True)
        for c in columns:
            Xp[:, c] = Xp[rng.permutation(Xp.shape[0]), c]
        values.append(float(score(predict(Xp))))
    return float(np.mean(values))


class _ShuffleEvaluator:
    """Permutation importance on cross-validated models (trained with all variables)."""

    name = "shuffle"

    def __init__(
        self,
        folds: Sequence[Any],
        features: tuple[str, ...],
        candidates: tuple[str, ...],
        metric: Any,
        num_repeats: int,
    ) -> None:
        from sigtune.pipelines.ml._metrics import compute_metric

        self._folds = [(f.model, f.split.val, np.asarray(f.split.val.w, float)) for f in folds]
        self._features = features
        self._candidates = set(candidates)
        self._metric = metric
        self._compute = compute_metric
        self._repeats = max(1, int(num_repeats))

    def __call__(self, variables: tuple[str, ...], repeat_seed: int) -> np.ndarray:
        rng = np.random.default_rng(repeat_seed)
        kept = set(variables)
        columns = [
            i for i, f in enumerate(self._features) if f in self._candidates and f not in kept
        ]
        values = []
        for model, val, w in self._folds:
            X = val.X if val.features == self._features else val.select_features(self._features).X

            def score(p: np.ndarray, _val: Any = val, _w: np.ndarray = w) -> float:
                return float(self._compute(self._metric, _val.y, p, _w, X=_val.X))

            values.append(permutation_metric(model.predict, X, columns, score, rng, self._repeats))
        return np.asarray(values)  # one value per fold


class _RetrainEvaluator:
    """Retrain on every fold with only the given variables."""

    name = "retrain"

    def __init__(
        self,
        factory: Callable[..., Any],
        params: Mapping[str, Any],
        splits: Sequence[Any],
        metric: Any,
        num_repeats: int,
    ) -> None:
        from sigtune.pipelines.ml._metrics import compute_metric

        self._factory = factory
        self._params = dict(params)
        self._splits = list(splits)
        self._metric = metric
        self._compute = compute_metric
        self._weights = _physics_weights
        self._repeats = max(1, int(num_repeats))

    def __call__(self, variables: tuple[str, ...], repeat_seed: int) -> np.ndarray:
        per_fold = []
        for i, split in enumerate(self._splits):
            train = split.train.select_features(list(variables))
            val = split.val.select_features(list(variables))
            w = self._weights(val)
            values = []
            for r in range(self._repeats):
                model = self._factory(seed=(repeat_seed + 7919 * r + 104729 * i) % (2**31))
                model.fit(train, val, self._params)
                p = model.predict(val.X)
                values.append(float(self._compute(self._metric, val.y, p, w, X=val.X)))
            per_fold.append(float(np.mean(values)))
        return np.asarray(per_fold)  # one value per fold


def select_variables(
    data: Any = None,
    *,
    trainable: Any = None,
    params: Mapping[str, Any] | None = None,
    mode: Mode = "shuffle",
    metric: Any = "balanced_loss",
    direction: Direction | None = None,
    features: Sequence[str] | None = None,
    k: int = 3,
    by: Literal["random", "event_number"] = "random",
    folds: Sequence[Any] | None = None,
    cv: Any = None,
    custom: Callable[[tuple[str, ...]], float] | None = None,
    num_repeats: int = 1,
    acceptance: Acceptance = "threshold",
    max_rel_change: float = 0.01,
    patience: int = 2,
    reevaluate: bool = True,
    choose: Literal["best", "last"] = "last",
    min_variables: int = 1,
    seed: int = 0,
    groups: Mapping[str, Sequence[str]] | None = None,
    final_retrain: bool = False,
) -> VariableSelectionResult:
    """Select input variables by backward elimination (see the module docs for the modes).

    Args:
        data: The events (train + validation pool; keep the test set out). Not needed for
            ``custom``, nor for ``shuffle`` when ``cv`` is given.
        trainable: :class:`~sigtune.pipelines.ml.TrainableSpec`, ``{"kind": ..., **options}``
            or a factory; needed for ``retrain``/``hybrid`` and for ``shuffle`` without ``cv``.
        params: Hyperparameters of the model (e.g. the pre-search's best trial).
        mode: ``shuffle``, ``retrain``, ``hybrid`` or ``custom``.
        metric: Metric name or callable, computed on the validation events of every fold with
            the event weights (``balanced_loss``, the default, equals the trainables'
            ``val_loss``).
        direction: Defaults to the metric's own direction.
        features: Candidate variables (default: all of ``data``'s / ``cv``'s features).
        k: Number of folds (validation folds, no test set) when neither ``folds`` nor ``cv``
            is given.
        by: Fold assignment ``"random"`` or ``"event_number"``.
        folds: Precomputed :class:`~sigtune.pipelines.ml.Splits`.
        cv: A :class:`~sigtune.pipelines.ml.CVResult` whose models (trained with all variables)
            are used by ``shuffle``; its folds are reused by ``retrain``.
        custom: For ``mode="custom"``: ``fn(variables) -> metric``.
        num_repeats: Permutations (``shuffle``) or trainings (``retrain``) averaged per estimate.
        acceptance: ``improvement``, ``threshold`` or ``degradation``.
        max_rel_change: Allowed relative worsening for ``threshold`` / ``degradation``.
        patience: Stop after this many consecutive rejected drops.
        reevaluate: Re-evaluate the chosen candidate with fresh randomness before accepting.
        choose: Return the ``best`` or the ``last`` accepted set.
        min_variables: Lower bound on the number of variables kept.
        seed: Seed of splits, permutations and trainings.
        groups: ``{name: [variables]}`` removed together.
        final_retrain: Evaluate the chosen set once more by retraining on every fold
            (``result.final``); needs a trainable.

    Returns:
        The selected variables and the metric at every iteration.

    Raises:
        ConfigError: If what the mode needs is missing, or for bad settings.
    """
    from sigtune.pipelines.ml._cv import as_factory, cross_validate
    from sigtune.pipelines.ml._metrics import get_metric, metric_direction

    if mode not in ("shuffle", "retrain", "hybrid", "custom"):
        raise ConfigError(f"varsel.mode must be shuffle, retrain, hybrid or custom, got {mode!r}")
    if direction is None:
        direction = (
            metric_direction(metric) if isinstance(metric, str) else get_metric(metric).direction
        )
    name = metric if isinstance(metric, str) else get_metric(metric).name
    if features is None:
        if data is not None:
            features = data.features
        elif cv is not None:
            features = cv.features
        else:
            raise ConfigError("select_variables needs `features` (or data / cv to take them from)")
    feats = tuple(features)
    shuffle_ev: SetEvaluator | None = None
    retrain_ev: SetEvaluator | None = None
    if mode != "custom":
        if folds is None and cv is not None:
            folds = [f.split for f in cv.folds]
        if folds is None:
            if data is None:
                raise ConfigError(f"varsel.mode={mode!r} needs data (or folds / cv)")
            from sigtune.pipelines.ml._splits import kfold_splits

            folds = kfold_splits(
                data.select_features(list(feats)), k=k, test="none", seed=seed, by=by
            )
        if mode in ("retrain", "hybrid") and trainable is None:
            raise ConfigError(f"varsel.mode={mode!r} needs a trainable to retrain")
        factory = None if trainable is None else as_factory(trainable)
        if mode in ("shuffle", "hybrid"):
            if cv is None:
                if factory is None:
                    raise ConfigError(
                        "varsel.mode='shuffle' needs cross-validated models (cv) or a trainable"
                    )
                cv = cross_validate(
                    data,
                    dict(params or {}),
                    trainable=factory,
                    folds=folds,
                    metrics=(metric,),
                    seed=seed,
                )
            missing = [f for f in feats if f not in cv.features]
            if missing:
                raise ConfigError(
                    f"variables {missing} are not inputs of the cross-validated models"
                )
            shuffle_ev = _ShuffleEvaluator(cv.folds, tuple(cv.features), feats, metric, num_repeats)
        if mode in ("retrain", "hybrid") or (final_retrain and factory is not None):
            assert factory is not None
            retrain_ev = _RetrainEvaluator(factory, params or {}, folds, metric, num_repeats)
    if final_retrain and retrain_ev is None:
        raise ConfigError("varsel final_retrain needs a trainable and data (not mode 'custom')")
    result = backward_elimination(
        feats,
        mode=mode,
        shuffle=shuffle_ev,
        retrain=retrain_ev if mode in ("retrain", "hybrid") else None,
        custom=custom,
        metric_name=str(name),
        direction=direction,
        acceptance=acceptance,
        max_rel_change=max_rel_change,
        patience=patience,
        reevaluate=reevaluate,
        choose=choose,
        min_variables=min_variables,
        seed=seed,
        groups=groups,
    )
    if final_retrain and retrain_ev is not None:
        value, err = _measure(retrain_ev, result.selected, seed + 999_983)
        log.info("variable selection: final set retrained: %.6g +- %.2g", value, err)
        result = replace(result, final={"metric": value, "metric_err": err})
    return result


def _physics_weights(data: Any) -> np.ndarray:
    """Event weights metrics are computed with (``balanced_loss`` balances the classes itself)."""
    return np.asarray(data.w, dtype=float)

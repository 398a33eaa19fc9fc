"""HTML report of a study.

The report has a run summary, the best trial (the Pareto front for several objectives), the
trials table (with failure reasons and tracebacks) and every plot :mod:`optuna.visualization`
offers for the study's kind: history, importances (fANOVA and PED-ANOVA), parallel coordinates,
contour and slice of the most important parameters, EDF, intermediate values (pruned or ML
studies), timeline, Pareto front and hypervolume history (several objectives) and constraint
feasibility. Plots are interactive plotly when plotly is installed, else PNG images from
:mod:`optuna.visualization.matplotlib`, else the report has tables only.

Pages: ``report.html``, plus ``ml.html`` for studies with learning curves and ``physics.html``
when the run directory holds a binning study's ``best_workspace.json``. The pages of a report
directory share one ``plotly.min.js``; ``offline=True`` writes one self-contained file instead
(plotly.js inlined, every page a section of it). Plotting libraries are imported only when a
report is written.
"""

from __future__ import annotations

import html
import importlib.util
import json
import logging
import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import optuna
from optuna.trial import FrozenTrial, TrialState

from sigtune import _best as best_rules
from sigtune._exceptions import ConfigError
from sigtune.reports._render import (
    PLOTLY_JS,
    figure_html,
    plotly_fragment,
    png_img,
    write_page,
    write_plotly_js,
)

__all__ = ["write_report"]

log = logging.getLogger(__name__)

Backend = Literal["auto", "plotly", "matplotlib", "none"]
_MAX_ROWS = 5000
_PLOTS = ("history", "importances", "parallel", "pareto")


def write_report(
    study: Any,
    path: str | Path,
    *,
    backend: Backend = "auto",
    title: str | None = None,
    offline: bool = False,
    run_dir: str | Path | None = None,
) -> Path:
    """Write the HTML report of ``study``.

    Args:
        study: A :class:`sigtune.Study` or an :class:`optuna.Study`.
        path: Output file (``.html``); a directory gets ``report.html`` inside it. Parent
            directories are created.
        backend: ``auto`` (plotly, else matplotlib, else none), or force one; ``none`` writes
            tables only.
        title: Page title (default: ``sigtune report: <study name>``).
        offline: One self-contained file (plotly.js inlined once, physics and ML pages as
            sections). Default: the pages of the directory share one ``plotly.min.js``.
        run_dir: The run's directory: a binning study's ``best_workspace.json`` there gets a
            physics page, ML evaluation outputs (``roc.json``, ``cv.json``) an ML page.

    Returns:
        The path of the main page.

    Raises:
        ConfigError: If ``study`` is not a study, or a forced backend is not installed.
    """
    ostudy: optuna.Study = getattr(study, "optuna", study)
    if not isinstance(ostudy, optuna.Study):
        raise ConfigError(
            f"write_report needs a sigtune.Study or optuna.Study, got {type(study).__name__}"
        )
    chosen = _choose_backend(backend)
    out = Path(path)
    if out.is_dir() or (not out.suffix and not out.exists()):
        out = out / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)

    trials = list(ostudy.get_trials(deepcopy=False))
    directions = [d.name.lower() for d in ostudy.directions]
    params_of: Callable[[FrozenTrial], dict[str, Any]] = getattr(
        study, "params_of", lambda t: dict(t.params)
    )
    name = ostudy.study_name
    page_title = title or f"sigtune report: {name}"

    main_sections = [
        _summary(ostudy, trials, directions, chosen),
        _best(study, ostudy, trials, directions, params_of),
        _plots(ostudy, trials, directions, chosen),
        _auto_sampler(trials),
        _trials_table(trials, directions, params_of),
        _failures(trials),
    ]
    extra: list[tuple[str, str, list[str]]] = []  # (file name, title, sections)
    from sigtune.reports._pages import ml_sections, physics_sections_for_run

    ml = ml_sections(ostudy, trials, chosen, Path(run_dir) if run_dir is not None else None)
    if ml:
        extra.append(("ml.html", f"ML: {name}", ml))
    if run_dir is not None:
        phys = physics_sections_for_run(ostudy, trials, Path(run_dir))
        if phys:
            extra.append(("physics.html", f"Physics: {name}", phys))

    uses_plotly = chosen == "plotly"
    if offline:
        body = list(main_sections)
        for _file, page_title_extra, sections in extra:
            body.append(f"<h1>{html.escape(page_title_extra)}</h1>")
            body.extend(sections)
        write_page(out, page_title, body, plotly_js="inline" if uses_plotly else None)
        return out
    nav = [("report.html" if out.name == "report.html" else out.name, "Study")] + [
        (f, t.split(":")[0]) for f, t, _ in extra
    ]
    js = None
    if uses_plotly:
        write_plotly_js(out.parent / PLOTLY_JS)
        js = PLOTLY_JS
    write_page(out, page_title, main_sections, plotly_js=js, nav=nav)
    for file, page_title_extra, sections in extra:
        write_page(out.parent / file, page_title_extra, sections, plotly_js=js, nav=nav)
    return out


def _choose_backend(backend: str) -> str:
    has_plotly = importlib.util.find_spec("plotly") is not None
    has_mpl = importlib.util.find_spec("matplotlib") is not None
    if backend == "auto":
        return "plotly" if has_plotly else "matplotlib" if has_mpl else "none"
    if backend == "plotly" and not has_plotly:
        raise ConfigError("report backend 'plotly' needs plotly: pip install 'sigtune[report]'")
    if backend == "matplotlib" and not has_mpl:
        raise ConfigError(
            "report backend 'matplotlib' needs matplotlib: pip install 'sigtune[report]'"
        )
    if backend not in ("plotly", "matplotlib", "none"):
        raise ConfigError(
            f"report backend must be auto, plotly, matplotlib or none, got {backend!r}"
        )
    return backend


# ---------------------------------------------------------------------- sections


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.6g}"
    if isinstance(value, list | tuple):
        return ", ".join(_fmt(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, default=str, sort_keys=True)
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], css: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "\n".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    cls = f' class="{css}"' if css else ""
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>"


def _summary(
    ostudy: optuna.Study, trials: Sequence[FrozenTrial], directions: list[str], backend: str
) -> str:
    counts = {s.name: 0 for s in TrialState}
    for t in trials:
        counts[t.state.name] += 1
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    ends = [t.datetime_complete for t in trials if t.datetime_complete is not None]
    wall = (max(ends) - min(starts)).total_seconds() if starts and ends else None
    rows: list[tuple[str, Any]] = [
        ("study", ostudy.study_name),
        ("directions", ", ".join(directions)),
        ("trials", len(trials)),
        *((state.lower(), n) for state, n in counts.items() if n),
        (
            "first trial started",
            min(starts).isoformat(sep=" ", timespec="seconds") if starts else None,
        ),
        ("wall time [s]", round(wall, 3) if wall is not None else None),
        ("sampler", _sampler_label(getattr(ostudy, "sampler", None))),
        ("plots", backend),
    ]
    return (
        "<section id='summary'><h2>Run summary</h2>" + _table(["", ""], rows, "kv") + "</section>"
    )


def _sampler_label(sampler: Any) -> str:
    label = type(sampler).__name__
    choice = getattr(sampler, "choice", None)  # sigtune's AutoSampler
    if choice is not None:
        label += f" -> {choice.name} ({choice.reason})"
    return label


def _best_trials(study: Any, ostudy: optuna.Study, multi: bool) -> list[FrozenTrial]:
    """The Pareto front, or ``[best trial]``: the study wrapper's if it has one (a
    :class:`sigtune.Study`), else sigtune's one definition (:mod:`sigtune._best`)."""
    if study is not ostudy:
        try:
            if multi:
                return list(study.best_trials)
            return [study.best_trial]
        except AttributeError:
            pass
        except Exception:  # no completed trial
            return []
    trials = ostudy.get_trials(deepcopy=False)
    if multi:
        return best_rules.best_trials(trials, ostudy.directions)
    best = best_rules.best_trial(trials, ostudy.directions)
    return [] if best is None else [best]


def _best(
    study: Any,
    ostudy: optuna.Study,
    trials: Sequence[FrozenTrial],
    directions: list[str],
    params_of: Callable[[FrozenTrial], dict[str, Any]],
) -> str:
    multi = len(directions) > 1
    best = _best_trials(study, ostudy, multi)
    heading = "Pareto front" if multi else "Best trial"
    if not best:
        return (
            f"<section id='best'><h2>{heading}</h2><p class='warn'>No trial completed: see "
            f"the failure reasons in the trials table.</p></section>"
        )
    if not multi:
        t = best[0]
        rows: list[tuple[str, Any]] = [
            ("trial", t.number),
            ("value", t.values[0] if t.values else None),
            *((f"param: {k}", v) for k, v in params_of(t).items()),
            *((f"attr: {k}", v) for k, v in sorted(t.user_attrs.items())),
        ]
        return (
            f"<section id='best'><h2>{heading}</h2>" + _table(["", ""], rows, "kv") + "</section>"
        )
    names = sorted({k for t in best for k in params_of(t)})
    header = ["trial", *(f"value {i} ({d})" for i, d in enumerate(directions)), *names]
    rows2 = [
        [t.number, *(t.values or [None] * len(directions)), *(params_of(t).get(k) for k in names)]
        for t in best
    ]
    return (
        f"<section id='best'><h2>{heading} ({len(best)} trials)</h2>"
        + _table(header, rows2)
        + "</section>"
    )


_AUTO_SAMPLER = "auto:sampler"  # trial user attrs written by the ``auto`` sampler
_AUTO_REASON = "auto:reason"
_NOT_IN_ATTRS = ("fail_reason", _AUTO_SAMPLER, _AUTO_REASON)


def _auto_sampler(trials: Sequence[FrozenTrial]) -> str:
    """Which sampler ``auto`` used for which trials, and why (empty without ``auto``)."""
    stages: dict[tuple[str, str], list[int]] = {}
    for t in trials:
        if _AUTO_SAMPLER in t.user_attrs:
            key = (str(t.user_attrs[_AUTO_SAMPLER]), str(t.user_attrs.get(_AUTO_REASON, "")))
            stages.setdefault(key, []).append(t.number)
    if not stages:
        return ""
    rows = [
        (name, reason, len(numbers), f"{min(numbers)}-{max(numbers)}")
        for (name, reason), numbers in sorted(stages.items(), key=lambda kv: min(kv[1]))
    ]
    return (
        "<section id='auto-sampler'><h2>Sampler chosen by auto</h2>"
        + _table(["sampler", "reason", "trials", "trial numbers"], rows)
        + "</section>"
    )


def _trials_table(
    trials: Sequence[FrozenTrial],
    directions: list[str],
    params_of: Callable[[FrozenTrial], dict[str, Any]],
) -> str:
    shown = trials[:_MAX_ROWS]
    all_params: list[dict[str, Any]] = []
    for t in shown:
        try:
            all_params.append(params_of(t))
        except Exception:
            all_params.append(dict(t.params))
    names = sorted({k for p in all_params for k in p})
    value_cols = (
        ["value"] if len(directions) == 1 else [f"value {i}" for i in range(len(directions))]
    )
    constraints = [_constraint_values(t) for t in shown]
    has_constraints = any(c is not None for c in constraints)
    feasible_col = ["feasible"] if has_constraints else []
    has_auto = any(_AUTO_SAMPLER in t.user_attrs for t in shown)
    header = [
        "#",
        "state",
        *value_cols,
        *feasible_col,
        *(["sampler"] if has_auto else []),
        "duration [s]",
        *names,
        "failure reason",
        "user attrs",
    ]
    rows = []
    for t, params, cons in zip(shown, all_params, constraints, strict=True):
        values = list(t.values) if t.values else [None] * len(value_cols)
        feasible = [None if cons is None else all(c <= 0 for c in cons)] if has_constraints else []
        duration = t.duration.total_seconds() if t.duration is not None else None
        attrs = {k: v for k, v in t.user_attrs.items() if k not in _NOT_IN_ATTRS}
        rows.append(
            [
                t.number,
                t.state.name,
                *values,
                *feasible,
                *([t.user_attrs.get(_AUTO_SAMPLER, "")] if has_auto else []),
                duration,
                *(params.get(k) for k in names),
                t.user_attrs.get("fail_reason", ""),
                attrs or None,
            ]
        )
    note = (
        f"<p>Showing the first {_MAX_ROWS} of {len(trials)} trials.</p>"
        if len(trials) > _MAX_ROWS
        else ""
    )
    return (
        "<section id='trials'><h2>Trials</h2>"
        + note
        + _table(header, rows, "trials")
        + "</section>"
    )


def _constraint_values(trial: FrozenTrial) -> list[float] | None:
    """Constraint values (<= 0 feasible) stored by sigtune (user attr) or Optuna (system attr)."""
    for attrs in (trial.user_attrs, trial.system_attrs):
        values = attrs.get("constraints")
        if isinstance(values, list | tuple):
            try:
                return [float(v) for v in values]
            except (TypeError, ValueError):
                return None
    named = [v for k, v in trial.system_attrs.items() if k.startswith("constraints:")]
    if named:
        return [float(v) for v in named]
    return None


# ---------------------------------------------------------------------- failures


def _failures(trials: Sequence[FrozenTrial]) -> str:
    """Every failed trial's reason and stored traceback (collapsed)."""
    from sigtune._storage import FAIL_REASON_KEY, FAIL_TRACEBACK_KEY

    failed = [t for t in trials if t.state == TrialState.FAIL][:_MAX_ROWS]
    if not failed:
        return ""
    parts = []
    for t in failed:
        reason = t.user_attrs.get(FAIL_REASON_KEY) or "(no reason stored)"
        tb = t.system_attrs.get(FAIL_TRACEBACK_KEY)
        body = f"<pre>{html.escape(str(tb))}</pre>" if tb else "<p>No traceback stored.</p>"
        parts.append(
            f"<details class='failure' data-trial='{t.number}'><summary>trial {t.number}: "
            f"{html.escape(str(reason))}</summary>{body}</details>"
        )
    return (
        f"<section id='failures'><h2>Failed trials ({len(failed)})</h2>"
        + "\n".join(parts)
        + "</section>"
    )


# ---------------------------------------------------------------------- plots

PlotSpec = tuple[str, str, str, dict[str, Any]]  # (kind, caption, optuna function, kwargs)


def _plot_specs(
    ostudy: optuna.Study, trials: Sequence[FrozenTrial], directions: list[str]
) -> list[PlotSpec]:
    """(kind, caption, function, keyword arguments) for every plot that makes sense."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        return []
    has_params = any(t.params for t in complete)
    multi = len(directions) > 1
    with_intermediate = any(t.intermediate_values for t in trials)
    has_constraints = any(_constraint_values(t) is not None for t in complete)
    specs: list[PlotSpec] = []
    targets: list[tuple[str, dict[str, Any]]]
    if multi:
        if len(directions) in (2, 3):
            kw: dict[str, Any] = {}
            if has_constraints:
                kw["constraints_func"] = _constraints_or_zero
            specs.append(("pareto", "Pareto front", "plot_pareto_front", kw))
        ref = _reference_point(complete, directions)
        if ref is not None:
            specs.append(
                (
                    "hypervolume",
                    "Hypervolume history",
                    "plot_hypervolume_history",
                    {"reference_point": ref},
                )
            )
        targets = [
            (
                f"objective {i} ({d})",
                {"target": _objective_target(i), "target_name": f"objective {i} ({d})"},
            )
            for i, d in enumerate(directions)
        ]
    else:
        targets = [("", {})]
    top = _top_params(ostudy, complete) if has_params else []
    for label, tkw in targets:
        suffix = f": {label}" if label else ""
        specs.append(("history", f"Optimization history{suffix}", "plot_optimization_history", tkw))
        if has_params and len(complete) >= 2:
            specs.append(
                (
                    "importances",
                    f"Parameter importances (fANOVA){suffix}",
                    "plot_param_importances",
                    dict(tkw),
                )
            )
            specs.append(
                (
                    "importances-ped",
                    f"Parameter importances (PED-ANOVA){suffix}",
                    "plot_param_importances",
                    {**tkw, "evaluator": "ped"},
                )
            )
        if has_params:
            specs.append(
                ("parallel", f"Parallel coordinates{suffix}", "plot_parallel_coordinate", tkw)
            )
        if len(top) >= 2 and len(complete) >= 2:
            specs.append(
                (
                    "contour",
                    f"Contour of {top[0]} and {top[1]}{suffix}",
                    "plot_contour",
                    {**tkw, "params": top[:2]},
                )
            )
        if top:
            specs.append(
                (
                    "slice",
                    f"Slice of {', '.join(top[:4])}{suffix}",
                    "plot_slice",
                    {**tkw, "params": top[:4]},
                )
            )
        specs.append(("edf", f"Empirical distribution function{suffix}", "plot_edf", tkw))
    if with_intermediate and not multi:
        specs.append(
            (
                "intermediate",
                "Intermediate values (learning curves)",
                "plot_intermediate_values",
                {},
            )
        )
    specs.append(("timeline", "Timeline", "plot_timeline", {}))
    if has_constraints and not multi:
        specs.append(("feasibility", "Constraint feasibility", "_feasibility", {}))
    return specs


def _constraints_or_zero(trial: FrozenTrial) -> Sequence[float]:
    values = _constraint_values(trial)
    return values if values is not None else [0.0]


def _reference_point(complete: Sequence[FrozenTrial], directions: list[str]) -> list[float] | None:
    """A hypervolume reference point just worse than every completed trial."""
    import numpy as np

    values = np.array([t.values for t in complete if t.values], dtype=float)
    if values.size == 0 or not np.all(np.isfinite(values)):
        return None
    ref = []
    for i, d in enumerate(directions):
        col = values[:, i]
        span = float(col.max() - col.min()) or max(abs(float(col.max())), 1.0)
        ref.append(
            float(col.max() + 0.1 * span) if d == "minimize" else float(col.min() - 0.1 * span)
        )
    return ref


def _top_params(ostudy: optuna.Study, complete: Sequence[FrozenTrial]) -> list[str]:
    """Parameter names, the most important first (fANOVA; plain order if that fails)."""
    names = sorted({k for t in complete for k in t.params})
    if len(names) < 2 or len(complete) < 2:
        return names
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            target = None if len(ostudy.directions) == 1 else _objective_target(0)
            ranked = optuna.importance.get_param_importances(ostudy, target=target)
        return list(ranked) + [n for n in names if n not in ranked]
    except Exception:
        return names


def _objective_target(index: int) -> Callable[[FrozenTrial], float]:
    return lambda t: float(t.values[index])


def _plots(
    ostudy: optuna.Study, trials: Sequence[FrozenTrial], directions: list[str], backend: str
) -> str:
    if backend == "none":
        return (
            "<section id='plots'><h2>Plots</h2><p>Plots need plotly or matplotlib "
            "(pip install 'sigtune[report]').</p></section>"
        )
    specs = _plot_specs(ostudy, trials, directions)
    if not specs:
        return "<section id='plots'><h2>Plots</h2><p>No completed trial to plot.</p></section>"
    parts: list[str] = []
    for kind, caption, function, kwargs in specs:
        if function == "_feasibility" and backend != "plotly":
            continue  # the table's feasible column shows it
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if backend == "plotly":
                    fragment = plotly_fragment(_plotly_figure(ostudy, function, kwargs))
                else:
                    fragment = _matplotlib(ostudy, function, kwargs, caption)
        except Exception as exc:  # a plot that cannot be drawn must not lose the report
            log.info("report: %s not drawn: %s", caption, exc)
            fragment = f"<p class='warn'>Not drawn: {html.escape(str(exc))}</p>"
        parts.append(figure_html(kind, caption, fragment))
    return "<section id='plots'><h2>Plots</h2>" + "\n".join(parts) + "</section>"


def _ped_evaluator() -> Any:
    from optuna.importance import PedAnovaImportanceEvaluator

    return PedAnovaImportanceEvaluator()


def _plotly_figure(ostudy: optuna.Study, function: str, kwargs: dict[str, Any]) -> Any:
    from optuna import visualization as vis

    if function == "_feasibility":
        return _feasibility_figure(ostudy)
    if kwargs.get("evaluator") == "ped":
        kwargs = {**kwargs, "evaluator": _ped_evaluator()}
    return getattr(vis, function)(ostudy, **kwargs)


def _feasibility_figure(ostudy: optuna.Study) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    complete = [t for t in ostudy.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    for label, want, color in (("feasible", True, "#1f77b4"), ("infeasible", False, "#d62728")):
        rows = [
            t
            for t in complete
            if (_constraint_values(t) is not None)
            and (all(c <= 0 for c in _constraint_values(t) or []) == want)
        ]
        fig.add_trace(
            go.Scatter(
                x=[t.number for t in rows],
                y=[t.values[0] for t in rows],
                mode="markers",
                name=label,
                marker={"color": color},
            )
        )
    fig.update_layout(
        title="Constraint feasibility", xaxis_title="trial", yaxis_title="objective value"
    )
    return fig


def _matplotlib(ostudy: optuna.Study, function: str, kwargs: dict[str, Any], caption: str) -> str:
    from optuna.visualization import matplotlib as vis

    if function == "_feasibility":
        raise ValueError("the feasibility plot needs plotly")
    if kwargs.get("evaluator") == "ped":
        kwargs = {**kwargs, "evaluator": _ped_evaluator()}
    result = getattr(vis, function)(ostudy, **kwargs)
    if hasattr(result, "flat"):  # arrays of axes (contour, slice)
        result = result.flat[0]
    figure = result.figure if hasattr(result, "figure") else result
    return png_img(figure, caption)

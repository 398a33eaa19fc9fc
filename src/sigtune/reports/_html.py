"""Self-contained HTML report of a study.

The report has a run summary, the best trial (the Pareto front for several objectives), the
trials table (with failure reasons) and plots: optimization history, parameter importances and
parallel coordinates (plus the Pareto front for several objectives). Plots come from
:mod:`optuna.visualization` (interactive plotly, with plotly.js inlined) when plotly is
installed, else from :mod:`optuna.visualization.matplotlib` as embedded PNG images, else the
report has tables only. Plotting libraries are imported only when a report is written.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import importlib.util
import io
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
) -> Path:
    """Write a self-contained HTML report of ``study``.

    Args:
        study: A :class:`sigtune.Study` or an :class:`optuna.Study`.
        path: Output file (``.html``); a directory gets ``report.html`` inside it. Parent
            directories are created.
        backend: ``auto`` (plotly, else matplotlib, else none), or force one; ``none`` writes
            tables only.
        title: Page title (default: ``sigtune report: <study name>``).

    Returns:
        The path written.

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

    sections = [
        _summary(ostudy, trials, directions, chosen),
        _best(study, ostudy, trials, directions, params_of),
        _plots(ostudy, trials, directions, chosen),
        _trials_table(trials, directions, params_of),
    ]
    document = _PAGE.format(
        title=html.escape(page_title),
        heading=html.escape(page_title),
        body="\n".join(sections),
        generated=html.escape(_dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")),
        optuna_version=html.escape(optuna.__version__),
    )
    out.write_text(document, encoding="utf-8")
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
    header = [
        "#",
        "state",
        *value_cols,
        *feasible_col,
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
        attrs = {k: v for k, v in t.user_attrs.items() if k != "fail_reason"}
        rows.append(
            [
                t.number,
                t.state.name,
                *values,
                *feasible,
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


# ---------------------------------------------------------------------- plots


def _plot_specs(
    trials: Sequence[FrozenTrial], directions: list[str]
) -> list[tuple[str, str, dict[str, Any]]]:
    """(plot kind, caption, keyword arguments) for every plot that makes sense."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        return []
    has_params = any(t.params for t in complete)
    specs: list[tuple[str, str, dict[str, Any]]] = []
    if len(directions) == 1:
        specs.append(("history", "Optimization history", {}))
        if has_params and len(complete) >= 2:
            specs.append(("importances", "Parameter importances", {}))
        if has_params:
            specs.append(("parallel", "Parallel coordinates", {}))
        return specs
    if len(directions) in (2, 3):
        specs.append(("pareto", "Pareto front", {}))
    for i, direction in enumerate(directions):
        target: Callable[[FrozenTrial], float] = _objective_target(i)
        label = f"objective {i} ({direction})"
        kw = {"target": target, "target_name": label}
        specs.append(("history", f"Optimization history: {label}", kw))
        if has_params and len(complete) >= 2:
            specs.append(("importances", f"Parameter importances: {label}", kw))
        if has_params:
            specs.append(("parallel", f"Parallel coordinates: {label}", kw))
    return specs


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
    specs = _plot_specs(trials, directions)
    if not specs:
        return "<section id='plots'><h2>Plots</h2><p>No completed trial to plot.</p></section>"
    parts: list[str] = []
    first = True
    for kind, caption, kwargs in specs:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if backend == "plotly":
                    fragment = _plotly(ostudy, kind, kwargs, include_js=first)
                    first = False
                else:
                    fragment = _matplotlib(ostudy, kind, kwargs, caption)
        except Exception as exc:  # a plot that cannot be drawn must not lose the report
            log.info("report: %s not drawn: %s", caption, exc)
            fragment = f"<p class='warn'>Not drawn: {html.escape(str(exc))}</p>"
        parts.append(
            f"<figure class='plot' data-kind='{kind}'><figcaption>{html.escape(caption)}"
            f"</figcaption>{fragment}</figure>"
        )
    return "<section id='plots'><h2>Plots</h2>" + "\n".join(parts) + "</section>"


def _plotly(ostudy: optuna.Study, kind: str, kwargs: dict[str, Any], *, include_js: bool) -> str:
    from optuna import visualization as vis

    functions: dict[str, Callable[..., Any]] = {
        "history": vis.plot_optimization_history,
        "importances": vis.plot_param_importances,
        "parallel": vis.plot_parallel_coordinate,
        "pareto": vis.plot_pareto_front,
    }
    fig = functions[kind](ostudy, **kwargs)
    return str(fig.to_html(full_html=False, include_plotlyjs=bool(include_js)))


def _matplotlib(ostudy: optuna.Study, kind: str, kwargs: dict[str, Any], caption: str) -> str:
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as vis

    functions: dict[str, Callable[..., Any]] = {
        "history": vis.plot_optimization_history,
        "importances": vis.plot_param_importances,
        "parallel": vis.plot_parallel_coordinate,
        "pareto": vis.plot_pareto_front,
    }
    result = functions[kind](ostudy, **kwargs)
    figure = result.figure if hasattr(result, "figure") else result
    buffer = io.BytesIO()
    try:
        figure.set_size_inches(9, 5)
        figure.tight_layout()
        figure.savefig(buffer, format="png", dpi=90)
    finally:
        plt.close(figure)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"<img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'/>"


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }}
h1 {{ font-size: 1.6em; }} h2 {{ border-bottom: 1px solid #ddd; padding-bottom: .2em; }}
table {{ border-collapse: collapse; font-size: .9em; margin: .5em 0; }}
th, td {{ border: 1px solid #ddd; padding: .25em .6em; text-align: left; vertical-align: top; }}
th {{ background: #f4f4f4; position: sticky; top: 0; }}
table.kv thead {{ display: none; }}
table.trials {{ display: block; overflow: auto; max-height: 40em; }}
figure.plot {{ margin: 1em 0; }} figcaption {{ font-weight: 600; margin-bottom: .3em; }}
.warn {{ color: #a33; }} footer {{ color: #888; font-size: .8em; margin-top: 2em; }}
</style>
</head>
<body>
<h1>{heading}</h1>
{body}
<footer>Generated {generated} by sigtune with Optuna {optuna_version}.</footer>
</body>
</html>
"""

"""The extra pages of a report: ML (learning curves, ROC, cross-validation spread, the
variable-selection history of ``varsel/done.json``) and physics
(for binning and cut studies whose run directory holds ``best_workspace.json``)."""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

__all__ = ["learning_curves", "ml_sections", "physics_sections_for_run", "varsel_histories"]

log = logging.getLogger(__name__)

#: The user attr where ML trials keep their per-epoch metrics (see pipelines.ml).
HISTORY_ATTR = "history"
_MAX_FILES = 50


def learning_curves(trials: Sequence[FrozenTrial]) -> list[dict[str, Any]]:
    """One curve per trial with intermediate values: ``{number, state, steps, values}``."""
    curves = []
    for t in trials:
        if not t.intermediate_values:
            continue
        steps = sorted(t.intermediate_values)
        curves.append(
            {
                "number": t.number,
                "state": t.state.name,
                "steps": steps,
                "values": [float(t.intermediate_values[s]) for s in steps],
            }
        )
    return curves


def _curves_figure(curves: list[dict[str, Any]]) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    for c in curves:
        pruned = c["state"] == "PRUNED"
        fig.add_trace(
            go.Scatter(
                x=c["steps"],
                y=c["values"],
                mode="lines+markers" if pruned else "lines",
                name=f"trial {c['number']}{' (pruned)' if pruned else ''}",
                line={"dash": "dot" if pruned else "solid", "width": 1 if pruned else 2},
                marker={"symbol": "x", "size": 5} if pruned else None,
                meta={"state": c["state"]},
            )
        )
    fig.update_layout(
        title="Learning curves (dotted: pruned)", xaxis_title="epoch / step", yaxis_title="value"
    )
    return fig


def _history_metric_figure(trials: Sequence[FrozenTrial]) -> Any | None:
    """Every per-epoch metric stored by ML trials (one trace per trial and metric)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    n = 0
    for t in trials:
        hist = t.user_attrs.get(HISTORY_ATTR)
        if not isinstance(hist, dict):
            continue
        for metric, values in hist.items():
            if isinstance(values, list) and values:
                fig.add_trace(
                    go.Scatter(
                        y=values,
                        mode="lines",
                        name=f"trial {t.number}: {metric}",
                        legendgroup=str(metric),
                    )
                )
                n += 1
    if not n:
        return None
    fig.update_layout(title="Per-epoch metrics", xaxis_title="epoch", yaxis_title="metric")
    return fig


def _find(run_dir: Path | None, name: str) -> list[Path]:
    if run_dir is None or not run_dir.is_dir():
        return []
    return sorted(run_dir.rglob(name))[:_MAX_FILES]


def _roc_figure(files: list[Path], run_dir: Path) -> Any | None:
    import plotly.graph_objects as go

    fig = go.Figure()
    for f in files:
        try:
            payload = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        for name, roc in payload.items():
            fig.add_trace(
                go.Scatter(
                    x=roc["fpr"],
                    y=roc["tpr"],
                    mode="lines",
                    name=f"{f.parent.relative_to(run_dir)}: {name} (AUC {roc['auc']:.3f})",
                )
            )
    if not fig.data:
        return None
    fig.update_layout(
        title="ROC of the selected models",
        xaxis_title="false-positive rate",
        yaxis_title="true-positive rate",
    )
    return fig


def _cv_figure(files: list[Path], run_dir: Path) -> Any | None:
    import plotly.graph_objects as go

    fig = go.Figure()
    for f in files:
        try:
            doc = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        folds = doc.get("folds")
        if isinstance(folds, list) and folds:
            fig.add_trace(go.Box(y=folds, name=str(f.parent.relative_to(run_dir)), boxpoints="all"))
    if not fig.data:
        return None
    fig.update_layout(title="Cross-validation spread (per-fold values)", yaxis_title="value")
    return fig


#: Where the ML pipeline's ``varsel`` stage writes its result (``<run_dir>/varsel/done.json``).
VARSEL_DIR = "varsel"


def varsel_histories(run_dir: Path | None) -> list[tuple[Path, dict[str, Any]]]:
    """The variable-selection results (``varsel/done.json``) under ``run_dir``: each with a
    ``history`` list of iterations (``iteration``, ``dropped``, ``variables``, ``metric``,
    ``metric_err``, ``accepted``), ``selected``, ``metric_name`` and ``direction``."""
    out = []
    for f in _find(run_dir, "done.json"):
        if f.parent.name != VARSEL_DIR:
            continue
        try:
            doc = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(doc.get("history"), list) and doc["history"]:
            out.append((f, doc))
    return out


def _varsel_step(it: dict[str, Any]) -> str:
    dropped = it.get("dropped_variables") or ([it["dropped"]] if it.get("dropped") else [])
    return "all variables" if not dropped else "- " + ", ".join(map(str, dropped))


def _varsel_figure(doc: dict[str, Any]) -> Any:
    import plotly.graph_objects as go

    hist = doc["history"]
    x = [int(it["iteration"]) for it in hist]
    y = [float(it["metric"]) for it in hist]
    err = [float(it.get("metric_err") or 0.0) for it in hist]
    ok = [bool(it.get("accepted")) for it in hist]
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=x,
            y=y,
            error_y={"type": "data", "array": err, "visible": True},
            mode="lines+markers",
            name=str(doc.get("metric_name", "metric")),
            text=[f"{_varsel_step(it)} ({len(it['variables'])} variables)" for it in hist],
            marker={"symbol": ["circle" if a else "x" for a in ok], "size": 10},
        )
    )
    fig.update_layout(
        title=f"Variable selection: {doc.get('metric_name', 'metric')} ({doc.get('direction', '')})"
        f" per elimination step; selected {len(doc.get('selected', []))} variables",
        xaxis_title="iteration (x: step not accepted)",
        yaxis_title=str(doc.get("metric_name", "metric")),
    )
    return fig


def _varsel_table(doc: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{int(it['iteration'])}</td><td>{html.escape(_varsel_step(it))}</td>"
        f"<td>{len(it['variables'])}</td><td>{float(it['metric']):.6g}</td>"
        f"<td>{float(it.get('metric_err') or 0.0):.3g}</td>"
        f"<td>{'yes' if it.get('accepted') else 'no'}</td></tr>"
        for it in doc["history"]
    )
    selected = html.escape(", ".join(map(str, doc.get("selected", []))))
    return (
        f"<p>Selected: {selected}</p><table class='varsel'><thead><tr><th>iteration</th>"
        "<th>step</th><th>variables</th><th>metric</th><th>error</th><th>accepted</th></tr>"
        f"</thead><tbody>{rows}</tbody></table>"
    )


def ml_sections(
    ostudy: optuna.Study, trials: Sequence[FrozenTrial], backend: str, run_dir: Path | None
) -> list[str]:
    """Sections of the ML page, or ``[]`` when the study has no learning curves."""
    from sigtune.reports._render import figure_html, plotly_fragment

    curves = learning_curves(trials)
    has_history = any(isinstance(t.user_attrs.get(HISTORY_ATTR), dict) for t in trials)
    if not curves and not has_history:
        return []
    if backend != "plotly":
        return [
            "<section id='ml'><h2>ML</h2><p>The ML page needs plotly "
            "(pip install 'sigtune[report]').</p></section>"
        ]
    parts: list[str] = []
    n_pruned = sum(c["state"] == "PRUNED" for c in curves)
    if curves:
        parts.append(
            figure_html(
                "learning-curves",
                f"Learning curves of {len(curves)} trials ({n_pruned} pruned)",
                plotly_fragment(_curves_figure(curves)),
            )
        )
    figures = [
        ("metrics", "Per-epoch metrics", _history_metric_figure(trials)),
    ]
    if run_dir is not None:
        figures.append(("roc", "ROC curves", _roc_figure(_find(run_dir, "roc.json"), run_dir)))
        figures.append(
            ("cv", "Cross-validation spread", _cv_figure(_find(run_dir, "cv.json"), run_dir))
        )
        pngs = _find(run_dir, "*.png")
        for png in pngs:
            if "report" in png.parts:
                continue
            import base64

            data = base64.b64encode(png.read_bytes()).decode("ascii")
            rel = str(png.relative_to(run_dir))
            parts.append(
                figure_html(
                    "output",
                    rel,
                    f"<img alt='{html.escape(rel)}' src='data:image/png;base64,{data}'/>",
                )
            )
    for kind, caption, fig in figures:
        if fig is not None:
            parts.append(figure_html(kind, caption, plotly_fragment(fig)))
    for f, doc in varsel_histories(run_dir):
        rel = html.escape(str(f.relative_to(run_dir))) if run_dir is not None else ""
        parts.append(
            figure_html(
                "varsel",
                f"Variable-selection history ({rel})",
                plotly_fragment(_varsel_figure(doc)) + _varsel_table(doc),
            )
        )
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    rows = "".join(
        f"<tr><td>{t.number}</td><td>{t.user_attrs.get('epochs', '')}</td>"
        f"<td>{t.user_attrs.get('best_epoch', '')}</td><td>{t.values[0]:.6g}</td></tr>"
        for t in complete
        if t.values
    )
    table = (
        "<table><thead><tr><th>trial</th><th>epochs</th><th>best epoch</th><th>value</th></tr>"
        f"</thead><tbody>{rows}</tbody></table>"
    )
    return [
        "<section id='ml'><h2>Training</h2>" + "\n".join(parts) + "</section>",
        "<section id='ml-trials'><h2>Completed trials</h2>" + table + "</section>",
    ]


def physics_sections_for_run(
    ostudy: optuna.Study, trials: Sequence[FrozenTrial], run_dir: Path
) -> list[str]:
    """Physics sections for a run whose directory holds a ``best_workspace.json``."""
    found = _find(run_dir, "best_workspace.json")
    if not found:
        return []
    try:
        from sigtune.reports._physics import physics_sections_for_study

        return physics_sections_for_study(ostudy, found[0])
    except ImportError as exc:
        return [
            f"<section id='physics'><h2>Physics</h2><p class='warn'>Physics plots need "
            f"matplotlib and mplhep ({html.escape(str(exc))}): pip install "
            "'sigtune[report]'</p></section>"
        ]
    except Exception as exc:
        log.warning("physics page not drawn: %s: %s", type(exc).__name__, exc)
        return [
            f"<section id='physics'><h2>Physics</h2><p class='warn'>Not drawn: "
            f"{html.escape(type(exc).__name__)}: {html.escape(str(exc))}</p></section>"
        ]

"""Outputs of a binning study: best candidate, its pyhf workspace, a summary table, a plot.

:func:`write_outputs` writes into a run directory::

    best_workspace.json   the best candidate's workspace (pyhf JSON, usable in pyhf / cabinetry)
    summary.json          best parameters, edges, cuts, values, constraints, study counts
    summary.txt           the same as a readable table (also returned as ``BinningResult.summary``)
    fine_histograms.npz   the fine histograms the candidates merge (with cuts: at the loosest cuts)
    trials.csv            one row per trial (the columns and formats of ``sigtune export``)
    best_binning.png      stacked distributions in the chosen binning (matplotlib, if installed)
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from sigtune import _best
from sigtune._export import export_trials
from sigtune._figures import save_tight
from sigtune.pipelines.binning._exceptions import BinningError
from sigtune.pipelines.binning._histograms import Histograms
from sigtune.pipelines.binning._objective import FIGURES, BinningObjective, Candidate

__all__ = ["BinningResult", "best_trial", "plot_histograms", "write_outputs"]


def _feasible(trial: optuna.trial.FrozenTrial) -> bool:
    return _best.is_feasible(trial)


def best_trial(study: Any, directions: list[str]) -> optuna.trial.FrozenTrial:
    """The best COMPLETE trial, feasible first (:func:`sigtune._best.best_trial`).

    Args:
        study: A :class:`sigtune.Study` or an :class:`optuna.Study`.
        directions: The objective directions.

    Raises:
        BinningError: if the study has no complete trial.
    """
    ostudy = getattr(study, "optuna", study)
    best = _best.best_trial(ostudy.get_trials(deepcopy=False), directions)
    if best is None:
        raise BinningError("the study has no COMPLETE trial; check the failed trials' reasons.")
    return best


def _pareto(
    trials: list[optuna.trial.FrozenTrial], directions: list[str]
) -> list[optuna.trial.FrozenTrial]:
    """Non-dominated trials, by trial number (:func:`sigtune._best.best_trials`)."""
    return _best.best_trials(trials, directions)


@dataclass(frozen=True, eq=False)
class BinningResult:
    """What :func:`write_outputs` produced.

    Attributes:
        candidate: The best candidate (re-built from its parameters).
        trial_number: Its trial number.
        feasible: Whether it satisfies every constraint.
        n_trials: Trials in the study; ``n_complete`` / ``n_infeasible`` / ``n_failed`` counts.
        wall_time: Seconds from the first trial's start to the last trial's end.
        summary: Human-readable summary (also in ``summary.txt``).
        files: Paths written, by kind.
    """

    candidate: Candidate
    trial_number: int
    feasible: bool
    n_trials: int
    n_complete: int
    n_infeasible: int
    n_failed: int
    wall_time: float
    summary: str
    files: dict[str, Path]


def _wall_time(trials: list[optuna.trial.FrozenTrial]) -> float:
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    ends = [t.datetime_complete for t in trials if t.datetime_complete is not None]
    if not starts or not ends:
        return 0.0
    return max((max(ends) - min(starts)).total_seconds(), 0.0)


def _summary_text(objective: BinningObjective, res: dict[str, Any]) -> str:
    cand: Candidate = res["candidate"]
    names = [objective.figure, *objective.objectives[1:]]
    lines = [
        f"best {objective.figure} = {cand.values[0]:.4f}  (trial {res['trial']}, "
        f"{'feasible' if res['feasible'] else 'INFEASIBLE: no feasible trial'})",
    ]
    for n, v in zip(names[1:], cand.values[1:], strict=True):
        lines.append(f"  {n} = {v:.4g}")
    edges = ", ".join(f"{e:.4g}" for e in cand.edges)
    lines.append(
        f"best binning: {cand.hist.n_bins} bins on [{cand.edges[0]:.4g}, {cand.edges[-1]:.4g}]: "
        f"[{edges}]"
    )
    for desc in cand.cuts:
        lines.append(f"cut: {desc}")
    lines.append(
        f"trials: {res['n_trials']} ({res['n_complete']} complete, {res['n_infeasible']} "
        f"infeasible, {res['n_failed']} failed); wall time {res['wall']:.2f} s"
    )
    s, b = cand.hist.total("signal"), cand.hist.total("background")
    w2 = cand.hist.total_sumw2("background")
    rel = np.where(b > 0, np.sqrt(w2) / np.where(b > 0, b, 1.0), np.inf)
    lines.append("")
    lines.append(
        f"{'bin':>4} {'low':>9} {'high':>9} {'signal':>10} {'background':>11} {'bkg MC rel':>10}"
    )
    for i in range(cand.hist.n_bins):
        lines.append(
            f"{i:>4} {cand.edges[i]:>9.4g} {cand.edges[i + 1]:>9.4g} {s[i]:>10.4g} "
            f"{b[i]:>11.4g} {rel[i]:>10.3g}"
        )
    return "\n".join(lines)


def plot_histograms(hist: Histograms, path: Path, title: str = "") -> Path:
    """Save a plot of the stacked backgrounds with the signal on top in ``hist``'s binning.

    Raises:
        BinningError: if matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise BinningError("plots need matplotlib: pip install 'sigtune[report]'.") from exc
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    edges = hist.edges
    bottom = np.zeros(hist.n_bins)
    for name in hist.backgrounds:
        t = hist[name]
        ax.stairs(t.counts + bottom, edges, baseline=bottom, fill=True, label=name, alpha=0.85)
        bottom = bottom + t.counts
    err = np.sqrt(hist.total_sumw2("background"))
    ax.stairs(
        bottom + err,
        edges,
        baseline=bottom - err,
        fill=True,
        color="k",
        alpha=0.2,
        hatch="///",
        label="bkg MC stat.",
    )
    for name in hist.signal:  # on top of the background and its band
        t = hist[name]
        ax.stairs(t.counts + bottom, edges, baseline=bottom, fill=True, label=name)
        bottom = bottom + t.counts
    ax.set_xlabel("discriminant")
    ax.set_ylabel("events / bin")
    ax.set_title(title)
    ax.legend(frameon=False)
    save_tight(fig, path, dpi=110)
    plt.close(fig)
    return path


FINE_HISTOGRAMS = "fine_histograms.npz"


def write_fine_histograms(hist: Histograms, path: Path) -> Path:
    """Save the fine histograms a binning study merged (read by the report's physics page).

    A NumPy ``.npz`` without pickles: ``edges`` (fine edges), ``samples`` and ``signal``
    (names), ``counts`` and ``sumw2`` (one row per sample), and per variation
    ``variations`` (``"sample/systematic"`` names) with ``up`` and ``down`` rows.
    """
    names: list[str] = []
    up: list[Any] = []
    down: list[Any] = []
    for t in hist.templates:
        for sys, (u, d) in t.variations.items():
            names.append(f"{t.name}/{sys}")
            up.append(u)
            down.append(d)
    n = len(hist.edges) - 1
    np.savez(
        path,
        edges=np.asarray(hist.edges, dtype=np.float64),
        samples=np.array([t.name for t in hist.templates], dtype=str),
        signal=np.array(list(hist.signal), dtype=str),
        counts=np.array([t.counts for t in hist.templates], dtype=np.float64),
        sumw2=np.array([t.sumw2 for t in hist.templates], dtype=np.float64),
        variations=np.array(names, dtype=str),
        up=np.array(up, dtype=np.float64).reshape(len(up), n),
        down=np.array(down, dtype=np.float64).reshape(len(down), n),
    )
    return path


def write_outputs(
    objective: BinningObjective, study: Any, run_dir: str | Path, *, plot: bool = True
) -> BinningResult:
    """Re-build the best candidate and write the outputs listed in the module docstring.

    Args:
        objective: The objective the study ran.
        study: A :class:`sigtune.Study` or :class:`optuna.Study`.
        run_dir: Output directory (created if missing).
        plot: Write ``best_binning.png`` (needs matplotlib).

    Returns:
        A :class:`BinningResult`.
    """
    out = Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    ostudy = getattr(study, "optuna", study)
    trials = list(ostudy.trials)
    directions = objective.directions
    best = best_trial(ostudy, directions)
    cand = objective.replay(best.params)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    res = {
        "candidate": cand,
        "trial": best.number,
        "feasible": _feasible(best),
        "n_trials": len(trials),
        "n_complete": len(complete),
        "n_infeasible": sum(not _feasible(t) for t in complete),
        "n_failed": sum(t.state == optuna.trial.TrialState.FAIL for t in trials),
        "wall": _wall_time(trials),
    }
    summary = _summary_text(objective, res)
    files: dict[str, Path] = {}
    files["workspace"] = out / "best_workspace.json"
    files["workspace"].write_text(json.dumps(cand.workspace, indent=1))
    payload = {
        "figure": objective.figure,
        "direction": FIGURES[objective.figure],
        "objectives": list(objective.objectives),
        "values": [float(v) for v in cand.values],
        "trial": best.number,
        "feasible": res["feasible"],
        "params": best.params,
        "edges": [float(e) for e in cand.edges],
        "n_bins": cand.hist.n_bins,
        "cuts": cand.cuts,
        "constraints": list(cand.constraints),
        "n_trials": res["n_trials"],
        "n_complete": res["n_complete"],
        "n_infeasible": res["n_infeasible"],
        "n_failed": res["n_failed"],
        "wall_time_s": res["wall"],
    }
    if len(directions) > 1:  # Pareto front of the feasible complete trials
        payload["pareto_front"] = [
            {"trial": t.number, "values": list(t.values), "edges": t.user_attrs.get("edges")}
            for t in _pareto([t for t in complete if _feasible(t)], directions)
        ]
    files["summary_json"] = out / "summary.json"
    files["summary_json"].write_text(
        json.dumps(payload, indent=1, default=lambda v: None if not math.isfinite(v) else v)
    )
    files["summary_txt"] = out / "summary.txt"
    files["summary_txt"].write_text(summary + "\n")
    files["fine_histograms"] = write_fine_histograms(objective.fine, out / FINE_HISTOGRAMS)
    files["trials"] = out / "trials.csv"  # the columns and formats of ``sigtune export``
    export_trials(ostudy, "csv", files["trials"])
    if plot:
        files["plot"] = plot_histograms(
            cand.hist,
            out / "best_binning.png",
            title=f"best {objective.figure} = {cand.values[0]:.3f}",
        )
    return BinningResult(
        cand,
        best.number,
        bool(res["feasible"]),
        int(res["n_trials"]),
        int(res["n_complete"]),
        int(res["n_infeasible"]),
        int(res["n_failed"]),
        float(res["wall"]),
        summary,
        files,
    )

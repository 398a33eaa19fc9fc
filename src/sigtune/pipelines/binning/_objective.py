"""The binning / cut objective: one trial = one candidate binning (and cuts) -> figure(s) of merit.

Figures of merit (``figure=``):

- ``"z0_exp"`` — median expected discovery significance, :math:`\\sqrt{q_{0,A}}`, full profile
  likelihood (:func:`sigtune.hep.discovery`). With Asimov observations (the default: signal +
  background nominal) the unconditional maximum of the likelihood is known exactly (every
  Poisson and constraint term is saturated at the nominal parameters), so only the conditional
  fit at :math:`\\mu = 0` is run: :math:`q_0 = -2\\ln L(0, \\hat{\\hat\\theta}) + 2\\ln L(1, \\theta_0)`.
  The shortcut is taken only when the model's expected data at ``suggested_init`` equal the
  data, and equals the full computation there (tested against pyhf).
- ``"z0_obs"`` — observed :math:`Z_0` on the workspace observations.
- ``"cls_limit_exp"`` — median expected CLs upper limit on the signal strength (minimised).
- ``"z_asimov"`` — closed-form Asimov :math:`Z_A` per bin with background uncertainty
  :math:`\\sigma_b` (MC statistics, normsys and histosys summed in quadrature per bin), added in
  quadrature over bins: a fast surrogate, not a likelihood fit.

Multi-objective (``objectives=``): ``("figure", "n_bins")`` trades the figure against the number
of bins; ``("figure", "impact")`` against the total systematic impact on :math:`\\hat\\mu`
(root of the sum of squared ``total_impact`` of :func:`sigtune.hep.ranking`, minimised).

Feasibility (Optuna convention, ``<= 0`` feasible) is stored in
``trial.user_attrs["constraints"]``: always "every bin has positive background", plus
``min_background`` (minimum background yield per bin) and ``max_rel_stat`` (maximum relative
background MC-stat uncertainty per bin) when given. An infeasible candidate is a recorded
infeasible trial: its figure is still computed when the likelihood allows it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from numpy.typing import NDArray

from sigtune._exceptions import SigtuneError
from sigtune.pipelines.binning._binning import Binning, UniformBinning, make_binning
from sigtune.pipelines.binning._cuts import (
    DISCRIMINANT,
    Cut,
    CutSelector,
    apply_discriminant_cuts,
    make_cut,
)
from sigtune.pipelines.binning._exceptions import BinningError
from sigtune.pipelines.binning._events import EventSample, fill_histograms
from sigtune.pipelines.binning._histograms import Histograms
from sigtune.pipelines.binning._workspace import WorkspaceOptions, build_workspace

__all__ = [
    "FIGURES",
    "BinningObjective",
    "Candidate",
    "expected_z0",
    "figure_of_merit",
    "model_and_data",
    "total_impact",
]

FloatArray = NDArray[np.float64]
FIGURES: dict[str, str] = {
    "z0_exp": "maximize",
    "z0_obs": "maximize",
    "cls_limit_exp": "minimize",
    "z_asimov": "maximize",
}
_EXTRA_OBJECTIVES = {"n_bins": "minimize", "impact": "minimize"}


def _asimov_shortcut(model: Any, data: FloatArray) -> float | None:
    """:math:`q_0` on Asimov data whose exact MLE is ``suggested_init``.

    Returns None when the data are not that Asimov data set or the conditional fit did not
    converge; the caller then runs :func:`sigtune.hep.discovery`.
    """
    from sigtune import hep

    init = np.asarray(model.suggested_init(), dtype=np.float64)
    poi = model.poi_index
    if init[poi] != 1.0:
        return None
    expected = np.asarray(model.expected_data(init), dtype=np.float64)
    if expected.shape != data.shape or not np.allclose(expected, data, rtol=1e-12, atol=1e-12):
        return None
    t_hat = float(model.twice_nll(init, data))
    start = init.copy()
    start[poi] = 0.0
    res = hep.fit(model, data, init=start, poi_value=0.0, uncertainties=False)
    if not res.converged:
        return None  # let the full calculator (and its error reporting) handle it
    return max(float(res.twice_nll) - t_hat, 0.0)


def model_and_data(
    workspace: Mapping[str, Any] | Any, *, validate: bool = True
) -> tuple[Any, FloatArray]:
    """The :class:`sigtune.hep.Model` of a workspace's first measurement and its data.

    Args:
        workspace: A pyhf JSON dict or a :class:`sigtune.hep.Workspace`.
        validate: Validate a dict against the pyhf schema first. The workspaces of
            :func:`build_workspace` are valid by construction (tested against pyhf's schema), so
            the objective skips the schema check, which would cost more than the fit.
    """
    from sigtune import hep

    if validate or isinstance(workspace, hep.Workspace):
        ws = workspace if isinstance(workspace, hep.Workspace) else hep.Workspace(dict(workspace))
        model = ws.model()
        return model, np.asarray(ws.data(model), dtype=np.float64)
    config = workspace["measurements"][0]["config"]
    model = hep.Model(
        workspace["channels"], parameters=config.get("parameters", []), poi_name=config["poi"]
    )
    obs = {o["name"]: o["data"] for o in workspace["observations"]}
    missing = [c for c in model.channel_names if c not in obs]
    if missing:
        raise BinningError(f"the workspace has no observations for channels {missing}.")
    parts = [np.asarray(obs[c], dtype=np.float64) for c in model.channel_names]
    return model, np.concatenate([*parts, np.asarray(model.auxdata, dtype=np.float64)])


def expected_z0(workspace: Mapping[str, Any] | Any, *, validate: bool = True) -> float:
    """Median expected discovery significance of a workspace (full profile likelihood).

    Args:
        workspace: A pyhf JSON dict or a :class:`sigtune.hep.Workspace`.
        validate: Validate a dict against the pyhf schema (see :func:`model_and_data`).

    Returns:
        :math:`Z_0 = \\sqrt{q_{0,A}}` (see the module docstring for the Asimov shortcut).
    """
    from sigtune import hep

    model, data = model_and_data(workspace, validate=validate)
    q0 = _asimov_shortcut(model, data)
    if q0 is None:
        return float(hep.discovery(model, data).z0_exp)
    return math.sqrt(q0)


def _sigma_b(hist: Histograms, options: WorkspaceOptions) -> FloatArray:
    """Per-bin absolute background uncertainty for the closed-form surrogate."""
    var = hist.total_sumw2("background").copy()
    for t in hist.templates:
        if t.name in hist.signal:
            continue
        for ns in options.normsys:
            if t.name in ns.samples:
                var += (max(abs(ns.hi - 1.0), abs(1.0 - ns.lo)) * t.counts) ** 2
        for up, down in t.variations.values():
            var += np.maximum(np.abs(up - t.counts), np.abs(down - t.counts)) ** 2
    return np.sqrt(var)


def figure_of_merit(
    figure: str, hist: Histograms, spec: Mapping[str, Any], options: WorkspaceOptions
) -> float:
    """Evaluate one figure of merit (see module docstring) of a candidate.

    Args:
        figure: One of :data:`FIGURES`.
        hist: The candidate's histograms.
        spec: Its pyhf workspace dictionary.
        options: The workspace options used to build ``spec``.
    """
    from sigtune import hep

    if figure == "z_asimov":
        return float(
            hep.z_asimov(hist.total("signal"), hist.total("background"), _sigma_b(hist, options))
        )
    if figure == "z0_exp":
        return expected_z0(spec, validate=False)
    model, data = model_and_data(spec, validate=False)
    if figure == "z0_obs":
        return float(hep.discovery(model, data).z0_obs)
    if figure == "cls_limit_exp":
        return float(hep.upper_limit(model, data).exp[2])
    raise BinningError(f"unknown figure of merit {figure!r}; use one of {sorted(FIGURES)}.")


def total_impact(spec: Mapping[str, Any]) -> float:
    """Root of the sum of squared ``total_impact`` over the ranking of the workspace."""
    from sigtune import hep

    model, data = model_and_data(spec, validate=False)
    ranking = hep.ranking(model, data)
    return float(math.sqrt(sum(e.total_impact**2 for e in ranking.entries)))


@dataclass(frozen=True, eq=False)
class Candidate:
    """One evaluated candidate.

    Attributes:
        params: The trial parameters.
        edges: Snapped bin edges.
        cuts: Cut descriptions -> thresholds (``{"|eta| < x": x}`` style keys from ``describe``).
        hist: The candidate's histograms.
        workspace: Its pyhf JSON workspace.
        values: Objective values (figure first).
        constraints: Constraint values (``<= 0`` feasible).
        error: Why the figure could not be computed (infeasible candidates only), else None.
    """

    params: dict[str, Any]
    edges: FloatArray
    cuts: dict[str, float]
    hist: Histograms
    workspace: dict[str, Any]
    values: tuple[float, ...]
    constraints: tuple[float, ...]
    error: str | None = None

    @property
    def feasible(self) -> bool:
        """Every constraint ``<= 0``."""
        return all(c <= 0 for c in self.constraints)


class BinningObjective:
    """Optuna-style objective ``objective(trial)`` over binnings (and cuts).

    Args:
        source: Fine :class:`Histograms` (the fast path), or event samples.
        signal: Signal sample names (required with event samples).
        fine_edges: Fine-bin edges for event samples (e.g. ``np.linspace(0, 1, 501)``).
        binning: A parametrisation or its mapping (``{"kind": "uniform", ...}``).
        cuts: Cuts (or mappings) searched together with the binning.
        workspace: Workspace options.
        figure: Figure of merit (see module docstring).
        objectives: ``("figure",)``, ``("figure", "n_bins")`` or ``("figure", "impact")``.
        min_background: Minimum background yield per bin (constraint), or None.
        max_rel_stat: Maximum relative background MC-stat uncertainty per bin, or None.

    Raises:
        BinningError: on inconsistent inputs (the message says what to change).
    """

    def __init__(
        self,
        source: Histograms | Sequence[EventSample],
        *,
        signal: Sequence[str] | None = None,
        fine_edges: Any = None,
        binning: Binning | Mapping[str, Any] | None = None,
        cuts: Sequence[Cut | Mapping[str, Any]] = (),
        workspace: WorkspaceOptions | None = None,
        figure: str = "z0_exp",
        objectives: Sequence[str] = ("figure",),
        min_background: float | None = None,
        max_rel_stat: float | None = None,
    ) -> None:
        if figure not in FIGURES:
            raise BinningError(f"unknown figure {figure!r}; use one of {sorted(FIGURES)}.")
        objectives = tuple(objectives)
        if (
            not objectives
            or objectives[0] != "figure"
            or any(o not in _EXTRA_OBJECTIVES for o in objectives[1:])
        ):
            raise BinningError(
                "objectives must start with 'figure', optionally followed by 'n_bins' or "
                f"'impact', but got {list(objectives)}."
            )
        if min_background is not None and min_background < 0:
            raise BinningError(f"min_background must be >= 0, got {min_background}.")
        if max_rel_stat is not None and max_rel_stat <= 0:
            raise BinningError(f"max_rel_stat must be > 0, got {max_rel_stat}.")
        self.binning: Binning = make_binning(binning) if binning is not None else UniformBinning()
        self.cuts = tuple(make_cut(c) for c in cuts)
        names = [c.param_name for c in self.cuts]
        if len(set(names)) != len(names):
            raise BinningError(f"cut parameter names must be unique, got {names}; set name=.")
        self.options = workspace or WorkspaceOptions()
        self.figure = figure
        self.objectives = objectives
        self.min_background = min_background
        self.max_rel_stat = max_rel_stat
        event_cuts = [c for c in self.cuts if c.column != DISCRIMINANT]
        self._selector: CutSelector | None = None
        if isinstance(source, Histograms):
            if event_cuts:
                raise BinningError(
                    "cuts on event columns need event samples, not pre-filled histograms; "
                    f"got cuts on {[c.column for c in event_cuts]}."
                )
            self.fine = source
        else:
            samples = list(source)
            if signal is None or fine_edges is None:
                raise BinningError("event samples need signal= and fine_edges=.")
            edges = np.asarray(fine_edges, dtype=np.float64)
            if event_cuts:
                self._selector = CutSelector(samples, edges, signal, event_cuts)
                self.fine = self._selector.histograms([c.low for c in event_cuts])
            else:
                self.fine = fill_histograms(samples, edges, signal=signal)

    @property
    def directions(self) -> list[str]:
        """Optimisation directions, one per objective."""
        return [FIGURES[self.figure], *(_EXTRA_OBJECTIVES[o] for o in self.objectives[1:])]

    def candidate_histograms(
        self, trial: optuna.Trial
    ) -> tuple[Histograms, dict[str, float], FloatArray]:
        """Suggest cuts and binning; return the re-binned histograms, cuts and snapped edges."""
        thresholds = [c.suggest(trial) for c in self.cuts]
        fine = self.fine
        if self._selector is not None:
            fine = self._selector.histograms(
                [t for c, t in zip(self.cuts, thresholds, strict=True) if c.column != DISCRIMINANT]
            )
        edges = self.binning.suggest(trial, fine)
        if any(c.column == DISCRIMINANT for c in self.cuts):
            edges = apply_discriminant_cuts(edges, self.cuts, thresholds)
        hist = fine.rebin_indices(fine.snap(edges))
        cuts = {c.describe(t): t for c, t in zip(self.cuts, thresholds, strict=True)}
        return hist, cuts, hist.edges

    @property
    def constraint_names(self) -> tuple[str, ...]:
        """Names of the constraint values, in order."""
        names = ["empty_background_bins"]
        if self.min_background is not None:
            names.append("min_background")
        if self.max_rel_stat is not None:
            names.append("max_rel_stat")
        return tuple(names)

    def constraints(self, hist: Histograms) -> tuple[float, ...]:
        """Constraint values of a candidate (``<= 0`` feasible)."""
        b = hist.total("background")
        out = [float(np.count_nonzero(b <= 0))]
        if self.min_background is not None:
            out.append(float(self.min_background - b.min()))
        if self.max_rel_stat is not None:
            w2 = hist.total_sumw2("background")
            with np.errstate(divide="ignore", invalid="ignore"):
                rel = np.where(b > 0, np.sqrt(w2) / np.where(b > 0, b, 1.0), np.inf)
            out.append(float(np.max(rel) - self.max_rel_stat))
        return tuple(out)

    def evaluate(self, trial: optuna.Trial) -> Candidate:
        """Build and evaluate the trial's candidate."""
        hist, cuts, edges = self.candidate_histograms(trial)
        constraints = self.constraints(hist)
        spec = build_workspace(hist, self.options)
        error = None
        feasible = all(c <= 0 for c in constraints)
        try:
            value = figure_of_merit(self.figure, hist, spec, self.options)
            if not math.isfinite(value):
                raise BinningError(f"the figure of merit is not finite ({value}).")
        except SigtuneError as exc:  # likelihood / input errors (HepError is a SigtuneError)
            if feasible:
                raise
            # Infeasible (e.g. an empty background bin): recorded as an infeasible trial.
            value = 0.0 if FIGURES[self.figure] == "maximize" else 1e6
            error = f"{type(exc).__name__}: {exc}"
        values = [value]
        for o in self.objectives[1:]:
            if o == "n_bins":
                values.append(float(hist.n_bins))
            else:
                values.append(total_impact(spec) if error is None else 1e6)
        return Candidate(
            dict(trial.params), edges, cuts, hist, spec, tuple(values), constraints, error
        )

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        """Evaluate the trial.

        Stores ``constraints``, ``edges``, ``n_bins`` (and ``cuts``) as user attributes and, with
        Optuna >= 5, the constraints also through ``trial.set_constraint`` (names
        :attr:`constraint_names`) so that Optuna's samplers see them without a
        ``constraints_func``.
        """
        cand = self.evaluate(trial)
        trial.set_user_attr("constraints", list(cand.constraints))
        set_constraint = getattr(trial, "set_constraint", None)  # Optuna >= 5
        if set_constraint is not None:
            for name, value in zip(self.constraint_names, cand.constraints, strict=True):
                set_constraint(name, value)
        trial.set_user_attr("edges", [float(e) for e in cand.edges])
        trial.set_user_attr("n_bins", int(cand.hist.n_bins))
        if cand.cuts:
            trial.set_user_attr("cuts", cand.cuts)
        if cand.error is not None:
            trial.set_user_attr("figure_error", cand.error)
        return cand.values[0] if len(cand.values) == 1 else cand.values

    def replay(self, params: Mapping[str, Any]) -> Candidate:
        """Re-build and evaluate the candidate of a parameter set (e.g. ``study.best_params``)."""
        return self.evaluate(optuna.trial.FixedTrial(dict(params)))  # type: ignore[arg-type]

    def constraints_func(self, trial: optuna.trial.FrozenTrial) -> Sequence[float]:
        """Optuna ``constraints_func``: the values stored by :meth:`__call__`."""
        return list(trial.user_attrs.get("constraints", [0.0]))

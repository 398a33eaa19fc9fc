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
(root of the sum of squared ``total_impact`` of :func:`sigtune.hep.ranking`, minimised);
``("figure", "cls_limit_exp")`` against the median expected CLs upper limit on the signal
strength (minimised).

Control regions (``control_regions=``, with ``region_column=``): events whose region column
equals a control region's ``value`` fill that region's fixed binning; events equal to
``signal_region`` form the signal region whose binning is searched. Every region becomes a
channel of the workspace (free background normalisations: ``WorkspaceOptions.normfactors``).

Cheap candidates: the workspace of a candidate is assembled with NumPy arrays (no float lists,
no schema validation), and its :class:`sigtune.hep.Model` is a copy of the model of its
structure with the yields swapped in (:class:`ModelCache`). :meth:`BinningObjective.evaluate_many`
fits the candidates of one structure together (:func:`sigtune.hep.fit_batch` on stacked models).

Feasibility (Optuna convention, ``<= 0`` feasible) is stored in
``trial.user_attrs["constraints"]``: always "every bin has positive background", plus
``min_background`` (minimum background yield per bin) and ``max_rel_stat`` (maximum relative
background MC-stat uncertainty per bin) when given. An infeasible candidate is a recorded
infeasible trial: its figure is still computed when the likelihood allows it.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
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
from sigtune.pipelines.binning._events import EventSample, fill_histograms
from sigtune.pipelines.binning._exceptions import BinningError
from sigtune.pipelines.binning._fast import DictPlan, HistPlan, q0_of_specs
from sigtune.pipelines.binning._histograms import Histograms
from sigtune.pipelines.binning._workspace import (
    WorkspaceOptions,
    assemble_workspace,
    build_workspace,
    region_channel,
)

__all__ = [
    "FIGURES",
    "BinningObjective",
    "Candidate",
    "ControlRegion",
    "ModelCache",
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
_EXTRA_OBJECTIVES = {"n_bins": "minimize", "impact": "minimize", "cls_limit_exp": "minimize"}
_MISSING: Any = object()


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


def _structure_key(spec: Mapping[str, Any], fixed: frozenset[str] = frozenset()) -> tuple[Any, ...]:
    """What a :class:`sigtune.hep.Model` of ``spec`` depends on besides its yields (channels
    in ``fixed`` only by name: the caller guarantees they never change)."""
    parts: list[Any] = []
    for c in spec["channels"]:
        parts.append(c["name"])
        if c["name"] in fixed:
            continue
        samples = c["samples"]
        parts.append(len(samples[0]["data"]) if samples else 0)
        for smp in samples:
            parts.append(smp["name"])
            for m in smp["modifiers"]:
                parts.append(m["name"])
                parts.append(m["type"])
            parts.append(None)
    parts.append(repr(spec["measurements"][0]["config"]))
    return tuple(parts)


class ModelCache:
    """One :class:`sigtune.hep.Model` per workspace structure; candidates of a known structure
    get a copy with their yields swapped in (:func:`sigtune.hep._model.with_yields`) instead of
    a new model built from the dictionary (parameter sets, modifier bookkeeping, layouts and
    compiled-kernel index tables are reused).

    Args:
        max_size: Structures kept (least recently used dropped first).
        fixed_channels: Channels whose content never changes between the workspaces given to
            this cache (control regions of a binning study): they are neither compared nor
            copied per candidate.
    """

    def __init__(self, max_size: int = 128, fixed_channels: Sequence[str] = ()) -> None:
        self.max_size = max_size
        self.fixed = frozenset(fixed_channels)
        self._models: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._plans: dict[tuple[Any, ...], DictPlan | None] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._models)

    def __getstate__(self) -> dict[str, Any]:
        # pickled into worker processes: settings only, each process builds its own models
        return {"max_size": self.max_size, "fixed": self.fixed}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.max_size = state["max_size"]
        self.fixed = state["fixed"]
        self._models = OrderedDict()
        self._plans = {}
        self._lock = threading.Lock()

    def model_and_data(self, spec: Mapping[str, Any]) -> tuple[Any, FloatArray]:
        """Model and data vector of a (schema-valid) workspace dictionary."""
        model, data, _ = self.lookup(spec)
        return model, data

    def plan(self, spec: Mapping[str, Any]) -> tuple[DictPlan | None, tuple[Any, ...]]:
        """The lean plan of the structure of ``spec`` (None if unusable) and the structure key.

        The first workspace of a structure builds its template model (:meth:`lookup`) and the
        plan; later ones only read their yields into the plan's arrays.
        """
        key = _structure_key(spec, self.fixed)
        with self._lock:
            plan = self._plans.get(key, _MISSING)
        if plan is _MISSING:
            template = self._models.get(key)
            if template is None:
                self.lookup(spec)
                template = self._models.get(key)
            plan = None
            if template is not None:
                from sigtune.hep._lean import AsimovQ0

                try:
                    plan = DictPlan(AsimovQ0(template), spec, self.fixed)
                except (KeyError, ValueError, IndexError):  # not a structure the plan can read
                    plan = None
                if plan is not None and not plan.usable:
                    plan = None
            with self._lock:
                self._plans[key] = plan
                while len(self._plans) > self.max_size:
                    self._plans.pop(next(iter(self._plans)))
        return plan, key  # type: ignore[return-value]

    def z0_exp(self, spec: Mapping[str, Any]) -> float:
        """Median expected :math:`Z_0` of a (schema-valid) workspace dictionary: the lean
        compiled path where it decides (:class:`sigtune.hep._lean.AsimovQ0`), else the
        public path (Asimov shortcut, then :func:`sigtune.hep.discovery`)."""
        from sigtune import hep

        plan, _ = self.plan(spec)
        if plan is not None:
            try:
                arrays = plan.arrays(spec)
            except (ValueError, TypeError, KeyError, IndexError):
                arrays = None  # malformed entries: the public path says what is wrong
            if arrays is not None:
                q0 = plan.lean.q0(*arrays)
                if q0 is not None:
                    return math.sqrt(q0)
        model, data = self.model_and_data(spec)
        q = _asimov_shortcut(model, data)
        return float(hep.discovery(model, data).z0_exp) if q is None else math.sqrt(q)

    def lookup(self, spec: Mapping[str, Any]) -> tuple[Any, FloatArray, tuple[Any, ...]]:
        """Model, data vector and structure key of a (schema-valid) workspace dictionary."""
        from sigtune.hep import HepWorkspaceError
        from sigtune.hep._model import with_yields

        key = _structure_key(spec, self.fixed)
        with self._lock:
            template = self._models.get(key)
            if template is not None:
                self._models.move_to_end(key)
        if template is None:
            model, data = model_and_data(spec, validate=False)
            with self._lock:
                self._models[key] = model
                while len(self._models) > self.max_size:
                    self._models.popitem(last=False)
            return model, data, key
        changed = [c for c in spec["channels"] if c["name"] not in self.fixed]
        try:
            model = with_yields(template, changed)
        except HepWorkspaceError:  # e.g. staterror bins of zero width where the template has none
            model, data = model_and_data(spec, validate=False)
            return model, data, (*key, "rebuilt")
        obs = {o["name"]: o["data"] for o in spec["observations"]}
        try:
            parts = [np.asarray(obs[c], dtype=np.float64) for c in model.channel_names]
        except KeyError as exc:
            raise BinningError(f"the workspace has no observations for channel {exc}.") from None
        data = np.concatenate([*parts, np.asarray(model.auxdata, dtype=np.float64)])
        return model, data, key


_MODELS = ModelCache()


def expected_z0(workspace: Mapping[str, Any] | Any, *, validate: bool = True) -> float:
    """Median expected discovery significance of a workspace (full profile likelihood).

    Args:
        workspace: A pyhf JSON dict or a :class:`sigtune.hep.Workspace`.
        validate: Validate a dict against the pyhf schema (see :func:`model_and_data`).

    Returns:
        :math:`Z_0 = \\sqrt{q_{0,A}}` (see the module docstring for the Asimov shortcut).
    """
    from sigtune import hep

    if not validate and isinstance(workspace, Mapping):
        return _MODELS.z0_exp(workspace)
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
    figure: str,
    hist: Histograms,
    spec: Mapping[str, Any],
    options: WorkspaceOptions,
    cache: ModelCache | None = None,
) -> float:
    """Evaluate one figure of merit (see module docstring) of a candidate.

    Args:
        figure: One of :data:`FIGURES`.
        hist: The candidate's histograms.
        spec: Its pyhf workspace dictionary.
        options: The workspace options used to build ``spec``.
        cache: Where its model comes from (default: the module's cache).
    """
    from sigtune import hep

    cache = cache or _MODELS
    if figure == "z_asimov":
        return float(
            hep.z_asimov(hist.total("signal"), hist.total("background"), _sigma_b(hist, options))
        )
    if figure == "z0_exp":
        return cache.z0_exp(spec)
    model, data = cache.model_and_data(spec)
    if figure == "z0_obs":
        return float(hep.discovery(model, data).z0_obs)
    if figure == "cls_limit_exp":
        return float(hep.upper_limit(model, data).exp[2])
    raise BinningError(f"unknown figure of merit {figure!r}; use one of {sorted(FIGURES)}.")


def total_impact(spec: Mapping[str, Any], cache: ModelCache | None = None) -> float:
    """Root of the sum of squared ``total_impact`` over the ranking of the workspace."""
    from sigtune import hep

    model, data = (cache or _MODELS).model_and_data(spec)
    ranking = hep.ranking(model, data)
    return float(math.sqrt(sum(e.total_impact**2 for e in ranking.entries)))


def expected_limit(spec: Mapping[str, Any], cache: ModelCache | None = None) -> float:
    """Median expected CLs upper limit on the signal strength of a workspace."""
    from sigtune import hep

    model, data = (cache or _MODELS).model_and_data(spec)
    return float(hep.upper_limit(model, data).exp[2])


def _z0_batch(
    specs: Sequence[Mapping[str, Any]], cache: ModelCache | None = None
) -> list[float | None]:
    """Expected :math:`Z_0` of candidates, fitting those of one structure together.

    Returns None for a candidate the batched Asimov shortcut cannot decide (not Asimov data,
    a fit that did not converge); the caller evaluates it alone.
    """
    from sigtune import hep

    cache = cache or _MODELS
    out: list[float | None] = [None] * len(specs)
    planned: dict[tuple[Any, ...], list[tuple[int, DictPlan, Mapping[str, Any]]]] = {}
    groups: dict[tuple[Any, ...], list[tuple[int, Any, FloatArray]]] = {}
    for i, spec in enumerate(specs):
        plan, key = cache.plan(spec)
        if plan is not None:  # the lean path: yields straight into the kernel tables
            planned.setdefault(key, []).append((i, plan, spec))
            continue
        model, data, key = cache.lookup(spec)
        groups.setdefault(key, []).append((i, model, data))
    for entries in planned.values():
        values = q0_of_specs([(p, spec) for _, p, spec in entries])
        for (i, _, _), q in zip(entries, values, strict=True):
            out[i] = None if q is None else math.sqrt(q)
    for members in groups.values():
        usable = []
        for i, model, data in members:
            init = model.suggested_init()
            if init[model.poi_index] != 1.0:
                continue
            expected = model.expected_data(init)
            if np.allclose(expected, data, rtol=1e-12, atol=1e-12):
                usable.append((i, model, data))
        if not usable:
            continue
        if len(usable) == 1:
            i, model, data = usable[0]
            q0 = _asimov_shortcut(model, data)
            out[i] = None if q0 is None else math.sqrt(q0)
            continue
        try:
            stacked = hep.stack_models([m for _, m, _ in usable])
        except hep.HepWorkspaceError:  # e.g. zero-width staterror bins differ
            continue
        data = np.stack([d for _, _, d in usable])
        init = np.array([m.suggested_init() for _, m, _ in usable])
        t_hat = np.asarray(stacked.twice_nll(init, data), dtype=np.float64)
        start = init.copy()
        start[:, stacked.poi_index] = 0.0
        res = hep.fit_batch(stacked, data, init=start, poi_value=0.0)
        for row, (i, _, _) in enumerate(usable):
            if bool(res.converged[row]):
                out[i] = math.sqrt(max(float(res.twice_nll[row]) - float(t_hat[row]), 0.0))
    return out


class _LazyWorkspace:
    """A candidate's workspace dictionary, built on first use (the lean path needs none)."""

    __slots__ = ("_hist", "_objective", "_spec")

    def __init__(
        self,
        objective: BinningObjective,
        hist: Histograms,
        spec: dict[str, Any] | None = None,
    ) -> None:
        self._objective = objective
        self._hist = hist
        self._spec = spec

    def get(self) -> dict[str, Any]:
        if self._spec is None:
            self._spec = self._objective.workspace_of(self._hist, lists=False)
        return self._spec


@dataclass(frozen=True)
class ControlRegion:
    """A control region with a fixed binning of the discriminant.

    Args:
        name: Channel name.
        value: Value of the region column that selects its events.
        edges: Fixed bin edges (discriminant units).
    """

    name: str
    value: float
    edges: tuple[float, ...]

    def __post_init__(self) -> None:
        e = np.asarray(self.edges, dtype=np.float64)
        if e.ndim != 1 or e.shape[0] < 2 or not np.all(np.diff(e) > 0):
            raise BinningError(
                f"control region {self.name!r}: edges must be >= 2 increasing values, "
                f"got {list(self.edges)}."
            )


def _control_region(spec: ControlRegion | Mapping[str, Any]) -> ControlRegion:
    if isinstance(spec, ControlRegion):
        return spec
    try:
        return ControlRegion(
            name=str(spec["name"]),
            value=float(spec["value"]),
            edges=tuple(float(e) for e in spec["edges"]),
        )
    except KeyError as exc:
        raise BinningError(
            f"a control region needs name, value and edges; missing {exc}."
        ) from None


@dataclass(frozen=True, eq=False)
class Candidate:
    """One evaluated candidate.

    Attributes:
        params: The trial parameters.
        edges: Snapped bin edges.
        cuts: Cut descriptions -> thresholds (``{"|eta| < x": x}`` style keys from ``describe``).
        hist: The candidate's histograms (signal region).
        workspace: Its pyhf workspace (NumPy arrays inside when built for evaluation, built
            on first access; plain lists from :meth:`BinningObjective.replay`).
        values: Objective values (figure first).
        constraints: Constraint values (``<= 0`` feasible).
        error: Why the figure could not be computed (infeasible candidates only), else None.
    """

    params: dict[str, Any]
    edges: FloatArray
    cuts: dict[str, float]
    hist: Histograms
    _workspace: _LazyWorkspace
    values: tuple[float, ...]
    constraints: tuple[float, ...]
    error: str | None = None

    @property
    def workspace(self) -> dict[str, Any]:
        """The candidate's pyhf workspace dictionary."""
        return self._workspace.get()

    @property
    def feasible(self) -> bool:
        """Every constraint ``<= 0``."""
        return all(c <= 0 for c in self.constraints)


def _check_samples(samples: Sequence[EventSample], edges: FloatArray) -> None:
    """Bad inputs name their sample: no events, every event outside the fine range, no yield."""
    lo, hi = float(edges[0]), float(edges[-1])
    for s in samples:
        if s.n_events == 0:
            raise BinningError(f"sample {s.name!r} has no events.")
        x = s.discriminant
        inside = (x >= lo) & (x <= hi)
        if not np.any(inside):
            raise BinningError(
                f"sample {s.name!r}: all {s.n_events} events lie outside the fine histogram "
                f"range [{lo:g}, {hi:g}] (its discriminant spans [{x.min():g}, {x.max():g}]); "
                "set fine_bins to cover it."
            )
        if not np.any(s.weight[inside] != 0):
            raise BinningError(
                f"sample {s.name!r} has zero total yield in [{lo:g}, {hi:g}] (every weight is "
                "0); check its weight column and scale."
            )


def _check_yields(hist: Histograms, where: str) -> None:
    for which, names in (("signal", hist.signal), ("background", hist.backgrounds)):
        if not np.any(hist.total(which) != 0):
            raise BinningError(
                f"{which} sample(s) {list(names)} have zero total yield in the {where}; "
                "check the samples, their weights and the fine-bin range."
            )


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
        objectives: ``("figure",)``, or ``"figure"`` followed by ``"n_bins"``, ``"impact"`` or
            ``"cls_limit_exp"``.
        min_background: Minimum background yield per bin (constraint), or None.
        max_rel_stat: Maximum relative background MC-stat uncertainty per bin, or None.
        region_column: Event column that says which region an event belongs to (needed by
            ``control_regions``).
        signal_region: Value of ``region_column`` of the signal-region events.
        control_regions: :class:`ControlRegion` s (or mappings ``{name, value, edges}``).

    Raises:
        BinningError: on inconsistent inputs (the message says what to change), e.g. a sample
            without events or yield in the fine range, or all-zero signal or background.
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
        region_column: str | None = None,
        signal_region: float = 0.0,
        control_regions: Sequence[ControlRegion | Mapping[str, Any]] = (),
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
                "objectives must start with 'figure', optionally followed by "
                f"{sorted(_EXTRA_OBJECTIVES)}, but got {list(objectives)}."
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
        self.control_regions = tuple(_control_region(c) for c in control_regions)
        self.control: tuple[tuple[str, Histograms], ...] = ()
        self._control_parts: dict[bool, list[tuple[dict[str, Any], dict[str, Any]]]] = {}
        self._models = ModelCache()
        self._hist_plans: dict[tuple[Any, ...], HistPlan | None] = {}
        event_cuts = [c for c in self.cuts if c.column != DISCRIMINANT]
        self._selector: CutSelector | None = None
        if isinstance(source, Histograms):
            if event_cuts or self.control_regions:
                raise BinningError(
                    "cuts on event columns and control regions need event samples, not "
                    "pre-filled histograms."
                )
            self.fine = source
            _check_yields(self.fine, "fine histograms")
            return
        samples = list(source)
        if signal is None or fine_edges is None:
            raise BinningError("event samples need signal= and fine_edges=.")
        edges = np.asarray(fine_edges, dtype=np.float64)
        _check_samples(samples, edges)
        if self.control_regions:
            if region_column is None:
                raise BinningError("control_regions need region_column= (the event column).")
            if event_cuts:
                raise BinningError(
                    "cuts on event columns cannot be combined with control regions yet; cut "
                    "the samples before, or use cuts on the discriminant."
                )
            region = {s.name: _region(s, region_column) for s in samples}
            sr = {n: r == signal_region for n, r in region.items()}
            self.fine = fill_histograms(samples, edges, signal=signal, masks=sr)
            control = []
            for cr in self.control_regions:
                masks = {n: r == cr.value for n, r in region.items()}
                hist = fill_histograms(samples, np.asarray(cr.edges), signal=signal, masks=masks)
                if not np.any(hist.total("background") != 0):
                    raise BinningError(
                        f"control region {cr.name!r} ({region_column} == {cr.value:g}) has no "
                        "background yield; check region_column and the region values."
                    )
                control.append((cr.name, hist))
            self.control = tuple(control)
            self._models = ModelCache(fixed_channels=[c.name for c in self.control_regions])
        elif event_cuts:
            self._selector = CutSelector(samples, edges, signal, event_cuts)
            self.fine = self._selector.histograms([c.low for c in event_cuts])
        else:
            self.fine = fill_histograms(samples, edges, signal=signal)
        _check_yields(self.fine, "signal region" if self.control_regions else "fine range")

    def __getstate__(self) -> dict[str, Any]:
        # pickled into worker processes: the plans (compiled-kernel tables) are rebuilt there
        state = dict(self.__dict__)
        state["_hist_plans"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

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

    def workspace_of(self, hist: Histograms, *, lists: bool = True) -> dict[str, Any]:
        """The workspace of a candidate's signal-region histograms (with the control regions,
        whose entries do not depend on the candidate and are built once).

        ``lists=False`` (evaluation): NumPy arrays, and pruned variations kept without effect.
        """
        if lists and not self.control:
            return build_workspace(hist, self.options, lists=True)
        parts = self._control_parts.get(lists)
        if parts is None:
            parts = [
                region_channel(n, h, self.options, control=True, lists=lists)
                for n, h in self.control
            ]
            self._control_parts[lists] = parts
        # For evaluation (NumPy arrays), pruned variations stay without effect: the likelihood
        # is the same and every candidate with the same number of bins has the same model
        # structure (one cached model, candidates fitted together). The JSON workspace
        # (``lists``) leaves them out.
        sr = region_channel(
            self.options.channel,
            hist,
            self.options,
            control=False,
            lists=lists,
            keep_pruned=not lists,
        )
        return assemble_workspace([sr, *parts], self.options)

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

    def _finish(
        self,
        trial: optuna.Trial,
        parts: tuple[Histograms, dict[str, float], FloatArray],
        workspace: dict[str, Any] | _LazyWorkspace,
        figure: float | None,
    ) -> Candidate:
        """Complete a candidate whose figure may already be known (batched evaluation)."""
        lazy = (
            workspace
            if isinstance(workspace, _LazyWorkspace)
            else _LazyWorkspace(self, parts[0], workspace)
        )
        hist, cuts, edges = parts
        constraints = self.constraints(hist)
        error = None
        feasible = all(c <= 0 for c in constraints)
        try:
            value = figure
            if value is None:
                value = figure_of_merit(self.figure, hist, lazy.get(), self.options, self._models)
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
            elif error is not None:
                values.append(1e6)
            elif o == "impact":
                values.append(total_impact(lazy.get(), self._models))
            else:
                values.append(expected_limit(lazy.get(), self._models))
        return Candidate(
            dict(trial.params), edges, cuts, hist, lazy, tuple(values), constraints, error
        )

    def _hist_plan(self, hist: Histograms) -> HistPlan | None:
        """The :class:`HistPlan` of a candidate's structure (built from its dictionary the first
        time), or None where only the dictionary path applies."""
        sig = HistPlan.signature(hist, self.options)
        hp = self._hist_plans.get(sig, _MISSING)
        if hp is _MISSING:
            hp = None
            spec = self.workspace_of(hist, lists=False)
            plan, _ = self._models.plan(spec)
            if plan is not None:
                try:
                    hp = HistPlan(plan, spec, hist, self.options)
                except (KeyError, ValueError, IndexError):
                    hp = None
            if len(self._hist_plans) > 256:
                self._hist_plans.clear()
            self._hist_plans[sig] = hp
        return hp  # type: ignore[no-any-return]

    def _lean_z0(self, hists: Sequence[Histograms]) -> list[float | None]:
        """:math:`Z_0` of candidates straight from their histograms (:class:`HistPlan`, one
        batched kernel call per structure); None where the dictionary path must decide."""
        out: list[float | None] = [None] * len(hists)
        if self.figure != "z0_exp" or self.options.observations != "asimov":
            return out
        groups: dict[int, tuple[HistPlan, list[tuple[int, tuple[FloatArray, ...]]]]] = {}
        for i, hist in enumerate(hists):
            hp = self._hist_plan(hist)
            if hp is None:
                continue
            arrays = hp.arrays(hist)
            if arrays is None:
                continue
            groups.setdefault(id(hp), (hp, []))[1].append((i, arrays))
        for hp, members in groups.values():
            q, ok = hp.lean.q0_many([a for _, a in members])
            for (i, _), qi, oki in zip(members, q, ok, strict=True):
                if oki:
                    out[i] = math.sqrt(float(qi))
        return out

    def evaluate(self, trial: optuna.Trial, *, lists: bool = False) -> Candidate:
        """Build and evaluate the trial's candidate (``lists``: JSON-ready workspace)."""
        parts = self.candidate_histograms(trial)
        if lists:
            return self._finish(trial, parts, self.workspace_of(parts[0], lists=True), None)
        figure = self._lean_z0([parts[0]])[0]
        return self._finish(trial, parts, _LazyWorkspace(self, parts[0]), figure)

    def evaluate_many(self, trials: Sequence[optuna.Trial]) -> list[Candidate | BaseException]:
        """Evaluate several trials, fitting the candidates of one structure together.

        With ``figure="z0_exp"`` the conditional fits of every candidate sharing a structure
        (bins per channel, modifiers) run as one :func:`sigtune.hep.fit_batch` call on stacked
        models; other figures are evaluated one by one. Gives the same values as
        :meth:`evaluate` (within the fit tolerance).

        Returns:
            One :class:`Candidate` per trial, or the exception that trial raised.
        """
        built: list[tuple[Any, ...] | BaseException] = []
        for trial in trials:
            try:
                parts = self.candidate_histograms(trial)
                built.append((parts, _LazyWorkspace(self, parts[0])))
            except Exception as exc:  # recorded per trial (a failed trial), not fatal to the batch
                built.append(exc)
        ok = [b for b in built if not isinstance(b, BaseException)]
        figures: list[float | None] = [None] * len(ok)
        if self.figure == "z0_exp" and ok:
            try:
                figures = self._lean_z0([b[0][0] for b in ok])
                rest = [k for k, f in enumerate(figures) if f is None]
                if len(rest) > 1:
                    more = _z0_batch([ok[k][1].get() for k in rest], self._models)
                    for k, f in zip(rest, more, strict=True):
                        figures[k] = f
            except SigtuneError:
                figures = [None] * len(ok)  # evaluated one by one (their own error reporting)
        out: list[Candidate | BaseException] = []
        k = 0
        for trial, b in zip(trials, built, strict=True):
            if isinstance(b, BaseException):
                out.append(b)
                continue
            try:
                out.append(self._finish(trial, b[0], b[1], figures[k]))
            except Exception as exc:
                out.append(exc)
            k += 1
        return out

    def record(self, trial: optuna.Trial, cand: Candidate) -> float | tuple[float, ...]:
        """Store a candidate's user attributes and constraints on its trial; return its values.

        Stores ``constraints``, ``edges``, ``n_bins`` (and ``cuts``) as user attributes and,
        with Optuna >= 5, the constraints also through ``trial.set_constraint`` (names
        :attr:`constraint_names`) so that Optuna's samplers see them without a
        ``constraints_func``.
        """
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

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        """Evaluate the trial (see :meth:`record` for what is stored on it)."""
        return self.record(trial, self.evaluate(trial))

    def replay(self, params: Mapping[str, Any]) -> Candidate:
        """Re-build and evaluate the candidate of a parameter set (e.g. ``study.best_params``);
        its workspace holds plain lists (JSON)."""
        return self.evaluate(optuna.trial.FixedTrial(dict(params)), lists=True)  # type: ignore[arg-type]

    def constraints_func(self, trial: optuna.trial.FrozenTrial) -> Sequence[float]:
        """Optuna ``constraints_func``: the values stored by :meth:`__call__`."""
        return list(trial.user_attrs.get("constraints", [0.0]))


def _region(sample: EventSample, column: str) -> NDArray[Any]:
    if column not in sample.columns:
        raise BinningError(
            f"sample {sample.name!r} has no column {column!r} (the region_column); columns: "
            f"{sorted(sample.columns)}."
        )
    return np.asarray(sample.columns[column])

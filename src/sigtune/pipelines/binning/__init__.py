"""Binning and cut optimisation against the discovery significance (HistFactory likelihoods).

Typical use::

    from sigtune.pipelines.binning import BinningObjective, EventSample, write_outputs
    objective = BinningObjective(samples, signal=["signal"], fine_edges=np.linspace(0, 1, 501),
                                 binning={"kind": "uniform", "n_bins": (3, 40)})
    study = sigtune.optimize(objective, n_trials=200, directions=objective.directions,
                             sampler="tpe", seed=42)
    result = write_outputs(objective, study, "runs/binning")

or from a run-config with ``objective: {type: binning, ...}`` (see ``docs/binning.md``).
"""

from __future__ import annotations

from sigtune.pipelines.binning._batched import ScanResult, exhaustive_scan, optimize_batched
from sigtune.pipelines.binning._binning import (
    Binning,
    QuantileBinning,
    TransfoBinning,
    UniformBinning,
    VariableBinning,
    make_binning,
    transfo_d,
    transfo_f,
)
from sigtune.pipelines.binning._cuts import Cut, CutSelector, make_cut
from sigtune.pipelines.binning._events import EventSample, Variation, fill_histograms, load_events
from sigtune.pipelines.binning._exceptions import BinningError
from sigtune.pipelines.binning._histograms import Histograms, Template
from sigtune.pipelines.binning._objective import (
    FIGURES,
    BinningObjective,
    Candidate,
    ControlRegion,
    ModelCache,
    expected_z0,
    figure_of_merit,
)
from sigtune.pipelines.binning._results import BinningResult, plot_histograms, write_outputs
from sigtune.pipelines.binning._workspace import (
    NormFactor,
    NormSys,
    WorkspaceOptions,
    build_workspace,
)

__all__ = [
    "FIGURES",
    "Binning",
    "BinningError",
    "BinningObjective",
    "BinningResult",
    "Candidate",
    "ControlRegion",
    "Cut",
    "CutSelector",
    "EventSample",
    "Histograms",
    "ModelCache",
    "NormFactor",
    "NormSys",
    "QuantileBinning",
    "ScanResult",
    "Template",
    "TransfoBinning",
    "UniformBinning",
    "VariableBinning",
    "Variation",
    "WorkspaceOptions",
    "build_workspace",
    "exhaustive_scan",
    "expected_z0",
    "figure_of_merit",
    "fill_histograms",
    "load_events",
    "make_binning",
    "make_cut",
    "optimize_batched",
    "plot_histograms",
    "transfo_d",
    "transfo_f",
    "write_outputs",
]

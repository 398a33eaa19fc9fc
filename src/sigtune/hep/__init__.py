"""HistFactory likelihoods from pyhf JSON workspaces: models, fast fits and inference.

Standalone: imports nothing from sigtune except :mod:`sigtune._exceptions`.

Example:
    >>> import sigtune.hep as hep
    >>> ws = hep.Workspace("workspace.json")          # doctest: +SKIP
    >>> model = ws.model()                            # doctest: +SKIP
    >>> res = hep.fit(model, ws.data(model))          # doctest: +SKIP
"""

from __future__ import annotations

from sigtune.hep._closed_form import z_asimov, z_asimov_bins
from sigtune.hep._exceptions import (
    HepError,
    HepFitError,
    HepFitWarning,
    HepInputError,
    HepWorkspaceError,
)
from sigtune.hep._fit import BatchFitResult, FitResult, asimov_data, fit, fit_batch
from sigtune.hep._infer import (
    AsymptoticCalculator,
    discovery,
    hypotest,
    q0,
    qmu,
    qmu_tilde,
    tmu,
    upper_limit,
)
from sigtune.hep._model import Model, stack_models
from sigtune.hep._ranking import ranking
from sigtune.hep._results import (
    DiscoveryResult,
    HypotestResult,
    RankingEntry,
    RankingResult,
    ScanResult,
    UpperLimitResult,
)
from sigtune.hep._scan import profile_scan
from sigtune.hep._toys import toy_hypotest
from sigtune.hep._workspace import Workspace

__all__ = [
    "AsymptoticCalculator",
    "BatchFitResult",
    "DiscoveryResult",
    "FitResult",
    "HepError",
    "HepFitError",
    "HepFitWarning",
    "HepInputError",
    "HepWorkspaceError",
    "HypotestResult",
    "Model",
    "RankingEntry",
    "RankingResult",
    "ScanResult",
    "UpperLimitResult",
    "Workspace",
    "asimov_data",
    "discovery",
    "fit",
    "fit_batch",
    "hypotest",
    "profile_scan",
    "q0",
    "qmu",
    "qmu_tilde",
    "ranking",
    "stack_models",
    "tmu",
    "toy_hypotest",
    "upper_limit",
    "z_asimov",
    "z_asimov_bins",
]

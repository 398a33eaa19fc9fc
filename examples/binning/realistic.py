"""A binning study at analysis scale (used by ``realistic.yaml`` and ``bench/binning.py``).

A signal region whose discriminant binning is searched (variable edges, up to 20 bins) and two
control regions with a fixed binning (``CR_top``: ttbar-rich, ``CR_wjets``: W+jets-rich); signal
and four backgrounds (ttbar, wjets, zjets, diboson), ``n_events`` weighted MC events per sample
(generated at run time with a fixed seed, log-normal weight spread); 12 systematics:

- from up/down weight columns (each becomes a normsys on the ratio of totals plus a shape-only
  histosys, ``split: true``), shared by every sample and region: ``jes``, ``jer``, ``btag``
  (region dependent), ``pileup`` (negligible: pruned), ``lepton_eff`` (flat: its shape part is
  pruned); per sample: ``ttbar_scale``, ``ttbar_pdf`` (negligible: pruned), ``wjets_scale``,
  ``zjets_shape``, ``signal_theory``;
- explicit normalisation uncertainties: ``zjets_xsec`` and ``diboson_xsec``;

plus the MC-statistical uncertainty (staterror per region), a 1.7% luminosity uncertainty and
free normalisations of ttbar and W+jets fitted mostly in their control regions.
"""

from __future__ import annotations

import numpy as np

from sigtune.pipelines.binning import EventSample, NormFactor, NormSys, WorkspaceOptions

# name: (yield over all regions, Beta(a, b) discriminant shape, region fractions SR/CR_top/CR_w)
SAMPLES: dict[str, tuple[float, tuple[float, float], tuple[float, float, float]]] = {
    "signal": (40.0, (6.0, 2.0), (0.9, 0.05, 0.05)),
    "ttbar": (900.0, (2.0, 4.0), (0.35, 0.55, 0.10)),
    "wjets": (700.0, (1.5, 4.0), (0.35, 0.10, 0.55)),
    "zjets": (300.0, (2.0, 3.0), (0.70, 0.15, 0.15)),
    "diboson": (60.0, (3.0, 2.5), (0.80, 0.10, 0.10)),
}
CONTROL_REGIONS = [
    {"name": "CR_top", "value": 1, "edges": [0.0, 0.25, 0.5, 0.75, 1.0]},
    {"name": "CR_wjets", "value": 2, "edges": [0.0, 0.25, 0.5, 0.75, 1.0]},
]
WORKSPACE = WorkspaceOptions(
    normsys=(
        NormSys("zjets_xsec", ("zjets",), 0.9, 1.1),
        NormSys("diboson_xsec", ("diboson",), 0.85, 1.15),
    ),
    normfactors=(NormFactor("mu_ttbar", ("ttbar",)), NormFactor("mu_wjets", ("wjets",))),
    split=True,
    prune=0.005,
    lumi=(1.0, 0.017),
)


def _variations(
    name: str, x: np.ndarray, region: np.ndarray, w: np.ndarray, rng: np.random.Generator
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Up/down event weights of the 10 weight-column systematics that act on ``name``."""
    c = x - 0.5

    def pair(rel: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        return w * (1.0 + rel), w * np.clip(1.0 - rel, 0.05, None)

    out = {
        "jes": pair(0.04 + 0.10 * c),
        "jer": pair(0.02 * np.abs(c) * 2.0),
        "btag": pair(np.where(region == 1, 0.06, 0.015)),
        "pileup": pair(0.0005 * np.ones_like(x)),
        "lepton_eff": pair(0.02 * np.ones_like(x)),
    }
    if name == "ttbar":
        out["ttbar_scale"] = pair(0.05 + 0.15 * c)
        out["ttbar_pdf"] = pair(0.002 * np.ones_like(x))
    elif name == "wjets":
        out["wjets_scale"] = pair(0.08 - 0.12 * c)
    elif name == "zjets":
        out["zjets_shape"] = pair(0.10 * c)
    elif name == "signal":
        out["signal_theory"] = pair(0.05 + 0.05 * c)
    return out


def make_samples(
    n_events: int = 100_000, seed: int = 42, weight_spread: float = 0.7
) -> list[EventSample]:
    """Weighted MC samples with a ``region`` column (0: SR, 1: CR_top, 2: CR_wjets).

    Args:
        n_events: Events per sample.
        seed: Random seed.
        weight_spread: Sigma of the log-normal weight spread of the backgrounds.
    """
    rng = np.random.default_rng(seed)
    out = []
    for name, (total, (a, b), fractions) in SAMPLES.items():
        x = rng.beta(a, b, n_events)
        region = rng.choice(3, size=n_events, p=fractions).astype(np.float64)
        if name == "signal":
            spread = np.ones(n_events)
        else:
            spread = rng.lognormal(0.0, weight_spread, n_events)
        w = total / n_events * spread / spread.mean()
        out.append(
            EventSample.from_arrays(
                name,
                x,
                w,
                columns={"region": region},
                weight_variations=_variations(name, x, region, w, rng),
            )
        )
    return out

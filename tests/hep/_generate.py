"""Random and synthetic pyhf workspaces for tests and benchmarks.

``random_workspace(rng, ...)`` draws small workspaces that cover every modifier type
(normfactor, shapefactor, lumi, normsys, histosys, staterror, shapesys), with shared names across
samples and channels; ``synthetic_workspace(n_bins, n_nps)`` builds the benchmark sizes
(signal + backgrounds, ``n_nps`` normsys/histosys nuisance parameters, every background sample
with a staterror modifier). Both return plain dicts that pass pyhf's schema.

Use ``workspaces()`` as a hypothesis strategy (seeded through ``st.integers``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "ALL_MODIFIER_TYPES",
    "hard_workspace",
    "random_workspace",
    "synthetic_workspace",
    "workspaces",
]

ALL_MODIFIER_TYPES = (
    "normfactor",
    "shapefactor",
    "lumi",
    "normsys",
    "histosys",
    "staterror",
    "shapesys",
)


def _observed(rng: np.random.Generator, expected: np.ndarray) -> list[float]:
    return [float(v) for v in rng.poisson(np.maximum(expected, 0.0))]


def random_workspace(
    rng: np.random.Generator,
    *,
    n_channels: int | None = None,
    max_bins: int = 4,
    modifier_types: tuple[str, ...] = ALL_MODIFIER_TYPES,
    with_lumi_config: bool = True,
) -> dict[str, Any]:
    """A small random workspace using every type in ``modifier_types`` at least once.

    The POI ``mu`` is a normfactor on the signal sample. Yields are positive; observed data
    are Poisson draws around the nominal prediction with ``mu = 1``.

    Args:
        rng: Random generator.
        n_channels: Number of channels (default 1-2 at random).
        max_bins: Maximum bins per channel.
        modifier_types: Modifier types to include (``normfactor`` is always present as POI).
        with_lumi_config: Add the measurement entry for ``lumi`` (needed when lumi is used).
    """
    if n_channels is None:
        n_channels = int(rng.integers(1, 3))
    channels = []
    observations = []
    # shared systematic names (so normsys/histosys names are reused across samples/channels)
    ns_names = [f"ns_{i}" for i in range(int(rng.integers(1, 3)))]
    hs_names = [f"hs_{i}" for i in range(int(rng.integers(1, 3)))]
    shared_nb = int(rng.integers(1, max_bins + 1))
    shapefactor_channels = set()
    if "shapefactor" in modifier_types:
        shapefactor_channels = {0}
    for ci in range(n_channels):
        nb = (
            shared_nb
            if ci in shapefactor_channels or ci == 0
            else int(rng.integers(1, max_bins + 1))
        )
        cname = f"ch{ci}"
        samples = []
        total = np.zeros(nb)
        for si, sname in enumerate(["signal", "bkg_a", "bkg_b"]):
            if si == 2 and rng.random() < 0.4:
                continue
            scale = 5.0 if si == 0 else 40.0
            nom = rng.uniform(0.3, 1.0, nb) * scale
            mods: list[dict[str, Any]] = []
            if si == 0:
                mods.append({"name": "mu", "type": "normfactor", "data": None})
            if "lumi" in modifier_types and rng.random() < 0.7:
                mods.append({"name": "lumi", "type": "lumi", "data": None})
            if si > 0:
                if "normsys" in modifier_types:
                    for name in ns_names:
                        if rng.random() < 0.7:
                            hi = float(rng.uniform(1.02, 1.3))
                            lo = float(rng.uniform(0.75, 0.98))
                            if rng.random() < 0.2:  # one-sided / same-side variations
                                lo = float(rng.uniform(1.0, 1.1))
                            mods.append(
                                {"name": name, "type": "normsys", "data": {"hi": hi, "lo": lo}}
                            )
                if "histosys" in modifier_types:
                    for name in hs_names:
                        if rng.random() < 0.7:
                            up = nom * rng.uniform(1.0, 1.2, nb)
                            dn = nom * rng.uniform(0.8, 1.02, nb)
                            mods.append(
                                {
                                    "name": name,
                                    "type": "histosys",
                                    "data": {
                                        "hi_data": [float(v) for v in up],
                                        "lo_data": [float(v) for v in dn],
                                    },
                                }
                            )
                if "staterror" in modifier_types:
                    mods.append(
                        {
                            "name": f"staterror_{cname}",
                            "type": "staterror",
                            "data": [float(v) for v in nom * rng.uniform(0.02, 0.15, nb)],
                        }
                    )
                if "shapesys" in modifier_types and si == 1 and ci == n_channels - 1:
                    unc = nom * rng.uniform(0.05, 0.3, nb)
                    if nb > 1 and rng.random() < 0.3:
                        unc[0] = 0.0  # zero uncertainty -> fixed gamma
                    mods.append(
                        {
                            "name": f"shapesys_{cname}",
                            "type": "shapesys",
                            "data": [float(v) for v in unc],
                        }
                    )
                if si == 2 and ci in shapefactor_channels:
                    mods.append({"name": "sf_shared", "type": "shapefactor", "data": None})
            total += nom
            samples.append({"name": sname, "data": [float(v) for v in nom], "modifiers": mods})
        if ci in shapefactor_channels and not any(
            m["type"] == "shapefactor" for s in samples for m in s["modifiers"]
        ):
            samples[-1]["modifiers"].append(
                {"name": "sf_shared", "type": "shapefactor", "data": None}
            )
        channels.append({"name": cname, "samples": samples})
        observations.append({"name": cname, "data": _observed(rng, total)})
    parameters: list[dict[str, Any]] = []
    uses_lumi = any(
        m["type"] == "lumi" for c in channels for s in c["samples"] for m in s["modifiers"]
    )
    if uses_lumi and with_lumi_config:
        parameters.append(
            {
                "name": "lumi",
                "auxdata": [1.0],
                "sigmas": [float(rng.uniform(0.02, 0.1))],
                "bounds": [[0.5, 1.5]],
                "inits": [1.0],
            }
        )
    return {
        "channels": channels,
        "observations": observations,
        "measurements": [{"name": "meas", "config": {"poi": "mu", "parameters": parameters}}],
        "version": "1.0.0",
    }


def hard_workspace(rng: np.random.Generator) -> dict[str, Any]:
    """A small workspace built to be hard for a minimiser (issue 17's adversarial kinds).

    1-2 channels of 1-3 bins; yields spanning 1e-3..1e3 with zeros inside samples; channels with
    no observed events; signals up to 100x the background; shapesys with relative uncertainties
    down to 1e-3 (``tau`` up to 1e6); one-sided and very large normsys (factors 0.2..5);
    histosys; a shapefactor. The POI ``mu`` is a normfactor on the signal.
    """
    n_channels = int(rng.integers(1, 3))
    channels, observations = [], []
    for ci in range(n_channels):
        nb = int(rng.integers(1, 4))
        cname = f"ch{ci}"
        samples: list[dict[str, Any]] = []
        total = np.zeros(nb)
        for si, sname in enumerate(["signal", "bkg"]):
            nom = 10.0 ** rng.uniform(-3.0, 3.0, nb)
            if si == 0 and rng.random() < 0.25:
                nom[int(rng.integers(nb))] = 0.0  # a zero inside the sample
            if si == 0 and rng.random() < 0.3:
                nom = nom * float(rng.uniform(10.0, 100.0))  # large signal
            mods: list[dict[str, Any]] = []
            if si == 0:
                mods.append({"name": "mu", "type": "normfactor", "data": None})
            else:
                kind = rng.random()
                if kind < 0.5:
                    rel = float(10.0 ** rng.uniform(-3.0, -0.5))
                    mods.append(
                        {
                            "name": f"ss_{cname}",
                            "type": "shapesys",
                            "data": [float(v) for v in nom * rel],
                        }
                    )
                elif kind < 0.75:
                    mods.append({"name": f"sf_{cname}", "type": "shapefactor", "data": None})
                else:
                    up = nom * rng.uniform(1.0, 1.5, nb)
                    dn = nom * rng.uniform(0.5, 1.0, nb)
                    mods.append(
                        {
                            "name": "hs",
                            "type": "histosys",
                            "data": {
                                "hi_data": [float(v) for v in up],
                                "lo_data": [float(v) for v in dn],
                            },
                        }
                    )
                r = rng.random()
                if r < 0.3:  # one-sided
                    hi = lo = float(rng.uniform(1.05, 2.0))
                elif r < 0.6:  # very large
                    hi, lo = float(rng.uniform(2.0, 5.0)), float(rng.uniform(0.2, 0.5))
                else:
                    hi, lo = float(rng.uniform(1.02, 1.3)), float(rng.uniform(0.75, 0.98))
                mods.append({"name": "ns", "type": "normsys", "data": {"hi": hi, "lo": lo}})
            total += nom
            samples.append({"name": sname, "data": [float(v) for v in nom], "modifiers": mods})
        channels.append({"name": cname, "samples": samples})
        obs = [0.0] * nb if rng.random() < 0.2 else _observed(rng, total)
        observations.append({"name": cname, "data": obs})
    return {
        "channels": channels,
        "observations": observations,
        "measurements": [{"name": "meas", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }


def synthetic_workspace(
    n_bins: int, n_nps: int, *, seed: int = 0, n_backgrounds: int = 2
) -> dict[str, Any]:
    """Benchmark workspace: one channel, signal (``mu``) + backgrounds with staterror.

    Half of the ``n_nps`` nuisance parameters are normsys, half histosys, spread over the
    background samples; every background sample carries the channel's staterror modifier,
    so there is about one gamma per bin in addition to the ``n_nps`` alphas.
    """
    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 1.0, n_bins)
    sig = 5.0 + 20.0 * np.exp(-0.5 * ((x - 0.7) / 0.1) ** 2)
    samples: list[dict[str, Any]] = [
        {
            "name": "signal",
            "data": [float(v) for v in sig],
            "modifiers": [{"name": "mu", "type": "normfactor", "data": None}],
        }
    ]
    bkgs = []
    for b in range(n_backgrounds):
        nom = 100.0 * np.exp(-(1.5 + b) * x) + 10.0
        bkgs.append(
            {
                "name": f"bkg{b}",
                "data": [float(v) for v in nom],
                "modifiers": [
                    {
                        "name": "staterror_SR",
                        "type": "staterror",
                        "data": [float(v) for v in 0.05 * nom],
                    }
                ],
            }
        )
    for j in range(n_nps):
        target = bkgs[j % n_backgrounds]
        nom = np.asarray(target["data"])
        if j % 2 == 0:
            target["modifiers"].append(
                {
                    "name": f"np_{j}",
                    "type": "normsys",
                    "data": {
                        "hi": float(1.0 + rng.uniform(0.02, 0.1)),
                        "lo": float(1.0 - rng.uniform(0.02, 0.1)),
                    },
                }
            )
        else:
            slope = rng.uniform(-0.05, 0.05)
            up = nom * (1.0 + 0.03 + slope * (x - 0.5))
            dn = nom * (1.0 - 0.03 - slope * (x - 0.5))
            target["modifiers"].append(
                {
                    "name": f"np_{j}",
                    "type": "histosys",
                    "data": {"hi_data": [float(v) for v in up], "lo_data": [float(v) for v in dn]},
                }
            )
    samples.extend(bkgs)
    total = sum(np.asarray(s["data"]) for s in samples)
    obs = [float(v) for v in np.random.default_rng(seed + 1).poisson(total)]
    return {
        "channels": [{"name": "SR", "samples": samples}],
        "observations": [{"name": "SR", "data": obs}],
        "measurements": [{"name": "meas", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }


def workspaces(**kwargs: Any) -> Any:
    """Hypothesis strategy of random workspaces (requires hypothesis)."""
    from hypothesis import strategies as st

    return st.integers(min_value=0, max_value=2**32 - 1).map(
        lambda seed: random_workspace(np.random.default_rng(seed), **kwargs)
    )


def arrowhead_model(ws: Any, **kwargs: Any) -> Any:
    """Build ``ws.model(**kwargs)`` with the arrowhead (dense block + per-bin gammas) engine, even
    for a small model (the layout large models get)."""
    import pytest

    from sigtune.hep import _model as model_module

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(model_module, "_DENSE_MAX_PARS", 0)
        mp.setattr(model_module, "_JIT_MAX_PARS", 0)
        model = ws.model(**kwargs)
    assert not model.arrays.dense_layout
    return model


def saddle_workspace(n_extra: int = 0) -> dict[str, Any]:
    """One bin with a symmetric histosys (``shape``: up and down both 60 over a nominal 50) and
    a data excess: at the suggested start with ``mu = 0`` the gradient along ``shape`` is zero
    and its curvature negative (a saddle point). ``n_extra`` > 0 adds a second channel whose
    data equal its expectation, with that many normsys parameters ``np<k>``: the start stays
    stationary, and the dense block is that much wider."""
    channels: list[dict[str, Any]] = [
        {
            "name": "SR",
            "samples": [
                {
                    "name": "sig",
                    "data": [1.0],
                    "modifiers": [{"name": "mu", "type": "normfactor", "data": None}],
                },
                {
                    "name": "bkg",
                    "data": [50.0],
                    "modifiers": [
                        {
                            "name": "shape",
                            "type": "histosys",
                            "data": {"hi_data": [60.0], "lo_data": [60.0]},
                        }
                    ],
                },
            ],
        }
    ]
    observations: list[dict[str, Any]] = [{"name": "SR", "data": [100.0]}]
    if n_extra:
        channels.append(
            {
                "name": "CR",
                "samples": [
                    {
                        "name": "other",
                        "data": [200.0, 300.0],
                        "modifiers": [
                            {
                                "name": f"np{k}",
                                "type": "normsys",
                                "data": {"hi": 1.0 + 0.01 * (k + 1), "lo": 1.0 - 0.005 * (k + 1)},
                            }
                            for k in range(n_extra)
                        ],
                    }
                ],
            }
        )
        observations.append({"name": "CR", "data": [200.0, 300.0]})
    return {
        "channels": channels,
        "observations": observations,
        "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }

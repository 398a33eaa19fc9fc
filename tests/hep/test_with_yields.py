"""``with_yields``: a model of one structure with other yields equals a model built afresh."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
from _generate import arrowhead_model, random_workspace

from sigtune import hep
from sigtune.hep import _jit
from sigtune.hep._model import with_yields

TYPES = ("normfactor", "shapefactor", "lumi", "normsys", "histosys", "staterror")


def _rescaled(spec: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """Same structure, every yield-like number scaled at random (staterror kept non-zero)."""
    out = copy.deepcopy(spec)
    for c in out["channels"]:
        for s in c["samples"]:
            f = rng.uniform(0.5, 2.0, len(s["data"]))
            s["data"] = [float(v) for v in np.asarray(s["data"]) * f]
            for m in s["modifiers"]:
                if m["type"] == "histosys":
                    for k in ("hi_data", "lo_data"):
                        m["data"][k] = [float(v) for v in np.asarray(m["data"][k]) * f]
                elif m["type"] == "normsys":
                    m["data"] = {
                        "hi": float(rng.uniform(1.01, 1.3)),
                        "lo": float(rng.uniform(0.7, 0.99)),
                    }
                elif m["type"] == "staterror":
                    m["data"] = [float(v) for v in np.asarray(m["data"]) * rng.uniform(0.5, 2.0)]
    return out


def _pars(model: hep.Model, rng: np.random.Generator) -> np.ndarray:
    lo, hi = model.suggested_bounds().T
    x = model.suggested_init() + rng.uniform(-0.2, 0.2, model.n_pars)
    return np.clip(x, np.maximum(lo, 1e-3), hi)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("layout", ["dense", "arrowhead"])
def test_with_yields_equals_a_fresh_model(seed: int, layout: str) -> None:
    rng = np.random.default_rng(seed)
    spec = random_workspace(rng, modifier_types=TYPES)
    other = _rescaled(spec, rng)
    ws, ws2 = hep.Workspace(spec), hep.Workspace(other)
    build = (lambda w: w.model()) if layout == "dense" else arrowhead_model
    template, fresh = build(ws), build(ws2)
    data = ws2.data(fresh)
    template.twice_nll(template.suggested_init(), ws.data(template))  # caches kernel tables
    swapped = with_yields(template, other["channels"])
    if _jit.ENABLED and layout == "dense":  # the kernel tables are reused, not rebuilt
        old, new = template.arrays._cache["jit"].tables, swapped.arrays._cache["jit"].tables
        assert new.lin_idx is old.lin_idx and new.bin_pars is old.bin_pars  # index tables
        assert new.nom is not old.nom and new.dl is not old.dl  # numbers and scratch
    for _ in range(3):
        x = _pars(fresh, rng)
        np.testing.assert_allclose(swapped.expected_data(x), fresh.expected_data(x), rtol=1e-12)
        assert swapped.twice_nll(x, data) == pytest.approx(fresh.twice_nll(x, data), rel=1e-12)
    a, b = hep.fit(swapped, data), hep.fit(fresh, data)
    assert a.twice_nll == pytest.approx(b.twice_nll, rel=1e-10)
    np.testing.assert_allclose(a.bestfit, b.bestfit, atol=1e-6)
    # the template is untouched
    x = _pars(template, rng)
    np.testing.assert_allclose(template.expected_data(x), build(ws).expected_data(x), rtol=1e-12)


def test_with_yields_refuses_another_structure() -> None:
    rng = np.random.default_rng(3)
    spec = random_workspace(rng, modifier_types=TYPES, n_channels=1)
    model = hep.Workspace(spec).model()
    other = copy.deepcopy(spec)
    other["channels"][0]["samples"][0]["data"] = other["channels"][0]["samples"][0]["data"] + [1.0]
    with pytest.raises(hep.HepWorkspaceError, match="does not match"):
        with_yields(model, other["channels"])
    other = copy.deepcopy(spec)
    for s in other["channels"][0]["samples"]:
        s["modifiers"] = [m for m in s["modifiers"] if m["type"] != "normfactor"]
    with pytest.raises(hep.HepWorkspaceError, match="differ from the model"):
        with_yields(model, other["channels"])
    other = copy.deepcopy(spec)
    other["channels"][0]["name"] = "elsewhere"
    with pytest.raises(hep.HepWorkspaceError, match="channels"):
        with_yields(model, other["channels"])


@pytest.mark.parametrize("seed", range(6))
def test_with_yields_of_some_channels_keeps_the_others(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    spec = random_workspace(rng, modifier_types=TYPES, n_channels=2)
    other = _rescaled(spec, rng)
    # the second channel keeps its yields: take it from the original workspace
    keep = spec["channels"][1]["name"]
    other["channels"][1] = copy.deepcopy(spec["channels"][1])
    other["observations"] = copy.deepcopy(spec["observations"])
    ws2 = hep.Workspace(other)
    template, fresh = hep.Workspace(spec).model(), ws2.model()
    template.twice_nll(template.suggested_init(), hep.Workspace(spec).data(template))
    changed = [c for c in other["channels"] if c["name"] != keep]
    swapped = with_yields(template, changed)
    data = ws2.data(fresh)
    for _ in range(3):
        x = _pars(fresh, rng)
        np.testing.assert_allclose(swapped.expected_data(x), fresh.expected_data(x), rtol=1e-12)
        assert swapped.twice_nll(x, data) == pytest.approx(fresh.twice_nll(x, data), rel=1e-12)

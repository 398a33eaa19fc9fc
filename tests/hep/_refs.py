"""Reference data of tests/data/histfactory and the matching pyhf models, shared by the hep tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyhf

import sigtune.hep as hep

DATA = Path(__file__).resolve().parents[1] / "data" / "histfactory"
CASES = sorted(p.stem for p in (DATA / "validation" / "cases").glob("*.json"))
SBOTTOM = DATA / "sbottom"
REF = json.loads((SBOTTOM / "reference.json").read_text())


def case(name: str) -> dict[str, Any]:
    """One validation case file."""
    out: dict[str, Any] = json.loads((DATA / "validation" / "cases" / f"{name}.json").read_text())
    return out


def case_model(c: dict[str, Any]) -> tuple[hep.Model, np.ndarray]:
    """Our model and observed data for a validation case, with the case's interpolation codes."""
    ws = hep.Workspace(c["workspace"])
    st = c["settings"]
    model = ws.model(normsys_interp=st["normsys_interp"], histosys_interp=st["histosys_interp"])
    return model, ws.data(model)


def pyhf_model(
    spec: dict[str, Any], normsys: str = "code4", histosys: str = "code4p"
) -> tuple[Any, np.ndarray]:
    """pyhf's model and data for a workspace spec (numpy backend)."""
    pyhf.set_backend("numpy")
    ws = pyhf.Workspace(spec)
    model = ws.model(
        modifier_settings={"normsys": {"interpcode": normsys}, "histosys": {"interpcode": histosys}}
    )
    return model, np.asarray(ws.data(model))

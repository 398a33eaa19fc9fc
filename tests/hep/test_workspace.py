"""Workspace loading, validation (schema + semantics), patches and measurements."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import sigtune.hep as hep
from sigtune._exceptions import SigtuneError

DATA = Path(__file__).resolve().parents[1] / "data" / "histfactory"
SBOTTOM = DATA / "sbottom"


def _case(name: str) -> dict[str, Any]:
    return json.loads((DATA / "validation" / "cases" / f"{name}.json").read_text())


@pytest.fixture
def spec() -> dict[str, Any]:
    return _case("2bin_2channel")["workspace"]


def test_error_hierarchy() -> None:
    assert issubclass(hep.HepError, SigtuneError)
    assert issubclass(hep.HepWorkspaceError, hep.HepError)
    assert issubclass(hep.HepWorkspaceError, ValueError)
    assert issubclass(hep.HepFitError, RuntimeError)


def test_load_dict_path_and_string(spec: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "ws.json"
    path.write_text(json.dumps(spec))
    a = hep.Workspace(spec)
    b = hep.Workspace(path)
    c = hep.Workspace(str(path))
    d = hep.Workspace(json.dumps(spec))
    for ws in (b, c, d):
        assert ws.spec == a.spec
    assert a.channel_names == ["control", "signal"]
    assert a.measurement_names == [spec["measurements"][0]["name"]]
    # the workspace keeps its own copy
    spec["channels"][0]["name"] = "changed"
    assert "changed" not in a.channel_names


def test_missing_file_and_bad_json(tmp_path: Path) -> None:
    with pytest.raises(hep.HepWorkspaceError, match="does not exist"):
        hep.Workspace(tmp_path / "nope.json")
    with pytest.raises(hep.HepWorkspaceError, match="not valid JSON"):
        hep.Workspace("{not json")
    with pytest.raises(hep.HepWorkspaceError, match="must be a dict"):
        hep.Workspace(42)  # type: ignore[arg-type]


def test_schema_violation_names_json_path(spec: dict[str, Any]) -> None:
    bad = copy.deepcopy(spec)
    bad["channels"][1]["samples"][0]["data"] = "oops"
    with pytest.raises(hep.HepWorkspaceError, match=r"\$\.channels\[1\]\.samples\[0\]\.data"):
        hep.Workspace(bad)
    bad = copy.deepcopy(spec)
    bad["channels"][0]["samples"][0]["modifiers"].append(
        {"name": "x", "type": "bogus", "data": None}
    )
    with pytest.raises(hep.HepWorkspaceError, match="schema"):
        hep.Workspace(bad)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s["channels"].append(copy.deepcopy(s["channels"][0])), "duplicate channel"),
        (
            lambda s: s["channels"][0]["samples"].append(
                copy.deepcopy(s["channels"][0]["samples"][0])
            ),
            "duplicate sample name 'signal' in channel 'signal'",
        ),
        (
            lambda s: s["channels"][0]["samples"][1]["data"].append(3.0),
            "channel 'signal', sample 'background' has 3 bins",
        ),
        (
            lambda s: s["channels"][0]["samples"][1].__setitem__("data", [-1.0, 5.0]),
            "channel 'signal', sample 'background': bin 0 is negative",
        ),
        (
            lambda s: s["channels"][0]["samples"][1].__setitem__("data", [float("nan"), 5.0]),
            "bin 0 is nan",
        ),
        (
            lambda s: s["channels"][0]["samples"][1]["modifiers"][0].__setitem__("data", [1.0]),
            "modifier 'uncorr_bkguncrt_signal' \\(shapesys\\): data has 1 bins",
        ),
        (
            lambda s: s["observations"][0].__setitem__("data", [1.0, 2.0, 3.0]),
            "observation .* has 3 bins",
        ),
        (lambda s: s["observations"].pop(0), "has no observation"),
        (
            lambda s: s["measurements"].append(copy.deepcopy(s["measurements"][0])),
            "duplicate measurement",
        ),
    ],
)
def test_semantic_errors(spec: dict[str, Any], mutate: Any, message: str) -> None:
    bad = copy.deepcopy(spec)
    mutate(bad)
    with pytest.raises(hep.HepWorkspaceError, match=message):
        hep.Workspace(bad)


def test_unknown_poi_and_measurement(spec: dict[str, Any]) -> None:
    ws = hep.Workspace(spec)
    with pytest.raises(hep.HepWorkspaceError, match="parameter of interest 'nope'"):
        ws.model(poi_name="nope")
    with pytest.raises(hep.HepWorkspaceError, match="measurement 'other' not found"):
        ws.model(measurement="other")
    with pytest.raises(hep.HepWorkspaceError, match="must be a scalar"):
        ws.model(poi_name="uncorr_bkguncrt_signal")
    with pytest.raises(hep.HepWorkspaceError, match="normsys_interp"):
        ws.model(normsys_interp="code9")


def test_measurement_selection_and_poi_override(spec: dict[str, Any]) -> None:
    s = copy.deepcopy(spec)
    second = copy.deepcopy(s["measurements"][0])
    second["name"] = "fixed_mu"
    second["config"]["parameters"] = [{"name": "mu", "fixed": True, "inits": [0.5]}]
    s["measurements"].append(second)
    ws = hep.Workspace(s)
    m0 = ws.model()
    m1 = ws.model(measurement="fixed_mu")
    i = m0.poi_index
    assert i is not None
    assert not m0.suggested_fixed()[i]
    assert m1.suggested_fixed()[i]
    assert m1.suggested_init()[i] == 0.5


def test_data_vector_layout_matches_reference() -> None:
    case = _case("2bin_2channel")
    ws = hep.Workspace(case["workspace"])
    model = ws.model()
    np.testing.assert_array_equal(ws.data(model), case["model_checks"]["data_vector"])
    np.testing.assert_array_equal(
        ws.data(model, include_auxdata=False), case["model_checks"]["data_vector"][: model.n_main]
    )


def test_rfc6902_patch_and_sbottom_reference() -> None:
    ref = json.loads((SBOTTOM / "reference.json").read_text())
    point = ref["points"][0]
    bkg = hep.Workspace(SBOTTOM / point["bkgonly"])
    ws = bkg.patched(SBOTTOM / point["patch"])
    model = ws.model()
    assert model.n_pars == point["pyhf_computed"]["n_pars"]
    assert model.n_main == point["pyhf_computed"]["n_main_bins"]
    assert model.channel_names == point["pyhf_computed"]["channels"]
    assert model.poi_name == point["pyhf_computed"]["poi"]
    # the patch removed the validation-region channels; the background-only workspace is intact
    assert len(bkg.channel_names) > len(ws.channel_names)
    assert set(ws.channel_names) < set(bkg.channel_names)


def test_patchset_selection(spec: dict[str, Any]) -> None:
    ws = hep.Workspace(spec)
    patchset = {
        "metadata": {
            "references": {"hepdata": "ins1234567"},
            "description": "test",
            "digests": {"sha256": "0" * 64},
            "labels": ["x"],
        },
        "patches": [
            {
                "metadata": {"name": "up", "values": [1]},
                "patch": [{"op": "replace", "path": "/observations/0/data/0", "value": 999.0}],
            },
            {
                "metadata": {"name": "down", "values": [2]},
                "patch": [{"op": "replace", "path": "/observations/0/data/0", "value": 1.0}],
            },
        ],
        "version": "1.0.0",
    }
    assert ws.patched(patchset, name="up").observations["signal"][0] == 999.0
    assert ws.patched(json.dumps(patchset), name="down").observations["signal"][0] == 1.0
    with pytest.raises(hep.HepWorkspaceError, match="holds 2 patches"):
        ws.patched(patchset)
    with pytest.raises(hep.HepWorkspaceError, match="'sideways' is not in the patchset"):
        ws.patched(patchset, name="sideways")


def test_patch_that_does_not_apply(spec: dict[str, Any]) -> None:
    ws = hep.Workspace(spec)
    with pytest.raises(hep.HepWorkspaceError, match="does not apply"):
        ws.patched([{"op": "remove", "path": "/channels/7"}])
    with pytest.raises(hep.HepWorkspaceError, match="does not apply"):
        ws.patched([{"op": "test", "path": "/version", "value": "2.0.0"}])
    # a patch producing an invalid workspace is rejected by validation
    with pytest.raises(hep.HepWorkspaceError, match="bins"):
        ws.patched([{"op": "add", "path": "/channels/0/samples/0/data/-", "value": 1.0}])
    with pytest.raises(hep.HepWorkspaceError, match="schema"):
        ws.patched([{"op": "frobnicate", "path": "/version"}])


def test_lumi_needs_measurement_config() -> None:
    spec = _case("1bin_lumi")["workspace"]
    spec["measurements"][0]["config"]["parameters"] = []
    with pytest.raises(hep.HepWorkspaceError, match="lumi modifier 'lumi' needs"):
        hep.Workspace(spec).model()


def test_bad_parameter_config() -> None:
    spec = _case("1bin_normsys")["workspace"]
    spec["measurements"][0]["config"]["parameters"] = [{"name": "mu", "bounds": [[0, 1], [0, 2]]}]
    with pytest.raises(hep.HepWorkspaceError, match="bounds has 2 values"):
        hep.Workspace(spec).model()
    spec["measurements"][0]["config"]["parameters"] = [{"name": "mu", "inits": [20.0]}]
    with pytest.raises(hep.HepWorkspaceError, match="outside bounds"):
        hep.Workspace(spec).model()
    spec["measurements"][0]["config"]["parameters"] = [{"name": "mu", "sigmas": [1.0]}]
    with pytest.raises(hep.HepWorkspaceError, match="does not use sigmas"):
        hep.Workspace(spec).model()


def test_shared_name_across_incompatible_types() -> None:
    spec = _case("1bin_normsys")["workspace"]
    spec["channels"][0]["samples"][1]["modifiers"].append(
        {"name": "mu", "type": "shapesys", "data": [1.0, 1.0]}
    )
    with pytest.raises(
        hep.HepWorkspaceError, match="'mu' is used both as normfactor and as shapesys"
    ):
        hep.Workspace(spec).model()


def test_nonpositive_normsys_rejected() -> None:
    spec = _case("1bin_normsys")["workspace"]
    spec["channels"][0]["samples"][1]["modifiers"][0]["data"] = {"hi": 1.1, "lo": 0.0}
    with pytest.raises(hep.HepWorkspaceError, match=r"sample 'background', modifier 'bkg_norm'"):
        hep.Workspace(spec).model()

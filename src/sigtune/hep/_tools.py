"""Workspace tools (as pyhf's ``inspect``, ``combine``, ``prune``, ``rename``, ``patchset``).

Plain functions on pyhf JSON documents: each returns a new, schema-valid document (checked by
:class:`~sigtune.hep.Workspace`) and never modifies its input. The semantics follow pyhf's
``Workspace.combine`` / ``prune`` / ``rename`` (tests compare the outputs with pyhf's).
"""

from __future__ import annotations

import collections
import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sigtune.hep._exceptions import HepWorkspaceError
from sigtune.hep._schema import validate

__all__ = [
    "JOINS",
    "combine",
    "inspect",
    "patchset_entries",
    "prune",
    "rename",
    "with_bounds",
]

JOINS = ("none", "outer", "left outer", "right outer")


def _modifiers(spec: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for c in spec["channels"]:
        for s in c["samples"]:
            for m in s["modifiers"]:
                out.setdefault(m["name"], m["type"])
    return out


def _samples(spec: Mapping[str, Any]) -> list[str]:
    return sorted({s["name"] for c in spec["channels"] for s in c["samples"]})


def inspect(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Summary of a workspace: channels (bins), samples, modifiers, parameters, measurements.

    Parameters are listed as the model of the first measurement builds them (name, type, number
    of components, init, bounds, fixed).
    """
    from sigtune.hep._workspace import Workspace

    Workspace(spec)  # validates
    model = _model(spec, None)
    init, bounds, fixed = model.suggested_init(), model.suggested_bounds(), model.suggested_fixed()
    params = []
    for name in model.parameters:
        sl = model.par_slice(name)
        params.append(
            {
                "name": name,
                "type": model.param_types(name)[0],
                "n": sl.stop - sl.start,
                "inits": [float(v) for v in init[sl]],
                "bounds": [[float(lo), float(hi)] for lo, hi in bounds[sl]],
                "fixed": bool(np.all(fixed[sl])),
            }
        )
    return {
        "channels": {c["name"]: len(c["samples"][0]["data"]) for c in spec["channels"]},
        "samples": _samples(spec),
        "modifiers": sorted(
            {
                (m["name"], m["type"])
                for c in spec["channels"]
                for s in c["samples"]
                for m in s["modifiers"]
            }
        ),
        "parameters": params,
        "measurements": [
            {"name": m["name"], "poi": m["config"]["poi"]} for m in spec["measurements"]
        ],
        "n_bins": int(model.n_main),
        "n_parameters": int(model.n_pars),
    }


def _model(spec: Mapping[str, Any], measurement: str | None) -> Any:
    """The model of a measurement; without a POI when the workspace lacks it (a
    background-only workspace whose signal comes with a patch)."""
    from sigtune.hep._model import Model

    names = [m["name"] for m in spec["measurements"]]
    if measurement is not None and measurement not in names:
        raise HepWorkspaceError(f"measurement {measurement!r} not found; available: {names}")
    config = spec["measurements"][names.index(measurement) if measurement else 0]["config"]
    poi = config["poi"] if config["poi"] in _modifiers(spec) else None
    return Model(spec["channels"], parameters=config.get("parameters", []), poi_name=poi)


def _check_join(join: str) -> None:
    if join not in JOINS:
        raise HepWorkspaceError(f"join must be one of {list(JOINS)}, got {join!r}")


def _join_items(
    join: str,
    left: Sequence[Mapping[str, Any]],
    right: Sequence[Mapping[str, Any]],
    deep_merge_key: str | None = None,
) -> list[Any]:
    primary, secondary = (right, left) if join == "right outer" else (left, right)
    joined: list[Any] = copy.deepcopy(list(primary))
    keys = [item["name"] for item in joined]
    for item in secondary:
        if item["name"] in keys and deep_merge_key is not None:
            target = joined[keys.index(item["name"])]
            target[deep_merge_key] = _join_items(
                "left outer", target[deep_merge_key], item[deep_merge_key]
            )
        elif (
            join == "none"
            or (join == "outer" and item not in primary)
            or (join in ("left outer", "right outer") and item["name"] not in keys)
        ):
            joined.append(copy.deepcopy(item))
    return joined


def _check_joined(
    join: str, what: str, left: Sequence[Any], right: Sequence[Any], joined: Sequence[Any]
) -> None:
    if join == "none":
        common = sorted({i["name"] for i in left} & {i["name"] for i in right})
        if common:
            raise HepWorkspaceError(
                f"the workspaces have {what} {common} in common; rename them or use another "
                f"--join ({', '.join(JOINS[1:])})"
            )
    elif join == "outer":
        counts = collections.Counter(i["name"] for i in joined)
        bad = sorted(n for n, k in counts.items() if k > 1)
        if bad:
            raise HepWorkspaceError(
                f"the workspaces have {what} {bad} with the same name but different content; "
                "use --join 'left outer' or 'right outer' to keep one side"
            )


def combine(
    left: Mapping[str, Any],
    right: Mapping[str, Any],
    *,
    join: str = "none",
    merge_channels: bool = False,
) -> dict[str, Any]:
    """Combine two workspaces (pyhf ``Workspace.combine``).

    Args:
        left, right: Workspace documents.
        join: ``none`` (no common names), ``outer`` (common items must be identical),
            ``left outer`` / ``right outer`` (the left / right item wins).
        merge_channels: Merge the samples of channels with the same name (outer joins only).

    Raises:
        HepWorkspaceError: on conflicting names, versions or measurements.
    """
    _check_join(join)
    if merge_channels and join == "none":
        raise HepWorkspaceError("merge_channels needs an outer join (outer, left/right outer)")
    if left["version"] != right["version"]:
        raise HepWorkspaceError(
            f"workspaces of versions {left['version']} and {right['version']} cannot be combined"
        )
    channels = _join_items(
        join, left["channels"], right["channels"], "samples" if merge_channels else None
    )
    _check_joined(join, "channels", left["channels"], right["channels"], channels)
    observations = _join_items(join, left["observations"], right["observations"])
    _check_joined(join, "observations", left["observations"], right["observations"], observations)
    measurements = _join_items(join, left["measurements"], right["measurements"])
    _check_joined(join, "measurements", left["measurements"], right["measurements"], measurements)
    if join == "outer":
        by_name: dict[str, list[Any]] = {}
        for m in measurements:
            by_name.setdefault(m["name"], []).append(m)
        bad_poi = sorted(
            n for n, ms in by_name.items() if len({m["config"]["poi"] for m in ms}) > 1
        )
        if bad_poi:
            raise HepWorkspaceError(f"measurements {bad_poi} have different POIs in the two inputs")
        measurements = []
        for name, ms in by_name.items():
            if len(ms) == 1:
                measurements.append(ms[0])
                continue
            params = _join_items("outer", *(m["config"]["parameters"] for m in ms))
            counts = collections.Counter(p["name"] for p in params)
            bad = sorted(n for n, k in counts.items() if k > 1)
            if bad:
                raise HepWorkspaceError(
                    f"measurement {name!r} configures parameters {bad} differently in the two "
                    "inputs"
                )
            measurements.append(
                {"name": name, "config": {"poi": ms[0]["config"]["poi"], "parameters": params}}
            )
    out = {
        "channels": channels,
        "measurements": measurements,
        "observations": observations,
        "version": left["version"],
    }
    return _valid(out)


def _valid(spec: dict[str, Any]) -> dict[str, Any]:
    from sigtune.hep._workspace import Workspace

    Workspace(spec)  # schema and semantic checks; raises HepWorkspaceError naming the fault
    return spec


def _check_names(spec: Mapping[str, Any], kind: str, names: Sequence[str]) -> None:
    known: Sequence[str]
    if kind == "modifier":
        known = list(_modifiers(spec))
    elif kind == "modifier type":
        known = sorted(set(_modifiers(spec).values()))
    elif kind == "sample":
        known = _samples(spec)
    elif kind == "channel":
        known = [c["name"] for c in spec["channels"]]
    else:
        known = [m["name"] for m in spec["measurements"]]
    missing = [n for n in names if n not in known]
    if missing:
        raise HepWorkspaceError(
            f"{kind}(s) {missing} not in the workspace; {kind}s: {sorted(known)}"
        )


def _prune_and_rename(
    spec: Mapping[str, Any],
    *,
    prune_modifiers: Sequence[str] = (),
    prune_modifier_types: Sequence[str] = (),
    prune_samples: Sequence[str] = (),
    prune_channels: Sequence[str] = (),
    prune_measurements: Sequence[str] = (),
    rename_modifiers: Mapping[str, str] | None = None,
    rename_samples: Mapping[str, str] | None = None,
    rename_channels: Mapping[str, str] | None = None,
    rename_measurements: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    rm, rs = dict(rename_modifiers or {}), dict(rename_samples or {})
    rc, rme = dict(rename_channels or {}), dict(rename_measurements or {})
    _check_names(spec, "modifier type", prune_modifier_types)
    _check_names(spec, "modifier", [*prune_modifiers, *rm])
    _check_names(spec, "sample", [*prune_samples, *rs])
    _check_names(spec, "channel", [*prune_channels, *rc])
    _check_names(spec, "measurement", [*prune_measurements, *rme])
    out = {
        "channels": [
            {
                "name": rc.get(c["name"], c["name"]),
                "samples": [
                    {
                        "name": rs.get(s["name"], s["name"]),
                        "data": copy.deepcopy(s["data"]),
                        "modifiers": [
                            dict(copy.deepcopy(m), name=rm.get(m["name"], m["name"]))
                            for m in s["modifiers"]
                            if m["name"] not in prune_modifiers
                            and m["type"] not in prune_modifier_types
                        ],
                    }
                    for s in c["samples"]
                    if s["name"] not in prune_samples
                ],
            }
            for c in spec["channels"]
            if c["name"] not in prune_channels
        ],
        "measurements": [
            {
                "name": rme.get(m["name"], m["name"]),
                "config": {
                    "parameters": [
                        dict(copy.deepcopy(p), name=rm.get(p["name"], p["name"]))
                        for p in m["config"]["parameters"]
                        if p["name"] not in prune_modifiers
                    ],
                    "poi": rm.get(m["config"]["poi"], m["config"]["poi"]),
                },
            }
            for m in spec["measurements"]
            if m["name"] not in prune_measurements
        ],
        "observations": [
            dict(copy.deepcopy(o), name=rc.get(o["name"], o["name"]))
            for o in spec["observations"]
            if o["name"] not in prune_channels
        ],
        "version": spec["version"],
    }
    return _valid(out)


def prune(
    spec: Mapping[str, Any],
    *,
    modifiers: Sequence[str] = (),
    modifier_types: Sequence[str] = (),
    samples: Sequence[str] = (),
    channels: Sequence[str] = (),
    measurements: Sequence[str] = (),
) -> dict[str, Any]:
    """Remove channels (and their observations), samples, modifiers (by name or type) and
    measurements (pyhf ``Workspace.prune``); parameter settings of removed modifiers go too.

    Raises:
        HepWorkspaceError: a name is not in the workspace, or the result is not valid.
    """
    return _prune_and_rename(
        spec,
        prune_modifiers=modifiers,
        prune_modifier_types=modifier_types,
        prune_samples=samples,
        prune_channels=channels,
        prune_measurements=measurements,
    )


def rename(
    spec: Mapping[str, Any],
    *,
    modifiers: Mapping[str, str] | None = None,
    samples: Mapping[str, str] | None = None,
    channels: Mapping[str, str] | None = None,
    measurements: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Rename channels (and observations), samples, modifiers (and their parameter settings
    and POI) and measurements (pyhf ``Workspace.rename``).

    Raises:
        HepWorkspaceError: a name is not in the workspace, or the result is not valid.
    """
    return _prune_and_rename(
        spec,
        rename_modifiers=modifiers,
        rename_samples=samples,
        rename_channels=channels,
        rename_measurements=measurements,
    )


def patchset_entries(patchset: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The patches of a pyhf patchset: name and metadata values (``metadata.labels``).

    Raises:
        HepWorkspaceError: the document is not a valid patchset.
    """
    validate(patchset, "patchset")
    labels = list(patchset["metadata"].get("labels", []))
    return [
        {
            "name": p["metadata"]["name"],
            "values": dict(zip(labels, p["metadata"]["values"], strict=False)),
        }
        for p in patchset["patches"]
    ]


def with_bounds(
    spec: Mapping[str, Any],
    *,
    measurement: str | None = None,
    poi_bounds: tuple[float, float] | None = None,
    par_bounds: Mapping[str, tuple[float, float]] | None = None,
) -> dict[str, Any]:
    """A copy whose measurement sets the bounds of the POI and of named parameters (every
    component of a vector parameter such as a staterror). The inits are clipped into the bounds.

    Raises:
        HepWorkspaceError: unknown measurement or parameter, or ``low >= high``.
    """
    out = copy.deepcopy(dict(spec))
    names = [m["name"] for m in out["measurements"]]
    if measurement is not None and measurement not in names:
        raise HepWorkspaceError(f"measurement {measurement!r} not found; available: {names}")
    meas = out["measurements"][names.index(measurement) if measurement else 0]
    wanted = dict(par_bounds or {})
    if poi_bounds is not None:
        wanted[meas["config"]["poi"]] = poi_bounds
    if not wanted:
        return out
    from sigtune.hep._workspace import Workspace

    Workspace(out)  # validates
    model = _model(out, measurement)
    init = model.suggested_init()
    for name, (lo, hi) in wanted.items():
        if not lo < hi:
            raise HepWorkspaceError(f"bounds of {name!r} need low < high, got [{lo}, {hi}]")
        if name not in model.parameters:
            raise HepWorkspaceError(
                f"no parameter {name!r} in the model; parameters: {sorted(model.parameters)}"
            )
        sl = model.par_slice(name)
        entry = next((p for p in meas["config"]["parameters"] if p["name"] == name), None)
        if entry is None:
            entry = {"name": name}
            meas["config"]["parameters"].append(entry)
        entry["bounds"] = [[float(lo), float(hi)]] * (sl.stop - sl.start)
        entry["inits"] = [min(max(float(v), lo), hi) for v in init[sl]]
    return _valid(out)

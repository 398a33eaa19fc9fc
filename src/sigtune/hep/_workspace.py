"""pyhf JSON workspaces: loading, validation, patches, measurements and observations."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonpatch
import numpy as np

from sigtune.hep._exceptions import HepWorkspaceError
from sigtune.hep._schema import validate

if TYPE_CHECKING:
    from sigtune.hep._model import Model

__all__ = ["Workspace"]


def _load_json(source: Any, what: str) -> Any:
    """Decode ``source``: a mapping/list (deep-copied), a path, or a JSON string."""
    if isinstance(source, Mapping | list):
        return copy.deepcopy(source)
    if isinstance(source, Path) or (
        isinstance(source, str) and not source.lstrip().startswith(("{", "["))
    ):
        path = Path(source)
        if not path.is_file():
            raise HepWorkspaceError(f"{what} file {str(path)!r} does not exist")
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise HepWorkspaceError(f"{what} file {str(path)!r} is not valid JSON: {exc}") from exc
    if isinstance(source, str):
        try:
            return json.loads(source)
        except json.JSONDecodeError as exc:
            raise HepWorkspaceError(f"{what} is not valid JSON: {exc}") from exc
    raise HepWorkspaceError(
        f"{what} must be a dict, a path or a JSON string, got {type(source).__name__}"
    )


def _check_yields(values: Sequence[float], where: str, *, allow_negative: bool = False) -> None:
    for i, v in enumerate(values):
        if not math.isfinite(v):
            raise HepWorkspaceError(f"{where}: bin {i} is {v}; yields must be finite numbers")
        if v < 0 and not allow_negative:
            raise HepWorkspaceError(f"{where}: bin {i} is negative ({v}); yields must be >= 0")


def _check_semantics(spec: Mapping[str, Any]) -> None:
    """Checks the JSON schema cannot express (names, bin counts, yields)."""
    channel_bins: dict[str, int] = {}
    for ci, channel in enumerate(spec["channels"]):
        cname = channel["name"]
        if cname in channel_bins:
            raise HepWorkspaceError(f"duplicate channel name {cname!r} ($.channels[{ci}])")
        samples = channel["samples"]
        n_bins = len(samples[0]["data"])
        channel_bins[cname] = n_bins
        seen_samples: set[str] = set()
        for sample in samples:
            sname = sample["name"]
            where = f"channel {cname!r}, sample {sname!r}"
            if sname in seen_samples:
                raise HepWorkspaceError(f"duplicate sample name {sname!r} in channel {cname!r}")
            seen_samples.add(sname)
            if len(sample["data"]) != n_bins:
                raise HepWorkspaceError(
                    f"{where} has {len(sample['data'])} bins, but the channel's first sample "
                    f"has {n_bins}; all samples of a channel need the same bin count"
                )
            _check_yields(sample["data"], where)
            seen_mods: set[tuple[str, str]] = set()
            for modifier in sample["modifiers"]:
                key = (modifier["name"], modifier["type"])
                mwhere = f"{where}, modifier {modifier['name']!r} ({modifier['type']})"
                if key in seen_mods:
                    raise HepWorkspaceError(f"{mwhere} appears twice on the same sample")
                seen_mods.add(key)
                data = modifier["data"]
                mtype = modifier["type"]
                if mtype == "histosys":
                    for side in ("hi_data", "lo_data"):
                        if len(data[side]) != n_bins:
                            raise HepWorkspaceError(
                                f"{mwhere}: {side} has {len(data[side])} bins, expected {n_bins}"
                            )
                        _check_yields(data[side], f"{mwhere} {side}", allow_negative=True)
                elif mtype in ("staterror", "shapesys"):
                    if len(data) != n_bins:
                        raise HepWorkspaceError(
                            f"{mwhere}: data has {len(data)} bins, expected {n_bins}"
                        )
                    _check_yields(data, f"{mwhere} uncertainties")
                elif mtype == "normsys":
                    for side in ("hi", "lo"):
                        if not math.isfinite(data[side]):
                            raise HepWorkspaceError(f"{mwhere}: {side} is {data[side]}")
    seen_obs: set[str] = set()
    for oi, obs in enumerate(spec["observations"]):
        oname = obs["name"]
        if oname in seen_obs:
            raise HepWorkspaceError(f"duplicate observation {oname!r} ($.observations[{oi}])")
        seen_obs.add(oname)
        _check_yields(obs["data"], f"observation {oname!r}")
        if oname in channel_bins and len(obs["data"]) != channel_bins[oname]:
            raise HepWorkspaceError(
                f"observation {oname!r} has {len(obs['data'])} bins, but channel {oname!r} "
                f"has {channel_bins[oname]}"
            )
    for cname in channel_bins:
        if cname not in seen_obs:
            raise HepWorkspaceError(
                f"channel {cname!r} has no observation; add one named {cname!r}"
            )
    seen_meas: set[str] = set()
    for measurement in spec["measurements"]:
        if measurement["name"] in seen_meas:
            raise HepWorkspaceError(f"duplicate measurement name {measurement['name']!r}")
        seen_meas.add(measurement["name"])
        names = [p["name"] for p in measurement["config"]["parameters"]]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise HepWorkspaceError(
                f"measurement {measurement['name']!r} configures parameter(s) {sorted(dup)} twice"
            )


class Workspace:
    """A validated pyhf JSON workspace (schema version 1.0.0).

    Args:
        spec: A dict, a path to a JSON file, or a JSON string.

    Raises:
        HepWorkspaceError: The workspace violates the schema (the message has the JSON path)
            or is inconsistent (duplicate names, bin-count mismatch, negative/NaN yields).

    Example:
        >>> ws = Workspace("tests/data/histfactory/sbottom/RegionA/BkgOnly.json")  # doctest: +SKIP
        >>> model = ws.patched("patch.json").model()                                # doctest: +SKIP
    """

    def __init__(self, spec: Mapping[str, Any] | str | Path) -> None:
        if isinstance(spec, Workspace):
            spec = spec.spec
        document = _load_json(spec, "workspace")
        validate(document, "workspace")
        _check_semantics(document)
        self._spec: dict[str, Any] = document

    @property
    def spec(self) -> dict[str, Any]:
        """A deep copy of the workspace JSON document."""
        return copy.deepcopy(self._spec)

    @property
    def channel_names(self) -> list[str]:
        """Channel names, sorted (the order of the model's main bins)."""
        return sorted(c["name"] for c in self._spec["channels"])

    @property
    def measurement_names(self) -> list[str]:
        """Measurement names in document order (the first is the default)."""
        return [m["name"] for m in self._spec["measurements"]]

    @property
    def observations(self) -> dict[str, list[float]]:
        """Observed counts per channel name."""
        return {o["name"]: list(o["data"]) for o in self._spec["observations"]}

    def patched(self, patch: Any, name: str | None = None) -> Workspace:
        """Return a new workspace with a JSON patch applied.

        Args:
            patch: An RFC 6902 patch (list of operations), a pyhf patchset (dict with
                ``patches``/``metadata``/``version``), or a path / JSON string of either.
            name: For a patchset: the name of the patch to apply (may be omitted when
                the patchset holds a single patch).

        Raises:
            HepWorkspaceError: The patch is malformed, the named patch is not in the
                patchset, the patch does not apply, or the result is not a valid workspace.
        """
        document = _load_json(patch, "patch")
        if isinstance(document, Mapping):
            validate(document, "patchset")
            patches = {p["metadata"]["name"]: p["patch"] for p in document["patches"]}
            if name is None:
                if len(patches) != 1:
                    raise HepWorkspaceError(
                        f"the patchset holds {len(patches)} patches; pass name= one of "
                        f"{sorted(patches)}"
                    )
                name = next(iter(patches))
            if name not in patches:
                raise HepWorkspaceError(
                    f"patch {name!r} is not in the patchset; available: {sorted(patches)}"
                )
            operations = patches[name]
        else:
            if name is not None:
                raise HepWorkspaceError("name= is only meaningful for a pyhf patchset")
            operations = document
        validate(operations, "jsonpatch")
        try:
            result = jsonpatch.apply_patch(self._spec, operations, in_place=False)
        except (
            jsonpatch.JsonPatchException,
            jsonpatch.JsonPointerException,
            KeyError,
            IndexError,
            TypeError,
        ) as exc:
            raise HepWorkspaceError(f"the patch does not apply to this workspace: {exc}") from exc
        return Workspace(result)

    def _measurement(self, measurement: str | None) -> dict[str, Any]:
        measurements = self._spec["measurements"]
        if measurement is None:
            return dict(measurements[0])
        for m in measurements:
            if m["name"] == measurement:
                return dict(m)
        raise HepWorkspaceError(
            f"measurement {measurement!r} not found; available: {self.measurement_names}"
        )

    def model(
        self,
        measurement: str | None = None,
        poi_name: str | None = None,
        normsys_interp: str = "code4",
        histosys_interp: str = "code4p",
    ) -> Model:
        """Build the likelihood :class:`~sigtune.hep.Model` of one measurement.

        Args:
            measurement: Measurement name; ``None`` takes the first one.
            poi_name: Overrides the measurement's parameter of interest.
            normsys_interp: ``"code4"`` (default, as pyhf's Model) or ``"code1"``.
            histosys_interp: ``"code4p"`` (default) or ``"code0"``.

        Raises:
            HepWorkspaceError: Unknown measurement/POI, inconsistent modifiers, bad settings.
        """
        from sigtune.hep._model import Model

        meas = self._measurement(measurement)
        config = meas["config"]
        poi = poi_name if poi_name is not None else config["poi"]
        return Model(
            self._spec["channels"],
            parameters=config.get("parameters", []),
            poi_name=poi,
            normsys_interp=normsys_interp,
            histosys_interp=histosys_interp,
        )

    def data(self, model: Model, include_auxdata: bool = True) -> np.ndarray:
        """Observed data for ``model``: main bins (channels sorted by name), then auxdata.

        Raises:
            HepWorkspaceError: A model channel has no observation in this workspace.
        """
        obs = self.observations
        parts = []
        for cname, n_bins in zip(model.channel_names, model.channel_nbins, strict=True):
            if cname not in obs:
                raise HepWorkspaceError(f"no observation for channel {cname!r}")
            if len(obs[cname]) != n_bins:
                raise HepWorkspaceError(
                    f"observation {cname!r} has {len(obs[cname])} bins, the model has {n_bins}"
                )
            parts.append(np.asarray(obs[cname], dtype=float))
        if include_auxdata:
            parts.append(np.asarray(model.auxdata, dtype=float))
        return np.concatenate(parts)

    def __repr__(self) -> str:
        return f"Workspace(channels={self.channel_names}, measurements={self.measurement_names})"

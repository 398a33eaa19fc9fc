"""Run-config section ``objective: {type: binning, ...}`` and its factory.

Example (``examples/binning/corrected.yaml``)::

    objective:
      type: binning
      generator: corrected.py:make_samples        # or samples: [{name, path, discriminant, ...}]
      signal: [signal]
      fine_bins: {lo: 0.0, hi: 1.0, n: 500}
      binning: {kind: uniform, n_bins: [3, 40], lo: [0.0, 0.3], hi: [0.7, 1.0]}
      cuts: []                                     # [{column: eta, op: "<", abs: true, range: [1, 2.5]}]
      workspace:
        normsys: [{name: bkg_norm, samples: [background], lo: 0.95, hi: 1.05}]
      figure: z0_exp                               # z0_obs, cls_limit_exp, z_asimov
      objectives: [figure]                         # or [figure, n_bins|impact|cls_limit_exp]
      max_rel_stat: 0.15
      batch_size: 16            # optional: ask/evaluate/tell 16 trials at once (batched fits)

Control regions (``examples/binning/realistic.yaml``)::

      region_column: region                        # event column naming the region
      signal_region: 0                             # its value for signal-region events
      control_regions: [{name: CR_top, value: 1, edges: [0, 0.5, 1]}]
      workspace: {normfactors: [{name: mu_top, samples: [ttbar]}]}

Importing this module registers the type with :func:`sigtune._config.register_objective_type`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sigtune._config import ObjectiveSpec, RunConfig, register_objective_type, resolve_callable
from sigtune._exceptions import ConfigError
from sigtune.pipelines.binning._batched import BatchRunner
from sigtune.pipelines.binning._binning import make_binning
from sigtune.pipelines.binning._cuts import make_cut
from sigtune.pipelines.binning._events import EventSample, load_events
from sigtune.pipelines.binning._exceptions import BinningError
from sigtune.pipelines.binning._objective import BinningObjective
from sigtune.pipelines.binning._results import write_outputs
from sigtune.pipelines.binning._workspace import workspace_options_from_mapping

__all__ = ["BinningObjectiveConfig", "make_objective"]

_GRID_BATCH = 64  # exhaustive samplers: batches cost nothing in search quality


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SampleConfig(_Model):
    """One event sample read from a file."""

    name: str = Field(min_length=1)
    path: str = Field(description="Parquet, CSV, .npz/.npy or ROOT file (relative to the config).")
    discriminant: str
    weight: str | None = None
    tree: str | None = Field(None, description="TTree name for ROOT files.")
    scale: float = Field(1.0, gt=0, description="Factor applied to every weight.")
    columns: list[str] = Field(default_factory=list, description="Extra columns (for cuts).")
    weight_variations: dict[str, tuple[str, str]] = Field(default_factory=dict)
    discriminant_variations: dict[str, tuple[str, str]] = Field(default_factory=dict)


class FineBins(_Model):
    """Fine uniform binning the candidates are merged from."""

    lo: float = 0.0
    hi: float = 1.0
    n: int = Field(500, ge=2, le=1_000_000)

    @model_validator(mode="after")
    def _order(self) -> FineBins:
        if not self.hi > self.lo:
            raise ValueError(f"need lo < hi, got lo={self.lo}, hi={self.hi}")
        return self


class NormSysConfig(_Model):
    """An explicit normalisation uncertainty."""

    name: str
    samples: list[str] = Field(min_length=1)
    lo: float = Field(gt=0)
    hi: float = Field(gt=0)


class NormFactorConfig(_Model):
    """A free normalisation (e.g. a background fitted in a control region)."""

    name: str
    samples: list[str] = Field(min_length=1)
    bounds: tuple[float, float] = (0.0, 10.0)


class ControlRegionConfig(_Model):
    """A control region: events with ``region_column == value``, binned with fixed ``edges``."""

    name: str = Field(min_length=1)
    value: float
    edges: list[float] = Field(min_length=2)


class WorkspaceConfig(_Model):
    """Options of the per-candidate workspace (see ``WorkspaceOptions``)."""

    channel: str = "SR"
    poi: str = "mu"
    staterror: bool = True
    normsys: list[NormSysConfig] = Field(default_factory=list)
    normfactors: list[NormFactorConfig] = Field(default_factory=list)
    split: bool = False
    prune: float | None = Field(None, ge=0)
    lumi: tuple[float, float] | None = None
    observations: Literal["asimov", "background"] = "asimov"


class BinningObjectiveConfig(_Model):
    """The ``objective`` section of ``type: binning``."""

    type: Literal["binning"] = "binning"
    samples: list[SampleConfig] | None = None
    generator: str | None = Field(
        None, description="'file.py:function' / 'module:function' returning a list of EventSample."
    )
    generator_kwargs: dict[str, Any] = Field(default_factory=dict)
    signal: list[str] = Field(min_length=1)
    fine_bins: FineBins = Field(default_factory=lambda: FineBins.model_validate({}))
    binning: dict[str, Any] = Field(default_factory=lambda: {"kind": "uniform"})
    cuts: list[dict[str, Any]] = Field(default_factory=list)
    workspace: WorkspaceConfig = Field(default_factory=lambda: WorkspaceConfig.model_validate({}))
    figure: Literal["z0_exp", "z0_obs", "cls_limit_exp", "z_asimov"] = "z0_exp"
    objectives: list[Literal["figure", "n_bins", "impact", "cls_limit_exp"]] = Field(
        default_factory=lambda: ["figure"]  # type: ignore[arg-type]
    )
    min_background: float | None = Field(None, ge=0)
    max_rel_stat: float | None = Field(None, gt=0)
    region_column: str | None = None
    signal_region: float = 0.0
    control_regions: list[ControlRegionConfig] = Field(default_factory=list)
    batch_size: int | None = Field(
        None,
        ge=1,
        description="Trials asked and evaluated together (batched fits); default 1, or 64 "
        "with the grid / bruteforce samplers.",
    )
    plot: bool = True

    @field_validator("binning")
    @classmethod
    def _check_binning(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            make_binning(value)
        except BinningError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("cuts")
    @classmethod
    def _check_cuts(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for c in value:
            try:
                make_cut(c)
            except (BinningError, ValueError) as exc:
                raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _one_source(self) -> BinningObjectiveConfig:
        if (self.samples is None) == (self.generator is None):
            raise ValueError("give exactly one of 'samples' (files) or 'generator'")
        if self.objectives[0] != "figure":
            raise ValueError("objectives must start with 'figure'")
        if self.control_regions and self.region_column is None:
            raise ValueError("control_regions need region_column (the event column)")
        return self


def _load_samples(section: BinningObjectiveConfig, base_dir: Path | None) -> list[EventSample]:
    if section.generator is not None:
        fn = resolve_callable(section.generator, base_dir)
        samples = list(fn(**section.generator_kwargs))
        if not all(isinstance(s, EventSample) for s in samples):
            raise ConfigError(
                f"objective.generator {section.generator!r} must return a list of EventSample."
            )
        return samples
    out = []
    for s in section.samples or []:
        path = Path(s.path)
        if not path.is_absolute() and base_dir is not None and (base_dir / path).exists():
            path = base_dir / path
        out.append(
            load_events(
                path,
                name=s.name,
                discriminant=s.discriminant,
                weight=s.weight,
                columns=s.columns,
                weight_variations=s.weight_variations,
                discriminant_variations=s.discriminant_variations,
                tree=s.tree,
                scale=s.scale,
            )
        )
    return out


class _AfterRun:
    """Writes the outputs and returns the text summary ``sigtune run`` prints."""

    def __init__(self, objective: BinningObjective, plot: bool, started: float) -> None:
        self.objective = objective
        self.plot = plot
        self.started = started

    def __call__(self, study: Any, run_dir: Path) -> str:
        result = write_outputs(self.objective, study, run_dir, plot=self.plot)
        elapsed = time.perf_counter() - self.started
        files = ", ".join(p.name for p in result.files.values())
        return (
            f"{result.summary}\n\nwall time incl. setup: {elapsed:.2f} s\n"
            f"outputs in {run_dir}: {files}"
        )


def make_objective(section: BinningObjectiveConfig, config: RunConfig) -> ObjectiveSpec:
    """Factory of the ``binning`` objective type.

    Raises:
        ConfigError: if the samples cannot be loaded or are inconsistent (with what to fix).
    """
    started = time.perf_counter()
    base_dir = getattr(config, "base_dir", None)
    try:
        samples = _load_samples(section, base_dir)
        fb = section.fine_bins
        objective = BinningObjective(
            samples,
            signal=section.signal,
            fine_edges=np.linspace(fb.lo, fb.hi, fb.n + 1),
            binning=section.binning,
            cuts=section.cuts,
            workspace=workspace_options_from_mapping(section.workspace.model_dump()),
            figure=section.figure,
            objectives=section.objectives,
            min_background=section.min_background,
            max_rel_stat=section.max_rel_stat,
            region_column=section.region_column,
            signal_region=section.signal_region,
            control_regions=[c.model_dump() for c in section.control_regions],
        )
    except BinningError as exc:
        raise ConfigError(f"objective (type binning): {exc}") from exc
    directions = objective.directions
    declared = config.directions or ([config.direction] if config.direction else None)
    if declared is not None and list(declared) != directions:
        raise ConfigError(
            f"objective (type binning) with figure {section.figure!r} and objectives "
            f"{section.objectives} needs directions {directions}, but the config sets {declared}; "
            "remove direction/directions (they are implied) or make them match."
        )
    batch_size = section.batch_size
    if batch_size is None:
        batch_size = _GRID_BATCH if config.sampler.name in ("grid", "bruteforce") else 1
    return ObjectiveSpec(
        objective=objective,
        directions=directions,
        constraints=objective.constraints_func,
        # The CLI prints the string after_run returns (ObjectiveSpec's hint says None).
        after_run=cast(Any, _AfterRun(objective, section.plot, started)),
        runner=BatchRunner(objective, batch_size) if batch_size > 1 else None,
    )


register_objective_type("binning", BinningObjectiveConfig, make_objective)

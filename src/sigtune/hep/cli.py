"""Command line for the HistFactory engine: ``sigtune hep ...`` or ``python -m sigtune.hep ...``.

Commands (each takes a pyhf JSON workspace and optional ``--patch``)::

    fit        maximum-likelihood fit (optionally at a fixed POI value)
    discovery  observed / expected discovery significance Z0 and p0
    cls        CLs hypothesis test at --poi-value
    limit      observed and expected CLs upper limits
    ranking    impact ranking of the nuisance parameters
    scan       profile-likelihood scan over the POI

``--json`` prints a machine-readable result on stdout. Errors exit with status 2 and a message on
stderr.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from sigtune.hep._exceptions import HepError

__all__ = ["app", "main"]

app = typer.Typer(
    name="hep",
    help="HistFactory likelihoods: fits, discovery significance, CLs, limits, ranking, scans.",
    no_args_is_help=True,
    add_completion=False,
)

WorkspaceArg = Annotated[
    Path, typer.Argument(help="pyhf JSON workspace (e.g. BkgOnly.json).", show_default=False)
]
PatchOpt = Annotated[
    Path | None,
    typer.Option("--patch", help="RFC 6902 JSON patch or pyhf patchset applied to the workspace."),
]
PatchNameOpt = Annotated[
    str | None,
    typer.Option("--patch-name", help="Patch to take from a patchset with several patches."),
]
MeasurementOpt = Annotated[
    str | None, typer.Option("--measurement", help="Measurement name (default: first).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
NormsysOpt = Annotated[
    str, typer.Option("--normsys-interp", help="normsys interpolation: code4 or code1.")
]
HistosysOpt = Annotated[
    str, typer.Option("--histosys-interp", help="histosys interpolation: code4p or code0.")
]


def _load(
    workspace: Path,
    patch: Path | None,
    patch_name: str | None,
    measurement: str | None,
    normsys_interp: str,
    histosys_interp: str,
) -> tuple[Any, Any, np.ndarray]:
    from sigtune.hep._workspace import Workspace

    ws = Workspace(workspace)
    if patch is not None:
        ws = ws.patched(patch, name=patch_name) if patch_name else ws.patched(patch)
    model = ws.model(
        measurement=measurement, normsys_interp=normsys_interp, histosys_interp=histosys_interp
    )
    return ws, model, ws.data(model)


def _emit(as_json: bool, payload: dict[str, Any], lines: list[str]) -> None:
    if as_json:
        typer.echo(json.dumps(payload, indent=2, allow_nan=False, default=_json_default))
    else:
        for line in lines:
            typer.echo(line)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _fmt_band(values: tuple[float, ...]) -> str:
    return "  ".join(f"{v:.6g}" for v in values)


def _fail(exc: Exception) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(code=2)


@app.command("fit")
def fit_cmd(
    workspace: WorkspaceArg,
    patch: PatchOpt = None,
    patch_name: PatchNameOpt = None,
    measurement: MeasurementOpt = None,
    poi_value: Annotated[
        float | None,
        typer.Option("--poi-value", help="Fix the POI at this value (conditional fit)."),
    ] = None,
    as_json: JsonOpt = False,
    normsys_interp: NormsysOpt = "code4",
    histosys_interp: HistosysOpt = "code4p",
) -> None:
    """Maximum-likelihood fit: best-fit values, uncertainties and -2 ln L."""
    try:
        from sigtune.hep._fit import fit

        _, model, data = _load(
            workspace, patch, patch_name, measurement, normsys_interp, histosys_interp
        )
        res = fit(model, data, poi_value=poi_value)
    except HepError as exc:
        _fail(exc)
        return
    errors = (
        np.asarray(res.errors, dtype=float)
        if res.errors is not None
        else np.full(len(res.bestfit), np.nan)
    )
    pars = {
        name: {"value": float(v), "error": float(e) if np.isfinite(e) else None}
        for name, v, e in zip(model.par_names, res.bestfit, errors, strict=True)
    }
    payload = {
        "poi": model.par_names[model.poi_index],
        "twice_nll": float(res.twice_nll),
        "converged": bool(res.converged),
        "parameters": pars,
    }
    lines = [f"{'parameter':<40} {'value':>14} {'error':>12}"]
    for name, v, e in zip(model.par_names, res.bestfit, errors, strict=True):
        lines.append(f"{name:<40} {float(v):>14.6g} {float(e):>12.4g}")
    lines.append(f"-2 ln L = {float(res.twice_nll):.8f}   converged = {bool(res.converged)}")
    _emit(as_json, payload, lines)


@app.command("discovery")
def discovery_cmd(
    workspace: WorkspaceArg,
    patch: PatchOpt = None,
    patch_name: PatchNameOpt = None,
    measurement: MeasurementOpt = None,
    as_json: JsonOpt = False,
    normsys_interp: NormsysOpt = "code4",
    histosys_interp: HistosysOpt = "code4p",
) -> None:
    """Discovery significance (q0, asymptotics): observed and expected Z0 and p0."""
    try:
        from sigtune.hep._infer import discovery

        _, model, data = _load(
            workspace, patch, patch_name, measurement, normsys_interp, histosys_interp
        )
        res = discovery(model, data)
    except HepError as exc:
        _fail(exc)
        return
    lines = [
        f"mu_hat      = {res.mu_hat:.6g}",
        f"Z0 observed = {res.z0_obs:.4f}   p0 = {res.p0_obs:.4g}",
        f"Z0 expected = {res.z0_exp:.4f}   p0 = {res.p0_exp:.4g}",
        f"p0 expected band (-2..+2 sigma): {_fmt_band(res.p0_exp_band)}",
    ]
    _emit(as_json, res.to_dict(), lines)


@app.command("cls")
def cls_cmd(
    workspace: WorkspaceArg,
    patch: PatchOpt = None,
    patch_name: PatchNameOpt = None,
    measurement: MeasurementOpt = None,
    poi_value: Annotated[float, typer.Option("--poi-value", help="Tested POI value.")] = 1.0,
    test_stat: Annotated[str, typer.Option("--test-stat", help="qtilde, q or q0.")] = "qtilde",
    calctype: Annotated[
        str, typer.Option("--calctype", help="asymptotics or toys.")
    ] = "asymptotics",
    n_toys: Annotated[
        int, typer.Option("--n-toys", help="Toys per hypothesis (toys only).")
    ] = 2000,
    seed: Annotated[int | None, typer.Option("--seed", help="Random seed (toys only).")] = None,
    as_json: JsonOpt = False,
    normsys_interp: NormsysOpt = "code4",
    histosys_interp: HistosysOpt = "code4p",
) -> None:
    """CLs hypothesis test at --poi-value: observed and expected CLs."""
    try:
        from sigtune.hep._infer import hypotest

        _, model, data = _load(
            workspace, patch, patch_name, measurement, normsys_interp, histosys_interp
        )
        res = hypotest(
            model, data, poi_value, test_stat=test_stat, calctype=calctype, n_toys=n_toys, seed=seed
        )
    except HepError as exc:
        _fail(exc)
        return
    lines = [
        f"mu = {res.mu:g}  ({res.test_stat}, {res.calctype})   mu_hat = {res.mu_hat:.6g}",
        f"CLs observed = {res.cls_obs:.6g}   CLsb = {res.clsb_obs:.6g}   CLb = {res.clb_obs:.6g}",
        f"CLs expected (-2..+2 sigma): {_fmt_band(res.cls_exp)}",
    ]
    _emit(as_json, res.to_dict(), lines)


@app.command("limit")
def limit_cmd(
    workspace: WorkspaceArg,
    patch: PatchOpt = None,
    patch_name: PatchNameOpt = None,
    measurement: MeasurementOpt = None,
    cl: Annotated[float, typer.Option("--cl", help="Confidence level.")] = 0.95,
    test_stat: Annotated[str, typer.Option("--test-stat", help="qtilde or q.")] = "qtilde",
    as_json: JsonOpt = False,
    normsys_interp: NormsysOpt = "code4",
    histosys_interp: HistosysOpt = "code4p",
) -> None:
    """Observed and expected CLs upper limits on the POI (root finding)."""
    try:
        from sigtune.hep._infer import upper_limit

        _, model, data = _load(
            workspace, patch, patch_name, measurement, normsys_interp, histosys_interp
        )
        res = upper_limit(model, data, cl=cl, test_stat=test_stat)
    except HepError as exc:
        _fail(exc)
        return
    lines = [
        f"{100 * cl:g}% CL upper limit on {model.par_names[model.poi_index]}:",
        f"observed = {res.obs:.6g}",
        f"expected = {res.exp[2]:.6g}   band (-2..+2 sigma): {_fmt_band(res.exp)}",
    ]
    _emit(as_json, res.to_dict(), lines)


@app.command("ranking")
def ranking_cmd(
    workspace: WorkspaceArg,
    patch: PatchOpt = None,
    patch_name: PatchNameOpt = None,
    measurement: MeasurementOpt = None,
    top: Annotated[
        int, typer.Option("--top", help="Show the N highest-ranked parameters (0: all).")
    ] = 20,
    as_json: JsonOpt = False,
    normsys_interp: NormsysOpt = "code4",
    histosys_interp: HistosysOpt = "code4p",
) -> None:
    """Impact ranking: pre-fit and post-fit impacts of each constrained nuisance parameter."""
    try:
        from sigtune.hep._ranking import ranking

        _, model, data = _load(
            workspace, patch, patch_name, measurement, normsys_interp, histosys_interp
        )
        res = ranking(model, data)
    except HepError as exc:
        _fail(exc)
        return
    entries = res.entries if top <= 0 else res.top(top)
    payload = res.to_dict()
    payload["entries"] = payload["entries"][: len(entries)]
    lines = [
        f"mu_hat = {res.mu_hat:.6g} +- {res.mu_err:.4g}",
        f"{'parameter':<40} {'pull':>8} {'constr':>7} {'pre up':>9} {'pre dn':>9} {'post up':>9} {'post dn':>9} {'total':>9}",
    ]
    for e in entries:
        lines.append(
            f"{e.name:<40} {e.theta_hat:>8.3f} {e.postfit_width:>7.3f} {e.prefit_up:>9.4f} {e.prefit_down:>9.4f} "
            f"{e.postfit_up:>9.4f} {e.postfit_down:>9.4f} {e.total_impact:>9.4f}"
        )
    _emit(as_json, payload, lines)


@app.command("scan")
def scan_cmd(
    workspace: WorkspaceArg,
    patch: PatchOpt = None,
    patch_name: PatchNameOpt = None,
    measurement: MeasurementOpt = None,
    low: Annotated[
        float | None, typer.Option("--low", help="Lowest POI value (default: from the fit).")
    ] = None,
    high: Annotated[
        float | None, typer.Option("--high", help="Highest POI value (default: from the fit).")
    ] = None,
    points: Annotated[int, typer.Option("--points", help="Number of scan points.")] = 21,
    as_json: JsonOpt = False,
    normsys_interp: NormsysOpt = "code4",
    histosys_interp: HistosysOpt = "code4p",
) -> None:
    """Profile-likelihood scan over the POI with 68% and 95% intervals."""
    try:
        from sigtune.hep._exceptions import HepInputError
        from sigtune.hep._scan import profile_scan

        if (low is None) != (high is None):
            raise HepInputError("give both --low and --high, or neither.")
        _, model, data = _load(
            workspace, patch, patch_name, measurement, normsys_interp, histosys_interp
        )
        values = None if low is None or high is None else np.linspace(low, high, points)
        res = profile_scan(model, data, values, n_points=points)
    except HepError as exc:
        _fail(exc)
        return
    lines = [f"{res.poi_name:>12} {'-2 delta ln L':>14}"]
    lines += [
        f"{m:>12.5g} {d:>14.6f}" for m, d in zip(res.poi_values, res.delta_twice_nll, strict=True)
    ]
    lines.append(
        f"mu_hat = {res.mu_hat:.6g}   68% interval {res.interval_68}   95% interval {res.interval_95}"
    )
    _emit(as_json, res.to_dict(), lines)


def main() -> None:
    """Entry point of ``python -m sigtune.hep``."""
    app(prog_name="sigtune hep")


if __name__ == "__main__":  # pragma: no cover
    main()

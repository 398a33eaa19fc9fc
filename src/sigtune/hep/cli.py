"""Command line for the HistFactory engine: ``sigtune hep ...`` or ``python -m sigtune.hep ...``.

Statistics commands (each takes a pyhf JSON workspace, ``-`` for standard input, and the same
options: ``--patch``, ``--patch-name``, ``--measurement``, ``--poi-bounds LO,HI``,
``--par-bounds NAME=LO,HI`` (repeatable), ``--json``, interpolation codes)::

    fit        maximum-likelihood fit (optionally at a fixed POI value)
    discovery  observed / expected discovery significance Z0 and p0
    cls        CLs hypothesis test at --poi-value
    limit      observed and expected CLs upper limits
    ranking    impact ranking of the nuisance parameters
    scan       profile-likelihood scan over the POI

Workspace tools (pyhf's, with the same semantics; output: pyhf JSON on stdout or ``-o FILE``)::

    inspect    channels (bins), samples, modifiers, parameters, measurements
    combine    two workspaces into one (--join none|outer|left outer|right outer)
    prune      remove channels / samples / modifiers / modifier types / measurements
    rename     rename channels / samples / modifiers / measurements (--channel OLD=NEW ...)
    patchset   list the patches of a patchset, or apply one (``patchset apply WS PATCHSET --name``)

``--json`` prints a machine-readable result on stdout. Errors exit with status 2 and a message on
stderr.
"""

from __future__ import annotations

import contextlib
import functools
import inspect as _inspect
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn

import numpy as np
import typer

from sigtune.hep._exceptions import HepError, HepInputError

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


def _read_document(source: Path, what: str) -> Any:
    """A JSON document from a file, or from standard input when ``source`` is ``-``."""
    from sigtune.hep._workspace import _load_json

    if str(source) == "-":
        text = sys.stdin.read()
        if not text.strip():
            raise HepInputError(f"no {what} on standard input")
        return _load_json(text, what)
    return _load_json(source, what)


def _bounds(text: str, what: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise HepInputError(f"{what} must be LOW,HIGH (two numbers), got {text!r}") from None
    return lo, hi


def _par_bounds(items: list[str]) -> dict[str, tuple[float, float]]:
    out = {}
    for item in items:
        name, sep, rest = item.partition("=")
        if not sep or not name:
            raise HepInputError(f"--par-bounds must be NAME=LOW,HIGH, got {item!r}")
        out[name] = _bounds(rest, f"--par-bounds {name}")
    return out


def _load(
    workspace: Path,
    patch: Path | None,
    patch_name: str | None,
    measurement: str | None,
    normsys_interp: str,
    histosys_interp: str,
    poi_bounds: str | None = None,
    par_bounds: list[str] | None = None,
) -> tuple[Any, Any, np.ndarray]:
    from sigtune.hep._tools import with_bounds
    from sigtune.hep._workspace import Workspace

    ws = Workspace(_read_document(workspace, "workspace"))
    if patch is not None:
        ws = ws.patched(patch, name=patch_name) if patch_name else ws.patched(patch)
    if poi_bounds is not None or par_bounds:
        spec = with_bounds(
            ws.spec,
            measurement=measurement,
            poi_bounds=None if poi_bounds is None else _bounds(poi_bounds, "--poi-bounds"),
            par_bounds=_par_bounds(par_bounds or []),
        )
        ws = Workspace(spec)
    model = ws.model(
        measurement=measurement, normsys_interp=normsys_interp, histosys_interp=histosys_interp
    )
    return ws, model, ws.data(model)


@dataclass(frozen=True)
class Loaded:
    """What every statistics command works on."""

    model: Any
    data: np.ndarray
    as_json: bool


PoiBoundsOpt = Annotated[
    str | None,
    typer.Option("--poi-bounds", help="Bounds of the POI: LOW,HIGH (e.g. -5,20)."),
]
ParBoundsOpt = Annotated[
    list[str] | None,
    typer.Option("--par-bounds", help="Bounds of a parameter: NAME=LOW,HIGH (repeatable)."),
]

_COMMON: list[tuple[str, Any, Any]] = [
    ("workspace", WorkspaceArg, _inspect.Parameter.empty),
    ("patch", PatchOpt, None),
    ("patch_name", PatchNameOpt, None),
    ("measurement", MeasurementOpt, None),
    ("poi_bounds", PoiBoundsOpt, None),
    ("par_bounds", ParBoundsOpt, None),
    ("as_json", JsonOpt, False),
    ("normsys_interp", NormsysOpt, "code4"),
    ("histosys_interp", HistosysOpt, "code4p"),
]


def _stats_command(name: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register ``fn(loaded, **own_options)`` as command ``name`` with the common options
    (workspace, patch, measurement, bounds, JSON, interpolation codes) declared once."""

    def decorate(fn: Callable[..., None]) -> Callable[..., None]:
        own = list(_inspect.signature(fn, eval_str=True).parameters.values())[1:]
        common_names = [n for n, _, _ in _COMMON]

        @functools.wraps(fn)
        def command(**kwargs: Any) -> None:
            common = {n: kwargs.pop(n) for n in common_names}
            with _exit_on_hep_error():
                _, model, data = _load(
                    common["workspace"],
                    common["patch"],
                    common["patch_name"],
                    common["measurement"],
                    common["normsys_interp"],
                    common["histosys_interp"],
                    common["poi_bounds"],
                    common["par_bounds"],
                )
                fn(Loaded(model, data, common["as_json"]), **kwargs)

        params = [
            _inspect.Parameter(n, _inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=a, default=d)
            for n, a, d in _COMMON
        ]
        command.__signature__ = _inspect.Signature([*params, *own])  # type: ignore[attr-defined]
        command.__annotations__ = {
            **{n: a for n, a, _ in _COMMON},
            **{p.name: p.annotation for p in own},
        }
        del command.__wrapped__  # type: ignore[attr-defined]
        app.command(name)(command)
        return command

    return decorate


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


def _fail(exc: Exception) -> NoReturn:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(code=2)


@contextlib.contextmanager
def _exit_on_hep_error() -> Iterator[None]:
    """Every command's error handling: a :class:`HepError` -> one line on stderr, exit 2."""
    try:
        yield
    except HepError as exc:
        _fail(exc)


@_stats_command("fit")
def fit_cmd(
    ctx: Loaded,
    poi_value: Annotated[
        float | None,
        typer.Option("--poi-value", help="Fix the POI at this value (conditional fit)."),
    ] = None,
) -> None:
    """Maximum-likelihood fit: best-fit values, uncertainties and -2 ln L."""
    from sigtune.hep._fit import fit

    model = ctx.model
    res = fit(model, ctx.data, poi_value=poi_value)
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
    _emit(ctx.as_json, payload, lines)


@_stats_command("discovery")
def discovery_cmd(ctx: Loaded) -> None:
    """Discovery significance (q0, asymptotics): observed and expected Z0 and p0."""
    from sigtune.hep._infer import discovery

    res = discovery(ctx.model, ctx.data)
    lines = [
        f"mu_hat      = {res.mu_hat:.6g}",
        f"Z0 observed = {res.z0_obs:.4f}   p0 = {res.p0_obs:.4g}",
        f"Z0 expected = {res.z0_exp:.4f}   p0 = {res.p0_exp:.4g}",
        f"p0 expected band (-2..+2 sigma): {_fmt_band(res.p0_exp_band)}",
    ]
    _emit(ctx.as_json, res.to_dict(), lines)


@_stats_command("cls")
def cls_cmd(
    ctx: Loaded,
    poi_value: Annotated[float, typer.Option("--poi-value", help="Tested POI value.")] = 1.0,
    test_stat: Annotated[str, typer.Option("--test-stat", help="qtilde, q or q0.")] = "qtilde",
    calctype: Annotated[
        str, typer.Option("--calctype", help="asymptotics or toys.")
    ] = "asymptotics",
    n_toys: Annotated[
        int, typer.Option("--n-toys", help="Toys per hypothesis (toys only).")
    ] = 2000,
    seed: Annotated[int | None, typer.Option("--seed", help="Random seed (toys only).")] = None,
) -> None:
    """CLs hypothesis test at --poi-value: observed and expected CLs."""
    from sigtune.hep._infer import hypotest

    res = hypotest(
        ctx.model,
        ctx.data,
        poi_value,
        test_stat=test_stat,
        calctype=calctype,
        n_toys=n_toys,
        seed=seed,
    )
    lines = [
        f"mu = {res.mu:g}  ({res.test_stat}, {res.calctype})   mu_hat = {res.mu_hat:.6g}",
        f"CLs observed = {res.cls_obs:.6g}   CLsb = {res.clsb_obs:.6g}   CLb = {res.clb_obs:.6g}",
        f"CLs expected (-2..+2 sigma): {_fmt_band(res.cls_exp)}",
    ]
    _emit(ctx.as_json, res.to_dict(), lines)


@_stats_command("limit")
def limit_cmd(
    ctx: Loaded,
    cl: Annotated[float, typer.Option("--cl", help="Confidence level.")] = 0.95,
    test_stat: Annotated[str, typer.Option("--test-stat", help="qtilde or q.")] = "qtilde",
) -> None:
    """Observed and expected CLs upper limits on the POI (root finding)."""
    from sigtune.hep._infer import upper_limit

    model = ctx.model
    res = upper_limit(model, ctx.data, cl=cl, test_stat=test_stat)
    lines = [
        f"{100 * cl:g}% CL upper limit on {model.par_names[model.poi_index]}:",
        f"observed = {res.obs:.6g}",
        f"expected = {res.exp[2]:.6g}   band (-2..+2 sigma): {_fmt_band(res.exp)}",
    ]
    _emit(ctx.as_json, res.to_dict(), lines)


@_stats_command("ranking")
def ranking_cmd(
    ctx: Loaded,
    top: Annotated[
        int, typer.Option("--top", help="Show the N highest-ranked parameters (0: all).")
    ] = 20,
) -> None:
    """Impact ranking: pre-fit and post-fit impacts of each constrained nuisance parameter."""
    from sigtune.hep._ranking import ranking

    res = ranking(ctx.model, ctx.data)
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
    _emit(ctx.as_json, payload, lines)


@_stats_command("scan")
def scan_cmd(
    ctx: Loaded,
    low: Annotated[
        float | None, typer.Option("--low", help="Lowest POI value (default: from the fit).")
    ] = None,
    high: Annotated[
        float | None, typer.Option("--high", help="Highest POI value (default: from the fit).")
    ] = None,
    points: Annotated[int, typer.Option("--points", help="Number of scan points.")] = 21,
) -> None:
    """Profile-likelihood scan over the POI with 68% and 95% intervals."""
    from sigtune.hep._scan import profile_scan

    if (low is None) != (high is None):
        raise HepInputError("give both --low and --high, or neither.")
    values = None if low is None or high is None else np.linspace(low, high, points)
    res = profile_scan(ctx.model, ctx.data, values, n_points=points)
    lines = [f"{res.poi_name:>12} {'-2 delta ln L':>14}"]
    lines += [
        f"{m:>12.5g} {d:>14.6f}" for m, d in zip(res.poi_values, res.delta_twice_nll, strict=True)
    ]
    lines.append(
        f"mu_hat = {res.mu_hat:.6g}   68% interval {res.interval_68}   95% interval {res.interval_95}"
    )
    _emit(ctx.as_json, res.to_dict(), lines)


# ---------------------------------------------------------------------- workspace tools

OutputOpt = Annotated[
    Path | None,
    typer.Option("--output", "-o", help="Write the workspace here (default: standard output)."),
]


def _write_workspace(spec: dict[str, Any], output: Path | None) -> None:
    text = json.dumps(spec, indent=2, sort_keys=True)
    if output is None:
        typer.echo(text)
    else:
        output.write_text(text + "\n", encoding="utf-8")


def _renames(values: list[str] | None, option: str) -> dict[str, str]:
    """``OLD=NEW`` items of a repeatable rename option."""
    out = {}
    for item in values or []:
        old, sep, new = item.partition("=")
        if not sep or not old or not new:
            raise HepInputError(f"{option} takes OLD=NEW, got {item!r}")
        out[old] = new
    return out


@app.command("inspect")
def inspect_cmd(workspace: WorkspaceArg, as_json: JsonOpt = False) -> None:
    """Channels (bins), samples, modifiers, parameters and measurements of a workspace."""
    with _exit_on_hep_error():
        from sigtune.hep._tools import inspect

        info = inspect(_read_document(workspace, "workspace"))
    lines = [
        f"channels ({len(info['channels'])}, {info['n_bins']} bins): "
        + ", ".join(f"{c} [{n}]" for c, n in info["channels"].items()),
        f"samples ({len(info['samples'])}): " + ", ".join(info["samples"]),
        f"modifiers ({len(info['modifiers'])}):",
        *(f"  {n:<40} {t}" for n, t in info["modifiers"]),
        f"parameters ({len(info['parameters'])} sets, {info['n_parameters']} components):",
        *(
            f"  {p['name']:<40} {p['type']:<11} n={p['n']:<4} init={p['inits'][0]:<8g} "
            f"bounds={p['bounds'][0]}{'  fixed' if p['fixed'] else ''}"
            for p in info["parameters"]
        ),
        "measurements: " + ", ".join(f"{m['name']} (POI {m['poi']})" for m in info["measurements"]),
    ]
    _emit(as_json, info, lines)


@app.command("combine")
def combine_cmd(
    left: Annotated[Path, typer.Argument(help="First workspace (- for standard input).")],
    right: Annotated[Path, typer.Argument(help="Second workspace.")],
    join: Annotated[
        str, typer.Option("--join", help="none, outer, 'left outer' or 'right outer'.")
    ] = "none",
    merge_channels: Annotated[
        bool, typer.Option("--merge-channels", help="Merge samples of same-named channels.")
    ] = False,
    output: OutputOpt = None,
) -> None:
    """Combine two workspaces (pyhf combine semantics)."""
    with _exit_on_hep_error():
        from sigtune.hep._tools import combine

        spec = combine(
            _read_document(left, "workspace"),
            _read_document(right, "workspace"),
            join=join,
            merge_channels=merge_channels,
        )
    _write_workspace(spec, output)


@app.command("prune")
def prune_cmd(
    workspace: WorkspaceArg,
    channel: Annotated[
        list[str] | None, typer.Option("--channel", help="Channel (repeatable).")
    ] = None,
    sample: Annotated[
        list[str] | None, typer.Option("--sample", help="Sample (repeatable).")
    ] = None,
    modifier: Annotated[
        list[str] | None, typer.Option("--modifier", help="Modifier name (repeatable).")
    ] = None,
    modifier_type: Annotated[
        list[str] | None, typer.Option("--modifier-type", help="Modifier type (repeatable).")
    ] = None,
    measurement: Annotated[
        list[str] | None, typer.Option("--measurement", help="Measurement (repeatable).")
    ] = None,
    output: OutputOpt = None,
) -> None:
    """Remove channels, samples, modifiers (by name or type) and measurements."""
    with _exit_on_hep_error():
        from sigtune.hep._tools import prune

        spec = prune(
            _read_document(workspace, "workspace"),
            channels=channel or [],
            samples=sample or [],
            modifiers=modifier or [],
            modifier_types=modifier_type or [],
            measurements=measurement or [],
        )
    _write_workspace(spec, output)


@app.command("rename")
def rename_cmd(
    workspace: WorkspaceArg,
    channel: Annotated[
        list[str] | None, typer.Option("--channel", help="OLD=NEW (repeatable).")
    ] = None,
    sample: Annotated[
        list[str] | None, typer.Option("--sample", help="OLD=NEW (repeatable).")
    ] = None,
    modifier: Annotated[
        list[str] | None, typer.Option("--modifier", help="OLD=NEW (repeatable).")
    ] = None,
    measurement: Annotated[
        list[str] | None, typer.Option("--measurement", help="OLD=NEW (repeatable).")
    ] = None,
    output: OutputOpt = None,
) -> None:
    """Rename channels, samples, modifiers (and their settings / POI) and measurements."""
    with _exit_on_hep_error():
        from sigtune.hep._tools import rename

        spec = rename(
            _read_document(workspace, "workspace"),
            channels=_renames(channel, "--channel"),
            samples=_renames(sample, "--sample"),
            modifiers=_renames(modifier, "--modifier"),
            measurements=_renames(measurement, "--measurement"),
        )
    _write_workspace(spec, output)


patchset_app = typer.Typer(
    name="patchset", help="pyhf patchsets: list the patches, apply one.", no_args_is_help=True
)
app.add_typer(patchset_app)


@patchset_app.command("list")
def patchset_list_cmd(
    patchset: Annotated[Path, typer.Argument(help="pyhf patchset (- for standard input).")],
    as_json: JsonOpt = False,
) -> None:
    """Patch names and their metadata values."""
    with _exit_on_hep_error():
        from sigtune.hep._tools import patchset_entries

        entries = patchset_entries(_read_document(patchset, "patchset"))
    lines = [f"{e['name']:<40} {e['values']}" for e in entries]
    _emit(as_json, {"patches": entries}, lines)


@patchset_app.command("apply")
def patchset_apply_cmd(
    workspace: WorkspaceArg,
    patchset: Annotated[Path, typer.Argument(help="pyhf patchset.")],
    name: Annotated[
        str | None, typer.Option("--name", help="Patch to apply (needed if several).")
    ] = None,
    output: OutputOpt = None,
) -> None:
    """Apply one patch of a patchset to a workspace."""
    with _exit_on_hep_error():
        from sigtune.hep._workspace import Workspace

        ws = Workspace(_read_document(workspace, "workspace"))
        spec = ws.patched(_read_document(patchset, "patchset"), name=name).spec
    _write_workspace(spec, output)


def main() -> None:
    """Entry point of ``python -m sigtune.hep``."""
    app(prog_name="sigtune hep")


if __name__ == "__main__":  # pragma: no cover
    main()

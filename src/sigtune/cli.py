"""The ``sigtune`` command line.

Commands: ``run``, ``resume``, ``status``, ``best``, ``export``, ``schema``, ``studies``,
``dashboard``, ``report``, ``physics`` (bodies in :mod:`sigtune._cli_view`) and ``hep`` (the
HistFactory tools of :mod:`sigtune.hep.cli`, imported only when used).

Exit codes: ``0`` success; ``1`` the run failed (``max_failures`` exceeded, worker processes died,
no trial completed, storage unreachable, ``after_run`` failed); ``2`` bad config or input (invalid
run-config, objective that cannot be imported, unknown study); ``130`` interrupted (Ctrl-C).
``--json`` prints exactly one JSON document on stdout (progress and logs go to stderr).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from sigtune import _cli_view
from sigtune._exceptions import (
    ConfigError,
    ObjectiveError,
    RunFailedError,
    SigtuneError,
    StorageError,
)

__all__ = ["app", "main"]

log = logging.getLogger("sigtune")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130

app = typer.Typer(
    name="sigtune",
    help="Tune analysis choices (hyperparameters, variables, binnings, cuts) against a figure "
    "of merit.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigArg = Annotated[Path, typer.Argument(help="Run-config (YAML).", show_default=False)]
OptConfigArg = Annotated[
    Path | None, typer.Argument(help="Run-config (YAML); or give --storage/--study-name.")
]
NTrialsOpt = Annotated[
    int | None, typer.Option("--n-trials", help="Total trials wanted in the study.")
]
JobsOpt = Annotated[int | None, typer.Option("--jobs", "-j", help="Worker processes.")]
StorageOpt = Annotated[
    str | None,
    typer.Option("--storage", help="Storage URL (journal:///f.journal, sqlite:///f.db, ...)."),
]
StudyNameOpt = Annotated[str | None, typer.Option("--study-name", help="Study name.")]
TimeoutOpt = Annotated[float | None, typer.Option("--timeout", help="Seconds for the whole run.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar, short output.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_cli_view.version_callback, is_eager=True)
    ] = False,
) -> None:
    """Tune analysis choices (hyperparameters, variables, binnings, cuts) against a figure of
    merit."""


# ---------------------------------------------------------------------- helpers


def _fail(code: int, message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def _errors_to_exit_codes(config: Path | None = None) -> Iterator[None]:
    """Map sigtune errors to exit codes with a one-line message."""
    from sigtune._storage import StudyNotFoundError

    try:
        yield
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        resume = f"sigtune resume {config}" if config is not None else "the same command"
        typer.echo(f"\nInterrupted. Resume with: {resume}", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except (ConfigError, ObjectiveError, StudyNotFoundError) as exc:
        _fail(EXIT_BAD_INPUT, str(exc))
    except (RunFailedError, StorageError) as exc:
        _fail(EXIT_FAILED, str(exc))
    except SigtuneError as exc:
        _fail(EXIT_FAILED, f"{type(exc).__name__}: {exc}")


def _quiet_libraries() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.WARNING)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | str):
        return value
    if hasattr(value, "item"):  # NumPy scalars
        return _jsonable(value.item())
    return str(value)


def _print_json(doc: Mapping[str, Any]) -> None:
    sys.stdout.write(json.dumps(_jsonable(doc), indent=2, allow_nan=False) + "\n")
    sys.stdout.flush()


def _load(config: Path, overrides: Mapping[str, Any] | None = None) -> Any:
    from sigtune._config import load_config

    return load_config(config, overrides)


def _open_study(config: Path | None, storage: str | None, study_name: str | None) -> Any:
    """The :class:`~sigtune.Study` named by a config or by --storage/--study-name."""
    from sigtune._storage import StudyNotFoundError, resolve_storage
    from sigtune._study import load_study

    space = None
    if config is not None:
        cfg = _load(config, {"storage": storage, "study_name": study_name})
        storage_ref: Any = resolve_storage(cfg.storage, run_dir=cfg.run_dir)
        if cfg.storage is None and not Path(cfg.run_dir).exists():
            raise StudyNotFoundError(
                f"run directory {cfg.run_dir} does not exist: run `sigtune run {config}` first"
            )
        name, space = cfg.study_name, cfg.space
    else:
        if storage is None:
            raise ConfigError("give a CONFIG, or --storage (and --study-name)")
        storage_ref = resolve_storage(storage)
        name = study_name
        if name is None:
            names = [s.study_name for s in storage_ref.open(track_owner=False).get_all_studies()]
            if len(names) != 1:
                raise StudyNotFoundError(
                    f"storage {storage_ref.describe()} holds {len(names)} studies "
                    f"({', '.join(names) or 'none'}); choose one with --study-name"
                )
            name = names[0]
    return load_study(name, storage_ref, space=space)


def _best_summary(study: Any) -> dict[str, Any]:
    """Best value/params (single objective) or the Pareto front (multi-objective)."""
    if study.n_objectives == 1:
        best = study.best_trial
        return {
            "best_trial": best.number,
            "best_value": float(best.values[0]),
            "best_params": study.params_of(best),
        }
    front = study.pareto_front()
    if not front:
        study.best_trial  # noqa: B018 - raises the "no COMPLETE trial" error
    return {
        "pareto_front": [
            {"number": t.number, "values": list(t.values), "params": study.params_of(t)}
            for t in front
        ]
    }


def _format_best(summary: Mapping[str, Any], directions: list[str]) -> str:
    lines = []
    if "best_value" in summary:
        lines.append(
            f"Best value ({directions[0]}): {summary['best_value']:.6g}  "
            f"(trial {summary['best_trial']})"
        )
        lines.append("Best params:")
        lines += [f"  {k}: {v!r}" for k, v in summary["best_params"].items()]
    else:
        front = summary["pareto_front"]
        lines.append(f"Pareto front ({', '.join(directions)}): {len(front)} trial(s)")
        for row in front[:20]:
            vals = ", ".join(f"{v:.6g}" for v in row["values"])
            lines.append(f"  trial {row['number']}: [{vals}]  {row['params']}")
        if len(front) > 20:
            lines.append(f"  ... {len(front) - 20} more (sigtune best --json)")
    return "\n".join(lines)


def _counts_text(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {s.lower()}" for s, n in counts.items() if n) or "no trials"


# ---------------------------------------------------------------------- run / resume


def _run(
    config: Path,
    *,
    n_trials: int | None,
    jobs: int | None,
    storage: str | None,
    study_name: str | None,
    timeout: float | None,
    quiet: bool,
    as_json: bool,
    require_existing: bool,
) -> None:
    from sigtune._config import build_objective
    from sigtune._progress import RunProgress
    from sigtune._settings import RunSettings
    from sigtune._study import run_study

    _quiet_libraries()
    overrides = {
        "n_trials": n_trials,
        "n_jobs": jobs,
        "storage": storage,
        "study_name": study_name,
        "timeout": timeout,
    }
    cfg = _load(config, overrides)
    spec = build_objective(cfg)
    settings = RunSettings.from_config(cfg, spec)
    tracking = _cli_view.run_callbacks(cfg, quiet=quiet or as_json)  # tracking:, warnings
    if tracking:
        settings = dataclasses.replace(settings, callbacks=(*settings.callbacks, *tracking))
    run_dir = Path(cfg.run_dir)
    out = sys.stderr if as_json else sys.stdout
    bar = RunProgress(cfg.n_trials, cfg.study_name, quiet=quiet or as_json)
    # In --json mode stdout carries only the JSON document: objective prints go to stderr.
    redirect = contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext()
    with redirect, bar:
        study = run_study(
            spec.objective,
            settings,
            space=spec.space,
            progress=bar,
            require_existing=require_existing,
        )
    counts = study.count()
    doc: dict[str, Any] = {
        "study_name": study.study_name,
        "storage": study.storage.describe() if study.storage else None,
        "run_dir": str(run_dir),
        "directions": study.directions,
        "n_trials": cfg.n_trials,
        "counts": counts,
    }
    if study.last_run is not None:
        r = study.last_run
        doc["run"] = {
            "finished": r.n_finished,
            "complete": r.n_complete,
            "pruned": r.n_pruned,
            "failed": r.n_failed,
            "elapsed_s": round(r.elapsed, 3),
            "stop_reason": r.stop_reason,
        }
    doc.update(_best_summary(study))  # RunFailedError if nothing completed

    if not as_json:
        ran = "" if study.last_run is None else f" ({study.last_run.n_finished} run now)"
        print(f"Study {study.study_name!r}: {_counts_text(counts)}{ran}", file=out)
        stopped = _cli_view.stop_text(doc.get("run", {}).get("stop_reason"))
        if stopped:
            print(stopped, file=out)
        print(_format_best(doc, study.directions), file=out)

    if spec.after_run is not None:
        try:
            with redirect:
                text = spec.after_run(study, run_dir)
        except Exception as exc:
            _fail(
                EXIT_FAILED, f"the run finished, but after_run failed: {type(exc).__name__}: {exc}"
            )
        if isinstance(text, str) and text:
            doc["after_run"] = text
            if not as_json:
                print(text, file=out)

    if cfg.report:
        doc["report"] = _write_report(study, run_dir / "report.html", run_dir)
        if doc["report"] and not as_json and not quiet:
            print(f"Report: {doc['report']}", file=out)
    _cli_view.finish_tracking(tracking, study, run_dir)
    if not as_json and not quiet:
        print(f"Dashboard: sigtune dashboard {config}", file=out)
    if as_json:
        _print_json(doc)


def _write_report(study: Any, path: Path, run_dir: Path | None = None) -> str | None:
    """Write the HTML report; a failing report only warns (the run is kept)."""
    try:
        from sigtune.reports import write_report

        written = write_report(study, path, run_dir=run_dir)
    except Exception as exc:
        typer.echo(f"warning: report not written: {type(exc).__name__}: {exc}", err=True)
        return None
    return str(written) if written is not None else None


@app.command()
def run(
    config: ConfigArg,
    n_trials: NTrialsOpt = None,
    jobs: JobsOpt = None,
    storage: StorageOpt = None,
    study_name: StudyNameOpt = None,
    timeout: TimeoutOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Run (or continue) the study of CONFIG until it holds n_trials finished trials."""
    with _errors_to_exit_codes(config):
        _run(
            config,
            n_trials=n_trials,
            jobs=jobs,
            storage=storage,
            study_name=study_name,
            timeout=timeout,
            quiet=quiet,
            as_json=as_json,
            require_existing=False,
        )


@app.command()
def resume(
    config: ConfigArg,
    n_trials: NTrialsOpt = None,
    jobs: JobsOpt = None,
    storage: StorageOpt = None,
    study_name: StudyNameOpt = None,
    timeout: TimeoutOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Continue an existing study (like run, but the study must exist)."""
    with _errors_to_exit_codes(config):
        _run(
            config,
            n_trials=n_trials,
            jobs=jobs,
            storage=storage,
            study_name=study_name,
            timeout=timeout,
            quiet=quiet,
            as_json=as_json,
            require_existing=True,
        )


# ---------------------------------------------------------------------- inspection


@app.command()
def status(
    config: OptConfigArg = None,
    storage: StorageOpt = None,
    study_name: StudyNameOpt = None,
    as_json: JsonOpt = False,
    failed: Annotated[bool, typer.Option("--failed", help="Failed trials' tracebacks.")] = False,
) -> None:
    """Trial counts, best value and running trials of a study."""
    from sigtune._storage import OWNER_KEY

    with _errors_to_exit_codes():
        _quiet_libraries()
        study = _open_study(config, storage, study_name)
        counts = study.count()
        running = [
            {"number": t.number, "owner": t.system_attrs.get(OWNER_KEY)}
            for t in study.optuna.get_trials(deepcopy=False)
            if t.state.name == "RUNNING"
        ]
        doc: dict[str, Any] = {
            "study_name": study.study_name,
            "storage": study.storage.describe(),
            "directions": study.directions,
            "counts": counts,
            "n_finished": study.n_finished(),
            "running": running,
        }
        if config is not None:
            doc["n_trials"] = _load(config, {"storage": storage, "study_name": study_name}).n_trials
        with contextlib.suppress(RunFailedError):
            doc.update(_best_summary(study))
        if failed:
            doc["failed"] = _cli_view.failed_trials(study)
        if as_json:
            _print_json(doc)
            return
        target = f" of {doc['n_trials']}" if "n_trials" in doc else ""
        print(f"Study {study.study_name!r} in {doc['storage']}")
        print(f"Trials: {doc['n_finished']} finished{target} ({_counts_text(counts)})")
        for r in running:
            print(f"  running: trial {r['number']} (owner {r['owner']})")
        if "best_value" in doc or "pareto_front" in doc:
            print(_format_best(doc, study.directions))
        if failed:
            _cli_view.print_failed(doc["failed"])


@app.command()
def best(
    config: OptConfigArg = None,
    storage: StorageOpt = None,
    study_name: StudyNameOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Best value and parameters (Pareto front for several objectives)."""
    with _errors_to_exit_codes():
        _quiet_libraries()
        study = _open_study(config, storage, study_name)
        doc = {"study_name": study.study_name, "directions": study.directions}
        doc.update(_best_summary(study))
        if as_json:
            _print_json(doc)
        else:
            print(_format_best(doc, study.directions))


@app.command()
def export(
    config: OptConfigArg = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="csv, parquet or json.")] = "csv",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Output file (default: stdout).")
    ] = None,
    storage: StorageOpt = None,
    study_name: StudyNameOpt = None,
) -> None:
    """Export one row per trial (number, state, values, params, user attrs, times, fail_reason)."""
    from sigtune._export import export_trials

    with _errors_to_exit_codes():
        _quiet_libraries()
        study = _open_study(config, storage, study_name)
        text = export_trials(study.optuna, fmt, output)
        if text is not None:
            sys.stdout.write(text)


@app.command()
def schema() -> None:
    """Print the JSON Schema of the run-config (for editors)."""
    from sigtune._config import config_json_schema

    sys.stdout.write(json.dumps(config_json_schema(), indent=2) + "\n")


app.command("studies")(_cli_view.studies)
app.command("dashboard")(_cli_view.dashboard)
app.command("report")(_cli_view.report)
app.command("physics")(_cli_view.physics)


@app.command(
    "hep",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def hep(ctx: typer.Context) -> None:
    """HistFactory tools (fit, significance, limits, ranking): sigtune hep --help."""
    try:
        from sigtune.hep.cli import app as hep_app
    except ImportError as exc:
        _fail(EXIT_FAILED, f"`sigtune hep` is unavailable in this installation ({exc})")
    command = typer.main.get_command(hep_app)
    command.main(args=list(ctx.args), prog_name="sigtune hep", standalone_mode=True)


def main() -> None:
    """Entry point of the ``sigtune`` console script."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()

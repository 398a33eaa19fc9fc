"""The ``sigtune`` command line.

Commands: ``run``, ``resume``, ``status``, ``best``, ``export``, ``repair``, ``schema``, ``slurm``,
``import-optima`` (:mod:`sigtune.pipelines.ml._import_optima`), ``studies``, ``dashboard``, ``report``,
``physics`` (bodies in :mod:`sigtune.reports._commands`) and ``hep`` (the HistFactory tools of
:mod:`sigtune.hep.cli`, imported only when used).

Exit codes (docs/cli.md lists the messages): ``0`` success; ``1`` the run failed (``max_failures``
exceeded, no trial completed, storage unreachable or failing mid-run: disk full, lock timeout,
damaged journal; ``after_run`` failed); ``2`` bad config or input (invalid run-config, objective
that cannot be imported, unknown study or storage, a path that cannot be created or written);
``130`` interrupted (Ctrl-C). Every error is one line on stderr. ``--json`` prints exactly one JSON
document on stdout, also on failure (``{"error": ..., "exit_code": ...}``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from sigtune._cli_common import (  # shared with the commands of sigtune.reports._commands
    EXIT_FAILED,
    _errors_to_exit_codes,
    _fail,
    _load,
    _open_study,
    _print_json,
    _quiet_libraries,
)
from sigtune._exceptions import (
    RunFailedError,
)
from sigtune.reports import _commands

__all__ = ["app", "main"]

log = logging.getLogger("sigtune")


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
EngineOpt = Annotated[str | None, typer.Option("--engine", help="local or ray.")]
ForceOpt = Annotated[
    bool,
    typer.Option(
        "--force",
        help="If the study exists with another search space or objective, start a new study "
        "(NAME-2 in RUN_DIR-2) instead of refusing.",
    ),
]


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_commands.version_callback, is_eager=True)
    ] = False,
) -> None:
    """Tune analysis choices (hyperparameters, variables, binnings, cuts) against a figure of
    merit."""


# ---------------------------------------------------------------------- helpers


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
    engine: str | None = None,
    force: bool = False,
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
        "engine.name": engine,
    }
    from sigtune._cli_storage import check_pipeline_config

    check_pipeline_config(config)
    cfg = _load(config, overrides)
    spec = build_objective(cfg)
    settings = RunSettings.from_config(cfg, spec)
    if force:
        settings = settings.replace(force=True)
    tracking = _commands.run_callbacks(cfg, quiet=quiet or as_json)  # tracking:, warnings
    if tracking:
        settings = dataclasses.replace(settings, callbacks=(*settings.callbacks, *tracking))
    run_dir = Path(cfg.run_dir)
    out = sys.stderr if as_json else sys.stdout
    if not quiet and spec.runner is None and str(settings.sampler).lower() == "auto":
        from sigtune._samplers import auto_summary

        line = auto_summary(
            space=spec.space,
            n_trials=settings.n_trials,
            n_objectives=len(settings.directions),
            options=settings.sampler_options,
            seed=settings.seed,
        )
        print(line, file=out)
    bar = RunProgress(cfg.n_trials, cfg.study_name, quiet=quiet or as_json)
    # In --json mode stdout carries only the JSON document: objective prints go to stderr.
    redirect = contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext()
    runner = spec.runner if spec.runner is not None else run_study
    with redirect, bar:
        study = runner(
            spec.objective,
            settings,
            space=spec.space,
            progress=bar,
            require_existing=require_existing,
        )
    fork = getattr(study, "fork", None)
    if fork is not None:  # the run went to a new study (logged as a warning by run_study)
        run_dir = fork.run_dir or run_dir
    counts = study.count()
    doc: dict[str, Any] = {
        "study_name": study.study_name,
        "storage": study.storage.describe() if study.storage else None,
        "run_dir": str(run_dir),
        "directions": study.directions,
        "n_trials": cfg.n_trials,
        "counts": counts,
    }
    if fork is not None:
        doc["forked_from"] = fork.old_name
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
        stopped = _commands.stop_text(doc.get("run", {}).get("stop_reason"))
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
    _commands.finish_tracking(tracking, study, run_dir)
    # An in-memory study ends with this process: there is nothing a dashboard could open.
    if not as_json and not quiet and study.storage is not None and study.storage.kind != "memory":
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


def _run_command(require_existing: bool, doc: str) -> Any:
    """The body of ``run`` and ``resume``: they differ only in whether the study must exist."""

    def command(
        config: ConfigArg,
        n_trials: NTrialsOpt = None,
        jobs: JobsOpt = None,
        storage: StorageOpt = None,
        study_name: StudyNameOpt = None,
        timeout: TimeoutOpt = None,
        quiet: QuietOpt = False,
        as_json: JsonOpt = False,
        engine: EngineOpt = None,
        force: ForceOpt = False,
    ) -> None:
        with _errors_to_exit_codes(config, as_json):
            _run(
                config,
                n_trials=n_trials,
                jobs=jobs,
                storage=storage,
                study_name=study_name,
                timeout=timeout,
                quiet=quiet,
                as_json=as_json,
                require_existing=require_existing,
                engine=engine,
                force=force,
            )

    command.__doc__ = doc
    return command


run = app.command("run")(
    _run_command(
        False, "Run (or continue) the study of CONFIG until it holds n_trials finished trials."
    )
)
resume = app.command("resume")(
    _run_command(True, "Continue an existing study (like run, but the study must exist).")
)


# ---------------------------------------------------------------------- inspection


@app.command()
def status(
    config: OptConfigArg = None,
    storage: StorageOpt = None,
    study_name: StudyNameOpt = None,
    as_json: JsonOpt = False,
    failed: Annotated[bool, typer.Option("--failed", help="Failed trials' tracebacks.")] = False,
    trial: Annotated[
        int | None, typer.Option("--trial", help="Show this trial's reason, traceback, output.")
    ] = None,
) -> None:
    """Trial counts, best value and running trials of a study."""
    from sigtune._cli_storage import stale_owner
    from sigtune._storage import OWNER_KEY

    with _errors_to_exit_codes(as_json=as_json):
        _quiet_libraries()
        study = _open_study(config, storage, study_name)
        if trial is not None:
            from sigtune._trial_logs import format_trial_log, trial_log

            log_doc = trial_log(study, trial)
            if as_json:
                _print_json(log_doc)
            else:
                print(format_trial_log(log_doc))
            return
        counts = study.count()
        running = [
            {
                "number": t.number,
                "owner": t.system_attrs.get(OWNER_KEY),
                "stale": stale_owner(t.system_attrs.get(OWNER_KEY)),
            }
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
            doc["failed"] = _commands.failed_trials(study)
        if as_json:
            _print_json(doc)
            return
        target = f" of {doc['n_trials']}" if "n_trials" in doc else ""
        print(f"Study {study.study_name!r} in {doc['storage']}")
        print(f"Trials: {doc['n_finished']} finished{target} ({_counts_text(counts)})")
        for r in running:
            if r["stale"]:
                print(
                    f"  stale: trial {r['number']} (owner {r['owner']} is dead; the next run "
                    "marks it FAIL and runs it again)"
                )
            else:
                print(f"  running: trial {r['number']} (owner {r['owner']})")
        if "best_value" in doc or "pareto_front" in doc:
            print(_format_best(doc, study.directions))
        if failed:
            _commands.print_failed(doc["failed"])
        from sigtune._trial_logs import has_logs

        logged = has_logs(study)
        if logged:
            print(f"Trials with a traceback or output kept: {logged[:20]} (--trial N shows one)")


@app.command()
def best(
    config: OptConfigArg = None,
    storage: StorageOpt = None,
    study_name: StudyNameOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Best value and parameters (Pareto front for several objectives)."""
    with _errors_to_exit_codes(as_json=as_json):
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
    from sigtune._cli_storage import check_writable_output
    from sigtune._export import export_trials

    with _errors_to_exit_codes():
        _quiet_libraries()
        check_writable_output(output)
        study = _open_study(config, storage, study_name)
        text = export_trials(study.optuna, fmt, output)
        if text is not None:
            sys.stdout.write(text)


@app.command()
def repair(
    storage: Annotated[str, typer.Argument(help="Journal file (path or journal:///path).")],
) -> None:
    """Keep every complete record of a damaged journal file (a backup copy is written first)."""
    from sigtune._cli_storage import repair as repair_storage

    with _errors_to_exit_codes():
        print(repair_storage(storage))


@app.command()
def schema() -> None:
    """Print the JSON Schema of the run-config (for editors)."""
    from sigtune._config import config_json_schema

    sys.stdout.write(json.dumps(config_json_schema(), indent=2) + "\n")


@app.command("import-optima")
def import_optima(
    source: Annotated[Path, typer.Argument(help="OPTIMA run-config (Python; read, not run).")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="sigtune run-config (default: stdout).")
    ] = None,
) -> None:
    """Translate an OPTIMA run-config to a sigtune run-config; list what was not translated."""
    import importlib

    body = importlib.import_module("sigtune.pipelines.ml._import_optima")
    with _errors_to_exit_codes():
        text = body.main(source, output, lambda line: print(line, file=sys.stderr))
        if output is None:
            sys.stdout.write(text)


app.command("studies")(_commands.studies)
app.command("dashboard")(_commands.dashboard)
app.command("report")(_commands.report)
app.command("physics")(_commands.physics)


@app.command(
    "hep",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def hep(ctx: typer.Context) -> None:
    """HistFactory tools (fit, significance, limits, ranking): sigtune hep --help.

    ``--plot PATH`` after a fit/discovery/cls/limit/ranking/scan command also writes the
    physics page of the same workspace (as ``sigtune physics``)."""
    try:
        from sigtune.hep.cli import app as hep_app
    except ImportError as exc:
        _fail(EXIT_FAILED, f"`sigtune hep` is unavailable in this installation ({exc})")
    command = typer.main.get_command(hep_app)
    args, plot = _commands.split_plot_option(list(ctx.args))  # --plot PATH: the physics page
    if plot is None:
        command.main(args=args, prog_name="sigtune hep", standalone_mode=True)
        return
    try:
        command.main(args=args, prog_name="sigtune hep", standalone_mode=True)
    except SystemExit as exc:  # standalone click always exits; a failed command stops here
        if exc.code not in (0, None):
            raise
    _commands.hep_plot(command, args, plot)


from sigtune._slurm import slurm_command  # noqa: E402 - `sigtune slurm` lives in its own module

app.command("slurm")(slurm_command)


def main() -> None:
    """Entry point of the ``sigtune`` console script."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()

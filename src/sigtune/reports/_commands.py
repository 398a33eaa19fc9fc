"""Bodies of the ``sigtune`` commands that show a study: ``studies``, ``dashboard``, ``report``,
``physics``, ``status --failed`` and ``--version`` (registered in :mod:`sigtune.cli`).

Heavy libraries (optuna-dashboard, plotly, matplotlib) are imported only inside the commands.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = [
    "dashboard",
    "failed_trials",
    "hep_plot",
    "physics",
    "print_failed",
    "report",
    "split_plot_option",
    "studies",
    "version_callback",
]

_ConfigArg = Annotated[
    Path | None, typer.Argument(help="Run-config (YAML); or give --storage.", show_default=False)
]
_StorageOpt = Annotated[
    str | None,
    typer.Option("--storage", help="Storage URL (journal:///f.journal, sqlite:///f.db, ...)."),
]
_StudyNameOpt = Annotated[str | None, typer.Option("--study-name", help="Study name.")]
_JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]


def version_callback(value: bool) -> None:
    """``sigtune --version``: print the version and exit."""
    if value:
        from sigtune import __version__

        typer.echo(f"sigtune {__version__}")
        raise typer.Exit(0)


def _storage_ref(config: Path | None, storage: str | None) -> Any:
    """The storage of a run-config (its embedded journal by default) or of --storage."""
    from sigtune._exceptions import ConfigError
    from sigtune._storage import StudyNotFoundError, resolve_storage

    if config is not None:
        from sigtune._config import load_config

        cfg: Any = load_config(config, {"storage": storage})
        if cfg.storage is None and not Path(cfg.run_dir).exists():
            raise StudyNotFoundError(
                f"run directory {cfg.run_dir} does not exist: run `sigtune run {config}` first"
            )
        return resolve_storage(cfg.storage, run_dir=cfg.run_dir)
    if storage is None:
        raise ConfigError("give a CONFIG or --storage URL")
    return resolve_storage(storage)


# ---------------------------------------------------------------------- studies


def studies(
    config: _ConfigArg = None, storage: _StorageOpt = None, as_json: _JsonOpt = False
) -> None:
    """List the studies of a storage: name, directions, trial counts, best value."""
    from sigtune._cli_common import _errors_to_exit_codes, _print_json, _quiet_libraries

    with _errors_to_exit_codes():
        _quiet_libraries()
        ref = _storage_ref(config, storage)
        backend = ref.open(track_owner=False, create=False)
        rows = []
        for summary in backend.get_all_studies():
            import optuna

            ostudy = optuna.load_study(study_name=summary.study_name, storage=backend)
            counts: dict[str, int] = {}
            for t in ostudy.get_trials(deepcopy=False):
                counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
            best = None
            if len(ostudy.directions) == 1 and counts.get("complete"):
                try:
                    best = float(ostudy.best_value)
                except ValueError:
                    best = None
            rows.append(
                {
                    "study_name": summary.study_name,
                    "directions": [d.name.lower() for d in summary.directions],
                    "n_trials": sum(counts.values()),
                    "counts": counts,
                    "best_value": best,
                }
            )
        if as_json:
            _print_json({"storage": ref.describe(), "studies": rows})
            return
        print(f"{len(rows)} stud{'y' if len(rows) == 1 else 'ies'} in {ref.describe()}")
        for r in rows:
            counts_text = ", ".join(f"{n} {s}" for s, n in r["counts"].items()) or "no trials"
            best_text = "" if r["best_value"] is None else f", best {r['best_value']:.6g}"
            print(
                f"  {r['study_name']}  [{', '.join(r['directions'])}]  "
                f"{r['n_trials']} trials ({counts_text}){best_text}"
            )


# ---------------------------------------------------------------------- dashboard


def dashboard(
    config: _ConfigArg = None,
    storage: _StorageOpt = None,
    host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port (0: a free one).")] = 8080,
) -> None:
    """Serve optuna-dashboard on the study's storage (no copy) and print its URL."""
    from sigtune._cli_common import EXIT_BAD_INPUT, _errors_to_exit_codes, _fail, _quiet_libraries

    with _errors_to_exit_codes():
        _quiet_libraries()
        try:
            import optuna_dashboard
        except ImportError:
            _fail(
                EXIT_BAD_INPUT,
                "sigtune dashboard needs optuna-dashboard: pip install 'sigtune[report]'",
            )
        from wsgiref.simple_server import WSGIRequestHandler, make_server

        ref = _storage_ref(config, storage)
        backend = ref.open(track_owner=False, create=False)

        class _QuietHandler(WSGIRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

        try:
            server = make_server(
                host, port, optuna_dashboard.wsgi(backend), handler_class=_QuietHandler
            )
        except OSError as exc:
            _fail(EXIT_BAD_INPUT, f"cannot listen on {host}:{port}: {exc.strerror or exc}")
        shown = f"[{host}]" if ":" in host else host
        print(
            f"optuna-dashboard on {ref.describe()}: http://{shown}:{server.server_port}/  "
            "(Ctrl-C to stop)",
            flush=True,
        )
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("dashboard stopped", file=sys.stderr)
        finally:
            server.server_close()


# ---------------------------------------------------------------------- status --failed


def failed_trials(study: Any) -> list[dict[str, Any]]:
    """Number, reason and stored traceback of every FAILED trial of a study."""
    from sigtune._storage import FAIL_REASON_KEY, FAIL_TRACEBACK_KEY

    ostudy = getattr(study, "optuna", study)
    return [
        {
            "number": t.number,
            "reason": t.user_attrs.get(FAIL_REASON_KEY),
            "traceback": t.system_attrs.get(FAIL_TRACEBACK_KEY),
            "params": dict(t.params),
        }
        for t in ostudy.get_trials(deepcopy=False)
        if t.state.name == "FAIL"
    ]


def print_failed(rows: list[dict[str, Any]]) -> None:
    """The ``status --failed`` text: one block per failed trial with its traceback."""
    if not rows:
        print("No failed trial.")
        return
    for r in rows:
        print(f"--- trial {r['number']} failed: {r['reason'] or '(no reason stored)'}")
        print(f"    params: {r['params']}")
        tb = r["traceback"]
        print(tb.rstrip() if tb else "    (no traceback stored: the trial did not raise)")


# ---------------------------------------------------------------------- report / physics


def report(
    config: _ConfigArg = None,
    storage: _StorageOpt = None,
    study_name: _StudyNameOpt = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Report file (default: run_dir/report.html)."),
    ] = None,
    offline: Annotated[
        bool, typer.Option("--offline", help="One self-contained file (plotly.js inlined).")
    ] = False,
) -> None:
    """Write the HTML report of a study (all plots; physics and ML pages when they apply)."""
    from sigtune._cli_common import (
        EXIT_BAD_INPUT,
        _errors_to_exit_codes,
        _fail,
        _open_study,
        _quiet_libraries,
    )

    with _errors_to_exit_codes(config):
        _quiet_libraries()
        study = _open_study(config, storage, study_name)
        run_dir: Path | None = None
        if config is not None:
            from sigtune._config import load_config

            cfg: Any = load_config(config, {"storage": storage})
            run_dir = Path(cfg.run_dir)
        if output is None:
            if run_dir is None:
                _fail(EXIT_BAD_INPUT, "give --output (no run-config to take run_dir from)")
            output = run_dir / "report.html"
        from sigtune.reports import write_report

        path = write_report(study, output, offline=offline, run_dir=run_dir)
        print(f"Report: {path}")


def physics(
    workspace: Annotated[Path, typer.Argument(help="pyhf JSON workspace.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output HTML page.")] = Path(
        "physics.html"
    ),
    measurement: Annotated[str | None, typer.Option("--measurement")] = None,
    ranking: Annotated[
        bool, typer.Option("--ranking/--no-ranking", help="Impact ranking (one fit per NP).")
    ] = True,
) -> None:
    """Physics page of a workspace: pre/post-fit stacks, pulls, impacts, CLs and NLL scans."""
    from sigtune._cli_common import EXIT_BAD_INPUT, _errors_to_exit_codes, _fail

    with _errors_to_exit_codes():
        if not workspace.is_file():
            _fail(EXIT_BAD_INPUT, f"no workspace file {workspace}")
        from sigtune.reports._physics import write_physics_page

        path = write_physics_page(workspace, output, measurement=measurement, with_ranking=ranking)
        print(f"Physics page: {path}")


# ---------------------------------------------------------------------- sigtune hep ... --plot

HEP_PLOT_COMMANDS = ("fit", "discovery", "cls", "limit", "ranking", "scan")


def split_plot_option(args: list[str]) -> tuple[list[str], Path | None]:
    """Remove ``--plot PATH`` / ``--plot=PATH`` from ``sigtune hep`` arguments.

    Raises:
        typer.Exit: (code 2, one line) when ``--plot`` has no value.
    """
    from sigtune._cli_common import EXIT_BAD_INPUT, _fail

    rest: list[str] = []
    plot: Path | None = None
    it = iter(args)
    for a in it:
        if a == "--plot":
            value = next(it, None)
            if value is None or value.startswith("-"):
                _fail(
                    EXIT_BAD_INPUT, "--plot needs a path: sigtune hep fit WS.json --plot page.html"
                )
            plot = Path(value)
        elif a.startswith("--plot="):
            plot = Path(a.split("=", 1)[1])
        else:
            rest.append(a)
    return rest, plot


def hep_plot(group: Any, args: list[str], output: Path) -> Path:
    """After ``sigtune hep <command> ARGS`` ran, write the physics page of the same workspace
    (with its ``--patch``/``--patch-name`` and ``--measurement``) to ``output``.

    ``group`` is the click group of :mod:`sigtune.hep.cli`; its own parser reads ``args``.
    """
    import click

    from sigtune._cli_common import EXIT_BAD_INPUT, _errors_to_exit_codes, _fail

    name = args[0] if args else ""
    if name not in HEP_PLOT_COMMANDS:
        _fail(
            EXIT_BAD_INPUT,
            f"--plot works with sigtune hep {'/'.join(HEP_PLOT_COMMANDS)}, not {name or 'no command'!r}",
        )
    command = group.get_command(click.Context(group), name)
    params = command.make_context(name, list(args[1:]), resilient_parsing=True).params
    workspace = params.get("workspace")
    if workspace is None or str(workspace) == "-":
        _fail(EXIT_BAD_INPUT, "--plot needs a workspace file (not standard input)")
    with _errors_to_exit_codes():
        from sigtune.hep import Workspace
        from sigtune.reports._physics import write_physics_page

        spec: Any = Path(workspace)
        if params.get("patch") is not None:
            ws = Workspace(json.loads(Path(workspace).read_text()))
            patch, patch_name = params["patch"], params.get("patch_name")
            ws = ws.patched(patch, name=patch_name) if patch_name else ws.patched(patch)
            spec = ws.spec
        path = write_physics_page(spec, output, measurement=params.get("measurement"))
    print(f"Physics page: {path}", file=sys.stderr)
    return path


# ---------------------------------------------------------------------- tracking (sigtune run)


def tracking_callbacks(cfg: Any) -> list[Any]:
    """The MLflow / W&B callbacks of a run-config's ``tracking:`` section (``[]`` for none)."""
    if getattr(cfg, "tracking", None) is None:
        return []
    from sigtune.reports._tracking import build_tracking_callbacks

    return list(build_tracking_callbacks(cfg.tracking, run_dir=Path(cfg.run_dir)))


def finish_tracking(callbacks: list[Any], study: Any, run_dir: Path) -> None:
    """After the run: the run's outputs go to the best trial's tracking run; flush."""
    callbacks = [cb for cb in callbacks if hasattr(cb, "log_artifacts")]
    if not callbacks:
        return
    outputs = [
        p
        for name in (
            "best_workspace.json",
            "summary.json",
            "report.html",
            "physics.html",
            "ml.html",
        )
        for p in [run_dir / name]
        if p.is_file()
    ]
    for cb in callbacks:
        try:
            cb.log_artifacts(study, outputs)
        except Exception as exc:
            typer.echo(
                f"warning: tracking artefacts not logged: {type(exc).__name__}: {exc}", err=True
            )
        finally:
            cb.close()


# ---------------------------------------------------------------------- run output


def warn_failed_trial(study: Any, trial: Any) -> None:
    """One warning line per failed trial (Optuna's wording), for runs on a terminal."""
    if trial.state.name != "FAIL":
        return
    from sigtune._storage import FAIL_REASON_KEY

    reason = trial.user_attrs.get(FAIL_REASON_KEY) or "unknown error"
    sys.stderr.write(
        f"warning: Trial {trial.number} failed with parameters: {dict(trial.params)} because "
        f"of the following error: {reason} (sigtune status --failed shows the traceback)\n"
    )


class _OncePerMessage:
    """A logging filter passing each distinct message once (the choice is logged per sampler)."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def filter(self, record: Any) -> bool:
        text = record.getMessage()
        if text in self.seen:
            return False
        self.seen.add(text)
        return True


def run_callbacks(cfg: Any, *, quiet: bool) -> list[Any]:
    """Callbacks ``sigtune run`` adds: tracking (run-config ``tracking:``) and, on a terminal,
    a warning line per failed trial. Also prints the ``auto`` sampler's choice at the start."""
    import logging

    if not quiet and cfg.sampler.name == "auto":
        sampler_log = logging.getLogger("sigtune._samplers")
        sampler_log.setLevel(logging.INFO)
        sampler_log.addFilter(_OncePerMessage())
    extra = tracking_callbacks(cfg)
    if not quiet and sys.stderr.isatty():
        extra.append(warn_failed_trial)
    return extra


def stop_text(stop_reason: str | None) -> str | None:
    """Why a run ended early, in one line (``None`` when it ran its trials)."""
    texts = {
        "timeout": "the run's timeout was reached",
        "max_failures": "too many failed trials (max_failures)",
        "interrupted": "interrupted (Ctrl-C)",
        "error": "a worker or callback failed",
        "stopped": "study.stop() was called",
    }
    if stop_reason is None or stop_reason == "done":
        return None
    return f"Run stopped: {texts.get(stop_reason, stop_reason)}"

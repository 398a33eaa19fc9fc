"""The command line under file-system faults and misuse: one line, the right exit code, no traces.

Runs ``sigtune`` in a subprocess (as a user does) so that the exit code, stderr and stdout are
exactly what a shell sees.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sigtune._study import load_study


def _cli(*args: object, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sigtune.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        **kw,  # type: ignore[call-overload]
    )


def _one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in done.stderr
    return lines[0]


def _config(tmp_path: Path, run_dir: Path | str, **extra: object) -> Path:
    (tmp_path / "obj.py").write_text(
        textwrap.dedent(
            """
            import os
            def quad(params, trial):
                if os.environ.get("SIGTUNE_TEST_DELETE") and trial.number == 3:
                    os.remove(os.environ["SIGTUNE_TEST_DELETE"])
                return (params["x"] - 1.0) ** 2
            """
        )
    )
    fields = {
        "study_name": "faults",
        "run_dir": str(run_dir),
        "n_trials": 8,
        "sampler": "random",
        "report": False,
        "objective": "obj.py:quad",
        **extra,
    }
    text = "".join(f"{k}: {json.dumps(v)}\n" for k, v in fields.items())
    text += "search_space:\n  x: {type: range, value_type: float, bounds: [-2, 2]}\n"
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_run_dir_through_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("not a directory")
    done = _cli("run", _config(tmp_path, tmp_path / "plain" / "run"), "--quiet")
    assert done.returncode == 2
    line = _one_error_line(done)
    assert "cannot create the run directory" in line and "Not a directory" in line


def test_run_dir_on_a_read_only_file_system(tmp_path: Path) -> None:
    if shutil.which("unshare") is None or (
        subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode != 0
    ):
        pytest.skip("cannot mount a private read-only file system here (needs user namespaces)")
    ro = tmp_path / "ro"
    ro.mkdir()
    cfg = _config(tmp_path, ro / "run")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [
            "unshare",
            "-rm",
            "sh",
            "-c",
            f"mount -t tmpfs -o ro tmpfs {ro} && "
            f"{sys.executable} -m sigtune.cli run {cfg} --quiet; echo rc=$? >&2",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert "rc=2" in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "Read-only file system" in errors[0]
    assert "Traceback" not in done.stderr


def test_export_to_a_directory(tmp_path: Path) -> None:
    cfg = _config(tmp_path, tmp_path / "run")
    assert _cli("run", cfg, "--quiet").returncode == 0
    done = _cli("export", cfg, "-o", tmp_path)
    assert done.returncode == 2
    assert "is a directory" in _one_error_line(done)


@pytest.mark.parametrize("command", ["status", "best", "export"])
def test_read_only_commands_on_a_missing_storage(tmp_path: Path, command: str) -> None:
    for storage in (tmp_path / "none.journal", f"sqlite:///{tmp_path}/none.db"):
        done = _cli(command, "--storage", storage)
        assert done.returncode == 2
        assert "does not exist" in _one_error_line(done)
    assert list(tmp_path.iterdir()) == []  # nothing created


def test_json_errors_are_json_documents(tmp_path: Path) -> None:
    cfg = _config(tmp_path, tmp_path / "run", n_trials=0)
    done = _cli("run", cfg, "--json")
    assert done.returncode == 2
    doc = json.loads(done.stdout)
    assert doc["exit_code"] == 2 and "n_trials" in doc["error"]
    done = _cli("status", "--storage", tmp_path / "none.journal", "--json")
    assert done.returncode == 2 and json.loads(done.stdout)["exit_code"] == 2


def test_storage_deleted_mid_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    cfg = _config(tmp_path, run_dir)
    env = {**os.environ, "SIGTUNE_TEST_DELETE": str(run_dir / "study.journal")}
    done = _cli("run", cfg, "--quiet", env=env)
    assert done.returncode == 1
    assert "was deleted while the study was open" in _one_error_line(done)


def test_another_search_space_is_refused(tmp_path: Path) -> None:
    cfg = _config(tmp_path, tmp_path / "run")
    assert _cli("run", cfg, "--quiet").returncode == 0
    cfg.write_text(cfg.read_text().replace("  x: {", "  y: {"))
    done = _cli("run", cfg, "--quiet", "--n-trials", "12")
    assert done.returncode == 2
    line = _one_error_line(done)
    assert "another search space [x (range)] than this one [y (range)]" in line
    assert load_study("faults", tmp_path / "run" / "study.journal").n_finished() == 8


def test_status_marks_trials_of_dead_processes_stale(tmp_path: Path) -> None:
    storage = tmp_path / "s.journal"
    flag = tmp_path / "started"
    script = (
        "import pathlib, sys, time, sigtune\n"
        "def f(trial):\n"
        "    trial.suggest_float('x', 0, 1)\n"
        "    pathlib.Path(sys.argv[2]).touch()\n"
        "    time.sleep(3600)\n"
        "sigtune.optimize(f, 1, storage=sys.argv[1])\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, storage, flag])
    try:
        end = time.monotonic() + 300
        while not flag.exists():
            assert proc.poll() is None and time.monotonic() < end
            time.sleep(0.05)
        alive = _cli("status", "--storage", storage, "--json")
        assert json.loads(alive.stdout)["running"][0]["stale"] is False
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    done = _cli("status", "--storage", storage)
    assert done.returncode == 0
    assert "stale: trial 0" in done.stdout and "dead" in done.stdout


def test_run_on_an_ml_pipeline_config_names_the_command(tmp_path: Path) -> None:
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(
        "run_dir: out\ndata: {sklearn: breast_cancer}\ntrainable: {kind: sklearn}\n"
        "search_space: {x: {type: range, bounds: [0, 1]}}\n"
    )
    done = _cli("run", cfg, "--quiet")
    assert done.returncode == 2
    assert f"python -m sigtune.pipelines.ml {cfg}" in _one_error_line(done)


def test_force_starts_a_new_study_in_its_own_run_dir(tmp_path: Path) -> None:
    cfg = _config(tmp_path, tmp_path / "run")
    obj = tmp_path / "obj.py"
    obj.write_text(obj.read_text().replace('params["x"]', "list(params.values())[0]"))
    assert _cli("run", cfg, "--quiet").returncode == 0
    cfg.write_text(cfg.read_text().replace("  x: {", "  y: {"))
    done = _cli("run", cfg, "--quiet", "--force", "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["study_name"] == "faults-2" and doc["forked_from"] == "faults"
    assert doc["run_dir"] == str(tmp_path / "run-2")
    assert "another search space" in done.stderr and "'faults-2'" in done.stderr
    assert load_study("faults", tmp_path / "run" / "study.journal").n_finished() == 8
    assert load_study("faults-2", tmp_path / "run-2" / "study.journal").n_finished() == 8
    # Forcing again continues the new study (same space), it does not start a third one.
    again = _cli("run", cfg, "--quiet", "--force", "--n-trials", "10", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["study_name"] == "faults-2"
    assert load_study("faults-2", tmp_path / "run-2" / "study.journal").n_finished() == 10
    assert not (tmp_path / "run-3").exists()


def test_another_objective_is_refused_or_forced(tmp_path: Path) -> None:
    cfg = _config(tmp_path, tmp_path / "run")
    assert _cli("run", cfg, "--quiet").returncode == 0
    (tmp_path / "obj.py").write_text(
        (tmp_path / "obj.py").read_text() + "\ndef quad2(params, trial):\n    return params['x']\n"
    )
    cfg.write_text(cfg.read_text().replace("obj.py:quad", "obj.py:quad2"))
    done = _cli("run", cfg, "--quiet", "--n-trials", "12")
    assert done.returncode == 2
    assert "was run with another objective" in _one_error_line(done)
    assert "--force" in _one_error_line(done)
    assert load_study("faults", tmp_path / "run" / "study.journal").n_finished() == 8
    forced = _cli("run", cfg, "--quiet", "--force", "--json")
    assert forced.returncode == 0, forced.stderr
    assert json.loads(forced.stdout)["study_name"] == "faults-2"


def test_study_name_gets_its_own_run_dir(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "unused")
    cfg.write_text("".join(ln + "\n" for ln in cfg.read_text().splitlines() if "run_dir" not in ln))
    assert _cli("run", cfg, "--quiet", cwd=tmp_path).returncode == 0
    done = _cli("run", cfg, "--quiet", "--study-name", "other", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["run_dir"] == str(Path("runs") / "other")
    assert load_study("other", tmp_path / "runs" / "other" / "study.journal").n_finished() == 8
    assert load_study("faults", tmp_path / "runs" / "faults" / "study.journal").n_finished() == 8


def test_isolate_in_the_run_config_survives_a_segfault(tmp_path: Path) -> None:
    cfg = _config(tmp_path, tmp_path / "run", isolate=True, enqueue=[{"x": 0.25}])
    obj = tmp_path / "obj.py"
    obj.write_text(
        "import ctypes\n"
        + obj.read_text().replace(
            "    return (", "    if params['x'] == 0.25:\n        ctypes.string_at(0)\n    return ("
        )
    )
    done = _cli("run", cfg, "--quiet", "--json")
    assert done.returncode == 0, done.stderr
    assert "worker killed by signal 11 (SIGSEGV)" in done.stderr
    study = load_study("faults", tmp_path / "run" / "study.journal")
    assert study.n_finished() == 8 and study.count()["COMPLETE"] == 7


def test_in_memory_sqlite_url_is_the_in_memory_storage(tmp_path: Path) -> None:
    # Each connection to sqlite:///:memory: is a new empty database: the run used to crash with a
    # raw "KeyError: 'Record does not exist.'" when it read its study back.
    cfg = _config(tmp_path, tmp_path / "run", storage="sqlite:///:memory:")
    done = _cli("run", cfg, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "8 complete" in done.stdout
    assert "Dashboard:" not in done.stdout  # nothing outlives the process to open

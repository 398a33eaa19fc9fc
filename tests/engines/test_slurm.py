"""``sigtune slurm``: the job script (``bash -n`` and ``shellcheck`` always), and end to end on a real
single-node SLURM (Debian's ``slurm-wlm``: ``munged``, ``slurmctld`` and ``slurmd`` started by the
fixture for localhost) where it can run here; otherwise that test skips with the reason.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from sigtune._slurm import SlurmJob, render_script
from sigtune.cli import app

SRC = str(Path(__file__).resolve().parents[2] / "src")
OBJECTIVE = """
def quadratic(trial):
    x = trial.suggest_float("x", -2.0, 2.0)
    return (x - 0.5) ** 2
"""


def _config(tmp_path: Path, n_trials: int = 4, **extra: object) -> Path:
    (tmp_path / "objective.py").write_text(OBJECTIVE)
    cfg = {
        "study_name": "slurm-demo",
        "run_dir": str(tmp_path / "run"),
        "n_trials": n_trials,
        "seed": 0,
        "sampler": "random",
        "search_space": None,
        "objective": "objective.py:quadratic",
        "report": False,
        "engine": "local",
        "ray": {"max_concurrent": 1},
        **extra,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _check_script(path: Path) -> None:
    subprocess.run(["bash", "-n", str(path)], check=True)
    shellcheck = shutil.which("shellcheck")
    assert shellcheck is not None, "shellcheck is missing (.ci/run installs it)"
    proc = subprocess.run([shellcheck, "-S", "info", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("nodes", "gpus", "partition", "cpus"), [(1, 0, None, None), (4, 2, "gpu", 16)]
)
def test_script_passes_bash_n_and_shellcheck(
    tmp_path: Path, nodes: int, gpus: int, partition: str | None, cpus: int | None
) -> None:
    config = _config(tmp_path)
    result = CliRunner().invoke(
        app,
        [
            "slurm",
            str(config),
            "--nodes",
            str(nodes),
            "--gpus-per-node",
            str(gpus),
            "--time",
            "01:30:00",
            *(["--partition", partition] if partition else []),
            *(["--cpus-per-node", str(cpus)] if cpus else []),
            "--sbatch=--account=hep",
            "--dry-run",
        ],
    )
    assert result.exit_code == 0, result.output
    script = tmp_path / "run" / "slurm" / "sigtune-slurm-demo.sbatch"
    text = script.read_text()
    assert text in result.output  # printed as written
    assert f"#SBATCH --nodes={nodes}" in text
    assert "#SBATCH --time=01:30:00" in text
    assert "#SBATCH --account=hep" in text
    assert ("#SBATCH --gpus-per-node=2" in text) == bool(gpus)
    assert ("#SBATCH --partition=gpu" in text) == bool(partition)
    assert ("#SBATCH --cpus-per-task=16" in text) == bool(cpus)
    assert f"CONFIG={config.resolve()}" in text
    assert '-m sigtune.cli run "$CONFIG" --engine ray' in text
    _check_script(script)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--time", "2h"], "--time must be"),
        (["--nodes", "0"], "--nodes must be"),
        (["--partition", "a b"], "--partition"),
        (["--sbatch", "account=x"], "--sbatch options"),
    ],
)
def test_bad_input_exits_2(tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["slurm", str(_config(tmp_path)), *args, "--dry-run"])
    assert result.exit_code == 2
    assert message in result.output


def test_render_quotes_paths_with_spaces(tmp_path: Path) -> None:
    job = SlurmJob(
        config=tmp_path / "my config.yaml",
        run_dir=tmp_path / "run dir",
        study_name="a b/c",
        nodes=2,
        gpus_per_node=1,
        time="1-00:00:00",
    )
    path = tmp_path / "job.sbatch"
    path.write_text(render_script(job))
    assert job.job_name == "sigtune-a-b-c"
    _check_script(path)


# ---------------------------------------------------------------------- real SLURM
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _slurm_unavailable() -> str | None:
    for exe in ("munged", "slurmctld", "slurmd", "sbatch", "scontrol"):
        if shutil.which(exe) is None and not Path(f"/usr/sbin/{exe}").exists():
            return f"{exe} not found (apt-get install slurm-wlm munge)"
    if os.geteuid() != 0:
        return "slurmd needs root to start jobs in this fixture"
    return None


def _wait(cond: object, what: str, limit_s: float) -> None:
    end = time.monotonic() + limit_s
    while not cond():  # type: ignore[operator]
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def slurm() -> Iterator[dict[str, str]]:
    reason = _slurm_unavailable()
    if reason is not None:
        print(f"SLURM test skipped: {reason}")
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="sigtune-slurm-"))
    sbin = "/usr/sbin"
    munge = root / "munge"
    for d in ("state", "spool", "log", "munge"):
        (root / d).mkdir()
    munge.chmod(0o700)
    (munge / "munge.key").write_bytes(os.urandom(1024))
    (munge / "munge.key").chmod(0o400)
    ctl_port, d_port = _free_port(), _free_port()
    conf = root / "slurm.conf"
    conf.write_text(
        f"""ClusterName=sigtunetest
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={munge}/munge.sock
CredType=cred/munge
SlurmctldPort={ctl_port}
SlurmdPort={d_port}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
MinJobAge=600
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName=localhost CPUs={os.cpu_count() or 1} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
"""
    )
    env = {**os.environ, "SLURM_CONF": str(conf)}
    pids: list[Path] = [munge / "munged.pid", root / "slurmctld.pid", root / "slurmd.pid"]
    try:
        subprocess.run(
            [
                f"{sbin}/munged",
                f"--key-file={munge}/munge.key",
                f"--socket={munge}/munge.sock",
                f"--pid-file={munge}/munged.pid",
                f"--log-file={munge}/munged.log",
                f"--seed-file={munge}/seed",
                "-f",
            ],
            check=True,
            env=env,
        )
        subprocess.run([f"{sbin}/slurmctld", "-f", str(conf), "-i"], check=True, env=env)
        subprocess.run([f"{sbin}/slurmd", "-f", str(conf)], check=True, env=env)

        def idle() -> bool:
            out = subprocess.run(
                ["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, env=env
            ).stdout
            return out.strip() in ("idle", "mix")

        _wait(idle, "slurmd to register", 60)
    except (subprocess.CalledProcessError, AssertionError, OSError) as exc:
        logs = "".join(p.read_text()[-2000:] for p in (root / "log").glob("*.log"))
        reason = f"SLURM could not be started here: {exc}; {logs[-500:]}"
        print(reason)
        _stop(pids)
        pytest.skip(reason)
    try:
        yield env
    finally:
        _stop(pids)
        shutil.rmtree(root, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _stop(pid_files: list[Path]) -> None:
    """SIGTERM the daemons (slurmd, slurmctld, munged) and wait until they are gone."""
    pids = []
    for f in reversed(pid_files):
        try:
            pid = int(f.read_text().strip())
            os.kill(pid, 15)
            pids.append(pid)
        except (OSError, ValueError):
            pass
    for pid in pids:  # slurmctld saves its state on SIGTERM: wait before removing the dir
        _wait(lambda pid=pid: not _alive(pid), f"daemon {pid} to exit", 30)


def _submit_and_wait(config: Path, env: dict[str, str], cwd: Path) -> tuple[str, str]:
    port = _free_port()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sigtune.cli",
            "slurm",
            str(config),
            "--nodes",
            "1",
            "--time",
            "00:15:00",
            "--port",
            str(port),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    job_id = proc.stdout.split()[2].rstrip(":")
    state = {"s": ""}

    def finished() -> bool:
        out = subprocess.run(
            ["scontrol", "show", "job", job_id], capture_output=True, text=True, env=env
        ).stdout
        for word in out.split():
            if word.startswith("JobState="):
                state["s"] = word.split("=", 1)[1]
        return state["s"] in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL")

    _wait(finished, f"SLURM job {job_id}", 600)
    out_file = config.parent / "run" / "slurm" / f"sigtune-slurm-demo-{job_id}.out"
    return state["s"], out_file.read_text() if out_file.exists() else "(no output file)"


@pytest.mark.slow
def test_sigtune_slurm_end_to_end(slurm: dict[str, str], tmp_path: Path) -> None:
    import optuna

    config = _config(tmp_path, n_trials=4)
    env = {**slurm, "PYTHONPATH": SRC, "RAY_AUTH_MODE": "disabled"}
    state, output = _submit_and_wait(config, env, tmp_path)
    assert state == "COMPLETED", output
    assert "run finished with exit code 0" in output, output
    journal = optuna.storages.journal.JournalFileBackend(str(tmp_path / "run" / "study.journal"))
    study = optuna.load_study(
        study_name="slurm-demo", storage=optuna.storages.JournalStorage(journal)
    )
    first = [t.params for t in study.trials]
    assert len(first) == 4
    assert all(t.state.name == "COMPLETE" for t in study.trials)
    # submitting again (here with a larger n_trials) continues the same study
    _config(tmp_path, n_trials=6)
    state, output = _submit_and_wait(config, env, tmp_path)
    assert state == "COMPLETED", output
    trials = optuna.load_study(
        study_name="slurm-demo", storage=optuna.storages.JournalStorage(journal)
    ).trials
    assert len(trials) == 6
    assert [t.params for t in trials[:4]] == first


@pytest.mark.parametrize("failed_starts", [1, 5])
def test_a_head_that_exits_during_startup_is_started_again(
    tmp_path: Path, failed_starts: int
) -> None:
    """`ray start --head` gives up when its raylet has not registered within 30 s (seen on a loaded
    node): the job script notices that the head step exited, starts it again up to 3 times in all,
    and then stops with the reason, instead of polling a dead head until SIGTUNE_RAY_WAIT_S counts
    out. srun, scontrol, ray and python are stand-ins here; the end-to-end test runs the real ones."""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    starts, up = tmp_path / "starts", tmp_path / "up"
    scripts = {
        # srun: drop the options, run the command
        "srun": 'while [ $# -gt 0 ]; do case "$1" in -w) shift 2;; -*) shift;; *) break;; esac; done\n'
        'exec "$@"\n',
        "scontrol": "echo localhost\n",
        # ray start: the first `failed_starts` attempts exit at once, a later one blocks
        "ray": f'n=$(( $(cat {starts} 2>/dev/null || echo 0) + 1 )); echo "$n" > {starts}\n'
        f'if [ "$n" -le {failed_starts} ]; then echo "ray: timed out during startup" >&2; exit 1; fi\n'
        f"touch {up}; exec sleep 600\n",
        # python: the node check succeeds once a head is up; `-m sigtune.cli run` says so
        "python": f'if [ "$1" = - ]; then cat > /dev/null; [ -e {up} ]; exit; fi\n'
        'echo "sigtune run $*"\n',
    }
    for name, body in scripts.items():
        (stubs / name).write_text("#!/usr/bin/env bash\n" + body)
        (stubs / name).chmod(0o755)
    job = SlurmJob(
        config=tmp_path / "config.yaml",
        run_dir=tmp_path / "run",
        study_name="s",
        nodes=1,
        gpus_per_node=0,
        time="00:10:00",
        python=str(stubs / "python"),
    )
    script = tmp_path / "job.sbatch"
    script.write_text(render_script(job))
    env = {
        **os.environ,
        "PATH": f"{stubs}:{os.environ['PATH']}",
        "SLURM_JOB_NODELIST": "localhost",
        "SIGTUNE_RAY_WAIT_S": "100000",  # only the head's exit may end the waiting
    }
    proc = subprocess.run(
        ["bash", str(script)], env=env, capture_output=True, text=True, timeout=300
    )
    n_starts = int(starts.read_text())
    if failed_starts < 3:
        assert proc.returncode == 0, proc.stderr
        assert n_starts == failed_starts + 1
        assert "starting the Ray head again (try 2 of 3)" in proc.stderr
        assert "sigtune run -m sigtune.cli run" in proc.stdout
    else:
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert n_starts == 3
        assert "the Ray head (ray start --head) exited before 1 node(s) were up" in proc.stderr
        assert "sigtune run" not in proc.stdout

"""``sigtune slurm``: a SLURM batch job that brings up a Ray cluster and runs a study on it.

The job script (bash) does what Ray's SLURM guide does, with nothing of our own in between:

1. the first node of the allocation runs the Ray head (``srun ... ray start --head --block``);
2. every other node runs a Ray worker (``srun ... ray start --address=HEAD --block``);
3. the script waits until ``ray`` sees all nodes, then runs
   ``python -m sigtune.cli run CONFIG --engine ray`` on the first node with ``RAY_ADDRESS``
   pointing at the head (the Ray engine connects to it);
4. on exit (also on ``scancel``/time limit: SLURM sends SIGTERM first) it stops the Ray steps.

The study lives in the config's storage (the embedded journal file in ``run_dir`` on a shared
filesystem, or a database), so submitting the same command again resumes the same study.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from sigtune._exceptions import ConfigError, SigtuneError

__all__ = ["SlurmJob", "render_script", "slurm_command", "submit", "write_script"]

_TIME = re.compile(r"^(\d+-)?\d{1,3}:\d{2}:\d{2}$")
_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class SlurmJob:
    """What the job script needs.

    Attributes:
        config: The run-config (made absolute).
        run_dir: The run directory (the script and SLURM's output go to ``run_dir/slurm``).
        study_name: Used for the job name.
        nodes: Nodes of the allocation (>= 1): one Ray head, ``nodes - 1`` Ray workers.
        gpus_per_node: GPUs requested on each node (``--gpus-per-node``; 0: none).
        time: Wall-time limit ``[D-]HH:MM:SS``.
        partition: SLURM partition, or ``None`` for the cluster's default.
        cpus_per_node: CPUs per node (``--cpus-per-task``); ``None``: SLURM's default.
        python: The Python that has sigtune and Ray installed (default: this one).
        port: Port of the Ray head (GCS).
        extra_sbatch: More ``#SBATCH`` options, e.g. ``--account=abc`` (one per entry).
    """

    config: Path
    run_dir: Path
    study_name: str
    nodes: int
    gpus_per_node: int
    time: str
    partition: str | None = None
    cpus_per_node: int | None = None
    python: str = sys.executable
    port: int = 6379
    extra_sbatch: tuple[str, ...] = ()

    def check(self) -> None:
        """Raise :class:`ConfigError` on a value SLURM would reject."""
        if self.nodes < 1:
            raise ConfigError(f"--nodes must be >= 1, got {self.nodes}")
        if self.gpus_per_node < 0:
            raise ConfigError(f"--gpus-per-node must be >= 0, got {self.gpus_per_node}")
        if self.cpus_per_node is not None and self.cpus_per_node < 1:
            raise ConfigError(f"--cpus-per-node must be >= 1, got {self.cpus_per_node}")
        if not _TIME.match(self.time):
            raise ConfigError(f"--time must be HH:MM:SS or D-HH:MM:SS, got {self.time!r}")
        if self.partition is not None and not re.fullmatch(r"[A-Za-z0-9_.,-]+", self.partition):
            raise ConfigError(f"--partition has unexpected characters: {self.partition!r}")
        if not 1 <= self.port <= 65535:
            raise ConfigError(f"--port must be in 1..65535, got {self.port}")
        for opt in self.extra_sbatch:
            if not opt.startswith("--") or "\n" in opt:
                raise ConfigError(f"--sbatch options look like '--account=abc', got {opt!r}")

    @property
    def job_name(self) -> str:
        return "sigtune-" + (_NAME.sub("-", self.study_name).strip("-") or "study")

    @property
    def script_path(self) -> Path:
        return self.run_dir / "slurm" / f"{self.job_name}.sbatch"


def render_script(job: SlurmJob) -> str:
    """The bash job script for ``job`` (checked with ``bash -n`` and ``shellcheck`` in tests)."""
    job.check()
    q = shlex.quote
    out_dir = job.run_dir / "slurm"
    sbatch = [
        f"--job-name={job.job_name}",
        f"--nodes={job.nodes}",
        "--ntasks-per-node=1",
        f"--time={job.time}",
        f"--output={out_dir}/%x-%j.out",
    ]
    if job.partition:
        sbatch.append(f"--partition={job.partition}")
    if job.gpus_per_node:
        sbatch.append(f"--gpus-per-node={job.gpus_per_node}")
    if job.cpus_per_node:
        sbatch.append(f"--cpus-per-task={job.cpus_per_node}")
    sbatch.extend(job.extra_sbatch)
    header = "\n".join(f"#SBATCH {s}" for s in sbatch)
    ray_bin = str(Path(job.python).parent / "ray")
    return f"""#!/usr/bin/env bash
{header}
# Written by `sigtune slurm`: a Ray head on the first node, Ray workers on the others, then
# `sigtune run --engine ray` against that cluster. Submitting it again resumes the same study.
set -euo pipefail

PYTHON={q(job.python)}
RAY={q(ray_bin)}
CONFIG={q(str(job.config))}
PORT={job.port}
GPUS_PER_NODE={job.gpus_per_node}
CPUS_PER_NODE="${{SLURM_CPUS_PER_TASK:-${{SLURM_CPUS_ON_NODE:-1}}}}"
WAIT_S="${{SIGTUNE_RAY_WAIT_S:-300}}"
# Trials run at normal priority on the allocation's nodes (Ray's default worker niceness is 15).
export RAY_worker_niceness="${{RAY_worker_niceness:-0}}"

mapfile -t NODES < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
HEAD_NODE="${{NODES[0]}}"
HEAD_IP="$(srun --overlap --nodes=1 --ntasks=1 -w "$HEAD_NODE" hostname --ip-address | awk '{{print $1}}')"
export RAY_ADDRESS="$HEAD_IP:$PORT"
echo "sigtune: Ray head on $HEAD_NODE ($RAY_ADDRESS), ${{#NODES[@]}} node(s)"

STEPS=()
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {{
  for pid in "${{STEPS[@]}}"; do
    kill "$pid" 2>/dev/null || true
  done
  wait || true
}}
trap cleanup EXIT
trap 'exit 143' TERM INT

# The Ray head; ray start gives up when its raylet has not registered within 30 s (a loaded
# node), so a head that exits before the cluster is up is started again, HEAD_TRIES times in all.
HEAD_TRIES=3
start_head() {{
  srun --overlap --nodes=1 --ntasks=1 -w "$HEAD_NODE" \\
    "$RAY" start --head --block --node-ip-address="$HEAD_IP" --port="$PORT" \\
    --num-cpus="$CPUS_PER_NODE" --num-gpus="$GPUS_PER_NODE" --include-dashboard=false &
  HEAD_PID=$!
  STEPS+=("$HEAD_PID")
}}

# Wait until WANT nodes are alive: returns 1 after WAIT_S seconds, 2 at once if the head exited.
wait_for_nodes() {{
  local want="$1" deadline=$((SECONDS + WAIT_S))
  until timeout 120 "$PYTHON" - "$want" <<'PY'
import sys

import ray

ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
alive = sum(1 for node in ray.nodes() if node["Alive"])
sys.exit(0 if alive >= int(sys.argv[1]) else 1)
PY
  do
    if ! kill -0 "$HEAD_PID" 2>/dev/null; then
      echo "sigtune: the Ray head (ray start --head) exited before $want node(s) were up" >&2
      return 2
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "sigtune: the Ray cluster did not reach $want node(s) in $WAIT_S s" >&2
      return 1
    fi
    sleep 5
  done
}}

for ((try = 1; ; try++)); do
  start_head
  up=0
  wait_for_nodes 1 || up=$?
  if [ "$up" -eq 0 ]; then
    break
  fi
  if [ "$up" -ne 2 ] || [ "$try" -ge "$HEAD_TRIES" ]; then
    exit 1
  fi
  echo "sigtune: starting the Ray head again (try $((try + 1)) of $HEAD_TRIES)" >&2
done
for node in "${{NODES[@]:1}}"; do
  srun --overlap --nodes=1 --ntasks=1 -w "$node" \\
    "$RAY" start --block --address="$RAY_ADDRESS" \\
    --num-cpus="$CPUS_PER_NODE" --num-gpus="$GPUS_PER_NODE" &
  STEPS+=("$!")
done
wait_for_nodes "${{#NODES[@]}}"

rc=0
"$PYTHON" -m sigtune.cli run "$CONFIG" --engine ray || rc=$?
echo "sigtune: run finished with exit code $rc"
exit "$rc"
"""


def write_script(job: SlurmJob) -> Path:
    """Write the job script to ``run_dir/slurm/<job name>.sbatch`` and return its path."""
    text = render_script(job)
    path = job.script_path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def submit(path: Path) -> str:
    """``sbatch --parsable PATH``; returns the job id.

    Raises:
        SigtuneError: ``sbatch`` is missing or refused the job (its message included).
    """
    exe = shutil.which("sbatch")
    if exe is None:
        raise SigtuneError(
            "sbatch not found: run this on a SLURM login node, or use --dry-run to only write "
            f"the script ({path})"
        )
    proc = subprocess.run([exe, "--parsable", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SigtuneError(f"sbatch refused {path}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout.strip().split(";")[0]


def slurm_command(
    config: Annotated[Path, typer.Argument(help="Run-config (YAML).", show_default=False)],
    nodes: Annotated[int, typer.Option("--nodes", "-N", help="Nodes (1 Ray head + workers).")] = 1,
    gpus_per_node: Annotated[int, typer.Option("--gpus-per-node", help="GPUs per node.")] = 0,
    time: Annotated[str, typer.Option("--time", "-t", help="Wall time [D-]HH:MM:SS.")] = "01:00:00",
    partition: Annotated[str | None, typer.Option("--partition", "-p", help="Partition.")] = None,
    cpus_per_node: Annotated[
        int | None, typer.Option("--cpus-per-node", help="CPUs per node (--cpus-per-task).")
    ] = None,
    sbatch_option: Annotated[
        list[str] | None,
        typer.Option("--sbatch", help="Extra #SBATCH option, e.g. --sbatch=--account=abc."),
    ] = None,
    port: Annotated[int, typer.Option("--port", help="Ray head port.")] = 6379,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Write and print the script; do not submit it.")
    ] = False,
) -> None:
    """Write a SLURM job that starts a Ray cluster and runs CONFIG on it; submit it (sbatch)."""
    from sigtune._config import load_config

    try:
        cfg = load_config(config)
        job = SlurmJob(
            config=config.resolve(),
            run_dir=Path(str(cfg.run_dir)).resolve(),
            study_name=cfg.study_name,
            nodes=nodes,
            gpus_per_node=gpus_per_node,
            time=time,
            partition=partition,
            cpus_per_node=cpus_per_node,
            port=port,
            extra_sbatch=tuple(sbatch_option or ()),
        )
        path = write_script(job)
        if dry_run:
            sys.stdout.write(path.read_text())
            typer.echo(f"# written to {path} (not submitted: --dry-run)", err=True)
            return
        job_id = submit(path)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except SigtuneError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    print(f"Submitted job {job_id}: {path}")
    print(f"Output: {job.run_dir / 'slurm'}/{job.job_name}-{job_id}.out")

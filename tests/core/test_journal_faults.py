"""The journal storage under faults: torn and garbage records, full disks, stopped lock holders.

After every fault the trials completed before it are still there, read back with plain Optuna.
"""

from __future__ import annotations

import gc
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from sigtune._exceptions import StorageError
from sigtune._journal import (
    CheckedJournalBackend,
    JournalCorruptError,
    LockTimeoutError,
    repair_journal,
)
from sigtune._study import load_study, optimize


def _objective(trial: optuna.Trial) -> float:
    return trial.suggest_float("x", 0.0, 1.0) ** 2


def _plain_optuna_complete(path: Path, name: str = "sigtune") -> dict[int, float]:
    """Completed trials as plain Optuna (its own file backend) reads them."""
    storage = JournalStorage(JournalFileBackend(str(path)))
    study = optuna.load_study(study_name=name, storage=storage)
    return {t.number: t.values[0] for t in study.get_trials() if t.state == TrialState.COMPLETE}


@pytest.fixture(scope="module")
def sound_journal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sound") / "study.journal"
    # Written by another process: after a cut, a trial left RUNNING has a dead owner (stale).
    script = (
        "import sys, sigtune\n"
        "f = lambda t: t.suggest_float('x', 0.0, 1.0) ** 2\n"
        "sigtune.optimize(f, 6, sampler='random', seed=1, storage=sys.argv[1])\n"
    )
    subprocess.run([sys.executable, "-c", script, str(path)], check=True)
    return path


def _last_record_start(data: bytes) -> int:
    return data.rstrip(b"\n").rfind(b"\n") + 1


def test_truncation_at_every_offset_of_the_last_record(sound_journal: Path, tmp_path: Path) -> None:
    data = sound_journal.read_bytes()
    start = _last_record_start(data)
    complete_before = _plain_optuna_complete(sound_journal)
    for cut in range(start + 1, len(data)):  # every torn length, up to a missing newline
        path = tmp_path / f"cut{cut}.journal"
        path.write_bytes(data[:cut])
        # Reading still works (the torn record is skipped) ...
        assert len(load_study("sigtune", path).trials) == 6
        # ... but nothing is appended to a torn file: one line naming the byte offset.
        with pytest.raises(JournalCorruptError) as info:
            optimize(_objective, 8, sampler="random", storage=str(path))
        msg = str(info.value)
        assert f"at byte {start} " in msg and "sigtune repair" in msg and "\n" not in msg
        assert path.read_bytes() == data[:cut]  # untouched
        if (cut - start) % 23 == 1:  # repair a sample of them (each repair is a full run)
            result = repair_journal(path)
            assert result.first_bad_offset == start and result.dropped == 1
            assert result.backup is not None and result.backup.read_bytes() == data[:cut]
            assert path.read_bytes() == data[:start]
            study = optimize(_objective, 8, sampler="random", storage=str(path))
            assert study.n_finished() == 8
            after = _plain_optuna_complete(path)
            # Every trial that was complete in the kept records is unchanged.
            kept = {n: v for n, v in complete_before.items() if n in after}
            assert len(kept) >= 5 and all(after[n] == v for n, v in kept.items())


@pytest.mark.parametrize("where", ["end", "middle"])
def test_garbage_line_is_refused_with_offset_and_repaired(
    sound_journal: Path, tmp_path: Path, where: str
) -> None:
    data = sound_journal.read_bytes()
    lines = data.splitlines(keepends=True)
    at = len(lines) if where == "end" else len(lines) // 2
    offset = sum(len(x) for x in lines[:at])
    bad = b"".join(lines[:at]) + b"\x00garbage{\n" + b"".join(lines[at:])
    path = tmp_path / "bad.journal"
    path.write_bytes(bad)
    with pytest.raises(JournalCorruptError, match=f"not JSON at byte {offset} "):
        load_study("sigtune", path)
    with pytest.raises(JournalCorruptError):
        optimize(_objective, 8, sampler="random", storage=str(path))
    assert path.read_bytes() == bad  # never appended to
    result = repair_journal(path)
    assert (result.kept, result.dropped, result.first_bad_offset) == (len(lines), 1, offset)
    assert path.read_bytes() == data
    assert _plain_optuna_complete(path) == _plain_optuna_complete(sound_journal)


def test_cli_repair_and_resume_message(sound_journal: Path, tmp_path: Path) -> None:
    data = sound_journal.read_bytes()
    path = tmp_path / "run" / "study.journal"
    path.parent.mkdir()
    path.write_bytes(data[:-7])
    cli = [sys.executable, "-m", "sigtune.cli"]
    status = subprocess.run(
        [*cli, "status", "--storage", str(path)], capture_output=True, text=True
    )
    assert status.returncode == 0, status.stderr
    assert "torn" in status.stderr and "sigtune repair" in status.stderr  # warns, still reads
    fixed = subprocess.run([*cli, "repair", str(path)], capture_output=True, text=True)
    assert fixed.returncode == 0, fixed.stderr
    assert "backup" in fixed.stdout and (tmp_path / "run" / "study.journal.bak").exists()
    again = subprocess.run([*cli, "repair", str(path)], capture_output=True, text=True)
    assert again.returncode == 0 and "nothing to repair" in again.stdout
    missing = subprocess.run([*cli, "repair", str(tmp_path / "no.journal")], capture_output=True)
    assert missing.returncode == 2


def test_failed_write_is_cut_back(tmp_path: Path) -> None:
    """A write that fails half-way (here: the file-size limit) leaves no torn record behind."""
    path = tmp_path / "x.journal"
    script = textwrap.dedent(
        """
        import resource, signal, sys
        import sigtune
        from sigtune._exceptions import SigtuneError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), int(sys.argv[2])))
        def objective(trial):
            trial.set_user_attr("pad", "p" * 700)
            return trial.suggest_float("x", 0, 1)
        try:
            sigtune.optimize(objective, 10_000, sampler="random", storage=sys.argv[1])
        except SigtuneError as exc:
            print(type(exc).__name__, exc)
            sys.exit(1)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(path), "60000"], capture_output=True, text=True
    )
    assert done.returncode == 1, done.stderr
    assert "JournalWriteError cannot write journal" in done.stdout
    assert "Traceback" not in done.stderr
    data = path.read_bytes()
    assert data.endswith(b"\n")  # cut back: no partial record
    complete = _plain_optuna_complete(path)
    assert len(complete) > 10
    # The study goes on where it stopped once there is room again.
    study = optimize(lambda t: t.suggest_float("x", 0, 1), len(complete) + 3, storage=str(path))
    assert study.count()["COMPLETE"] == len(complete) + 3


def _tmpfs_runner() -> list[str] | None:
    """A command prefix that runs ``sh -c`` with a private small tmpfs mount, if allowed."""
    if shutil.which("unshare") is None:
        return None
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
        capture_output=True,
    )
    return ["unshare", "-rm", "sh", "-c"] if probe.returncode == 0 else None


def test_full_disk_small_tmpfs_cli(tmp_path: Path) -> None:
    runner = _tmpfs_runner()
    if runner is None:
        pytest.skip("cannot mount a private tmpfs here (needs user namespaces)")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    (tmp_path / "obj.py").write_text(
        "def objective(trial):\n"
        "    trial.set_user_attr('pad', 'p' * 900)\n"
        "    return trial.suggest_float('x', 0, 1)\n"
    )
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"study_name: full\nrun_dir: {mnt}/run\nn_trials: 100000\nsampler: random\n"
        "objective: obj.py:objective\nreport: false\n"
    )
    inner = (
        f"mount -t tmpfs -o size=96k tmpfs {mnt} && "
        f"{sys.executable} -m sigtune.cli run {cfg} --quiet; echo rc=$?; "
        f"cp {mnt}/run/study.journal {tmp_path}/copy.journal"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([*runner, inner], capture_output=True, text=True, env=env)
    assert "rc=1" in done.stdout, (done.stdout, done.stderr)
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: cannot write journal")
    assert "No space left on device" in errors[0]
    copy = tmp_path / "copy.journal"
    assert copy.read_bytes().endswith(b"\n")
    assert len(_plain_optuna_complete(copy, "full")) > 10


def test_stopped_lock_holder_times_out_naming_its_pid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "x.journal"
    optimize(_objective, 2, sampler="random", storage=str(path))
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, signal, sys\n"
            "from sigtune._journal import FlockLock\n"
            "FlockLock(sys.argv[1]).acquire()\n"
            "print('held', flush=True)\n"
            "os.kill(os.getpid(), signal.SIGSTOP)\n",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        monkeypatch.setenv("SIGTUNE_LOCK_TIMEOUT", "0.5")
        with pytest.raises(StorageError) as info:
            optimize(_objective, 4, sampler="random", storage=str(path))
        assert f"held by process {holder.pid}" in str(info.value)
        assert "SIGTUNE_LOCK_TIMEOUT" in str(info.value)
        # Reading needs no lock: the study is still readable while the holder is stopped.
        assert load_study("sigtune", path).count()["COMPLETE"] == 2
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    assert _plain_optuna_complete(path).keys() == {0, 1}
    study = optimize(_objective, 4, sampler="random", storage=str(path))
    assert study.count()["COMPLETE"] == 4


def test_lock_timeout_setting_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    from sigtune._journal import lock_timeout

    monkeypatch.setenv("SIGTUNE_LOCK_TIMEOUT", "soon")
    with pytest.raises(StorageError, match="SIGTUNE_LOCK_TIMEOUT='soon' is not a number"):
        lock_timeout()
    monkeypatch.setenv("SIGTUNE_LOCK_TIMEOUT", "7")
    assert lock_timeout() == 7.0
    assert LockTimeoutError.__mro__[1] is StorageError


def test_no_file_descriptor_leak(tmp_path: Path) -> None:
    def n_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    optimize(_objective, 1, storage=str(tmp_path / "warm.journal"))
    gc.collect()  # descriptors of earlier tests' objects must not close during the loop
    before = n_fds()
    for i in range(60):
        optimize(_objective, 2, sampler="random", storage=str(tmp_path / f"s{i}.journal"))
    gc.collect()
    assert n_fds() <= before  # 2 descriptors per call leaked before (126 calls hit ulimit 256)


def test_read_only_open_never_creates(tmp_path: Path) -> None:
    path = tmp_path / "none.journal"
    with pytest.raises(StorageError, match="does not exist"):
        CheckedJournalBackend(str(path), create=False)
    with pytest.raises(StorageError, match="does not exist"):
        load_study("sigtune", path)
    with pytest.raises(StorageError, match="does not exist"):
        load_study("sigtune", f"sqlite:///{tmp_path}/none.db")
    assert list(tmp_path.iterdir()) == []

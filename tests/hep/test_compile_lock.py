"""Processes that share numba's on-disk cache compile one at a time (sigtune.hep._jit._compiler).

Each test compiles a two-line kernel of its own module (in ``tmp_path``) in child processes
with their own ``NUMBA_CACHE_DIR``, and holds or watches the lock file from the test process.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("numba")  # a dev dependency: never skipped in CI

_KERNEL = """
def twice(x):
    return 2.0 * x
"""

# Prints the lock file's path, waits for a line on stdin, compiles (or loads) the kernel and
# prints its numba cache statistics.
_CHILD = """
import json, sys
sys.path.insert(0, sys.argv[1])
from sigtune.hep import _jit
import kern
if len(sys.argv) > 2:
    _jit.COMPILE_LOCK_WAIT_S = float(sys.argv[2])
twice = _jit._compiler(kern.twice)
import os
print(os.path.join(twice._cache._cache_path, _jit.COMPILE_LOCK_NAME), flush=True)
sys.stdin.readline()
value = twice(21.0)
print(json.dumps({"value": value, "hits": sum(twice.stats.cache_hits.values()),
                  "misses": sum(twice.stats.cache_misses.values())}), flush=True)
"""


def _child(tmp_path: Path, *extra: str) -> subprocess.Popen[str]:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(tmp_path), *extra],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _lock_path(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line.endswith("sigtune-compile.lock"), (line, proc.stderr and proc.stderr.read())
    return line


def _go(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()


def _result(proc: subprocess.Popen[str]) -> tuple[dict[str, float], str]:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1]), err


@pytest.fixture
def kernel_dir(tmp_path: Path) -> Path:
    (tmp_path / "kern.py").write_text(_KERNEL)
    return tmp_path


def test_a_waiting_process_loads_what_the_holder_compiled(kernel_dir: Path) -> None:
    """Two processes asked to compile the same kernel at once: while the test holds the lock
    neither finishes; released, one compiles (a cache miss), the other loads its result, and
    the lock is free again."""
    procs = [_child(kernel_dir), _child(kernel_dir)]
    paths = {_lock_path(p) for p in procs}
    assert len(paths) == 1  # the same cache directory, the same lock
    path = paths.pop()
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        for p in procs:
            _go(p)
        # Both have been told to compile; held, neither can (a lost race shows as a false
        # pass here, never as a false failure).
        time.sleep(1.0)
        assert [p.poll() for p in procs] == [None, None]
    finally:
        os.close(fd)
    results = [_result(p)[0] for p in procs]
    assert all(r["value"] == 42.0 for r in results)
    assert sorted((r["misses"], r["hits"]) for r in results) == [(0, 1), (1, 0)]
    fd = os.open(path, os.O_RDWR)
    try:  # and neither kept the lock
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


def test_a_holder_that_never_lets_go_is_given_up_on(kernel_dir: Path) -> None:
    proc = _child(kernel_dir, "0.5")
    fd = os.open(_lock_path(proc), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _go(proc)
        result, err = _result(proc)  # finishes while the lock is still held
    finally:
        os.close(fd)
    assert result == {"value": 42.0, "hits": 0, "misses": 1}
    assert "held numba's compile lock" in err and "compiling without it" in err


def test_the_package_kernels_take_the_lock() -> None:
    from sigtune.hep import _jit

    if not _jit.ENABLED:  # pragma: no cover - the test environment has numba
        pytest.fail("numba is installed but sigtune.hep._jit is disabled")
    kernels: tuple[Any, ...] = (_jit._minimize_rows, _jit._derivs_rows, _jit._derivs_arrow)
    for disp in kernels:
        assert disp.compile.__qualname__.startswith("_compile_locked")


def test_a_process_forked_during_a_compile_does_not_keep_the_lock(tmp_path: Path) -> None:
    """The flock belongs to the open file: a child forked while a compilation holds it would
    keep it held after the parent lets go, unless the child closes its copy."""
    from sigtune.hep import _jit

    path = str(tmp_path / _jit.COMPILE_LOCK_NAME)
    fd = _jit._lock_file(path)
    assert fd is not None
    _jit._HELD_LOCKS.add(fd)
    try:
        r, w = os.pipe()
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child (fork hooks done): say so, hold on until the parent has looked
            os.close(w)
            os.write(ready_w, b"x")
            os.read(r, 1)
            os._exit(0)
        os.close(r)
        os.close(ready_w)
        assert os.read(ready_r, 1) == b"x"
        os.close(ready_r)
    finally:
        _jit._HELD_LOCKS.discard(fd)
        os.close(fd)
    try:
        probe = os.open(path, os.O_RDWR)
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if the child kept it
        finally:
            os.close(probe)
    finally:
        os.write(w, b"x")
        os.close(w)
        os.waitpid(pid, 0)

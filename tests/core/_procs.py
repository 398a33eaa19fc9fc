"""Killing a run's process group in tests, and waiting until it is really gone."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def _live_members(pgid: int) -> list[int]:
    """Processes of group ``pgid`` that have not exited yet (zombies count as exited)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_bytes()
        except OSError:
            continue  # exited meanwhile
        # the command name (field 2) may hold spaces and parentheses: split after the last ')'
        fields = stat[stat.rfind(b")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            out.append(int(entry.name))
    return out


def kill_group(proc: subprocess.Popen[bytes], limit_s: float = 120.0) -> None:
    """SIGKILL ``proc``'s process group (it was started with ``start_new_session=True``) and
    wait until every member has exited, not only ``proc``.

    ``proc.wait()`` returns when the parent is reaped; its worker processes may still be in the
    middle of exiting, and a resume that looks at them then finds their owner stamps alive and
    leaves their trials RUNNING (seen in CI: ``test_killed_trial_runs_again_on_resume[2]`` ended
    with 4 COMPLETE trials and trial 2 RUNNING).
    """
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # the whole group is gone already
    proc.wait(timeout=limit_s)
    end = time.monotonic() + limit_s
    while (left := _live_members(proc.pid)) and time.monotonic() < end:
        time.sleep(0.02)
    assert not left, f"processes {left} of the killed group did not exit"

"""What one trial left behind: its fail reason, traceback and captured output (``sigtune status
--trial N``).

Engines keep the traceback of a failed trial in ``system_attrs["sigtune:traceback"]`` and, where
they capture it (the Ray engine), the last characters of the trial's stdout/stderr in
``system_attrs["sigtune:log"]``.
"""

from __future__ import annotations

from typing import Any

from sigtune._exceptions import ConfigError

__all__ = ["LOG_KEY", "TRACEBACK_KEY", "format_trial_log", "has_logs", "trial_log"]

LOG_KEY = "sigtune:log"
TRACEBACK_KEY = "sigtune:traceback"


def trial_log(study: Any, number: int) -> dict[str, Any]:
    """State, params, fail reason, traceback and captured output of trial ``number``.

    Raises:
        ConfigError: The study has no such trial.
    """
    trials = study.optuna.get_trials(deepcopy=False)
    if not 0 <= number < len(trials):
        raise ConfigError(f"no trial {number}: the study has trials 0..{len(trials) - 1}")
    t = trials[number]
    return {
        "number": t.number,
        "state": t.state.name,
        "params": dict(t.params),
        "values": t.values,
        "fail_reason": t.user_attrs.get("fail_reason"),
        "traceback": t.system_attrs.get(TRACEBACK_KEY),
        "output": t.system_attrs.get(LOG_KEY),
    }


def has_logs(study: Any) -> list[int]:
    """Numbers of the trials that kept a traceback or captured output."""
    return [
        t.number
        for t in study.optuna.get_trials(deepcopy=False)
        if TRACEBACK_KEY in t.system_attrs or LOG_KEY in t.system_attrs
    ]


def format_trial_log(doc: dict[str, Any]) -> str:
    """The text of :func:`trial_log` for the terminal."""
    lines = [f"Trial {doc['number']}: {doc['state']}", f"Params: {doc['params']}"]
    if doc["values"] is not None:
        lines.append(f"Values: {doc['values']}")
    if doc["fail_reason"]:
        lines.append(f"Fail reason: {doc['fail_reason']}")
    if doc["traceback"]:
        lines += ["Traceback:", doc["traceback"].rstrip()]
    lines += ["Output:", (doc["output"] or "(none kept)").rstrip()]
    return "\n".join(lines)

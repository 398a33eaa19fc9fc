"""The trials table (one row per trial) and its export to CSV, Parquet or JSON.

Columns, in this order:

``number``, ``state``, ``value_0`` ... ``value_{k-1}`` (one per objective; empty unless the trial
has values), ``params_<name>`` (one per parameter seen in any trial), ``user_attrs_<key>`` (one per
user attribute except ``fail_reason``), ``datetime_start``, ``datetime_complete``, ``duration_s``
(seconds, float) and ``fail_reason``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import optuna

from sigtune._exceptions import ConfigError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["EXPORT_FORMATS", "export_trials", "trial_rows", "trials_table"]

EXPORT_FORMATS = ("csv", "parquet", "json")
ExportFormat = Literal["csv", "parquet", "json"]


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, default=str)
    return str(value)


def trial_rows(study: optuna.Study) -> tuple[list[str], list[dict[str, Any]]]:
    """The trials of ``study`` as ``(columns, rows)`` with plain Python values.

    Datetimes are ISO 8601 strings; list/dict attributes are JSON strings (so every format can
    store them); non-finite floats become ``None``.
    """
    trials = study.get_trials(deepcopy=False)
    n_obj = len(study.directions)
    param_names: dict[str, None] = {}
    attr_names: dict[str, None] = {}
    for t in trials:
        param_names.update(dict.fromkeys(t.params))
        attr_names.update(dict.fromkeys(k for k in t.user_attrs if k != "fail_reason"))
    value_cols = [f"value_{i}" for i in range(n_obj)]
    columns = [
        "number",
        "state",
        *value_cols,
        *(f"params_{p}" for p in param_names),
        *(f"user_attrs_{a}" for a in attr_names),
        "datetime_start",
        "datetime_complete",
        "duration_s",
        "fail_reason",
    ]
    rows: list[dict[str, Any]] = []
    for t in trials:
        row: dict[str, Any] = {"number": t.number, "state": t.state.name}
        values = t.values or []
        for i, col in enumerate(value_cols):
            row[col] = _jsonable(float(values[i])) if i < len(values) else None
        for p in param_names:
            row[f"params_{p}"] = _jsonable(t.params.get(p))
        for a in attr_names:
            row[f"user_attrs_{a}"] = _jsonable(t.user_attrs.get(a))
        start, end = t.datetime_start, t.datetime_complete
        row["datetime_start"] = start.isoformat() if start else None
        row["datetime_complete"] = end.isoformat() if end else None
        row["duration_s"] = (end - start).total_seconds() if start and end else None
        reason = t.user_attrs.get("fail_reason")
        row["fail_reason"] = None if reason is None else str(reason)
        rows.append(row)
    return columns, rows


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """The trials of ``study`` as a pandas DataFrame (columns: see the module docstring)."""
    import pandas as pd

    columns, rows = trial_rows(study)
    frame = pd.DataFrame(rows, columns=columns)
    for col in ("datetime_start", "datetime_complete"):
        frame[col] = pd.to_datetime(frame[col], format="ISO8601")
    return frame


def export_trials(
    study: optuna.Study,
    fmt: str,
    path: str | os.PathLike[str] | None = None,
) -> str | None:
    """Write the trials table.

    Args:
        study: The study.
        fmt: ``csv``, ``parquet`` or ``json`` (a JSON array of row objects).
        path: Output file; ``None`` returns the text instead (``csv`` / ``json`` only).

    Returns:
        The text when ``path`` is ``None``, else ``None``.

    Raises:
        ConfigError: Unknown format, Parquet without a path, or pyarrow missing for Parquet.
    """
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"export format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    columns, rows = trial_rows(study)
    if fmt == "json":
        text = json.dumps(rows, indent=1)
        return _write_text(text + "\n", path)
    if fmt == "csv":
        import csv
        import io

        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return _write_text(buf.getvalue(), path)
    if path is None:
        raise ConfigError("parquet export needs an output file: use -o FILE.parquet")
    try:
        import pyarrow  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            "parquet export needs pyarrow: pip install pyarrow (or the 'ml'/'hep' extra)"
        ) from exc
    frame = trials_table(study)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    return None


def _write_text(text: str, path: str | os.PathLike[str] | None) -> str | None:
    if path is None:
        return text
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text, encoding="utf-8")
    return None

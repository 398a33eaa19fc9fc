"""Event data for the ML pipelines: the :class:`EventData` container and :func:`load_data`.

An :class:`EventData` holds what a classifier needs, as plain NumPy arrays:

* ``X`` -- input variables, shape ``(n, d)``, float64, one column per name in ``features``;
* ``y`` -- class index per event, shape ``(n,)``, int64 in ``[0, n_classes)``;
* ``w`` -- event weight, shape ``(n,)``, float64 (ones when the source has none);
* ``event_number`` -- shape ``(n,)``, int64 (``0 .. n-1`` when the source has none).

:func:`load_data` reads Parquet, CSV, NumPy ``.npz``, ROOT TTrees (via uproot) and pandas
DataFrames. Pickles are only read with ``allow_pickle=True`` (a pickle can run arbitrary code);
this is the migration path for OPTIMA's pickled inputs.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sigtune._exceptions import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["EventData", "check_events", "load_data"]

Groups = dict[str, list[tuple[str, str]]]  # first column level -> [(joined key, last level)]

log = logging.getLogger(__name__)

_PARQUET = {".parquet", ".pq"}
_CSV = {".csv", ".tsv", ".txt"}
_PICKLE = {".pkl", ".pickle"}
_TREE_CLASSES = {"TTree", "ROOT::RNTuple"}  # uproot reads both into flat arrays


@dataclass(frozen=True, eq=False)
class EventData:
    """Events for a classifier: inputs, class index, weight and event number.

    Attributes:
        X: Input variables, shape ``(n, d)``, float64.
        y: Class index per event, shape ``(n,)``, int64 in ``[0, n_classes)``.
        w: Event weight, shape ``(n,)``, float64.
        event_number: Event number, shape ``(n,)``, int64.
        features: Names of the ``d`` input variables, in column order.
        n_classes: Number of classes (2 for a binary signal/background problem, class 1 = signal).

    Raises:
        ConfigError: If shapes or dtypes are inconsistent.
    """

    X: np.ndarray
    y: np.ndarray
    w: np.ndarray
    event_number: np.ndarray
    features: tuple[str, ...]
    n_classes: int

    def __post_init__(self) -> None:
        X = np.asarray(self.X, dtype=np.float64)
        if X.ndim == 1 and len(self.features) == 1:
            X = X.reshape(-1, 1)
        if X.ndim != 2:
            raise ConfigError(f"EventData.X must be 2-dimensional (n, d), got shape {X.shape}")
        n = X.shape[0]
        features = tuple(str(f) for f in self.features)
        if len(features) != X.shape[1]:
            raise ConfigError(
                f"EventData has {X.shape[1]} input columns but {len(features)} feature names "
                f"{list(features)}"
            )
        if len(set(features)) != len(features):
            dup = sorted({f for f in features if features.count(f) > 1})
            raise ConfigError(f"EventData feature names must be unique, duplicated: {dup}")
        y = np.asarray(self.y)
        if y.shape != (n,):
            raise ConfigError(f"EventData.y must have shape ({n},), got {y.shape}")
        if y.size and not np.all(np.equal(np.mod(y, 1), 0)):
            raise ConfigError("EventData.y must hold integer class indices")
        y = y.astype(np.int64)
        n_classes = int(self.n_classes)
        if n_classes < 2:
            raise ConfigError(f"EventData.n_classes must be >= 2, got {n_classes}")
        if y.size and (y.min() < 0 or y.max() >= n_classes):
            raise ConfigError(
                f"EventData.y must lie in [0, {n_classes}), got values in [{y.min()}, {y.max()}]"
            )
        w = np.asarray(self.w, dtype=np.float64)
        if w.shape != (n,):
            raise ConfigError(f"EventData.w must have shape ({n},), got {w.shape}")
        if not np.all(np.isfinite(w)):
            raise ConfigError("EventData.w contains NaN or infinite weights")
        en = np.asarray(self.event_number)
        if en.shape != (n,):
            raise ConfigError(f"EventData.event_number must have shape ({n},), got {en.shape}")
        if en.size and not np.all(np.equal(np.mod(en, 1), 0)):
            raise ConfigError("EventData.event_number must hold integers")
        en = en.astype(np.int64)
        for name, arr in (("X", X), ("y", y), ("w", w), ("event_number", en)):
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        object.__setattr__(self, "features", features)
        object.__setattr__(self, "n_classes", n_classes)

    # ------------------------------------------------------------------ views
    def __len__(self) -> int:
        return int(self.X.shape[0])

    def __repr__(self) -> str:
        return (
            f"EventData(n_events={len(self)}, features={list(self.features)}, "
            f"n_classes={self.n_classes})"
        )

    @property
    def n_events(self) -> int:
        """Number of events."""
        return len(self)

    @property
    def n_features(self) -> int:
        """Number of input variables."""
        return int(self.X.shape[1])

    @property
    def is_binary(self) -> bool:
        """True for a two-class problem (predictions are the class-1 probability)."""
        return self.n_classes == 2

    def class_counts(self) -> np.ndarray:
        """Number of events per class, shape ``(n_classes,)``."""
        return np.bincount(self.y, minlength=self.n_classes)

    def class_weight_sums(self) -> np.ndarray:
        """Sum of event weights per class, shape ``(n_classes,)``."""
        return np.bincount(self.y, weights=self.w, minlength=self.n_classes)

    def one_hot(self) -> np.ndarray:
        """Targets as a one-hot matrix, shape ``(n, n_classes)``."""
        out = np.zeros((len(self), self.n_classes))
        out[np.arange(len(self)), self.y] = 1.0
        return out

    def subset(self, idx: np.ndarray | Sequence[int] | slice) -> EventData:
        """Events selected by an index array, boolean mask or slice (features unchanged)."""
        if isinstance(idx, slice):
            sel: Any = idx
        else:
            sel = np.asarray(idx)
            if sel.dtype == bool:
                if sel.shape != (len(self),):
                    raise ConfigError(
                        f"boolean mask must have shape ({len(self)},), got {sel.shape}"
                    )
            elif sel.size == 0:
                sel = sel.astype(np.int64)
            elif not np.issubdtype(sel.dtype, np.integer):
                raise ConfigError(f"subset() needs integer indices or a mask, got {sel.dtype}")
        return EventData(
            X=self.X[sel],
            y=self.y[sel],
            w=self.w[sel],
            event_number=self.event_number[sel],
            features=self.features,
            n_classes=self.n_classes,
        )

    def select_features(self, names: Sequence[str]) -> EventData:
        """The same events with only the input variables ``names``, in that order."""
        names = [names] if isinstance(names, str) else list(names)
        missing = [n for n in names if n not in self.features]
        if missing:
            raise ConfigError(f"unknown feature(s) {missing}; available: {list(self.features)}")
        cols = [self.features.index(n) for n in names]
        return EventData(
            X=self.X[:, cols],
            y=self.y,
            w=self.w,
            event_number=self.event_number,
            features=tuple(names),
            n_classes=self.n_classes,
        )

    def with_weights(self, w: np.ndarray) -> EventData:
        """The same events with new weights."""
        return EventData(self.X, self.y, w, self.event_number, self.features, self.n_classes)

    def with_inputs(self, X: np.ndarray) -> EventData:
        """The same events with new input values (same feature names), e.g. after scaling."""
        return EventData(X, self.y, self.w, self.event_number, self.features, self.n_classes)

    @staticmethod
    def concatenate(parts: Sequence[EventData]) -> EventData:
        """Concatenate event sets with the same features and number of classes."""
        if not parts:
            raise ConfigError("concatenate() needs at least one EventData")
        first = parts[0]
        for p in parts[1:]:
            if p.features != first.features or p.n_classes != first.n_classes:
                raise ConfigError("concatenate(): all parts need the same features and n_classes")
        return EventData(
            X=np.concatenate([p.X for p in parts]),
            y=np.concatenate([p.y for p in parts]),
            w=np.concatenate([p.w for p in parts]),
            event_number=np.concatenate([p.event_number for p in parts]),
            features=first.features,
            n_classes=first.n_classes,
        )

    def to_dataframe(
        self, *, target: str = "target", weight: str = "weight", event_number: str = "event_number"
    ) -> pd.DataFrame:
        """A pandas DataFrame with the features, the class index, weight and event number."""
        import pandas as pd

        df = pd.DataFrame(self.X, columns=list(self.features))
        df[target] = self.y
        df[weight] = self.w
        df[event_number] = self.event_number
        return df


# ---------------------------------------------------------------------- loading
def load_data(
    source: str | Path | pd.DataFrame | Mapping[str, Any],
    *,
    features: Sequence[str] | None,
    target: str | Sequence[str],
    weight: str | None = None,
    event_number: str | None = None,
    allow_pickle: bool = False,
    tree: str | None = None,
    classes: Sequence[Any] | None = None,
    n_classes: int | None = None,
) -> EventData:
    """Load events from a file, a DataFrame or a mapping of column arrays.

    Supported sources: Parquet (``.parquet``/``.pq``), CSV (``.csv``, ``.tsv``), NumPy ``.npz``
    (one array per column), ROOT files (``.root``; the TTree is ``tree=`` or ``"file.root:tree"``),
    a pandas DataFrame, a mapping ``{column: array}``, and -- only with ``allow_pickle=True`` --
    a pickled DataFrame or mapping (``.pkl``/``.pickle``; OPTIMA's input format).

    Args:
        source: Path, DataFrame or mapping of column arrays.
        features: Input-variable columns; ``None`` takes every column except target, weight and
            event number.
        target: Either one column with the class (binary 0/1, integer classes, or labels mapped via
            ``classes``), or a list of columns forming a one-hot encoding (class ``i`` = column
            ``i``).
        weight: Event-weight column (ones if ``None``).
        event_number: Event-number column (``0 .. n-1`` if ``None``).
        allow_pickle: Permit reading pickles (they can execute code: only for trusted files).
        tree: TTree name for ROOT files.
        classes: Ordered class labels; the class index of a label is its position. Needed for
            non-integer labels (e.g. ``["background", "signal"]``).
        n_classes: Number of classes (default: ``len(classes)``, the width of a one-hot target, or
            ``max(target) + 1`` but at least 2).

    Returns:
        The events.

    Raises:
        ConfigError: Unknown format, missing columns, bad target values, or pickle not allowed.
    """
    columns, groups = _read_columns(source, allow_pickle=allow_pickle, tree=tree)
    available = [c for c in columns if not groups or "/" in c]  # no last-level aliases
    roles = _layout_roles(groups)
    if isinstance(target, str) and target not in columns:
        # a column group (OPTIMA: "targets") names the class column or the one-hot columns
        group = groups.get(target) or (roles.get("target") if target == "target" else None)
        if group:
            target = [key for key, _ in group] if len(group) > 1 else group[0][0]
    target_cols = [target] if isinstance(target, str) else list(target)
    if not target_cols:
        raise ConfigError("target must name a column or a list of one-hot columns")
    if weight is None and roles.get("weight"):
        weight = _pick_weight(roles["weight"])
    if event_number is None and roles.get("event_number"):
        event_number = roles["event_number"][0][0]
    special = set(target_cols) | {c for c in (weight, event_number) if c is not None}
    if features is None:
        feats = _default_features(available, special, groups, roles, _describe(source))
    else:
        feats = [features] if isinstance(features, str) else list(features)
        leaked = [f for f in feats if f in special]
        if leaked:
            raise ConfigError(
                f"feature(s) {leaked} of {_describe(source)} are the target, weight or event "
                "number: remove them from `features`"
            )
    needed = feats + target_cols + [c for c in (weight, event_number) if c is not None]
    missing = [c for c in needed if c not in columns]
    if missing:
        raise ConfigError(
            f"column(s) {missing} not found in {_describe(source)}; available: {available}"
        )
    if not feats:
        raise ConfigError("no input-variable columns: give `features`")

    n = len(np.asarray(columns[target_cols[0]]))
    X = np.empty((n, len(feats)), dtype=np.float64)
    for j, name in enumerate(feats):
        col = np.asarray(columns[name])
        if col.ndim != 1 or len(col) != n:
            raise ConfigError(f"feature column {name!r} must be a flat array of length {n}")
        try:
            X[:, j] = col.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"feature column {name!r} is not numeric ({col.dtype})") from exc
    if not np.all(np.isfinite(X)):
        bad = [feats[j] for j in range(len(feats)) if not np.all(np.isfinite(X[:, j]))]
        raise ConfigError(f"feature column(s) {bad} contain NaN or infinite values")

    y, k = _target(columns, target_cols, classes, n_classes)
    w = np.ones(n) if weight is None else _numeric(columns[weight], weight)
    if event_number is None:
        en = np.arange(n, dtype=np.int64)
    else:
        raw = _numeric(columns[event_number], event_number)
        if not np.all(np.equal(np.mod(raw, 1), 0)):
            raise ConfigError(f"event-number column {event_number!r} must hold integers")
        en = raw.astype(np.int64)
    return EventData(X=X, y=y, w=w, event_number=en, features=tuple(feats), n_classes=k)


def _numeric(col: Any, name: str) -> np.ndarray:
    arr = np.asarray(col)
    try:
        out = arr.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"column {name!r} is not numeric ({arr.dtype})") from exc
    if out.ndim != 1:
        raise ConfigError(f"column {name!r} must be a flat array, got shape {out.shape}")
    return out


def _target(
    columns: Mapping[str, Any],
    target_cols: list[str],
    classes: Sequence[Any] | None,
    n_classes: int | None,
) -> tuple[np.ndarray, int]:
    if len(target_cols) > 1:  # one-hot
        oh = np.column_stack([_numeric(columns[c], c) for c in target_cols])
        if not np.all((oh == 0) | (oh == 1)) or not np.all(oh.sum(axis=1) == 1):
            raise ConfigError(
                f"one-hot target columns {target_cols} must hold 0/1 with exactly one 1 per event"
            )
        k = len(target_cols) if n_classes is None else int(n_classes)
        return oh.argmax(axis=1).astype(np.int64), max(k, 2)
    name = target_cols[0]
    raw = np.asarray(columns[name])
    if raw.ndim == 2:  # a one-hot matrix stored in one column / array
        if not np.all((raw == 0) | (raw == 1)) or not np.all(raw.sum(axis=1) == 1):
            raise ConfigError(f"2-d target {name!r} must be one-hot (0/1, one 1 per row)")
        return raw.argmax(axis=1).astype(np.int64), max(raw.shape[1], 2)
    if classes is not None:
        labels = list(classes)
        lookup = {lab: i for i, lab in enumerate(labels)}
        try:
            y = np.array([lookup[v] for v in raw.tolist()], dtype=np.int64)
        except KeyError as exc:
            raise ConfigError(
                f"target {name!r} has label {exc.args[0]!r} not in classes={labels}"
            ) from None
        return y, max(len(labels) if n_classes is None else int(n_classes), 2)
    if raw.dtype == bool:
        return raw.astype(np.int64), 2 if n_classes is None else int(n_classes)
    try:
        vals = raw.astype(np.float64)
    except (TypeError, ValueError):
        raise ConfigError(
            f"target {name!r} holds non-numeric labels; pass classes=[...] to map them to indices"
        ) from None
    if vals.size and (not np.all(np.equal(np.mod(vals, 1), 0)) or vals.min() < 0):
        raise ConfigError(
            f"target {name!r} must hold class indices 0, 1, ... (binary 0/1 or integer classes); "
            f"got values in [{vals.min()}, {vals.max()}]"
        )
    y = vals.astype(np.int64)
    k = int(y.max()) + 1 if (n_classes is None and y.size) else int(n_classes or 2)
    return y, max(k, 2)


def _describe(source: object) -> str:
    if isinstance(source, (str, Path)):
        return str(source)
    return type(source).__name__


def _read_columns(
    source: str | Path | pd.DataFrame | Mapping[str, Any], *, allow_pickle: bool, tree: str | None
) -> tuple[dict[str, Any], Groups]:
    """The columns (name -> array) and, for two-level column frames, the column groups."""
    import pandas as pd

    if isinstance(source, pd.DataFrame):
        return _frame_columns(source)
    if isinstance(source, Mapping):
        return dict(source), {}
    return _read_file(source, allow_pickle=allow_pickle, tree=tree)


def _read_file(
    source: Any, *, allow_pickle: bool, tree: str | None
) -> tuple[dict[str, Any], Groups]:
    import pandas as pd

    if not isinstance(source, (str, Path)):
        raise ConfigError(
            f"load_data() source must be a path, DataFrame or mapping, got {type(source).__name__}"
        )
    text = str(source)
    path = Path(text)
    if tree is None and ".root:" in text and not path.exists():
        text, tree = text.rsplit(":", 1)
        path = Path(text)
    if not path.exists():
        raise ConfigError(f"data file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix in _PARQUET:
        try:
            return _frame_columns(pd.read_parquet(path))
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ConfigError(f"reading {str(path)!r} needs pyarrow: pip install pyarrow") from exc
    if suffix in _CSV:
        return _frame_columns(pd.read_csv(path, sep="\t" if suffix == ".tsv" else ","))
    if suffix == ".npz":
        with np.load(path, allow_pickle=allow_pickle) as npz:
            return {k: npz[k] for k in npz.files}, {}
    if suffix == ".root":
        return _read_root(path, tree), {}
    if suffix in _PICKLE:
        return _read_pickle(path, allow_pickle)
    raise ConfigError(
        f"unknown data format {suffix!r} of {str(path)!r}: use .parquet, .csv, .npz, .root "
        "(or .pkl with allow_pickle=True)"
    )


def _frame_columns(df: pd.DataFrame) -> tuple[dict[str, Any], Groups]:
    import pandas as pd

    if isinstance(df.columns, pd.MultiIndex):
        # OPTIMA-style frames: join the levels with "/" and also allow the last level alone;
        # the first level groups the columns ("features", "targets", "weights", ...).
        out: dict[str, Any] = {}
        groups: Groups = {}
        for col in df.columns:
            arr = df[col].to_numpy()
            key = "/".join(str(c) for c in col)
            out[key] = arr
            out.setdefault(str(col[-1]), arr)
            groups.setdefault(str(col[0]), []).append((key, str(col[-1])))
        return out, groups
    return {str(c): df[c].to_numpy() for c in df.columns}, {}


# Column-group names of OPTIMA's pickled input frames (first column level), by role.
_ROLE_GROUPS = {
    "features": ("features", "inputs_features"),
    "target": ("targets", "target", "labels", "label"),
    "weight": ("weights", "weight"),
    "event_number": ("event_number", "event_numbers", "eventnumber", "eventnumbers", "event"),
    "split": ("split", "splits", "fold", "folds"),
}
# Flat column names never used as inputs when `features` is not given.
_RESERVED = frozenset(
    {name for role, names in _ROLE_GROUPS.items() if role != "features" for name in names}
    | {"normalized_weights", "normalised_weights", "y", "class", "is_signal"}
)


def _layout_roles(groups: Groups) -> dict[str, list[tuple[str, str]]]:
    """Role -> columns of the group that plays it (case-insensitive group names)."""
    lower = {name.lower(): cols for name, cols in groups.items()}
    out: dict[str, list[tuple[str, str]]] = {}
    for role, names in _ROLE_GROUPS.items():
        for name in names:
            if name in lower:
                out[role] = lower[name]
                break
    return out


def _pick_weight(cols: list[tuple[str, str]]) -> str:
    """The physics-weight column of a weights group (not OPTIMA's normalised copy)."""
    for key, last in cols:
        if last.lower() in ("weights", "weight", "event_weight", "w"):
            return key
    plain = [key for key, last in cols if "normali" not in last.lower()]
    return (plain or [cols[0][0]])[0]


def _default_features(
    available: list[str],
    special: set[str],
    groups: Groups,
    roles: dict[str, list[tuple[str, str]]],
    where: str,
) -> list[str]:
    """Input columns when ``features`` is not given: never target, weight, event number, split."""
    if roles.get("features"):
        cols = roles["features"]
        lasts = [last for _, last in cols]
        feats = lasts if len(set(lasts)) == len(lasts) else [key for key, _ in cols]
        excluded = [c for c in available if c not in {key for key, _ in cols}]
    else:
        not_inputs = {
            key
            for role in ("target", "weight", "event_number", "split")
            for key, _ in roles.get(role, [])
        }
        feats, excluded = [], []
        for c in available:
            last = c.rsplit("/", 1)[-1].lower()
            if c in special or c in not_inputs or c.lower() in _RESERVED or last in _RESERVED:
                excluded.append(c)
            else:
                feats.append(c)
    log.warning(
        "%s: `features` not given: %d input column(s) %s; not inputs: %s",
        where,
        len(feats),
        feats,
        excluded,
    )
    return feats


def check_events(
    data: EventData,
    *,
    where: str,
    target: str | Sequence[str] = "target",
    weight: str | None = None,
) -> None:
    """Refuse data no classifier can be trained on (one line naming the file and column).

    Raises:
        ConfigError: No events, a class without events (labels such as {0, 2}), a single class,
            or a class whose weights sum to zero or less.
    """
    if len(data) == 0:
        raise ConfigError(f"{where}: no events")
    counts = data.class_counts()
    present = [int(c) for c in np.flatnonzero(counts)]
    tname = target if isinstance(target, str) else f"one-hot {list(target)}"
    if len(present) < 2:
        raise ConfigError(
            f"{where}: target column {tname!r} holds a single class ({present[0]}): a classifier "
            "needs events of at least two classes"
        )
    empty = [int(c) for c in np.flatnonzero(counts == 0)]
    if empty:
        raise ConfigError(
            f"{where}: target column {tname!r} has labels {present} but no events of class(es) "
            f"{empty}: labels must be 0..{len(present) - 1} (or map them with `classes: [...]`)"
        )
    sums = data.class_weight_sums()
    bad = [int(c) for c in np.flatnonzero(sums <= 0)]
    if bad:
        wname = repr(weight) if weight is not None else "(ones)"
        raise ConfigError(
            f"{where}: weight column {wname} sums to {float(sums[bad[0]]):g} <= 0 for class "
            f"{bad[0]}: every class needs a positive total weight"
        )


def _read_root(path: Path, tree: str | None) -> dict[str, Any]:
    try:
        import uproot
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigError("reading ROOT files needs uproot: pip install 'sigtune[hep]'") from exc
    with uproot.open(path) as f:
        trees = [k.split(";")[0] for k, cls in f.classnames().items() if cls in _TREE_CLASSES]
        if tree is None:
            if len(trees) != 1:
                raise ConfigError(
                    f"{str(path)!r} holds TTrees {sorted(set(trees))}: choose one with tree=... "
                    "or 'file.root:tree'"
                )
            tree = trees[0]
        if tree not in trees:
            raise ConfigError(
                f"TTree {tree!r} not in {str(path)!r}; available: {sorted(set(trees))}"
            )
        arrays = f[tree].arrays(library="np")
    return {str(k): v for k, v in arrays.items()}


def _read_pickle(path: Path, allow_pickle: bool) -> tuple[dict[str, Any], Groups]:
    if not allow_pickle:
        raise ConfigError(
            f"{str(path)!r} is a pickle, which can execute arbitrary code when read. If you trust "
            "the file, pass allow_pickle=True (run-config `allow_pickle: true`); better, convert it "
            "once to Parquet: pandas.read_pickle(path).to_parquet('events.parquet')"
        )
    warnings.warn(
        f"reading pickle {str(path)!r}: only do this for files you trust; convert it to Parquet "
        "with pandas.read_pickle(path).to_parquet(...)",
        UserWarning,
        stacklevel=4,
    )
    import pandas as pd

    obj = pd.read_pickle(path)
    if isinstance(obj, pd.DataFrame):
        return _frame_columns(obj)
    if isinstance(obj, Mapping):
        return {str(k): np.asarray(v) for k, v in obj.items()}, {}
    raise ConfigError(
        f"pickle {str(path)!r} holds a {type(obj).__name__}; expected a DataFrame or a mapping "
        "of column arrays"
    )

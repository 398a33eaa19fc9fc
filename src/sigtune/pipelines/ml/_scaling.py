"""Input scaling: a per-variable transform, then standardisation fitted on the training split.

For each variable ``x`` with transform ``{"kind", "scale": s, "offset": o}``:

* ``linear``: ``t = s * x + o``
* ``log10``:  ``t = log10(s * x + o)``  (needs ``s * x + o > 0``)
* ``sqrt``:   ``t = sqrt(s * x + o)``   (needs ``s * x + o >= 0``)

then ``z = (t - mean_t) / std_t`` with mean and standard deviation of the TRAINING events only
(unweighted; a constant variable gets ``std = 1``). With ``normalization="quantile"`` (a
non-linear normalisation), each transformed variable is first mapped through its empirical
cumulative distribution on the training events (``n_quantiles`` quantiles, linear
interpolation) and the inverse standard-normal CDF, so every input is close to ``N(0, 1)``
whatever its shape (tails, peaks); the standardisation then follows as above. The fitted state round-trips through
:meth:`InputScaler.to_dict` / :meth:`InputScaler.from_dict` (JSON) and is saved with every model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sigtune._exceptions import ConfigError
from sigtune.pipelines.ml._data import EventData

__all__ = ["InputScaler"]

_KINDS = ("linear", "log10", "sqrt")
_NORMALIZATIONS = ("standard", "quantile")
_Q_EPS = 1e-7


class InputScaler:
    """Per-variable transform plus standardisation (fitted on training data only).

    Args:
        transforms: ``{feature: {"kind": "linear"|"log10"|"sqrt", "scale": s, "offset": o}}``;
            variables not listed are ``linear`` with scale 1 and offset 0.
        features: Names of the columns of the arrays passed to :meth:`fit` / :meth:`transform`.
            Optional when fitting an :class:`EventData` (its ``features`` are used).
        standardize: Subtract the training mean and divide by the training standard deviation.
        normalization: ``"standard"`` or ``"quantile"`` (non-linear, see the module docstring).
        n_quantiles: Quantiles stored per variable in quantile mode (at most the number of
            training events).

    Raises:
        ConfigError: For an unknown kind, a non-numeric scale/offset, or unknown keys.

    Example:
        >>> scaler = InputScaler({"pt": {"kind": "log10"}}).fit(splits.train)  # doctest: +SKIP
        >>> Z = scaler.transform(splits.val.X)  # doctest: +SKIP
    """

    def __init__(
        self,
        transforms: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        features: Sequence[str] | None = None,
        standardize: bool = True,
        normalization: str = "standard",
        n_quantiles: int = 1000,
    ) -> None:
        if normalization not in _NORMALIZATIONS:
            raise ConfigError(
                f"input normalization must be one of {list(_NORMALIZATIONS)}, got {normalization!r}"
            )
        if int(n_quantiles) < 2:
            raise ConfigError(f"n_quantiles must be >= 2, got {n_quantiles}")
        self.normalization = normalization
        self.n_quantiles = int(n_quantiles)
        self.quantiles_: np.ndarray | None = None
        self.transforms = {
            str(k): _check_transform(str(k), v) for k, v in (transforms or {}).items()
        }
        self.features: tuple[str, ...] | None = None if features is None else tuple(features)
        self.standardize = bool(standardize)
        self.mean_: np.ndarray | None = None
        self.std_: np.ndarray | None = None
        if self.features is not None:
            self._check_names(self.features)

    # ------------------------------------------------------------------ API
    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`fit` (or :meth:`from_dict` of a fitted scaler) ran."""
        return self.mean_ is not None

    def fit(self, X: np.ndarray | EventData) -> InputScaler:
        """Fit the standardisation on training inputs; returns ``self``."""
        arr = self._array(X, fitting=True)
        t = self._apply_transforms(arr)
        self.quantiles_ = None
        if self.normalization == "quantile":
            if t.shape[0] == 0:
                raise ConfigError("cannot fit the scaler on zero events")
            refs = np.linspace(0.0, 1.0, min(self.n_quantiles, t.shape[0]))
            self.quantiles_ = np.quantile(t, refs, axis=0)
            t = self._quantile(t)
        if self.standardize:
            if t.shape[0] == 0:
                raise ConfigError("cannot fit the scaler on zero events")
            from sklearn.preprocessing import StandardScaler

            fitted = StandardScaler().fit(t)  # a constant variable gets scale 1
            mean = np.asarray(fitted.mean_, dtype=np.float64)
            std = np.asarray(fitted.scale_, dtype=np.float64)
        else:
            mean = np.zeros(t.shape[1])
            std = np.ones(t.shape[1])
        self.mean_, self.std_ = mean, std
        return self

    def transform(self, X: np.ndarray | EventData) -> np.ndarray:
        """Scaled copy of ``X`` (``(n, d)`` array, or an EventData's ``X``)."""
        if self.mean_ is None or self.std_ is None:
            raise ConfigError("InputScaler is not fitted: call fit() on the training split first")
        arr = self._array(X, fitting=False)
        out: np.ndarray = (self._quantile(self._apply_transforms(arr)) - self.mean_) / self.std_
        return out

    def _quantile(self, t: np.ndarray) -> np.ndarray:
        """Empirical CDF of the training events, then the inverse normal CDF (quantile mode)."""
        if self.quantiles_ is None:
            return t
        from scipy.special import ndtri

        q = self.quantiles_
        refs = np.linspace(0.0, 1.0, q.shape[0])
        out = np.empty_like(t)
        for j in range(t.shape[1]):
            # average of the interpolation from both ends: ties (repeated quantiles) map to
            # their middle rank, as scikit-learn's QuantileTransformer does
            up = np.interp(t[:, j], q[:, j], refs)
            down = -np.interp(-t[:, j], -q[::-1, j], -refs[::-1])
            out[:, j] = ndtri(np.clip(0.5 * (up + down), _Q_EPS, 1.0 - _Q_EPS))
        return out

    def fit_transform(self, X: np.ndarray | EventData) -> np.ndarray:
        """:meth:`fit` then :meth:`transform` on the same inputs."""
        return self.fit(X).transform(X)

    def transform_data(self, data: EventData) -> EventData:
        """The events with scaled inputs (weights, targets, event numbers unchanged)."""
        return data.with_inputs(self.transform(data))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (configuration and fitted mean/std)."""
        return {
            "transforms": {k: dict(v) for k, v in self.transforms.items()},
            "features": None if self.features is None else list(self.features),
            "standardize": self.standardize,
            "normalization": self.normalization,
            "n_quantiles": self.n_quantiles,
            "quantiles": None if self.quantiles_ is None else self.quantiles_.tolist(),
            "mean": None if self.mean_ is None else self.mean_.tolist(),
            "std": None if self.std_ is None else self.std_.tolist(),
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> InputScaler:
        """Rebuild a scaler from :meth:`to_dict` output."""
        unknown = set(state) - {
            "transforms",
            "features",
            "standardize",
            "normalization",
            "n_quantiles",
            "quantiles",
            "mean",
            "std",
        }
        if unknown:
            raise ConfigError(f"unknown InputScaler state key(s) {sorted(unknown)}")
        obj = cls(
            state.get("transforms"),
            features=state.get("features"),
            standardize=bool(state.get("standardize", True)),
            normalization=str(state.get("normalization", "standard")),
            n_quantiles=int(state.get("n_quantiles", 1000)),
        )
        if state.get("quantiles") is not None:
            obj.quantiles_ = np.asarray(state["quantiles"], dtype=np.float64)
        if state.get("mean") is not None:
            obj.mean_ = np.asarray(state["mean"], dtype=np.float64)
            obj.std_ = np.asarray(state["std"], dtype=np.float64)
        return obj

    def __repr__(self) -> str:
        return (
            f"InputScaler(transforms={self.transforms}, features={self.features}, "
            f"fitted={self.is_fitted})"
        )

    # ------------------------------------------------------------------ internals
    def _check_names(self, features: Sequence[str]) -> None:
        unknown = sorted(set(self.transforms) - set(features))
        if unknown:
            raise ConfigError(
                f"scaling transforms for unknown variable(s) {unknown}; variables: {list(features)}"
            )

    def _array(self, X: np.ndarray | EventData, *, fitting: bool) -> np.ndarray:
        if isinstance(X, EventData):
            if self.features is None and fitting:
                self.features = X.features
                self._check_names(X.features)
            elif self.features is not None and X.features != self.features:
                raise ConfigError(
                    f"InputScaler was set up for variables {list(self.features)}, "
                    f"got {list(X.features)}"
                )
            arr = X.X
        else:
            arr = np.asarray(X, dtype=np.float64)
            if arr.ndim != 2:
                raise ConfigError(f"InputScaler needs a 2-d array (n, d), got shape {arr.shape}")
        if self.features is None:
            if self.transforms:
                raise ConfigError(
                    "InputScaler has per-variable transforms but no feature names: pass "
                    "features=[...] or fit on an EventData"
                )
        elif arr.shape[1] != len(self.features):
            raise ConfigError(
                f"InputScaler expects {len(self.features)} columns {list(self.features)}, "
                f"got {arr.shape[1]}"
            )
        if self.mean_ is not None and not fitting and arr.shape[1] != len(self.mean_):
            raise ConfigError(
                f"InputScaler was fitted on {len(self.mean_)} columns, got {arr.shape[1]}"
            )
        return arr

    def _apply_transforms(self, arr: np.ndarray) -> np.ndarray:
        out = np.array(arr, dtype=np.float64, copy=True)
        if not self.transforms or self.features is None:
            return out
        for j, name in enumerate(self.features):
            spec = self.transforms.get(name)
            if spec is None:
                continue
            u = spec["scale"] * out[:, j] + spec["offset"]
            if spec["kind"] == "log10":
                if np.any(u <= 0):
                    raise ConfigError(
                        f"log10 scaling of {name!r}: scale*x+offset must be > 0, min is "
                        f"{u.min():.4g}; raise `offset` or use another kind"
                    )
                u = np.log10(u)
            elif spec["kind"] == "sqrt":
                if np.any(u < 0):
                    raise ConfigError(
                        f"sqrt scaling of {name!r}: scale*x+offset must be >= 0, min is "
                        f"{u.min():.4g}; raise `offset` or use another kind"
                    )
                u = np.sqrt(u)
            out[:, j] = u
        return out


def _check_transform(name: str, spec: Mapping[str, Any] | str) -> dict[str, Any]:
    if isinstance(spec, str):
        spec = {"kind": spec}
    if not isinstance(spec, Mapping):
        raise ConfigError(f"scaling of {name!r} must be a mapping with 'kind', got {spec!r}")
    unknown = set(spec) - {"kind", "scale", "offset"}
    if unknown:
        raise ConfigError(
            f"scaling of {name!r}: unknown key(s) {sorted(unknown)} (kind, scale, offset)"
        )
    kind = spec.get("kind", "linear")
    if kind not in _KINDS:
        raise ConfigError(f"scaling of {name!r}: kind must be one of {list(_KINDS)}, got {kind!r}")
    try:
        scale = float(spec.get("scale", 1.0))
        offset = float(spec.get("offset", 0.0))
    except (TypeError, ValueError):
        raise ConfigError(f"scaling of {name!r}: scale and offset must be numbers") from None
    if not (np.isfinite(scale) and np.isfinite(offset)) or scale == 0:
        raise ConfigError(f"scaling of {name!r}: scale must be finite and non-zero, offset finite")
    return {"kind": kind, "scale": scale, "offset": offset}

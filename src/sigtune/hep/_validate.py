"""Input checks shared by the inference layer (hypotest, limits, scans, ranking, toys)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sigtune.hep._exceptions import HepInputError

__all__ = [
    "TEST_STATS",
    "FitSetup",
    "HepInputError",
    "check_data",
    "check_test_stat",
    "make_setup",
]

TEST_STATS: tuple[str, ...] = ("qtilde", "q", "q0")


def check_test_stat(test_stat: str) -> str:
    """``test_stat`` if it is one of :data:`TEST_STATS`, else :class:`HepInputError`."""
    if test_stat not in TEST_STATS:
        raise HepInputError(f"test_stat must be one of {TEST_STATS}, got {test_stat!r}.")
    return test_stat


@dataclass(frozen=True, eq=False)
class FitSetup:
    """Initial values, bounds and fixed flags used by every fit of one inference call."""

    init: NDArray[np.float64]
    bounds: NDArray[np.float64]
    fixed: NDArray[np.bool_]
    poi_index: int

    @property
    def poi_bounds(self) -> tuple[float, float]:
        """(low, high) bounds of the POI."""
        lo, hi = self.bounds[self.poi_index]
        return float(lo), float(hi)

    def with_value(
        self, pars: NDArray[np.float64], index: int, value: float
    ) -> NDArray[np.float64]:
        """Copy of ``pars`` with ``pars[index] = value``."""
        out = np.array(pars, dtype=np.float64, copy=True)
        out[index] = value
        return out


def make_setup(
    model: Any,
    init: ArrayLike | None = None,
    bounds: ArrayLike | None = None,
    fixed: Sequence[bool] | ArrayLike | None = None,
) -> FitSetup:
    """Combine the model's suggestions with user overrides and check shapes.

    Args:
        model: A :class:`sigtune.hep.Model`.
        init: Initial parameter values, shape (P,), or None for ``model.suggested_init()``.
        bounds: Parameter bounds, shape (P, 2), or None for ``model.suggested_bounds()``.
        fixed: Fixed flags, shape (P,), or None for ``model.suggested_fixed()``.

    Returns:
        The validated :class:`FitSetup`.

    Raises:
        HepInputError: On a shape mismatch, a model without POI, or an init outside its bounds.
    """
    n_par = len(model.par_names)
    poi_index = model.poi_index
    if poi_index is None:
        raise HepInputError(
            "the model has no parameter of interest; build it with ws.model(poi_name=...) "
            "or set 'poi' in the measurement config."
        )
    init_arr = np.asarray(model.suggested_init() if init is None else init, dtype=np.float64)
    bounds_arr = np.asarray(
        model.suggested_bounds() if bounds is None else bounds, dtype=np.float64
    )
    fixed_arr = np.asarray(model.suggested_fixed() if fixed is None else fixed, dtype=bool)
    if init_arr.shape != (n_par,):
        raise HepInputError(
            f"init must have shape ({n_par},) (one value per parameter), got {init_arr.shape}."
        )
    if bounds_arr.shape != (n_par, 2):
        raise HepInputError(f"bounds must have shape ({n_par}, 2), got {bounds_arr.shape}.")
    if fixed_arr.shape != (n_par,):
        raise HepInputError(f"fixed must have shape ({n_par},), got {fixed_arr.shape}.")
    bad = np.flatnonzero(bounds_arr[:, 0] > bounds_arr[:, 1])
    if bad.size:
        i = int(bad[0])
        raise HepInputError(
            f"bounds of parameter {model.par_names[i]!r} must satisfy low <= high, got {tuple(bounds_arr[i])}."
        )
    return FitSetup(init=init_arr, bounds=bounds_arr, fixed=fixed_arr, poi_index=int(poi_index))


def check_data(model: Any, data: ArrayLike) -> NDArray[np.float64]:
    """Return ``data`` as a float array with the model's length (main bins + auxdata).

    Raises:
        HepInputError: If the length is wrong or values are negative / not finite.
    """
    arr = np.asarray(data, dtype=np.float64)
    n_expected = int(model.n_main) + len(model.auxdata)
    if arr.ndim != 1 or arr.shape[0] != n_expected:
        raise HepInputError(
            f"data must be a 1-d array of {n_expected} values (main bins followed by auxdata, "
            f"as returned by ws.data(model)), got shape {arr.shape}."
        )
    if not np.all(np.isfinite(arr)) or np.any(arr[: int(model.n_main)] < 0):
        raise HepInputError("data must be finite with non-negative main-bin counts.")
    return arr


def check_cl(cl: float) -> float:
    """Confidence level in (0, 1)."""
    if not 0.0 < float(cl) < 1.0:
        raise HepInputError(f"cl must be in (0, 1), e.g. 0.95, got {cl!r}.")
    return float(cl)

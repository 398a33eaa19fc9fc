"""The internal contract of the HistFactory engine: the arrays a model hands to the fit.

:class:`ModelArrays` is built by :class:`sigtune.hep._model.Model` and read by the fit
(:mod:`sigtune.hep._fit`) and the compiled kernels (:mod:`sigtune.hep._jit`); :class:`Consts`
and :class:`Derivs` are what one evaluation takes and returns. ``docs/dev/hep-model.md``
describes them.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from sigtune.hep._interp import code4_power_matrix

__all__ = ["Consts", "Derivs", "ModelArrays"]


class Consts(NamedTuple):
    """The data-dependent pieces of ``-2 ln L`` that stay fixed during a fit
    (``Model._constants``): one row per data set (or one row for all)."""

    n: np.ndarray  # (B, N) observed main-bin counts
    gauss_aux: np.ndarray  # (B, nG) auxdata of the Gaussian constraints
    pois_aux: np.ndarray  # (B, nP) auxdata of the Poisson constraints
    const: np.ndarray  # (B,) the constant of -2 ln L (lgamma terms, Gaussian normalisation)

    def row(self, b: int) -> Consts:
        """Data row ``b`` (arrays with one row for all are kept as they are)."""
        B = self.const.shape[0]
        return Consts(*(c[b : b + 1] if c.shape[0] == B else c for c in self))


class Derivs(NamedTuple):
    """``-2 ln L`` and its derivatives at ``B`` points (``Model._derivatives``).

    Dense layout: ``hdd`` is the full ``(B, P, P)`` Hessian and ``hdl`` / ``hll`` are empty.
    Arrowhead layout: ``hdd`` is the dense block ``(B, nD, nD)``, ``hdl`` ``(B, nD, nL)`` its
    coupling to the per-bin gammas and ``hll`` ``(B, nL)`` their diagonal block.
    """

    f: np.ndarray  # (B,) -2 ln L
    g: np.ndarray  # (B, P) gradient
    hdd: np.ndarray
    hdl: np.ndarray
    hll: np.ndarray
    nu: np.ndarray  # (B, N) expected main-bin rates


@dataclass(frozen=True, eq=False)
class ModelArrays:
    """Everything the fit (:mod:`sigtune.hep._fit`) and the compiled kernels
    (:mod:`sigtune.hep._jit`) read of a :class:`Model`: one frozen bundle of arrays and sizes.

    Built by :class:`Model` (and replaced, never changed, by :func:`stack_models`,
    :func:`with_yields`, a row selection and the arrowhead copy). Index arrays point into the
    parameter vector (``0..n_pars-1``; ``n_pars`` is the constant-1 slot of ``lin_idx``). The
    numbers have a leading model-row axis ``Bm`` (1 unless models are stacked). See
    ``docs/dev/hep-model.md``.
    """

    # ---- sizes
    n_pars: int  # P
    n_samples: int  # S
    n_bins: int  # N (main bins, all channels)
    n_channels: int  # C
    n_slots: int  # K: linear factors per (sample, bin) entry
    n_normsys: int  # M: normsys instances (parameter, sample)
    n_histosys: int  # H: histosys instances (parameter, sample)
    # ---- structure (shared by every model row)
    normsys_code4: bool  # normsys interpolation code4 (else code1)
    histosys_code4p: bool  # histosys interpolation code4p (else code0)
    chan_of_bin: np.ndarray  # (N,) channel of each bin
    lin_idx: np.ndarray  # (K, S, N) parameter of each linear slot, n_pars = constant 1
    ns_par: np.ndarray  # (M,) parameter of each normsys instance
    ns_sample: np.ndarray  # (M,) its sample
    hs_par: np.ndarray  # (H,) parameter of each histosys instance
    hs_sample: np.ndarray  # (H,) its sample
    gauss_par: np.ndarray  # (nG,) parameters with a Gaussian constraint
    gauss_aux: np.ndarray  # (nG,) their positions in the auxdata
    pois_par: np.ndarray  # (nP,) parameters with a Poisson constraint (shapesys)
    pois_aux: np.ndarray  # (nP,) their positions in the auxdata
    kink: np.ndarray  # (P,) bool: interpolation with a kink at 0 (code1 normsys, code0 histosys)
    fixed: np.ndarray  # (P,) bool: fixed by the measurement or by construction
    # ---- numbers (leading model-row axis Bm)
    nom: np.ndarray  # (Bm, S, N) nominal yields
    hs_dp: np.ndarray  # (Bm, H, N) histosys up shift (hi_data - nom)
    hs_dm: np.ndarray  # (Bm, H, N) histosys down shift (nom - lo_data)
    ns_loghi: np.ndarray  # (Bm, M, C) ln(hi) of each normsys per channel
    ns_loglo: np.ndarray  # (Bm, M, C) ln(lo)
    ns_coef: np.ndarray | None  # (Bm, M, C, 6) code4 polynomial coefficients (None: code1)
    gauss_sigma: np.ndarray  # (Bm, nG) widths of the Gaussian constraints
    pois_tau: np.ndarray  # (Bm, nP) scale factors tau of the Poisson constraints
    auxdata: np.ndarray  # (Bm, n_aux)
    init: np.ndarray  # (Bm, P)
    bounds: np.ndarray  # (Bm, P, 2)
    # ---- Hessian layout (dense: every parameter in the dense block, no local gammas)
    dense_layout: bool  # the small-model layout: one dense (P, P) Hessian
    dense: np.ndarray  # (nD,) parameters of the dense block
    local: np.ndarray  # (nL,) per-bin gammas of the diagonal block (arrowhead layout only)
    local_bin: np.ndarray  # (nL,) the one bin of each local gamma
    dpos: np.ndarray  # (P + 1,) position in the dense block, -1 if local / constant slot
    lpos: np.ndarray  # (P + 1,) position in the local block, -1 otherwise
    # per-bundle cache of the compiled kernels' tables (sigtune.hep._jit.tables)
    _cache: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    @property
    def n_rows(self) -> int:
        """``Bm``: model rows (stacked models); 1 for a single model."""
        return int(self.nom.shape[0])

    @property
    def n_aux(self) -> int:
        return int(self.auxdata.shape[1])

    @property
    def n_dense(self) -> int:
        return int(self.dense.shape[0])

    @property
    def n_local(self) -> int:
        return int(self.local.shape[0])

    # derived numbers, computed on first use (a replaced bundle recomputes them)
    @functools.cached_property
    def ns_pow(self) -> np.ndarray | None:
        """(Bm, M, 3C, 7) code4 polynomial rows over powers of alpha (None: code1)."""
        return None if self.ns_coef is None else code4_power_matrix(self.ns_coef)

    @functools.cached_property
    def hs_sym(self) -> np.ndarray:
        """(Bm, H, N) ``(D+ + D-) / 2``."""
        return np.asarray(0.5 * (self.hs_dp + self.hs_dm))

    @functools.cached_property
    def hs_asym(self) -> np.ndarray:
        """(Bm, H, N) ``(D+ - D-) / 16``."""
        return np.asarray(0.0625 * (self.hs_dp - self.hs_dm))

    @functools.cached_property
    def inv_sig2(self) -> np.ndarray:
        """(Bm, nG) ``1 / sigma^2``."""
        return np.asarray(1.0 / self.gauss_sigma**2)

    @functools.cached_property
    def hdiag_gauss(self) -> np.ndarray:
        """(Bm, P) the Gaussian constraints' diagonal of the Hessian of ``-2 ln L``."""
        hd = np.zeros((self.gauss_sigma.shape[0], self.n_pars))
        hd[:, self.gauss_par] = 2.0 * self.inv_sig2
        return hd

    def replace(self, **changes: Any) -> ModelArrays:
        """A new bundle with ``changes`` (derived numbers and caches start afresh)."""
        return dataclasses.replace(self, **changes)

    def row(self, i: int) -> ModelArrays:
        """Model row ``i`` of stacked models as a one-row bundle."""
        if self.n_rows == 1:
            return self
        return self.replace(
            **{k: (None if v is None else v[i : i + 1]) for k, v in self.numbers().items()}
        )

    def numbers(self) -> dict[str, np.ndarray | None]:
        """The per-row number fields (what stacking concatenates)."""
        return {k: getattr(self, k) for k in _ROW_FIELDS}


_ROW_FIELDS = (
    "nom",
    "hs_dp",
    "hs_dm",
    "ns_loghi",
    "ns_loglo",
    "ns_coef",
    "gauss_sigma",
    "pois_tau",
    "auxdata",
    "init",
    "bounds",
)

"""Metrics for classifier outputs: loss, accuracy, ROC AUC, weighted variants, custom, composite,
and the physics metric ``z0`` (expected discovery significance of the binned classifier output).

Predictions ``p`` are the signal probability, shape ``(n,)``, for a binary problem, or class
probabilities, shape ``(n, k)``. Targets ``y`` are class indices. Every metric has a direction
(``"maximize"`` or ``"minimize"``), used for early stopping and for the tuned objective.

Registry (:data:`METRICS`): ``loss``, ``accuracy``, ``auc`` (unweighted), ``weighted_loss``,
``weighted_accuracy``, ``weighted_auc``, ``z0``. Add more with :func:`register_metric`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from sigtune._exceptions import ConfigError

__all__ = [
    "METRICS",
    "BinnedLLR",
    "CutFoM",
    "Metric",
    "Monitor",
    "Z0Metric",
    "composite_metric",
    "compute_metric",
    "custom_metric",
    "get_metric",
    "metric_direction",
    "register_metric",
    "z0_workspace",
    "z_asimov",
]

log = logging.getLogger(__name__)

Direction = Literal["maximize", "minimize"]
_EPS = 1e-7


@dataclass(frozen=True)
class Metric:
    """A named metric with its direction.

    Attributes:
        name: Registry / history name (``"auc"``; the history stores ``"val_auc"`` for validation).
        fn: ``fn(y, p, w, X) -> float``; ``w`` is never ``None`` (ones when unweighted), ``X`` may be.
        direction: ``"maximize"`` or ``"minimize"``.
    """

    name: str
    fn: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None], float]
    direction: Direction

    def __call__(self, y: Any, p: Any, w: Any = None, *, X: np.ndarray | None = None) -> float:
        yy, pp, ww = _prepare(y, p, w)
        return float(self.fn(yy, pp, ww, X))


# ---------------------------------------------------------------------- helpers
def _prepare(y: Any, p: Any, w: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    yy = np.asarray(y)
    if yy.ndim == 2:  # one-hot targets
        yy = yy.argmax(axis=1)
    yy = yy.astype(np.int64)
    pp = np.asarray(p, dtype=np.float64)
    if pp.ndim == 2 and pp.shape[1] == 1:
        pp = pp[:, 0]
    if pp.shape[0] != yy.shape[0]:
        raise ConfigError(f"metric: {yy.shape[0]} targets but {pp.shape[0]} predictions")
    ww = np.ones(len(yy)) if w is None else np.asarray(w, dtype=np.float64)
    if ww.shape != yy.shape:
        raise ConfigError(f"metric: weights of shape {ww.shape} for {len(yy)} events")
    return yy, pp, ww


def _class_probs(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Probability assigned to the true class of each event."""
    if p.ndim == 1:
        return np.where(y == 1, p, 1.0 - p)
    if y.size and y.max() >= p.shape[1]:
        raise ConfigError(f"class index {y.max()} but predictions have {p.shape[1]} columns")
    return np.asarray(p[np.arange(len(y)), y], dtype=np.float64)


def _xent(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    return np.asarray(-np.log(np.clip(_class_probs(y, p), _EPS, 1.0)), dtype=np.float64)


def _predicted(p: np.ndarray) -> np.ndarray:
    return (p >= 0.5).astype(np.int64) if p.ndim == 1 else p.argmax(axis=1)


def _wmean(v: np.ndarray, w: np.ndarray) -> float:
    tot = w.sum()
    if tot == 0:
        return float("nan")
    return float(np.sum(v * w) / tot)


def binary_auc(pos: np.ndarray, score: np.ndarray, w: np.ndarray | None = None) -> float:
    """Weighted ROC AUC: P(score_sig > score_bkg) + 0.5 P(tie), negative weights ignored.

    Args:
        pos: Boolean, True for the positive (signal) class.
        score: Classifier score (higher = more signal-like).
        w: Event weights (``None`` = 1); negative weights are set to 0.
    """
    ww = np.ones(len(score)) if w is None else np.clip(np.asarray(w, float), 0.0, None)
    pos = np.asarray(pos, bool)
    uniq, inv = np.unique(score, return_inverse=True)
    ws = np.bincount(inv, weights=ww * pos, minlength=len(uniq))
    wb = np.bincount(inv, weights=ww * ~pos, minlength=len(uniq))
    tot_s, tot_b = ws.sum(), wb.sum()
    if tot_s <= 0 or tot_b <= 0:
        return float("nan")
    below_b = np.cumsum(wb) - wb
    return float(np.sum(ws * (below_b + 0.5 * wb)) / (tot_s * tot_b))


def _auc(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> float:
    if p.ndim == 1:
        return binary_auc(y == 1, p, w)
    vals = [binary_auc(y == c, p[:, c], w) for c in range(p.shape[1]) if np.any(y == c)]
    vals = [v for v in vals if not math.isnan(v)]
    return float(np.mean(vals)) if vals else float("nan")  # one-vs-rest, macro average


def _labels(y: np.ndarray, p: np.ndarray) -> list[int]:
    return list(range(2 if p.ndim == 1 else p.shape[1]))


def _loss(y: np.ndarray, p: np.ndarray, w: np.ndarray, X: np.ndarray | None) -> float:
    from sklearn.metrics import log_loss

    pp = np.clip(p, _EPS, 1.0 - _EPS) if p.ndim == 1 else np.clip(p, _EPS, 1.0)
    return float(log_loss(y, pp, labels=_labels(y, p)))


def _bloss(y: np.ndarray, p: np.ndarray, w: np.ndarray, X: np.ndarray | None) -> float:
    """Weighted loss with the class totals equalised (the weighting training uses)."""
    k = 2 if p.ndim == 1 else p.shape[1]
    sums = np.bincount(y, weights=w, minlength=k)
    present = np.bincount(y, minlength=k) > 0
    if np.any(sums[present] <= 0):
        return float("nan")
    factor = np.where(present, 1.0 / np.where(sums == 0, 1.0, sums), 0.0)
    return _wmean(_xent(y, p), w * factor[y])


def _wloss(y: np.ndarray, p: np.ndarray, w: np.ndarray, X: np.ndarray | None) -> float:
    return _wmean(_xent(y, p), w)


def _acc(y: np.ndarray, p: np.ndarray, w: np.ndarray, X: np.ndarray | None) -> float:
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(y, _predicted(p)))


def _wacc(y: np.ndarray, p: np.ndarray, w: np.ndarray, X: np.ndarray | None) -> float:
    return _wmean((_predicted(p) == y).astype(float), w)


def _auc_unw(y: np.ndarray, p: np.ndarray, w: np.ndarray, X: np.ndarray | None) -> float:
    from sklearn.metrics import roc_auc_score

    if p.ndim == 1:
        if np.unique(y).size < 2:
            return float("nan")
        return float(roc_auc_score(y == 1, p))
    return _auc(y, p, np.ones(len(y)))  # one-vs-rest over the classes present


def _auc_w(y: np.ndarray, p: np.ndarray, w: np.ndarray, X: np.ndarray | None) -> float:
    return _auc(y, p, w)


# ---------------------------------------------------------------------- significance
def z_asimov(
    s: float | np.ndarray, b: float | np.ndarray, sigma_b: float | np.ndarray | None = None
) -> float:
    """Median expected discovery significance of independent bins, ``sqrt(sum_i Z_i^2)``.

    Per bin, without background uncertainty (Cowan et al., arXiv:1007.1727, eq. 97):
    ``Z = sqrt(2 ((s + b) ln(1 + s/b) - s))``; with an absolute uncertainty ``sigma_b`` on ``b``
    (Cowan, "Discovery sensitivity for a counting experiment with background uncertainty").
    The closed forms live in :func:`sigtune.hep.z_asimov`.
    """
    from sigtune.hep import z_asimov as hep_z_asimov

    return float(hep_z_asimov(s, b, sigma_b))


def z0_workspace(
    s: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    b_sumw2: Sequence[float] | np.ndarray | None = None,
    sigma_b_rel: float | None = None,
) -> dict[str, Any]:
    """A pyhf-style one-channel workspace for the binned classifier output.

    Signal with a free ``mu``; background with a ``staterror`` (MC statistical uncertainty
    ``sqrt(b_sumw2)`` per bin) and optionally a normalisation ``normsys`` of ``±sigma_b_rel``.
    The observations are the Asimov data ``s + b``.
    """
    s_l = [float(v) for v in np.asarray(s, float)]
    b_l = [float(v) for v in np.asarray(b, float)]
    bkg_mods: list[dict[str, Any]] = []
    if b_sumw2 is not None:
        bkg_mods.append(
            {
                "name": "staterror_output",
                "type": "staterror",
                "data": [float(v) for v in np.sqrt(np.clip(np.asarray(b_sumw2, float), 0, None))],
            }
        )
    if sigma_b_rel:
        bkg_mods.append(
            {
                "name": "bkg_norm",
                "type": "normsys",
                "data": {"hi": 1.0 + float(sigma_b_rel), "lo": max(1.0 - float(sigma_b_rel), 1e-3)},
            }
        )
    return {
        "version": "1.0.0",
        "channels": [
            {
                "name": "output",
                "samples": [
                    {
                        "name": "signal",
                        "data": s_l,
                        "modifiers": [{"name": "mu", "type": "normfactor", "data": None}],
                    },
                    {"name": "background", "data": b_l, "modifiers": bkg_mods},
                ],
            }
        ],
        "observations": [
            {"name": "output", "data": [x + y for x, y in zip(s_l, b_l, strict=True)]}
        ],
        "measurements": [{"name": "meas", "config": {"poi": "mu", "parameters": []}}],
    }


@dataclass(frozen=True)
class Z0Metric:
    """Expected discovery significance of the binned classifier output (maximize).

    The signal-class output (``p`` for binary, ``p[:, signal_class]`` otherwise) is filled into
    a weighted histogram for signal and for all other classes (background). Weights are the
    expected yields: multiply by ``weight_scale``, or set ``yields={class: total}`` to rescale each
    class to a total (e.g. a validation split holding 20% of the events needs a factor 5; see
    :func:`~sigtune.pipelines.ml.scale_to_yields`).

    ``method="asimov"``: ``Z = sqrt(sum_i Z_A(s_i, b_i, sigma_b_rel * b_i)^2)`` (bins are
    independent, so their Asimov ``q0`` add). ``method="profile"``: a profile-likelihood Z0 from
    :func:`sigtune.hep.discovery` on :func:`z0_workspace` (MC stat errors as ``staterror``).

    Attributes:
        n_bins: Number of bins of the output.
        binning: ``"equal_background"`` (quantiles of the weighted background output: no empty
            background bins), ``"uniform"`` (equal width on [0, 1]) or ``"transfo_d"``
            (TRExFitter TransfoD from :func:`sigtune.pipelines.binning.transfo_d` on
            ``fine_bins`` bins, ``z_s`` / ``z_b`` default to ``n_bins / 2`` each, giving about
            ``n_bins`` bins).
        sigma_b_rel: Relative background uncertainty per bin (``None``: none).
        method: ``"asimov"`` (closed form) or ``"profile"``.
        signal_class: Index of the signal class.
        weight_scale: Factor applied to all weights.
        yields: Optional ``{class: expected total}`` rescaling (after ``weight_scale``).
        min_background: Bins with less background are merged into a neighbour
            (:func:`merge_low_background`), so a bin without background never gives Z = inf.
        z_s: TransfoD signal parameter.
        z_b: TransfoD background parameter.
        fine_bins: Number of fine bins TransfoD merges.
    """

    n_bins: int = 10
    binning: Literal["equal_background", "uniform", "transfo_d"] = "equal_background"
    sigma_b_rel: float | None = None
    method: Literal["asimov", "profile"] = "asimov"
    signal_class: int = 1
    weight_scale: float = 1.0
    yields: Mapping[int, float] | None = field(default=None)
    min_background: float = 1e-3
    z_s: float | None = None
    z_b: float | None = None
    fine_bins: int = 200

    def __post_init__(self) -> None:
        if int(self.n_bins) < 1:
            raise ConfigError(f"z0 metric: n_bins must be >= 1, got {self.n_bins}")
        if self.binning not in ("equal_background", "uniform", "transfo_d"):
            raise ConfigError(
                "z0 metric: binning must be 'equal_background', 'uniform' or 'transfo_d', got "
                f"{self.binning!r}"
            )
        if int(self.fine_bins) < 2:
            raise ConfigError(f"z0 metric: fine_bins must be >= 2, got {self.fine_bins}")
        if self.method not in ("asimov", "profile"):
            raise ConfigError(
                f"z0 metric: method must be 'asimov' or 'profile', got {self.method!r}"
            )
        if self.sigma_b_rel is not None and self.sigma_b_rel < 0:
            raise ConfigError(f"z0 metric: sigma_b_rel must be >= 0, got {self.sigma_b_rel}")
        if not self.min_background > 0:
            raise ConfigError(f"z0 metric: min_background must be > 0, got {self.min_background}")

    name = "z0"
    direction: Direction = "maximize"

    def histograms(
        self, y: Any, p: Any, w: Any = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Signal and background yields per bin, background sum of squared weights, bin edges."""
        yy, pp, ww = _prepare(y, p, w)
        score = pp if pp.ndim == 1 else pp[:, self.signal_class]
        if pp.ndim == 1 and self.signal_class != 1:
            raise ConfigError("z0 metric: binary predictions are the class-1 probability")
        ww = ww * float(self.weight_scale)
        is_sig = yy == self.signal_class
        if self.yields:
            for c, total in self.yields.items():
                m = yy == int(c)
                cur = ww[m].sum()
                if cur == 0 and np.any(m):
                    raise ConfigError(f"z0 metric: class {c} has total weight 0, cannot rescale")
                if np.any(m):
                    ww = np.where(m, ww * (float(total) / cur), ww)
        if self.binning == "transfo_d":
            edges = self._transfo_d_edges(score, ww, is_sig)
        elif self.binning == "uniform":
            edges = np.linspace(0.0, 1.0, int(self.n_bins) + 1)
            lo, hi = min(0.0, score.min(initial=0.0)), max(1.0, score.max(initial=1.0))
            edges[0], edges[-1] = lo, hi
        else:
            bs, bw = score[~is_sig], np.clip(ww[~is_sig], 0, None)
            if bs.size == 0 or bw.sum() <= 0:
                raise ConfigError("z0 metric: no background events with positive weight")
            order = np.argsort(bs)
            cdf = np.cumsum(bw[order]) / bw.sum()
            qs = np.linspace(0, 1, int(self.n_bins) + 1)[1:-1]
            inner = bs[order][np.clip(np.searchsorted(cdf, qs), 0, len(bs) - 1)]
            edges = np.unique(np.concatenate([[-np.inf], inner, [np.inf]]))
        s, _ = np.histogram(score[is_sig], bins=edges, weights=ww[is_sig])
        b, _ = np.histogram(score[~is_sig], bins=edges, weights=ww[~is_sig])
        b2, _ = np.histogram(score[~is_sig], bins=edges, weights=ww[~is_sig] ** 2)
        return s, b, b2, edges

    def _transfo_d_edges(self, score: np.ndarray, w: np.ndarray, is_sig: np.ndarray) -> np.ndarray:
        """TransfoD edges from the binning pipeline, on ``fine_bins`` equal bins of [0, 1]."""
        from sigtune.pipelines.binning import Histograms, Template, transfo_d

        lo = min(0.0, float(score.min(initial=0.0)))
        hi = max(1.0, float(score.max(initial=1.0)))
        fine = np.linspace(lo, hi, int(self.fine_bins) + 1)
        sig = np.histogram(score[is_sig], bins=fine, weights=w[is_sig])[0]
        bkg = np.histogram(score[~is_sig], bins=fine, weights=w[~is_sig])[0]
        hist = Histograms.from_templates(
            fine,
            [Template.from_arrays("signal", sig), Template.from_arrays("background", bkg)],
            ["signal"],
        )
        n = float(self.n_bins)
        z_s = n / 2 if self.z_s is None else float(self.z_s)
        z_b = n / 2 if self.z_b is None else float(self.z_b)
        try:
            return np.asarray(transfo_d(hist, z_s, z_b), dtype=np.float64)
        except ValueError as exc:
            raise ConfigError(f"z0 metric (transfo_d): {exc}") from exc

    def __call__(self, y: Any, p: Any, w: Any = None, *, X: np.ndarray | None = None) -> float:
        s, b, b2, _ = self.histograms(y, p, w)
        s, b, b2 = merge_low_background(np.clip(s, 0.0, None), b, b2, self.min_background)
        b = np.maximum(b, self.min_background)
        if s.sum() <= 0:
            return 0.0
        if self.method == "profile":
            return self._profile(s, b, b2)
        sigma = None if not self.sigma_b_rel else self.sigma_b_rel * b
        return z_asimov(s, b, sigma)

    def _profile(self, s: np.ndarray, b: np.ndarray, b2: np.ndarray) -> float:
        import sigtune.hep as hep

        spec = z0_workspace(s, b, b_sumw2=np.maximum(b2, 1e-12), sigma_b_rel=self.sigma_b_rel)
        ws = hep.Workspace(spec)
        model = ws.model()
        return float(hep.discovery(model, ws.data(model)).z0_obs)


def merge_low_background(
    s: np.ndarray, b: np.ndarray, b2: np.ndarray, min_background: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge every bin with background ``<= min_background`` into its lower neighbour (the first
    bin into its upper one), until all bins have background or one bin is left.

    A bin without background MC would otherwise give an infinite (or floor-driven) significance.
    """
    s_l, b_l, w_l = list(map(float, s)), list(map(float, b)), list(map(float, b2))
    i = 0
    while len(b_l) > 1 and i < len(b_l):
        if b_l[i] > min_background:
            i += 1
            continue
        j = i - 1 if i > 0 else 1
        s_l[j] += s_l[i]
        b_l[j] += b_l[i]
        w_l[j] += w_l[i]
        del s_l[i], b_l[i], w_l[i]
        i = max(j, 0) if j < i else i
    return np.array(s_l), np.array(b_l), np.array(w_l)


# ---------------------------------------------------------------------- figures of merit
class BinnedLLR(Z0Metric):
    """Binned log-likelihood-ratio significance ``sqrt(sum_i Z_A(s_i, b_i)^2)`` (no systematics).

    The ``z0`` metric with the Asimov method, under the name physicists know it by.
    """

    name = "binned_llr"


@dataclass(frozen=True)
class CutFoM:
    """A figure of merit of a cut on the signal score, at the best of ``n_cuts`` cuts.

    ``S`` and ``B`` are the summed weights of signal (class ``signal_class``) and background
    events above the cut, times ``weight_scale`` (so weights scaled to the luminosity give
    yields). Cuts are background quantiles; cuts leaving ``B < min_background`` are skipped.

    Kinds: ``s_sqrt_b`` (``S/sqrt(B)``), ``s_sqrt_b_db`` (``S/sqrt(B + (r B)^2)``),
    ``z_asimov`` (Asimov ``Z_A(S, B)``), ``z_asimov_db`` (``Z_A(S, B, sigma_b = r B)``), with
    ``r = sigma_b_rel``.
    """

    kind: Literal["s_sqrt_b", "s_sqrt_b_db", "z_asimov", "z_asimov_db"]
    sigma_b_rel: float = 0.1
    n_cuts: int = 50
    weight_scale: float = 1.0
    min_background: float = 1e-3
    signal_class: int = 1
    direction: Direction = "maximize"

    @property
    def name(self) -> str:
        return self.kind

    def values(self, S: np.ndarray, B: np.ndarray) -> np.ndarray:
        """The figure of merit for yields above each cut."""
        r = float(self.sigma_b_rel)
        if self.kind == "s_sqrt_b":
            return np.asarray(S / np.sqrt(B))
        if self.kind == "s_sqrt_b_db":
            return np.asarray(S / np.sqrt(B + (r * B) ** 2))
        from sigtune.hep import z_asimov_bins

        sigma = None if self.kind == "z_asimov" else r * B
        return np.asarray(z_asimov_bins(S, B, sigma), dtype=np.float64)

    def __call__(self, y: Any, p: Any, w: Any = None, *, X: np.ndarray | None = None) -> float:
        yy, pp, ww = _prepare(y, p, w)
        score = pp if pp.ndim == 1 else pp[:, self.signal_class]
        ww = ww * float(self.weight_scale)
        sig = yy == self.signal_class
        if not np.any(sig) or np.all(sig):
            return float("nan")
        cuts = np.unique(np.quantile(score[~sig], np.linspace(0.0, 1.0, int(self.n_cuts) + 1)))
        S = np.array([ww[sig & (score >= c)].sum() for c in cuts])
        B = np.array([ww[~sig & (score >= c)].sum() for c in cuts])
        ok = (B >= self.min_background) & (S > 0)
        if not np.any(ok):
            return 0.0
        return float(np.max(self.values(S[ok], B[ok])))


# ---------------------------------------------------------------------- registry
METRICS: dict[str, Metric | Z0Metric | CutFoM] = {
    "loss": Metric("loss", _loss, "minimize"),
    "weighted_loss": Metric("weighted_loss", _wloss, "minimize"),
    "balanced_loss": Metric("balanced_loss", _bloss, "minimize"),
    "accuracy": Metric("accuracy", _acc, "maximize"),
    "weighted_accuracy": Metric("weighted_accuracy", _wacc, "maximize"),
    "auc": Metric("auc", _auc_unw, "maximize"),
    "weighted_auc": Metric("weighted_auc", _auc_w, "maximize"),
    "z0": Z0Metric(),
    "binned_llr": BinnedLLR(method="asimov", sigma_b_rel=None),
    "s_sqrt_b": CutFoM("s_sqrt_b"),
    "s_sqrt_b_db": CutFoM("s_sqrt_b_db"),
    "z_asimov": CutFoM("z_asimov"),
    "z_asimov_db": CutFoM("z_asimov_db"),
}

MetricLike = str | Metric | Z0Metric | CutFoM | Callable[..., float]


def register_metric(
    name: str,
    fn: Callable[..., float],
    direction: Direction,
    *,
    overwrite: bool = False,
) -> Metric:
    """Register ``fn(inputs, targets, weights, predictions) -> float`` under ``name``.

    Raises:
        ConfigError: If the name is taken (unless ``overwrite``) or the direction is invalid.
    """
    if name in METRICS and not overwrite:
        raise ConfigError(f"metric {name!r} is already registered (pass overwrite=True)")
    metric = custom_metric(fn, name=name, direction=direction)
    METRICS[name] = metric
    return metric


def custom_metric(
    fn: Callable[..., float], *, name: str | None = None, direction: Direction = "maximize"
) -> Metric:
    """Wrap a user callable ``fn(inputs, targets, weights, predictions) -> float``."""
    if direction not in ("maximize", "minimize"):
        raise ConfigError(f"metric direction must be 'maximize' or 'minimize', got {direction!r}")
    if not callable(fn):
        raise ConfigError(f"custom metric must be callable, got {fn!r}")

    def call(y: np.ndarray, p: np.ndarray, w: np.ndarray, X: np.ndarray | None) -> float:
        return float(fn(X, y, w, p))

    return Metric(name or str(getattr(fn, "__name__", "custom")), call, direction)


def composite_metric(
    name: str,
    components: str | Mapping[str, float] | Sequence[tuple[MetricLike, float]],
    *,
    direction: Direction = "maximize",
) -> Metric:
    """A weighted sum ``sum_i c_i * metric_i`` of other metrics, or any expression of them.

    ``components`` is a mapping / pairs (weighted sum) or an expression string over registered
    metric names, evaluated safely (no Python execution: :mod:`sigtune._expr`).

    Examples: ``composite_metric("auc_minus_loss", {"auc": 1.0, "loss": -0.1})``,
    ``composite_metric("q", "auc * z_asimov / (1 + weighted_loss)")``.
    """
    if isinstance(components, str):
        return _expression_metric(name, components, direction)
    items = list(components.items()) if isinstance(components, Mapping) else list(components)
    if not items:
        raise ConfigError(f"composite metric {name!r} needs at least one component")
    parts = [(get_metric(m), float(c)) for m, c in items]
    if direction not in ("maximize", "minimize"):
        raise ConfigError(f"metric direction must be 'maximize' or 'minimize', got {direction!r}")

    def call(y: np.ndarray, p: np.ndarray, w: np.ndarray, X: np.ndarray | None) -> float:
        return float(sum(c * m(y, p, w, X=X) for m, c in parts))

    return Metric(name, call, direction)


def _expression_metric(name: str, text: str, direction: Direction) -> Metric:
    from sigtune._expr import Expression

    if direction not in ("maximize", "minimize"):
        raise ConfigError(f"metric direction must be 'maximize' or 'minimize', got {direction!r}")
    expr = Expression.parse(text, where=f"composite metric {name!r}")
    parts = {n: get_metric(n) for n in sorted(expr.names)}
    if not parts:
        raise ConfigError(f"composite metric {name!r}: the expression names no metric")

    def call(y: np.ndarray, p: np.ndarray, w: np.ndarray, X: np.ndarray | None) -> float:
        return float(expr.evaluate({n: m(y, p, w, X=X) for n, m in parts.items()}))

    return Metric(name, call, direction)


def get_metric(metric: MetricLike) -> Metric | Z0Metric | CutFoM:
    """Resolve a name (``"auc"``, also ``"val_auc"``), a Metric, or a callable (custom metric).

    Raises:
        ConfigError: For an unknown name.
    """
    if isinstance(metric, (Metric, Z0Metric, CutFoM)):
        return metric
    if isinstance(metric, str):
        key = metric[4:] if metric.startswith("val_") and metric not in METRICS else metric
        if key not in METRICS:
            raise ConfigError(f"unknown metric {metric!r}; known: {sorted(METRICS)}")
        return METRICS[key]
    if callable(metric):
        return custom_metric(metric)
    raise ConfigError(f"a metric must be a name or a callable, got {metric!r}")


def compute_metric(
    metric: MetricLike, y: Any, p: Any, w: Any = None, *, X: np.ndarray | None = None
) -> float:
    """Evaluate a metric on targets ``y``, predictions ``p`` and weights ``w``.

    Args:
        metric: Registry name, :class:`Metric`, :class:`Z0Metric`, or a callable
            ``fn(inputs, targets, weights, predictions)``.
        y: Class indices ``(n,)`` (or one-hot ``(n, k)``).
        p: Signal probability ``(n,)`` or class probabilities ``(n, k)``.
        w: Event weights (``None`` = 1).
        X: Inputs, passed to custom metrics.
    """
    return float(get_metric(metric)(y, p, w, X=X))


def metric_direction(metric: MetricLike) -> Direction:
    """Direction of a metric; names may carry the ``val_`` prefix; ``*loss*`` minimises."""
    if isinstance(metric, str):
        key = metric[4:] if metric.startswith("val_") else metric
        if key in METRICS:
            return METRICS[key].direction
        if metric in METRICS:
            return METRICS[metric].direction
        if "loss" in key:
            return "minimize"
        raise ConfigError(
            f"cannot infer the direction of metric {metric!r}: give it explicitly "
            "(e.g. monitor=('val_x', 'max'))"
        )
    return get_metric(metric).direction


@dataclass(frozen=True)
class Monitor:
    """The monitored metric (history name, e.g. ``"val_loss"``) and its direction.

    Build with :meth:`parse` from ``"val_auc"``, ``("val_auc", "max")`` or
    ``{"metric": "val_auc", "direction": "maximize"}``.
    """

    metric: str = "val_loss"
    direction: Direction = "minimize"
    min_delta: float = 0.0

    @classmethod
    def parse(cls, spec: Any) -> Monitor:
        """Parse a monitor specification (see class docstring)."""
        if isinstance(spec, Monitor):
            return spec
        if spec is None:
            return cls()
        if isinstance(spec, str):
            return cls(spec, metric_direction(spec))
        if isinstance(spec, Mapping):
            name = str(spec.get("metric", "val_loss"))
            d = spec.get("direction")
            return cls(
                name,
                _norm_direction(d) if d is not None else metric_direction(name),
                float(spec.get("min_delta", 0.0)),
            )
        if isinstance(spec, Sequence) and len(spec) == 2:
            return cls(str(spec[0]), _norm_direction(spec[1]))
        raise ConfigError(
            f"monitor must be a metric name, (name, direction) or mapping, got {spec!r}"
        )

    def better(self, new: float, best: float | None) -> bool:
        """Whether ``new`` improves on ``best`` by more than ``min_delta``."""
        if new is None or math.isnan(new):
            return False
        if best is None or math.isnan(best):
            return True
        if self.direction == "maximize":
            return new > best + self.min_delta
        return new < best - self.min_delta

    def best_index(self, values: Sequence[float], allowed: Sequence[bool] | None = None) -> int:
        """Index of the best value (restricted to ``allowed`` entries if any is allowed)."""
        arr = np.asarray(values, dtype=np.float64)
        ok = np.isfinite(arr)
        if allowed is not None and np.any(np.asarray(allowed) & ok):
            ok &= np.asarray(allowed, bool)
        if not np.any(ok):
            return len(arr) - 1
        masked = np.where(ok, arr, -np.inf if self.direction == "maximize" else np.inf)
        return int(np.argmax(masked) if self.direction == "maximize" else np.argmin(masked))


def _norm_direction(d: Any) -> Direction:
    s = str(d).lower()
    if s in ("max", "maximize", "maximise"):
        return "maximize"
    if s in ("min", "minimize", "minimise"):
        return "minimize"
    raise ConfigError(f"direction must be 'max'/'maximize' or 'min'/'minimize', got {d!r}")

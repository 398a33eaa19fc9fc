"""Evaluation of a trained classifier: ROC curves, output distributions and a metrics table.

:func:`evaluate` writes into one folder:

* ``roc.png`` / ``roc.json`` — ROC curves one-vs-rest on the test split (class ``c`` against all
  others, scored by output node ``c``; for a binary classifier the signal probability). Events with
  negative weights are ignored for the ROC (a cumulative sum of negative weights is not a rate).
* ``outputs_stacked.png`` — the classifier output on the test split, one histogram per true class,
  stacked, weighted with the events' weights (one panel per output node).
* ``outputs_train_val_test.png`` — per true class, the normalised output distribution on the
  training, validation and test splits, with a ratio panel (validation / training and
  test / training): a visible difference is a sign of overtraining.
* ``metrics.json`` / ``metrics.csv`` — every requested metric on every split.

Matplotlib is imported lazily with the non-interactive ``Agg`` backend.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sigtune._exceptions import ConfigError
from sigtune._figures import save_tight

__all__ = ["EvaluationResult", "RocCurve", "evaluate", "roc_curve"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RocCurve:
    """A ROC curve.

    Attributes:
        fpr: False-positive rate (weighted background efficiency), increasing, from 0 to 1.
        tpr: True-positive rate (weighted signal efficiency), from 0 to 1.
        thresholds: Output value of each point (``+inf`` for the first point).
        auc: Area under the curve (trapezoidal rule).
    """

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    auc: float


@dataclass(frozen=True)
class EvaluationResult:
    """Result of :func:`evaluate`.

    Attributes:
        metrics: Split name -> metric name -> value.
        roc: Class name -> ROC curve (one-vs-rest) on the test split.
        files: The files written.
    """

    metrics: dict[str, dict[str, float]]
    roc: dict[str, RocCurve]
    files: tuple[Path, ...]


def roc_curve(
    scores: np.ndarray, is_positive: np.ndarray, weights: np.ndarray | None = None
) -> RocCurve:
    """Weighted ROC curve; events with negative weight are ignored.

    Args:
        scores: Classifier output, higher = more signal-like, shape ``(n,)``.
        is_positive: Boolean, ``True`` for the positive class.
        weights: Event weights (default 1). Events with ``w < 0`` are dropped.

    Returns:
        The curve with one point per distinct score value (plus the origin).

    Raises:
        ValueError: If the arrays have different lengths, or a class has no positive weight.
    """
    s = np.asarray(scores, dtype=float).ravel()
    pos = np.asarray(is_positive, dtype=bool).ravel()
    w = np.ones_like(s) if weights is None else np.asarray(weights, dtype=float).ravel()
    if not (s.size == pos.size == w.size):
        raise ValueError(
            f"scores, labels and weights must have the same length, got {s.size}, {pos.size}, {w.size}"
        )
    keep = w >= 0
    s, pos, w = s[keep], pos[keep], w[keep]
    order = np.argsort(-s, kind="mergesort")
    s, pos, w = s[order], pos[order], w[order]
    tp = np.cumsum(np.where(pos, w, 0.0))
    fp = np.cumsum(np.where(pos, 0.0, w))
    # Keep the last index of every run of equal scores: ties move together.
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1] if s.size else np.array([], dtype=int)
    total_p, total_n = (tp[-1], fp[-1]) if s.size else (0.0, 0.0)
    if total_p <= 0 or total_n <= 0:
        raise ValueError("a ROC curve needs positive total weight in both classes")
    tpr = np.r_[0.0, tp[last] / total_p]
    fpr = np.r_[0.0, fp[last] / total_n]
    thresholds = np.r_[np.inf, s[last]]
    auc = float(np.trapezoid(tpr, fpr))
    return RocCurve(fpr=fpr, tpr=tpr, thresholds=thresholds, auc=auc)


def _as_splits(splits: Any) -> dict[str, Any]:
    if isinstance(splits, Mapping):
        named = dict(splits)
    else:
        named = {n: getattr(splits, n, None) for n in ("train", "val", "test")}
    named = {k: v for k, v in named.items() if v is not None and len(v.y) > 0}
    if "test" not in named:
        raise ConfigError("evaluate needs a non-empty 'test' split (set split.test_fraction > 0)")
    return named


def _scores(p: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-class score matrix (n, k); a binary output (n,) becomes [1 - p, p]."""
    p = np.asarray(p, dtype=float)
    if p.ndim == 1:
        return np.stack([1.0 - p, p], axis=1)
    if p.shape[1] != n_classes:
        raise ConfigError(f"the model predicts {p.shape[1]} outputs for {n_classes} classes")
    return p


def evaluate(
    model: Any,
    splits: Any,
    out_dir: str | Path,
    *,
    metrics: Sequence[str | Callable[..., float]] = ("loss", "accuracy", "auc"),
    class_names: Sequence[str] | None = None,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
    bins: int = 40,
) -> EvaluationResult:
    """Evaluate a trained classifier and write plots and a metrics table.

    Args:
        model: A trained :class:`~sigtune.pipelines.ml.Trainable` (anything with ``predict(X)``)
            or a callable ``X -> predictions``; predictions are the signal probability ``(n,)``
            for two classes, class probabilities ``(n, k)`` otherwise.
        splits: ``Splits(train, val, test)`` or a mapping of split name -> ``EventData``;
            ``test`` is required.
        out_dir: Folder for the files (created).
        metrics: Metric names of :data:`~sigtune.pipelines.ml.METRICS` or callables
            ``fn(inputs, targets, weights, predictions) -> float``, computed on every split with
            the original event weights.
        class_names: Names of the classes (default ``class_0``...; ``background``/``signal``
            for two classes).
        transform: Applied to ``X`` before predicting (e.g. a fitted ``InputScaler.transform``).
        bins: Number of histogram bins of the output distributions.

    Returns:
        Metrics per split, ROC curves and the written files.

    Raises:
        ConfigError: Without a test split, or if ``class_names`` has the wrong length.
    """
    from sigtune.pipelines.ml._metrics import compute_metric

    named = _as_splits(splits)
    n_classes = int(named["test"].n_classes)
    if class_names is None:
        class_names = (
            ["background", "signal"] if n_classes == 2 else [f"class_{i}" for i in range(n_classes)]
        )
    if len(class_names) != n_classes:
        raise ConfigError(f"class_names has {len(class_names)} entries for {n_classes} classes")
    predict = model.predict if hasattr(model, "predict") else model
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    preds: dict[str, np.ndarray] = {}
    table: dict[str, dict[str, float]] = {}
    for name, data in named.items():
        X = transform(data.X) if transform is not None else data.X
        preds[name] = np.asarray(predict(X), dtype=float)
        table[name] = {}
        for metric in metrics:
            label = metric if isinstance(metric, str) else getattr(metric, "__name__", "custom")
            table[name][label] = float(compute_metric(metric, data.y, preds[name], data.w, X=X))

    test = named["test"]
    scores_test = _scores(preds["test"], n_classes)
    rocs: dict[str, RocCurve] = {}
    roc_classes = [1] if n_classes == 2 else list(range(n_classes))
    for c in roc_classes:
        rocs[class_names[c]] = roc_curve(scores_test[:, c], test.y == c, test.w)

    files = [
        _write_metrics(out, table),
        _write_roc_json(out, rocs),
        *_plot(out, named, preds, n_classes, class_names, rocs, bins),
    ]
    log.info("evaluation written to %s", out)
    return EvaluationResult(metrics=table, roc=rocs, files=tuple(files))


def _write_metrics(out: Path, table: dict[str, dict[str, float]]) -> Path:
    (out / "metrics.json").write_text(json.dumps(table, indent=2, sort_keys=True))
    names = sorted({m for row in table.values() for m in row})
    path = out / "metrics.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["split", *names])
        for split, row in table.items():
            writer.writerow([split, *(f"{row.get(m, float('nan')):.6g}" for m in names)])
    return path


def _write_roc_json(out: Path, rocs: Mapping[str, RocCurve]) -> Path:
    path = out / "roc.json"
    payload = {
        name: {"auc": r.auc, "fpr": r.fpr.tolist(), "tpr": r.tpr.tolist()}
        for name, r in rocs.items()
    }
    path.write_text(json.dumps(payload))
    return path


def _plot(
    out: Path,
    named: Mapping[str, Any],
    preds: Mapping[str, np.ndarray],
    n_classes: int,
    class_names: Sequence[str],
    rocs: Mapping[str, RocCurve],
    bins: int,
) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files: list[Path] = []
    edges = np.linspace(0.0, 1.0, bins + 1)
    nodes = [1] if n_classes == 2 else list(range(n_classes))

    fig, ax = plt.subplots(figsize=(5, 5))
    for name, r in rocs.items():
        ax.plot(r.fpr, r.tpr, label=f"{name} vs rest (AUC = {r.auc:.4f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="false-positive rate", ylabel="true-positive rate", title="ROC (test)")
    ax.legend(loc="lower right", fontsize="small")
    files.append(out / "roc.png")
    fig.savefig(files[-1], dpi=100)
    plt.close(fig)

    test = named["test"]
    scores = {k: _scores(v, n_classes) for k, v in preds.items()}
    fig, axes = plt.subplots(1, len(nodes), figsize=(5 * len(nodes), 4), squeeze=False)
    for ax, node in zip(axes[0], nodes, strict=True):
        values = [scores["test"][test.y == c, node] for c in range(n_classes)]
        weights = [test.w[test.y == c] for c in range(n_classes)]
        ax.hist(values, bins=edges, weights=weights, stacked=True, label=list(class_names))
        ax.set(xlabel=f"output {class_names[node]}", ylabel="weighted events", yscale="log")
        ax.legend(fontsize="small")
    fig.suptitle("classifier output (test, stacked)")
    files.append(out / "outputs_stacked.png")
    fig.savefig(files[-1], dpi=100)
    plt.close(fig)

    fig, axes = plt.subplots(
        2,
        n_classes,
        figsize=(5 * n_classes, 5),
        sharex=True,
        gridspec_kw={"height_ratios": [3, 1]},
        squeeze=False,
    )
    centers = 0.5 * (edges[1:] + edges[:-1])
    node_of = (lambda c: 1) if n_classes == 2 else (lambda c: c)
    colors = {"train": "C0", "val": "C1", "test": "C2"}
    for c in range(n_classes):
        top, bottom = axes[0][c], axes[1][c]
        hists: dict[str, np.ndarray] = {}
        for split, data in named.items():
            mask = data.y == c
            if not np.any(mask):
                continue
            w = np.clip(data.w[mask], 0.0, None)
            h, _ = np.histogram(scores[split][mask, node_of(c)], bins=edges, weights=w)
            total = h.sum()
            hists[split] = h / total / np.diff(edges) if total > 0 else h
            top.step(centers, hists[split], where="mid", label=split, color=colors.get(split))
        top.set(ylabel="normalised", title=f"true class: {class_names[c]}")
        top.legend(fontsize="small")
        ref = hists.get("train")
        if ref is not None:
            for split, h in hists.items():
                if split == "train":
                    continue
                with np.errstate(divide="ignore", invalid="ignore"):
                    ratio = np.where(ref > 0, h / ref, np.nan)
                bottom.step(
                    centers, ratio, where="mid", label=f"{split}/train", color=colors.get(split)
                )
            bottom.axhline(1.0, color="grey", linewidth=1)
            bottom.legend(fontsize="x-small", loc="upper right")
            bottom.set_ylim(0.5, 1.5)
        bottom.set(xlabel=f"output {class_names[node_of(c)]}", ylabel="ratio")
    files.append(out / "outputs_train_val_test.png")
    fig.savefig(files[-1], dpi=100)
    plt.close(fig)
    return files


# ---------------------------------------------------------------------- run diagnostics
def plot_inputs(
    data: Any, path: Path, *, class_names: Sequence[str] | None = None, bins: int = 40
) -> Path:
    """Input-variable distributions per class (weighted, normalised), one panel per variable."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = data.n_features
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    names = list(class_names) if class_names else [f"class {c}" for c in range(data.n_classes)]
    for j, feat in enumerate(data.features):
        ax = axes[j // cols][j % cols]
        x = data.X[:, j]
        lo, hi = np.quantile(x, [0.001, 0.999])
        edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
        for c in range(data.n_classes):
            m = data.y == c
            if np.any(m):
                w = np.clip(data.w[m], 0.0, None)
                ax.hist(x[m], bins=edges, weights=w, density=True, histtype="step", label=names[c])
        ax.set_title(feat, fontsize=9)
    for k in range(n, rows * cols):
        axes[k // cols][k % cols].axis("off")
    axes[0][0].legend(fontsize=7)
    save_tight(fig, path, dpi=80)
    plt.close(fig)
    return path


def plot_history(
    history: Mapping[str, Sequence[float]],
    path: Path,
    *,
    target: str,
    title: str,
    selected_epoch: int | None = None,
) -> Path:
    """Training history of a trial: every ``x`` / ``val_x`` pair per panel, and the learning-curve
    fit of ``target`` (the best-fit selection's ``f(x) = a/x^2 + b/x + c x^2 + d x + e``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sigtune.pipelines.ml._selection import fit_learning_curve

    bases = sorted({k[4:] if k.startswith("val_") else k for k in history})
    fig, axes = plt.subplots(1, len(bases), figsize=(4 * len(bases), 3.2), squeeze=False)
    for ax, base in zip(axes[0], bases, strict=True):
        for key in (base, f"val_{base}"):
            if key in history:
                y = np.asarray(history[key], dtype=float)
                ax.plot(np.arange(1, y.size + 1), y, marker=".", label=key)
                if key == target and y.size >= 5 and np.all(np.isfinite(y)):
                    _, fitted, r2 = fit_learning_curve(y)
                    ax.plot(np.arange(1, y.size + 1), fitted, "k--", label=f"fit (R²={r2:.3f})")
        if selected_epoch:
            ax.axvline(selected_epoch, color="grey", linestyle=":", label="selected epoch")
        ax.set(xlabel="epoch", title=base)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    save_tight(fig, path, dpi=80)
    plt.close(fig)
    return path


def write_overview(out_dir: Path, sections: Mapping[str, Sequence[Path]], metrics: Any) -> Path:
    """``index.html`` linking every diagnostic image (relative links) and the metrics."""
    import html
    import json

    parts = ["<html><head><meta charset='utf-8'><title>sigtune ML evaluation</title></head><body>"]
    parts.append("<h1>ML pipeline evaluation</h1>")
    for title, files in sections.items():
        parts.append(f"<h2>{html.escape(title)}</h2>")
        for f in files:
            rel = html.escape(str(Path(f).relative_to(out_dir)))
            if str(f).endswith(".png"):
                parts.append(
                    f"<p><a href='{rel}'><img src='{rel}' style='max-width:900px'></a></p>"
                )
            else:
                parts.append(f"<p><a href='{rel}'>{rel}</a></p>")
    parts.append("<h2>metrics</h2><pre>")
    parts.append(html.escape(json.dumps(metrics, indent=2, default=str)))
    parts.append("</pre></body></html>")
    path = out_dir / "index.html"
    path.write_text("\n".join(parts))
    return path

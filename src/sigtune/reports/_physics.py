"""Physics pages: what a physicist checks before trusting a HistFactory result.

From a pyhf JSON workspace (a binning study's ``best_workspace.json``, or any workspace via
``sigtune physics``) the page shows: stacked pre- and post-fit distributions per channel with
the yield uncertainty band and the data (mplhep style); pulls and constraints of the nuisance
parameters; the impact ranking (pre- and post-fit impacts); the CLs scan with the expected band
(Brazil band) and the observed and expected upper limits; the profile-likelihood scan. For binning
studies it adds the chosen binning (over the fine histograms the run saved in
``fine_histograms.npz``) and Z0 against the number of bins.

The numbers come from :mod:`sigtune.hep` (the fit, its covariance, ``hypotest``, ``ranking``,
``profile_scan``) and are returned by :func:`physics_results` so that tests can check them: the
band of a distribution is :math:`\\sqrt{\\mathrm{diag}(J C J^T)}` with :math:`J` the Jacobian of
the expected yields and :math:`C` the fit covariance (pre-fit: the constraint widths).
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ChannelYields",
    "ClsScan",
    "PhysicsResults",
    "merge_fine",
    "physics_results",
    "physics_sections",
    "read_fine_histograms",
    "write_physics_page",
    "yield_band",
]


@dataclass(frozen=True)
class ChannelYields:
    """Per-sample yields, total, band and data of one channel.

    Attributes:
        name: Channel name.
        samples: Sample names (rows of ``prefit``/``postfit``).
        edges: Bin edges (the observable's when known, else the bin index).
        prefit, postfit: ``(S, n)`` per-sample yields at the initial / best-fit parameters.
        prefit_sigma, postfit_sigma: ``(n,)`` uncertainty of the total yield.
        data: ``(n,)`` observed counts.
    """

    name: str
    samples: list[str]
    edges: np.ndarray
    prefit: np.ndarray
    postfit: np.ndarray
    prefit_sigma: np.ndarray
    postfit_sigma: np.ndarray
    data: np.ndarray


@dataclass(frozen=True)
class ClsScan:
    """Observed CLs and its expected band at each tested POI value.

    ``cls_exp`` has shape ``(K, 5)`` ordered as pyhf's expected set (index 2: median; 0 and 4 the
    -2 and +2 sigma edges of the Brazil band).
    """

    mu: np.ndarray
    cls_obs: np.ndarray
    cls_exp: np.ndarray
    limit_obs: float
    limit_exp: tuple[float, ...]
    cl: float = 0.95


@dataclass
class PhysicsResults:
    """Everything the physics page plots (see :func:`physics_results`)."""

    poi_name: str
    par_names: list[str]
    bestfit: np.ndarray
    errors: np.ndarray
    channels: list[ChannelYields]
    pulls: list[dict[str, float | str]]
    cls: ClsScan | None
    scan: Any | None
    ranking: Any | None
    extra: dict[str, Any] = field(default_factory=dict)


def yield_band(model: Any, pars: np.ndarray, covariance: np.ndarray) -> np.ndarray:
    """:math:`\\sqrt{\\mathrm{diag}(J C J^T)}` of the expected main-bin yields at ``pars``.

    ``J`` by central finite differences of ``model.expected_data``; parameters with zero
    variance (fixed ones) do not contribute.
    """
    pars = np.asarray(pars, dtype=float)
    cov = np.nan_to_num(np.asarray(covariance, dtype=float))
    lo, hi = np.asarray(model.suggested_bounds(), dtype=float).T
    jac = np.zeros((int(model.n_main), pars.size))
    for i in np.flatnonzero(np.diag(cov) > 0):
        h = 1e-5 * max(1.0, abs(pars[i]))
        up, down = pars.copy(), pars.copy()
        up[i] = min(pars[i] + h, hi[i])
        down[i] = max(pars[i] - h, lo[i])
        step = up[i] - down[i]
        if step <= 0:
            continue
        jac[:, i] = (
            model.expected_data(up, include_auxdata=False)
            - model.expected_data(down, include_auxdata=False)
        ) / step
    var = np.einsum("ni,ij,nj->n", jac, cov, jac)
    out: np.ndarray = np.sqrt(np.clip(var, 0.0, None))
    return out


def _prefit_covariance(model: Any) -> np.ndarray:
    widths = [model.constraint_width(i) for i in range(model.n_pars)]
    fixed = np.asarray(model.suggested_fixed(), dtype=bool)
    var = [0.0 if (w is None or fixed[i]) else w * w for i, w in enumerate(widths)]
    return np.diag(var)


def _by_sample(model: Any, pars: np.ndarray) -> np.ndarray:
    """``(S, n_main)`` expected yields per sample (sum over samples = ``expected_data``)."""
    nus = model._nu(np.asarray(pars, dtype=float)[None, :])[1]
    return np.asarray(nus[0], dtype=float)


def physics_results(
    workspace: Any,
    *,
    measurement: str | None = None,
    edges: Mapping[str, Sequence[float]] | None = None,
    with_ranking: bool = True,
    with_cls: bool = True,
    with_scan: bool = True,
    n_cls_points: int = 15,
) -> PhysicsResults:
    """Fit a workspace and compute what the physics page shows.

    Args:
        workspace: A :class:`sigtune.hep.Workspace`, a path to pyhf JSON or its dictionary.
        measurement: Measurement name (default: the first).
        edges: Bin edges per channel (default: bin index).
        with_ranking, with_cls, with_scan: Compute the impact ranking (two fits per nuisance
            parameter), the CLs scan and the profile-likelihood scan.
        n_cls_points: Points of the CLs scan.
    """
    import sigtune.hep as hep

    ws = workspace if isinstance(workspace, hep.Workspace) else hep.Workspace(workspace)
    model = ws.model(measurement)
    data = ws.data(model)
    result = hep.fit(model, data)
    init = np.asarray(model.suggested_init(), dtype=float)
    post_cov = np.asarray(result.covariance, dtype=float)
    pre_cov = _prefit_covariance(model)
    pre_sigma = yield_band(model, init, pre_cov)
    post_sigma = yield_band(model, result.bestfit, post_cov)
    pre_s = _by_sample(model, init)
    post_s = _by_sample(model, result.bestfit)
    main = model.main_data(data)
    channels = []
    offset = 0
    for cname, nb in zip(model.channel_names, model.channel_nbins, strict=True):
        sl = slice(offset, offset + nb)
        offset += nb
        keep = [i for i in range(len(model.sample_names)) if np.any(pre_s[i, sl] != 0)]
        ch_edges = np.asarray((edges or {}).get(cname, np.arange(nb + 1)), dtype=float)
        if ch_edges.size != nb + 1:
            ch_edges = np.arange(nb + 1, dtype=float)
        channels.append(
            ChannelYields(
                name=cname,
                samples=[model.sample_names[i] for i in keep],
                edges=ch_edges,
                prefit=pre_s[keep, sl],
                postfit=post_s[keep, sl],
                prefit_sigma=pre_sigma[sl],
                postfit_sigma=post_sigma[sl],
                data=main[sl],
            )
        )
    pulls: list[dict[str, float | str]] = []
    for i, name in enumerate(model.par_names):
        width = model.constraint_width(i)
        if width is None or model.suggested_fixed()[i]:
            continue
        pulls.append(
            {
                "name": name,
                "pull": float((result.bestfit[i] - init[i]) / width),
                "constraint": float(result.errors[i] / width),
            }
        )
    poi = model.par_names[model.poi_index] if model.poi_index is not None else ""
    cls = None
    if with_cls and model.poi_index is not None:
        limit = hep.upper_limit(model, data)
        top = max(limit.obs, *limit.exp) * 1.3
        mus = np.linspace(top / n_cls_points, top, n_cls_points)
        tests = [hep.hypotest(model, data, float(mu)) for mu in mus]
        cls = ClsScan(
            mu=mus,
            cls_obs=np.array([t.cls_obs for t in tests]),
            cls_exp=np.array([t.cls_exp for t in tests]),
            limit_obs=float(limit.obs),
            limit_exp=tuple(float(v) for v in limit.exp),
            cl=float(limit.cl),
        )
    scan = hep.profile_scan(model, data) if with_scan and model.poi_index is not None else None
    rank = hep.ranking(model, data) if with_ranking and model.poi_index is not None else None
    return PhysicsResults(
        poi_name=poi,
        par_names=list(model.par_names),
        bestfit=np.asarray(result.bestfit, dtype=float),
        errors=np.asarray(result.errors, dtype=float),
        channels=channels,
        pulls=pulls,
        cls=cls,
        scan=scan,
        ranking=rank,
    )


# ---------------------------------------------------------------------- figures


def _style() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mplhep

    plt.style.use(mplhep.style.ATLAS)
    return plt


def _stack_figure(ch: ChannelYields, which: str) -> Any:
    plt = _style()
    import mplhep

    yields = ch.prefit if which == "pre" else ch.postfit
    sigma = ch.prefit_sigma if which == "pre" else ch.postfit_sigma
    total = yields.sum(axis=0)
    fig, ax = plt.subplots(figsize=(7, 5))
    mplhep.histplot(list(yields), ch.edges, stack=True, histtype="fill", label=ch.samples, ax=ax)
    ax.bar(
        (ch.edges[:-1] + ch.edges[1:]) / 2,
        2 * sigma,
        width=np.diff(ch.edges),
        bottom=total - sigma,
        fill=False,
        hatch="///",
        linewidth=0,
        label="uncertainty",
    )
    mplhep.histplot(
        ch.data,
        ch.edges,
        histtype="errorbar",
        yerr=np.sqrt(ch.data),
        color="k",
        label="data",
        ax=ax,
    )
    ax.set_ylabel("events")
    ax.set_xlabel(
        f"{ch.name} ({'observable' if ch.edges[0] != 0 or ch.edges[-1] != len(ch.data) else 'bin'})"
    )
    ax.set_title(f"{ch.name}: {'pre' if which == 'pre' else 'post'}-fit", fontsize=12)
    ax.legend(fontsize=9)
    return fig


def _pulls_figure(pulls: Sequence[Mapping[str, Any]]) -> Any:
    plt = _style()
    n = len(pulls)
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.3 * n + 1)))
    y = np.arange(n)
    ax.axvspan(-2, 2, color="#ffe000", zorder=0)
    ax.axvspan(-1, 1, color="#00c000", zorder=0)
    ax.errorbar([p["pull"] for p in pulls], y, xerr=[p["constraint"] for p in pulls], fmt="ko")
    ax.set_yticks(y, [str(p["name"]) for p in pulls], fontsize=8)
    ax.set_xlim(-3, 3)
    ax.set_xlabel(r"$(\hat\theta - \theta_0)/\Delta\theta$")
    ax.invert_yaxis()
    return fig


def _ranking_figure(rank: Any, top: int = 15) -> Any:
    plt = _style()
    entries = rank.top(top)
    n = len(entries)
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.35 * n + 1)))
    y = np.arange(n)
    ax.barh(
        y, [e.prefit_up for e in entries], color="none", edgecolor="#1f77b4", label="pre-fit up"
    )
    ax.barh(
        y, [e.prefit_down for e in entries], color="none", edgecolor="#2ca02c", label="pre-fit down"
    )
    ax.barh(y, [e.postfit_up for e in entries], color="#1f77b4", alpha=0.7, label="post-fit up")
    ax.barh(y, [e.postfit_down for e in entries], color="#2ca02c", alpha=0.7, label="post-fit down")
    ax.set_yticks(y, [e.name for e in entries], fontsize=8)
    ax.set_xlabel(rf"$\Delta\hat\mu$ ({rank.poi_name})")
    ax.invert_yaxis()
    ax.legend(fontsize=8, loc="lower right")
    return fig


def _brazil_figure(cls: ClsScan) -> Any:
    plt = _style()
    fig, ax = plt.subplots(figsize=(7, 5))
    e = cls.cls_exp
    ax.fill_between(cls.mu, e[:, 0], e[:, 4], color="#ffe000", label=r"expected $\pm 2\sigma$")
    ax.fill_between(cls.mu, e[:, 1], e[:, 3], color="#00c000", label=r"expected $\pm 1\sigma$")
    ax.plot(cls.mu, e[:, 2], "k--", label="expected")
    ax.plot(cls.mu, cls.cls_obs, "k-", marker="o", ms=3, label="observed")
    ax.axhline(1 - cls.cl, color="r", label=f"{cls.cl:.0%} CL")
    ax.set_xlabel(r"$\mu$")
    ax.set_ylabel(r"CL$_s$")
    ax.set_title(f"upper limit: obs {cls.limit_obs:.3g}, exp {cls.limit_exp[2]:.3g}", fontsize=12)
    ax.legend(fontsize=9)
    return fig


def _scan_figure(scan: Any) -> Any:
    plt = _style()
    fig, ax = plt.subplots(figsize=(7, 5))
    ax.plot(scan.poi_values, scan.delta_twice_nll, "k-", marker="o", ms=3)
    for level in (1.0, 3.84):
        ax.axhline(level, color="grey", ls=":")
    ax.set_xlabel(scan.poi_name)
    ax.set_ylabel(r"$-2\Delta\ln L$")
    ax.set_title(
        f"{scan.poi_name} = {scan.mu_hat:.3g}, 68% CL [{scan.interval_68[0]:.3g}, "
        f"{scan.interval_68[1]:.3g}]",
        fontsize=12,
    )
    return fig


FINE_HISTOGRAMS = "fine_histograms.npz"  # written by the binning pipeline's write_outputs


def read_fine_histograms(path: str | Path) -> dict[str, Any]:
    """The fine histograms a binning run saved: ``edges``, ``samples``, ``signal``, ``counts``
    (one row per sample), ``sumw2``, ``variations`` and their ``up``/``down`` rows."""
    with np.load(path, allow_pickle=False) as z:
        return {
            "edges": z["edges"],
            "samples": [str(x) for x in z["samples"]],
            "signal": [str(x) for x in z["signal"]],
            "counts": z["counts"],
            "sumw2": z["sumw2"],
            "variations": [str(x) for x in z["variations"]],
            "up": z["up"],
            "down": z["down"],
        }


def merge_fine(fine: Mapping[str, Any], edges: Sequence[float]) -> np.ndarray:
    """Per-sample yields of the fine histograms merged into ``edges`` (which must lie on fine
    boundaries, as the snapped edges of a binning study do): shape ``(n_samples, n_bins)``."""
    fe = np.asarray(fine["edges"], dtype=float)
    e = np.asarray(edges, dtype=float)
    idx = np.searchsorted(fe, e)
    idx = np.clip(idx, 0, fe.size - 1)
    if not np.allclose(fe[idx], e, rtol=0, atol=1e-9 * max(1.0, float(np.ptp(fe)))):
        raise ValueError("the chosen edges do not lie on the fine-bin boundaries")
    counts = np.asarray(fine["counts"], dtype=float)
    return np.add.reduceat(counts, idx[:-1], axis=1)[:, : e.size - 1] if counts.size else counts


def _fine_figure(fine: Mapping[str, Any], edges: Sequence[float]) -> Any:
    import mplhep

    plt = _style()
    fe = np.asarray(fine["edges"], dtype=float)
    counts = np.asarray(fine["counts"], dtype=float)
    fig, ax = plt.subplots(figsize=(8, 5))
    order = np.argsort(counts.sum(axis=1))
    mplhep.histplot(
        [counts[i] for i in order],
        fe,
        stack=True,
        histtype="fill",
        label=[fine["samples"][i] for i in order],
        ax=ax,
    )
    for x in edges:
        ax.axvline(float(x), color="k", lw=1.2, ls="--")
    ax.set_xlim(float(fe[0]), float(fe[-1]))
    ax.set_xlabel("observable")
    ax.set_ylabel("yield per fine bin")
    ax.set_title(f"chosen binning ({len(edges) - 1} bins) over the fine histograms", fontsize=12)
    ax.legend(fontsize=9)
    return fig


def _binning_figures(
    study: Any, edges: Sequence[float] | None, fine: Mapping[str, Any] | None = None
) -> list[tuple[str, str, Any]]:
    from optuna.trial import TrialState

    plt = _style()
    out = []
    if fine is not None and edges is not None and len(edges) > 1:
        out.append(
            (
                "fine-binning",
                "Chosen binning over the fine histograms",
                _fine_figure(fine, edges),
            )
        )
    rows = [
        (int(t.user_attrs["n_bins"]), float(t.values[0]))
        for t in study.get_trials(deepcopy=False)
        if t.state == TrialState.COMPLETE and "n_bins" in t.user_attrs and t.values
    ]
    if rows:
        fig, ax = plt.subplots(figsize=(7, 5))
        ax.scatter([r[0] for r in rows], [r[1] for r in rows], s=12)
        ax.set_xlabel("number of bins")
        ax.set_ylabel("objective (Z0)")
        out.append(("z0-vs-bins", "Figure of merit against the number of bins", fig))
    if edges is not None and len(edges) > 1:
        fig, ax = plt.subplots(figsize=(7, 2.5))
        for e in edges:
            ax.axvline(float(e), color="k", lw=1)
        ax.set_xlim(float(edges[0]), float(edges[-1]))
        ax.set_yticks([])
        ax.set_xlabel("observable")
        ax.set_title(f"chosen binning: {len(edges) - 1} bins", fontsize=12)
        out.append(("binning", "Chosen binning (bin edges of the best trial)", fig))
    return out


def physics_sections(
    res: PhysicsResults, *, binning: list[tuple[str, str, Any]] | None = None
) -> list[str]:
    """HTML sections (embedded PNGs) of a physics page."""
    from sigtune.reports._render import figure_html, png_img

    def fig(kind: str, caption: str, figure: Any) -> str:
        return figure_html(kind, caption, png_img(figure, caption, size=None))

    dists = []
    for ch in res.channels:
        dists.append(fig("prefit", f"{ch.name}: pre-fit", _stack_figure(ch, "pre")))
        dists.append(fig("postfit", f"{ch.name}: post-fit", _stack_figure(ch, "post")))
    sections = [
        "<section id='distributions'><h2>Pre- and post-fit distributions</h2>"
        + "\n".join(dists)
        + "</section>"
    ]
    if res.pulls:
        sections.append(
            "<section id='pulls'><h2>Pulls and constraints</h2>"
            + fig("pulls", "Nuisance-parameter pulls", _pulls_figure(res.pulls))
            + "</section>"
        )
    if res.ranking is not None and res.ranking.entries:
        sections.append(
            "<section id='ranking'><h2>Impact ranking</h2>"
            + fig("ranking", "Pre- and post-fit impacts on the POI", _ranking_figure(res.ranking))
            + "</section>"
        )
    if res.cls is not None:
        sections.append(
            "<section id='cls'><h2>CLs scan</h2>"
            + fig("brazil", "CLs scan with the expected band", _brazil_figure(res.cls))
            + "</section>"
        )
    if res.scan is not None:
        sections.append(
            "<section id='scan'><h2>Profile likelihood</h2>"
            + fig("nll-scan", "Profile-likelihood scan", _scan_figure(res.scan))
            + "</section>"
        )
    if binning:
        sections.append(
            "<section id='binning'><h2>Binning study</h2>"
            + "\n".join(fig(k, c, f) for k, c, f in binning)
            + "</section>"
        )
    fit_rows = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{v:.6g}</td><td>{e:.3g}</td></tr>"
        for n, v, e in zip(res.par_names, res.bestfit, res.errors, strict=True)
    )
    sections.append(
        "<section id='fit'><h2>Best fit</h2><table><thead><tr><th>parameter</th><th>value</th>"
        f"<th>error</th></tr></thead><tbody>{fit_rows}</tbody></table></section>"
    )
    return sections


def write_physics_page(
    workspace: Any,
    output: str | Path,
    *,
    measurement: str | None = None,
    with_ranking: bool = True,
) -> Path:
    """Write the physics page of a workspace (``sigtune physics``)."""
    from sigtune.reports._render import write_page

    res = physics_results(workspace, measurement=measurement, with_ranking=with_ranking)
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    name = Path(workspace).name if isinstance(workspace, str | Path) else "workspace"
    write_page(out, f"Physics: {name}", physics_sections(res), plotly_js=None)
    return out


def physics_sections_for_study(study: Any, workspace_path: Path) -> list[str]:
    """Physics sections of a binning study: its best workspace plus Z0 against bins, and the
    chosen binning over the fine histograms when ``fine_histograms.npz`` sits next to it."""
    best_edges = None
    try:
        best = study.best_trial if len(study.directions) == 1 else None
        if best is not None and "edges" in best.user_attrs:
            best_edges = [float(e) for e in best.user_attrs["edges"]]
    except ValueError:
        best_edges = None
    spec = json.loads(workspace_path.read_text())
    edges = None
    if best_edges is not None and len(spec.get("channels", [])) == 1:
        edges = {spec["channels"][0]["name"]: best_edges}
    res = physics_results(spec, edges=edges, with_ranking=True)
    fine_path = workspace_path.parent / FINE_HISTOGRAMS
    fine = read_fine_histograms(fine_path) if fine_path.is_file() else None
    return physics_sections(res, binning=_binning_figures(study, best_edges, fine))


def _finite(x: float) -> bool:
    return math.isfinite(x)

"""Benchmark: sigtune.hep vs pyhf (numpy backend) vs nextstat on fits and discovery Z0.

Builds synthetic single-channel workspaces of the sizes NextStat advertises, (10 bins, 2 NPs),
(100, 20) and (1000, 100) -- every background sample also carries a staterror modifier -- plus the
ATLAS sbottom Region A likelihood (one signal patch from tests/data/histfactory), and prints one
table with the wall times of a maximum-likelihood fit and of the discovery significance Z0, the
sigtune/nextstat and sigtune/pyhf ratios and the three Z0 values. A second table times the batched
path: 64 same-structure (10, 2) models fitted in one call.

Usage::

    python bench/inference.py                  # all sizes, 5 repeats
    python bench/inference.py --quick          # fewer repeats
    python bench/inference.py --sizes 10x2,100x20 --pyhf-budget 30
    python bench/inference.py --real --quick     # real published likelihoods (see main_real)
    python bench/inference.py --real --quick --cases ttz3l,sbottom   # a subset of them

pyhf and nextstat are optional (``pip install sigtune[bench]``); a missing one prints "n/a". pyhf
gets a time budget per case and prints "timeout" when it does not finish.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

import sigtune.hep as hep
from sigtune.hep._infer import discovery, q0

ROOT = Path(__file__).resolve().parents[1]
SBOTTOM = ROOT / "tests" / "data" / "histfactory" / "sbottom" / "RegionA"
SBOTTOM_PATCH = "patch.sbottom_1300_205_60.json"


# ----------------------------------------------------------------------------------------------
# Workspaces
# ----------------------------------------------------------------------------------------------


def synthetic_workspace(n_bins: int, n_nps: int, seed: int = 0) -> dict[str, Any]:
    """A one-channel workspace: signal (normfactor ``mu``) and two backgrounds.

    Both backgrounds carry a ``staterror`` modifier (n_bins gamma parameters shared by the two);
    ``n_nps`` systematics alternate between normsys and histosys and are spread over the two
    backgrounds. Observed data are a Poisson draw of background + 0.5 x signal.
    """
    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 1.0, n_bins)
    bkg1 = 200.0 * np.exp(-3.0 * x) + 5.0
    bkg2 = 40.0 + 20.0 * x
    sig = 30.0 * np.exp(-0.5 * ((x - 0.7) / 0.1) ** 2) + 0.5
    samples: list[dict[str, Any]] = [
        {
            "name": "signal",
            "data": sig.tolist(),
            "modifiers": [{"name": "mu", "type": "normfactor", "data": None}],
        },
        {
            "name": "bkg1",
            "data": bkg1.tolist(),
            "modifiers": [
                {"name": "staterror_SR", "type": "staterror", "data": (0.05 * bkg1).tolist()}
            ],
        },
        {
            "name": "bkg2",
            "data": bkg2.tolist(),
            "modifiers": [
                {"name": "staterror_SR", "type": "staterror", "data": (0.04 * bkg2).tolist()}
            ],
        },
    ]
    for k in range(n_nps):
        target = samples[1 + k % 2]
        nom = np.asarray(target["data"])
        if k % 2 == 0:
            hi = 1.0 + rng.uniform(0.02, 0.10)
            lo = 1.0 - rng.uniform(0.02, 0.10)
            target["modifiers"].append(
                {"name": f"norm_{k}", "type": "normsys", "data": {"hi": hi, "lo": lo}}
            )
        else:
            slope = rng.uniform(-0.08, 0.08)
            shape = 1.0 + slope * (x - 0.5) + rng.uniform(0.01, 0.04)
            target["modifiers"].append(
                {
                    "name": f"shape_{k}",
                    "type": "histosys",
                    "data": {"hi_data": (nom * shape).tolist(), "lo_data": (nom / shape).tolist()},
                }
            )
    observed = rng.poisson(bkg1 + bkg2 + 0.5 * sig).astype(float)
    return {
        "channels": [{"name": "SR", "samples": samples}],
        "observations": [{"name": "SR", "data": observed.tolist()}],
        "measurements": [{"name": "meas", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }


def sbottom_workspace() -> dict[str, Any]:
    """ATLAS sbottom Region A background-only workspace with one signal patch applied."""
    import jsonpatch

    bkg = json.loads((SBOTTOM / "BkgOnly.json").read_text())
    patch = json.loads((SBOTTOM / SBOTTOM_PATCH).read_text())
    result: dict[str, Any] = jsonpatch.apply_patch(bkg, patch)
    return result


# ----------------------------------------------------------------------------------------------
# Timing helpers
# ----------------------------------------------------------------------------------------------


class _Timeout(Exception):
    pass


def _alarm(_signum: int, _frame: Any) -> None:
    raise _Timeout


def timed(func: Callable[[], Any], repeats: int, budget: float | None = None) -> tuple[float, Any]:
    """Median wall time (seconds) of ``func`` over ``repeats`` calls after one warm-up.

    With ``budget`` the whole measurement is interrupted after that many seconds (SIGALRM) and
    ``(inf, None)`` is returned.
    """
    if budget is not None:
        signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, budget)
    try:
        start = time.perf_counter()
        value = func()
        first = time.perf_counter() - start
        times = [first]
        n = repeats if first < 2.0 else 1
        for _ in range(n):
            start = time.perf_counter()
            value = func()
            times.append(time.perf_counter() - start)
        if n:
            times = times[1:]
        return statistics.median(times), value
    except _Timeout:
        return math.inf, None
    finally:
        if budget is not None:
            signal.setitimer(signal.ITIMER_REAL, 0)


# ----------------------------------------------------------------------------------------------
# Engines
# ----------------------------------------------------------------------------------------------


def bench_sigtune(spec: dict[str, Any], repeats: int, interp: tuple[str, str]) -> dict[str, Any]:
    ws = hep.Workspace(spec)
    model = ws.model(normsys_interp=interp[0], histosys_interp=interp[1])
    data = ws.data(model)
    t_fit, _ = timed(lambda: hep.fit(model, data), repeats)
    # observed Z0 only (free + conditional fit at mu = 0): the work nextstat's column does
    t_z0, q = timed(lambda: q0(model, data), repeats)
    # observed and expected (Asimov) Z0: the work pyhf's hypotest(q0, expected set) does
    t_disc, disc = timed(lambda: discovery(model, data), repeats)
    assert abs(math.sqrt(max(q, 0.0)) - disc.z0_obs) < 1e-6
    return {
        "fit": t_fit,
        "z0": t_z0,
        "disc": t_disc,
        "z0_value": disc.z0_obs,
        "z0_exp": disc.z0_exp,
    }


def bench_pyhf(
    spec: dict[str, Any], repeats: int, interp: tuple[str, str], budget: float
) -> dict[str, Any]:
    try:
        import pyhf
    except ImportError:
        return {"fit": None, "z0": None, "z0_value": None}
    import logging

    logging.getLogger("pyhf").setLevel(
        logging.CRITICAL + 1
    )  # it logs the whole data set on interrupt
    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer())
    deadline = time.perf_counter() + budget
    try:
        signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, budget)
        ws = pyhf.Workspace(spec)
        model = ws.model(
            modifier_settings={
                "normsys": {"interpcode": interp[0]},
                "histosys": {"interpcode": interp[1]},
            }
        )
        data = ws.data(model)
    except _Timeout:
        return {"fit": math.inf, "z0": math.inf, "z0_value": None}
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    left = max(deadline - time.perf_counter(), 1.0)
    t_fit, _ = timed(lambda: pyhf.infer.mle.fit(data, model), repeats, budget=left)
    if math.isinf(t_fit):
        return {"fit": math.inf, "z0": math.inf, "z0_value": None}
    left = max(deadline - time.perf_counter(), 1.0)

    def z0() -> float:
        p0 = pyhf.infer.hypotest(0.0, data, model, test_stat="q0", return_expected_set=True)[0]
        return float(-_ndtri(float(p0)))

    t_z0, z = timed(z0, repeats, budget=left)
    return {"fit": t_fit, "z0": t_z0, "z0_value": z}


def _ndtri(p: float) -> float:
    from scipy.special import ndtri

    return float(ndtri(p))


def bench_nextstat(spec: dict[str, Any], repeats: int) -> dict[str, Any] | None:
    try:
        import nextstat
    except ImportError:
        return None
    model = nextstat.HistFactoryModel.from_workspace(json.dumps(spec))
    t_fit, _ = timed(lambda: nextstat.fit(model), repeats)

    def z0() -> float:
        # Free fit + conditional fit at mu = 0: t_0 = 2 (nll(0) - nll_hat), Z0 = sqrt(t_0) if mu_hat > 0.
        res = nextstat.profile_scan(model, [0.0], return_curve=True)
        if res["mu_hat"] <= 0:
            return 0.0
        return math.sqrt(max(float(res["twice_delta_nll"][0]), 0.0))

    t_z0, z = timed(z0, repeats)
    return {"fit": t_fit, "z0": t_z0, "z0_value": z, "model": model}


def bench_batched(repeats: int, n_models: int = 64) -> dict[str, Any]:
    """Fit 64 same-structure (10, 2) models: sigtune in one call vs nextstat per fit."""
    specs = [synthetic_workspace(10, 2, seed=100 + i) for i in range(n_models)]
    out: dict[str, Any] = {"n": n_models}
    models = []
    datas = []
    for spec in specs:
        ws = hep.Workspace(spec)
        m = ws.model()
        models.append(m)
        datas.append(ws.data(m))
    stacked = hep.stack_models(models)
    batch = np.stack(datas)
    t, _ = timed(lambda: hep.fit_batch(stacked, batch), repeats)
    out["sigtune_total"] = t
    out["sigtune_mode"] = "stack_models + fit_batch"
    out["sigtune_per_fit"] = out["sigtune_total"] / n_models
    try:
        import nextstat
    except ImportError:
        out["nextstat_per_fit"] = None
        return out
    ns_models = [nextstat.HistFactoryModel.from_workspace(json.dumps(s)) for s in specs]
    t_single, _ = timed(lambda: [nextstat.fit(m) for m in ns_models], max(1, repeats // 2))
    out["nextstat_per_fit"] = t_single / n_models
    t_nsb, _ = timed(lambda: nextstat.fit_batch(ns_models), max(1, repeats // 2))
    out["nextstat_batch_per_fit"] = t_nsb / n_models
    return out


# ----------------------------------------------------------------------------------------------
# Real published likelihoods (--real)
# ----------------------------------------------------------------------------------------------

# the shared reference data next to the checkout (/work/shared for /work/main and /work/wt/<x>)
REAL = next(
    (
        p / "shared" / "data" / "histfactory" / "real"
        for p in (ROOT.parent, ROOT.parent.parent)
        if (p / "shared" / "data" / "histfactory" / "real").is_dir()
    ),
    ROOT.parent / "shared" / "data" / "histfactory" / "real",
)
SBOTTOM_DIR = ROOT / "tests" / "data" / "histfactory" / "sbottom"


def real_cases(real_dir: Path) -> list[tuple[str, dict[str, Any], tuple[str, str], list[float]]]:
    """(name, workspace, interpolation codes, POI bounds) of every likelihood in ``real_dir``
    (background-only workspaces with their ``patch.*.json`` signal points, and complete
    workspaces) and one sbottom point per region."""
    import jsonpatch

    out: list[tuple[str, dict[str, Any], tuple[str, str], list[float]]] = []
    files = sorted(real_dir.glob("*.json"))
    patches = [f for f in files if f.name.startswith("patch.")]
    for f in files:
        if f.name.startswith("patch."):
            continue
        spec = json.loads(f.read_text())
        if f.name.endswith("BkgOnly.json"):
            for p in patches:
                patched = jsonpatch.apply_patch(spec, json.loads(p.read_text()))
                name = p.stem.removeprefix("patch.").replace("p0", "").replace("_", " ", 1)
                out.append((name, patched, ("code4", "code4p"), [0.0, 10.0]))
        else:
            out.append((f.stem, spec, ("code4", "code4p"), [0.0, 10.0]))
    for region, point in (
        ("A", "1300_205_60"),
        ("B", "1400_550_60"),
        ("C", "1600_850_60"),
    ):
        bkg = json.loads((SBOTTOM_DIR / f"Region{region}" / "BkgOnly.json").read_text())
        patch = json.loads(
            (SBOTTOM_DIR / f"Region{region}" / f"patch.sbottom_{point}.json").read_text()
        )
        out.append(
            (
                f"sbottom {region} {point}",
                jsonpatch.apply_patch(bkg, patch),
                ("code4", "code4p"),
                [0.0, 10.0],
            )
        )
    return out


def _real_sigtune(
    spec: dict[str, Any], interp: tuple[str, str], poi_bounds: list[float], repeats: int
) -> dict[str, Any]:
    import warnings

    ws = hep.Workspace(spec)
    model = ws.model(normsys_interp=interp[0], histosys_interp=interp[1])
    data = ws.data(model)
    bounds = model.suggested_bounds()
    bounds[model.poi_index] = poi_bounds
    kw: dict[str, Any] = {"bounds": bounds}
    out: dict[str, Any] = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out["fit"] = timed(lambda: hep.fit(model, data, **kw), repeats)
        out["cls"] = timed(lambda: hep.hypotest(model, data, 1.0, **kw), repeats)
        out["z0"] = timed(lambda: q0(model, data, **kw), repeats)
        out["z0exp"] = timed(lambda: discovery(model, data, **kw), repeats)
        out["limit"] = timed(lambda: hep.upper_limit(model, data, **kw), max(1, repeats // 2))
    out["warnings"] = sorted({str(w.message)[:90] for w in caught})
    return out


def _real_nextstat(spec: dict[str, Any], repeats: int) -> dict[str, Any] | None:
    try:
        import nextstat
    except ImportError:
        return None
    model = nextstat.HistFactoryModel.from_workspace(json.dumps(spec))
    out: dict[str, Any] = {}
    out["fit"] = timed(lambda: nextstat.fit(model), repeats)
    out["cls"] = timed(lambda: float(nextstat.hypotest(1.0, model)), repeats)

    def z0() -> float:
        res = nextstat.profile_scan(model, [0.0], return_curve=True)
        if res["mu_hat"] <= 0:
            return 0.0
        return math.sqrt(max(float(res["twice_delta_nll"][0]), 0.0))

    out["z0"] = timed(z0, repeats)
    out["limit"] = timed(
        lambda: nextstat.upper_limit(model, method="root", hi=10.0), max(1, repeats // 2)
    )
    return out


def _real_pyhf(
    spec: dict[str, Any], interp: tuple[str, str], poi_bounds: list[float], budget: float
) -> dict[str, Any]:
    try:
        import pyhf
    except ImportError:
        return {}
    import logging

    logging.getLogger("pyhf").setLevel(logging.CRITICAL + 1)
    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer())
    ws = pyhf.Workspace(spec)
    model = ws.model(
        modifier_settings={
            "normsys": {"interpcode": interp[0]},
            "histosys": {"interpcode": interp[1]},
        }
    )
    data = ws.data(model)
    pb = [tuple(b) for b in model.config.suggested_bounds()]
    pb[model.config.poi_index] = tuple(poi_bounds)
    out: dict[str, Any] = {}
    out["fit"] = timed(
        lambda: float(pyhf.infer.mle.fit(data, model, par_bounds=pb, return_fitted_val=True)[1]),
        1,
        budget=budget,
    )
    out["cls"] = timed(
        lambda: float(pyhf.infer.hypotest(1.0, data, model, par_bounds=pb)), 1, budget=budget
    )
    return out


def main_real(args: argparse.Namespace) -> int:
    """The real-likelihood table and ``real worst ratio sigtune/nextstat``."""
    repeats = 1 if args.quick else 3
    print(
        f"| {'case':<22} | {'operation':<12} | {'sigtune s':>9} | {'nextstat s':>10} | "
        f"{'pyhf s':>8} | {'st/ns':>6} | {'value sigtune / nextstat / pyhf':<44} |"
    )
    print(f"|{'-' * 24}|{'-' * 14}|{'-' * 11}|{'-' * 12}|{'-' * 10}|{'-' * 8}|{'-' * 46}|")
    worst = 0.0
    worst_at = ""
    notes: list[str] = []
    cases = real_cases(Path(args.real_dir))
    if args.cases:
        wanted = [w.strip().lower() for w in args.cases.split(",") if w.strip()]
        cases = [c for c in cases if any(w in c[0].lower() for w in wanted)]
        if not cases:
            print(f"no real case matches --cases {args.cases!r}", file=sys.stderr)
            return 2
    for name, spec, interp, poi_bounds in cases:
        st = _real_sigtune(copy.deepcopy(spec), interp, poi_bounds, repeats)
        ns = _real_nextstat(copy.deepcopy(spec), repeats)
        ph = (
            {}
            if args.no_pyhf
            else _real_pyhf(copy.deepcopy(spec), interp, poi_bounds, args.pyhf_budget)
        )
        fit_v = st["fit"][1]
        rows: list[tuple[str, str, Any, Any, str]] = []
        nsv = ns or {}
        ns_fit = nsv.get("fit", (None, None))
        ph_fit = ph.get("fit", (None, None))
        rows.append(
            (
                "fit -2lnL",
                "fit",
                st["fit"][0],
                ns_fit[0],
                f"{fit_v.twice_nll:.4f} / "
                + (f"{ns_fit[1].twice_nll:.4f}" if ns_fit[1] is not None else "n/a")
                + " / "
                + (f"{ph_fit[1]:.4f}" if ph_fit[1] is not None else "n/a"),
            )
        )
        h = st["cls"][1]
        ns_cls = nsv.get("cls", (None, None))
        ph_cls = ph.get("cls", (None, None))
        rows.append(
            (
                "CLs mu=1",
                "cls",
                st["cls"][0],
                ns_cls[0],
                f"{h.cls_obs:.5g} / "
                + (f"{ns_cls[1]:.5g}" if ns_cls[1] is not None else "n/a")
                + " / "
                + (f"{ph_cls[1]:.5g}" if ph_cls[1] is not None else "n/a"),
            )
        )
        ns_z0 = nsv.get("z0", (None, None))
        rows.append(
            (
                "obs Z0",
                "z0",
                st["z0"][0],
                ns_z0[0],
                f"{math.sqrt(max(st['z0'][1], 0.0)):.4f} / "
                + (f"{ns_z0[1]:.4f}" if ns_z0[1] is not None else "n/a")
                + " / n/a",
            )
        )
        rows.append(
            ("obs+exp Z0", "z0exp", st["z0exp"][0], None, f"exp {st['z0exp'][1].z0_exp:.4f}")
        )
        lim = st["limit"][1]
        ns_lim = nsv.get("limit", (None, None))
        rows.append(
            (
                "upper limit",
                "limit",
                st["limit"][0],
                ns_lim[0],
                f"{lim.obs:.4f} (exp {lim.exp[2]:.4f}, {lim.n_fits} fits) / "
                + (
                    f"{ns_lim[1][0]:.4f} (exp {ns_lim[1][1][2]:.4f})"
                    if ns_lim[1] is not None
                    else "n/a"
                ),
            )
        )
        for label, key, t_st, t_ns, vals in rows:
            t_ph = ph.get(key, (None, None))[0] if key in ("fit", "cls") else None
            r = _ratio(t_st, t_ns)
            if r != "n/a" and t_st / t_ns > worst:
                worst, worst_at = t_st / t_ns, f"{name} {label}"
            print(
                f"| {name:<22} | {label:<12} | {t_st:>9.3g} | "
                f"{(f'{t_ns:.3g}' if t_ns is not None else 'n/a'):>10} | "
                f"{(_ms(t_ph) if t_ph is None or math.isinf(t_ph) else f'{t_ph:.3g}'):>8} | "
                f"{r:>6} | {vals:<44} |",
                flush=True,
            )
        for w in st["warnings"]:
            notes.append(f"{name}: {w}")
    if notes:
        print("\nsigtune warnings:")
        for n in notes:
            print("  " + n)
    print(f"\nreal worst ratio sigtune/nextstat = {worst:.3g} ({worst_at})")
    return 0


# ----------------------------------------------------------------------------------------------
# Table
# ----------------------------------------------------------------------------------------------


def _ms(t: float | None) -> str:
    if t is None:
        return "n/a"
    if math.isinf(t):
        return "timeout"
    return f"{1e3 * t:.3g}" if t < 1 else f"{1e3 * t:,.0f}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or math.isinf(b) or b == 0:
        return "n/a"
    return f"{a / b:.3g}"


def _z(z: float | None) -> str:
    return "n/a" if z is None else f"{z:.4f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer repeats (2 instead of 5)")
    parser.add_argument(
        "--sizes",
        default="10x2,100x20,1000x100,sbottom",
        help="comma-separated BINSxNPS and/or 'sbottom' (default: all)",
    )
    parser.add_argument("--pyhf-budget", type=float, default=60.0, help="seconds per case for pyhf")
    parser.add_argument("--no-pyhf", action="store_true", help="skip pyhf")
    parser.add_argument("--no-batch", action="store_true", help="skip the batched table")
    parser.add_argument(
        "--real",
        action="store_true",
        help="time fit, CLs, Z0 and the upper limit on the real likelihoods instead",
    )
    parser.add_argument(
        "--real-dir", default=str(REAL), help="folder of real likelihoods (default: shared data)"
    )
    parser.add_argument(
        "--cases",
        default="",
        help="with --real: comma-separated substrings of case names to run (e.g. ttz3l,sbottom)",
    )
    args = parser.parse_args(argv)
    if args.real:
        return main_real(args)
    repeats = 2 if args.quick else 5

    cases: list[tuple[str, dict[str, Any], tuple[str, str]]] = []
    for item in args.sizes.split(","):
        item = item.strip()
        if item == "sbottom":
            cases.append(("sbottom A", sbottom_workspace(), ("code4", "code4p")))
        elif item:
            b, n = (int(v) for v in item.lower().split("x"))
            cases.append((f"({b}, {n})", synthetic_workspace(b, n), ("code4", "code4p")))

    header = (
        f"| {'case':<11} | {'sigtune fit ms':>14} | {'pyhf fit ms':>11} | {'nextstat fit ms':>15} | "
        f"{'st/ns fit':>9} | {'st/pyhf fit':>11} | {'sigtune Z0 ms':>13} | {'nextstat Z0 ms':>14} | "
        f"{'st/ns Z0':>8} | {'sigtune Z0+exp ms':>17} | {'pyhf Z0+exp ms':>14} | {'st/pyhf Z0+exp':>14} | "
        f"{'Z0 sigtune / pyhf / nextstat':<30} |"
    )
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for name, spec, interp in cases:
        st = bench_sigtune(copy.deepcopy(spec), repeats, interp)
        ns = bench_nextstat(copy.deepcopy(spec), repeats)
        if args.no_pyhf:
            ph: dict[str, Any] = {"fit": None, "z0": None, "z0_value": None}
        else:
            ph = bench_pyhf(copy.deepcopy(spec), repeats, interp, args.pyhf_budget)
        ns_fit = ns["fit"] if ns else None
        ns_z0 = ns["z0"] if ns else None
        zs = f"{_z(st['z0_value'])} / {_z(ph['z0_value'])} / {_z(ns['z0_value'] if ns else None)}"
        print(
            f"| {name:<11} | {_ms(st['fit']):>14} | {_ms(ph['fit']):>11} | {_ms(ns_fit):>15} | "
            f"{_ratio(st['fit'], ns_fit):>9} | {_ratio(st['fit'], ph['fit']):>11} | {_ms(st['z0']):>13} | "
            f"{_ms(ns_z0):>14} | {_ratio(st['z0'], ns_z0):>8} | {_ms(st['disc']):>17} | "
            f"{_ms(ph['z0']):>14} | {_ratio(st['disc'], ph['z0']):>14} | {zs:<30} |",
            flush=True,
        )

    if not args.no_batch:
        b = bench_batched(repeats)
        print()
        print(
            "| batched (10, 2) x 64 | sigtune total ms | sigtune per fit ms | nextstat per fit ms | "
            "ratio | nextstat fit_batch per fit ms |"
        )
        print("|---|---|---|---|---|---|")
        print(
            f"| {b['sigtune_mode']} | {_ms(b['sigtune_total'])} | {_ms(b['sigtune_per_fit'])} | "
            f"{_ms(b.get('nextstat_per_fit'))} | {_ratio(b['sigtune_per_fit'], b.get('nextstat_per_fit'))} | "
            f"{_ms(b.get('nextstat_batch_per_fit'))} |"
        )
    print(
        "\nZ0 = observed significance, free + conditional fit at mu = 0 (sigtune q0, nextstat "
        "profile_scan); Z0+exp = observed and expected (Asimov) significance (sigtune discovery, "
        "pyhf hypotest(q0) with the expected set). Times: median wall-clock, single thread."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

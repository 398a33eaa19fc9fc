"""Benchmark: per-call overhead of small HistFactory fits, sigtune.hep vs nextstat.

For the synthetic (10 bins, 2 NPs) and (100, 20) workspaces of ``bench/inference.py`` prints one
table: a sigtune single fit (with uncertainties), a conditional fit at mu = 0 without
uncertainties (what the binning objective runs), building a ``Model`` from the channels, a batched
fit of 64 same-structure models (``stack_models`` + ``fit_batch``, per fit), and nextstat's single
fit and per-fit time of a loop over the 64 models. All times are the best of the repeats (robust
when the cores are shared), in milliseconds.

Usage::

    python bench/fit_overhead.py
    python bench/fit_overhead.py --baseline-src /path/to/old/src   # also time another checkout

With ``--baseline-src`` the sigtune columns are also measured in a subprocess importing sigtune
from that ``src`` directory (e.g. an export of the previous commit), so before/after come from one
run of this script.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inference import synthetic_workspace

SIZES = ((10, 2), (100, 20))


def _best_ms(func: Callable[[], Any], repeats: int) -> float:
    func()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        func()
        times.append(time.perf_counter() - t0)
    return 1e3 * min(times)


def _sigtune_case(nb: int, nn: int, reps: int) -> dict[str, float]:
    import sigtune.hep as hep

    spec = synthetic_workspace(nb, nn)
    ws = hep.Workspace(spec)
    model = ws.model()
    data = ws.data(model)
    row = {
        "fit": _best_ms(lambda: hep.fit(model, data), reps),
        "cond0": _best_ms(lambda: hep.fit(model, data, poi_value=0.0, uncertainties=False), reps),
        "build": _best_ms(lambda: hep.Model(spec["channels"], parameters=[], poi_name="mu"), reps),
    }
    models, datas = [], []
    for i in range(64):
        w = hep.Workspace(synthetic_workspace(nb, nn, seed=100 + i))
        m = w.model()
        models.append(m)
        datas.append(w.data(m))
    stacked = hep.stack_models(models)
    batch = np.stack(datas)
    row["batch64"] = _best_ms(lambda: hep.fit_batch(stacked, batch), max(reps // 10, 5)) / 64
    return row


def measure_sigtune(repeats: int) -> dict[str, dict[str, float]]:
    """Sigtune timings per size (imports whatever ``sigtune`` is on the path)."""
    return {
        f"{nb}x{nn}": _sigtune_case(nb, nn, repeats if nb <= 10 else max(repeats // 5, 5))
        for nb, nn in SIZES
    }


def _nextstat_case(nextstat: Any, nb: int, nn: int, reps: int) -> dict[str, float]:
    model = nextstat.HistFactoryModel.from_workspace(json.dumps(synthetic_workspace(nb, nn)))
    specs = [synthetic_workspace(nb, nn, seed=100 + i) for i in range(64)]
    models = [nextstat.HistFactoryModel.from_workspace(json.dumps(s)) for s in specs]
    return {
        "fit": _best_ms(lambda: nextstat.fit(model), reps),
        "loop64": _best_ms(lambda: [nextstat.fit(m) for m in models], max(reps // 20, 3)) / 64,
    }


def measure_nextstat(repeats: int) -> dict[str, dict[str, float]] | None:
    """Nextstat timings per size, or None when it is not installed."""
    try:
        import nextstat
    except ImportError:
        return None
    return {
        f"{nb}x{nn}": _nextstat_case(
            nextstat, nb, nn, repeats if nb <= 10 else max(repeats // 5, 5)
        )
        for nb, nn in SIZES
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--baseline-src", type=Path, default=None)
    parser.add_argument("--json-sigtune", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.json_sigtune:  # subprocess mode for --baseline-src
        print(json.dumps(measure_sigtune(args.repeats)))
        return 0
    base = None
    if args.baseline_src is not None:
        env = dict(os.environ, PYTHONPATH=str(args.baseline_src.resolve()))
        proc = subprocess.run(
            [sys.executable, __file__, "--json-sigtune", "--repeats", str(args.repeats)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        base = json.loads(proc.stdout)
    new = measure_sigtune(args.repeats)
    ns = measure_nextstat(args.repeats)
    cols = [("fit", "fit"), ("cond0", "cond fit mu=0"), ("build", "Model build"),
            ("batch64", "batch-64 per fit")]  # fmt: skip
    print("| case | quantity | sigtune ms | baseline ms | nextstat ms | sigtune / nextstat |")
    print("|---|---|---|---|---|---|")
    for case, row in new.items():
        for key, label in cols:
            old = f"{base[case][key]:.4g}" if base else "n/a"
            ref = None
            if ns is not None:
                ref = ns[case]["fit"] if key in ("fit", "cond0") else ns[case].get(
                    "loop64" if key == "batch64" else "", None
                )  # fmt: skip
            ratio = f"{row[key] / ref:.3g}" if ref else "n/a"
            ref_s = f"{ref:.4g}" if ref else "n/a"
            print(f"| {case} | {label} | {row[key]:.4g} | {old} | {ref_s} | {ratio} |")
    print(
        "\nnextstat: fit = nextstat.fit (free fit, with uncertainties); batch row = per-fit time of "
        "a loop of nextstat.fit over the 64 models. Best of the repeats, single thread."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

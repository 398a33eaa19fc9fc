"""HPO quality benchmark: sigtune ``auto`` against its peers on BBOB and model tuning.

Usage (one command per suite, resumable: finished (optimizer, problem, seed) runs are kept in
the JSON results file and skipped)::

    python bench/hpo_quality/run.py bbob [--quick]
    python bench/hpo_quality/run.py ml [--quick]
    python bench/hpo_quality/run.py report          # table from both results files

Score per (problem, seed): ``(best - best_any) / (median_random - best_any)`` where
``best_any`` is the best value any run found on that problem and ``median_random`` the median
over seeds of random search's best at the same budget (0 = best found, 1 = random search).
The last line printed is ``auto rank: bbob R1 of N, ml R2 of M; mean normalized bbob S1, ml S2``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
OPTIMIZERS = ("random", "tpe", "gp", "cmaes", "hyperopt", "ngopt", "auto")

_KEEP: list[Any] = []  # cocoex problems stay valid while referenced
Space = dict[str, Any]  # sigtune SearchSpace definition
Objective = Callable[[Mapping[str, Any]], float]


# ---------------------------------------------------------------------- problems


def bbob_problems(quick: bool) -> list[tuple[str, Space, Objective, int]]:
    import cocoex

    funcs = (1, 8, 15, 21) if quick else (1, 3, 6, 8, 10, 15, 17, 20, 21, 24)
    dims = (2,) if quick else (2, 5)
    insts = (1,) if quick else (1, 2)
    suite = cocoex.Suite(
        "bbob",
        "",
        f"function_indices:{','.join(map(str, funcs))} dimensions:{','.join(map(str, dims))} "
        f"instance_indices:{','.join(map(str, insts))}",
    )
    out = []
    _KEEP.append(suite)
    for index in range(len(suite)):
        problem = suite.get_problem(index)
        _KEEP.append(problem)
        d = problem.dimension
        space: Space = {f"x{i}": {"bounds": [-5.0, 5.0]} for i in range(d)}

        def f(p: Mapping[str, Any], problem: Any = problem, d: int = d) -> float:
            return float(problem(np.array([p[f"x{i}"] for i in range(d)])))

        out.append((problem.id, space, f, 20 * d))
    return out


def _cv(model: Any, data: tuple[Any, Any]) -> float:
    from sklearn.model_selection import KFold, cross_val_score

    x, y = data
    scores = cross_val_score(model, x, y, cv=KFold(3, shuffle=True, random_state=0))
    return 1.0 - float(np.mean(scores))  # error rate: minimise


def ml_problems(quick: bool) -> list[tuple[str, Space, Objective, int]]:
    from sklearn.datasets import load_breast_cancer, load_digits, load_wine
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC
    from sklearn.tree import DecisionTreeClassifier

    bc = load_breast_cancer(return_X_y=True)
    wine = load_wine(return_X_y=True)
    datasets = {"breast_cancer": bc, "wine": wine}
    if not quick:
        datasets["digits"] = load_digits(return_X_y=True)

    def tree(p: Mapping[str, Any]) -> Any:
        return DecisionTreeClassifier(
            max_depth=int(p["max_depth"]),
            min_samples_leaf=int(p["min_samples_leaf"]),
            ccp_alpha=float(p["ccp_alpha"]),
            criterion=p["criterion"],
            random_state=0,
        )

    def knn(p: Mapping[str, Any]) -> Any:
        return make_pipeline(
            StandardScaler(),
            KNeighborsClassifier(n_neighbors=int(p["n_neighbors"]), weights=p["weights"]),
        )

    def svm(p: Mapping[str, Any]) -> Any:
        return make_pipeline(StandardScaler(), SVC(C=float(p["svm_C"]), gamma=float(p["gamma"])))

    def logreg(p: Mapping[str, Any]) -> Any:
        return make_pipeline(StandardScaler(), LogisticRegression(C=float(p["lr_C"]), max_iter=300))

    families: dict[str, tuple[Space, Callable[[Mapping[str, Any]], Any]]] = {
        "tree": (
            {
                "max_depth": {"value_type": "int", "bounds": [1, 20]},
                "min_samples_leaf": {"value_type": "int", "bounds": [1, 50], "sampling": "log"},
                "ccp_alpha": {"bounds": [1e-5, 0.1], "sampling": "log"},
                "criterion": {"values": ["gini", "entropy"]},
            },
            tree,
        ),
        "knn": (
            {
                "n_neighbors": {"value_type": "int", "bounds": [1, 50]},
                "weights": {"values": ["uniform", "distance"]},
            },
            knn,
        ),
        "svm": (
            {
                "svm_C": {"bounds": [1e-3, 1e3], "sampling": "log"},
                "gamma": {"bounds": [1e-5, 1.0], "sampling": "log"},
            },
            svm,
        ),
        "logreg": ({"lr_C": {"bounds": [1e-4, 1e2], "sampling": "log"}}, logreg),
    }
    out: list[tuple[str, Space, Objective, int]] = []
    budget = 20 if quick else 48
    for dname, data in datasets.items():
        for fname, (space, build) in families.items():
            if quick and (dname, fname) not in {
                ("breast_cancer", "tree"),
                ("wine", "knn"),
                ("breast_cancer", "svm"),
                ("wine", "logreg"),
            }:
                continue

            def f(p: Mapping[str, Any], build: Any = build, data: Any = data) -> float:
                return _cv(build(p), data)

            out.append((f"{fname}/{dname}", space, f, budget))
        # mixed/conditional: choose the family, then its parameters
        mixed: Space = {"model": {"values": ["svm", "logreg", "knn"]}}
        for fam in ("svm", "logreg", "knn"):
            for k, v in families[fam][0].items():
                mixed[k] = {**v, "only": f"model == '{fam}'"}

        def g(p: Mapping[str, Any], data: Any = data) -> float:
            return _cv(families[p["model"]][1](p), data)

        out.append((f"mixed/{dname}", mixed, g, budget))
    return out


# ---------------------------------------------------------------------- optimizers


def run_optuna(name: str, space_def: Space, f: Objective, budget: int, seed: int) -> dict[str, Any]:
    import optuna

    from sigtune import SearchSpace
    from sigtune._samplers import AutoSampler, make_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = SearchSpace.from_dict(space_def)
    opts: dict[str, Any] = {}
    if name == "tpe":
        opts = {"multivariate": True}
    sampler = (
        make_sampler("auto", seed=seed, space=space, n_trials=budget)
        if name == "auto"
        else make_sampler(name, seed=seed, options=opts, space=space)
    )
    study = optuna.create_study(sampler=sampler)
    overhead: list[float] = []
    used: dict[str, int] = {}
    for _ in range(budget):
        t0 = time.perf_counter()
        trial = study.ask()
        params = space.suggest(trial)
        t1 = time.perf_counter()
        value = f(params)
        t2 = time.perf_counter()
        study.tell(trial, value)
        overhead.append((t1 - t0) + (time.perf_counter() - t2))
        if isinstance(sampler, AutoSampler):
            attrs = study.trials[-1].user_attrs
            key = str(attrs.get("auto:sampler", sampler.choice.name if sampler.choice else "?"))
            used[key] = used.get(key, 0) + 1
    return {"best": study.best_value, "overhead": statistics.median(overhead), "used": used}


def _flat(space_def: Space) -> dict[str, Any]:
    return {k: v for k, v in space_def.items() if isinstance(v, Mapping)}


def run_hyperopt(space_def: Space, f: Objective, budget: int, seed: int) -> dict[str, Any]:
    from hyperopt import STATUS_OK, Trials, fmin, hp, tpe

    space = {}
    for k, v in _flat(space_def).items():
        if "values" in v:
            space[k] = hp.choice(k, v["values"])
        else:
            lo, hi = v["bounds"]
            if v.get("sampling") == "log":
                space[k] = hp.loguniform(k, math.log(lo), math.log(hi))
            else:
                space[k] = hp.uniform(k, lo, hi)
    # conditional parameters are sampled flat; the objective reads only the active ones
    times: list[float] = []
    best = [math.inf]
    last = [time.perf_counter()]

    def obj(p: dict[str, Any]) -> dict[str, Any]:
        t = time.perf_counter()
        times.append(t - last[0])
        p = {
            k: (round(x) if _flat(space_def)[k].get("value_type") == "int" else x)
            for k, x in p.items()
        }
        val = f(p)
        best[0] = min(best[0], val)
        last[0] = time.perf_counter()
        return {"loss": val, "status": STATUS_OK}

    fmin(
        obj,
        space,
        algo=tpe.suggest,
        max_evals=budget,
        trials=Trials(),
        rstate=np.random.default_rng(seed),
        show_progressbar=False,
    )
    return {"best": best[0], "overhead": statistics.median(times)}


def run_ngopt(space_def: Space, f: Objective, budget: int, seed: int) -> dict[str, Any]:
    import nevergrad as ng

    params = {}
    for k, v in _flat(space_def).items():
        if "values" in v:
            params[k] = ng.p.Choice(v["values"])
        else:
            lo, hi = v["bounds"]
            p = (
                ng.p.Log(lower=lo, upper=hi)
                if v.get("sampling") == "log"
                else ng.p.Scalar(lower=lo, upper=hi)
            )
            if v.get("value_type") == "int":
                p = p.set_integer_casting()
            params[k] = p
    inst = ng.p.Dict(**params)
    inst.random_state = np.random.RandomState(seed)
    opt = ng.optimizers.NGOpt(parametrization=inst, budget=budget)
    times: list[float] = []
    best = math.inf
    for _ in range(budget):
        t0 = time.perf_counter()
        cand = opt.ask()
        t1 = time.perf_counter()
        val = f(cand.value)
        t2 = time.perf_counter()
        opt.tell(cand, val)
        times.append((t1 - t0) + (time.perf_counter() - t2))
        best = min(best, val)
    return {"best": best, "overhead": statistics.median(times)}


def run_one(opt: str, space: Space, f: Objective, budget: int, seed: int) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if opt == "hyperopt":
            return run_hyperopt(space, f, budget, seed)
        if opt == "ngopt":
            return run_ngopt(space, f, budget, seed)
        return run_optuna(opt, space, f, budget, seed)


# ---------------------------------------------------------------------- scoring


def summarize(results: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    by_problem: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_problem.setdefault(r["problem"], []).append(r)
    scores: dict[str, list[float]] = {}
    ranks: dict[str, list[float]] = {}
    overheads: dict[str, list[float]] = {}
    for rs in by_problem.values():
        best_any = min(r["best"] for r in rs)
        rand = [r["best"] for r in rs if r["optimizer"] == "random"]
        if not rand:
            continue
        ref = statistics.median(rand)
        span = ref - best_any
        for seed in sorted({r["seed"] for r in rs}):
            group = [r for r in rs if r["seed"] == seed]
            vals = sorted(r["best"] for r in group)
            for r in group:
                s = (r["best"] - best_any) / span if span > 0 else 0.0
                scores.setdefault(r["optimizer"], []).append(s)
                # average rank among the optimizers of this (problem, seed), ties shared
                lo = vals.index(r["best"])
                hi = len(vals) - 1 - vals[::-1].index(r["best"])
                ranks.setdefault(r["optimizer"], []).append((lo + hi) / 2 + 1)
                overheads.setdefault(r["optimizer"], []).append(r["overhead"])
    return {
        o: {
            "score": statistics.fmean(scores[o]),
            "rank": statistics.fmean(ranks[o]),
            "overhead": statistics.median(overheads[o]),
            "n": len(scores[o]),
        }
        for o in scores
    }


def table(suite: str, summary: Mapping[str, Mapping[str, float]]) -> str:
    lines = [
        f"suite {suite}",
        f"{'optimizer':<10} {'mean normalized':>16} {'avg rank':>9} {'overhead/ask [s]':>17} {'runs':>5}",
    ]
    for o, s in sorted(summary.items(), key=lambda kv: (kv[1]["score"], kv[1]["rank"])):
        lines.append(
            f"{o:<10} {s['score']:>16.3f} {s['rank']:>9.2f} {s['overhead']:>17.4f} {s['n']:>5d}"
        )
    return "\n".join(lines)


def position(summary: Mapping[str, Mapping[str, float]]) -> tuple[int, int, float]:
    order = sorted(summary, key=lambda o: (summary[o]["score"], summary[o]["rank"]))
    return order.index("auto") + 1, len(order), summary["auto"]["score"]


def results_path(suite: str, quick: bool) -> Path:
    return HERE / f"results_{suite}{'_quick' if quick else ''}.json"


def load(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text()) if path.exists() else []


def run_suite(suite: str, quick: bool, seeds: int, optimizers: list[str]) -> None:
    path = results_path(suite, quick)
    results = load(path)
    done = {(r["optimizer"], r["problem"], r["seed"]) for r in results}
    problems = bbob_problems(quick) if suite == "bbob" else ml_problems(quick)
    for pid, space, f, budget in problems:
        for seed in range(seeds):
            for opt in optimizers:
                if (opt, pid, seed) in done:
                    continue
                t0 = time.perf_counter()
                r = run_one(opt, space, f, budget, seed)
                r.update(
                    optimizer=opt,
                    problem=pid,
                    seed=seed,
                    budget=budget,
                    wall=time.perf_counter() - t0,
                )
                results.append(r)
                path.write_text(json.dumps(results, indent=1))  # resumable
                print(
                    f"{pid:<28} seed {seed} {opt:<9} best {r['best']:.6g} ({r['wall']:.1f} s)",
                    flush=True,
                )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("suite", choices=("bbob", "ml", "report"))
    ap.add_argument("--quick", action="store_true", help="small configuration (minutes)")
    ap.add_argument("--seeds", type=int, default=None, help="seeds per problem (2 quick, 5 full)")
    ap.add_argument("--optimizers", default=",".join(OPTIMIZERS))
    args = ap.parse_args(argv)
    seeds = args.seeds or (2 if args.quick else 5)
    if args.suite != "report":
        run_suite(args.suite, args.quick, seeds, args.optimizers.split(","))
    out = {}
    for suite in ("bbob", "ml"):
        results = load(results_path(suite, args.quick))
        if results:
            out[suite] = summarize(results)
            print(table(suite + (" (quick)" if args.quick else ""), out[suite]))
    parts = {s: position(out[s]) if s in out and "auto" in out[s] else None for s in ("bbob", "ml")}
    if all(parts.values()):
        (r1, n1, s1), (r2, n2, s2) = parts["bbob"], parts["ml"]  # type: ignore[misc]
        print(
            f"auto rank: bbob {r1} of {n1}, ml {r2} of {n2}; mean normalized bbob {s1:.3f}, ml {s2:.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""HPO quality benchmark: sigtune ``auto`` against its peers on BBOB and model tuning.

Usage (one command per suite, resumable: finished (optimizer, problem, seed) runs are kept in
the JSON results file and skipped)::

    python bench/hpo_quality/run.py bbob [--quick | --medium]
    python bench/hpo_quality/run.py ml [--quick | --medium]
    python bench/hpo_quality/run.py moc [--quick]      # two-objective and constrained
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
#: peers of the multi-objective / constrained suite (samplers that handle them)
MOC_OPTIMIZERS = ("random", "tpe", "gp", "nsga2", "auto")
#: optional peers: reported with the others when their results are in the file
OPTIONAL = ("hebo",)

_KEEP: list[Any] = []  # cocoex problems stay valid while referenced
Space = dict[str, Any]  # sigtune SearchSpace definition
Objective = Callable[[Mapping[str, Any]], Any]
#: per problem: id, space, objective, budget, kind ("single", "mo": two objectives scored by
#: hypervolume up to the reference point, "constrained": ``f`` returns (value, constraints),
#: feasible when every constraint is <= 0), reference point (mo)
Problem = tuple[str, Space, Objective, int, str, Any]


# ---------------------------------------------------------------------- problems


def bbob_problems(config: str) -> list[Problem]:
    import cocoex

    quick = config == "quick"
    funcs = (1, 8, 15, 21) if quick else (1, 3, 6, 8, 10, 15, 17, 20, 21, 24)
    dims = (2,) if quick else (2, 5)
    insts = (1, 2) if config == "full" else (1,)
    if config.startswith("instance"):  # e.g. "instance3": the medium list on instance 3
        insts = (int(config.removeprefix("instance")),)
    suite = cocoex.Suite(
        "bbob",
        "",
        f"function_indices:{','.join(map(str, funcs))} dimensions:{','.join(map(str, dims))} "
        f"instance_indices:{','.join(map(str, insts))}",
    )
    out: list[Problem] = []
    _KEEP.append(suite)
    for index in range(len(suite)):
        problem = suite.get_problem(index)
        _KEEP.append(problem)
        d = problem.dimension
        space: Space = {f"x{i}": {"bounds": [-5.0, 5.0]} for i in range(d)}

        def f(p: Mapping[str, Any], problem: Any = problem, d: int = d) -> float:
            return float(problem(np.array([p[f"x{i}"] for i in range(d)])))

        out.append((problem.id, space, f, 20 * d, "single", None))
    return out


def moc_problems(config: str) -> list[Problem]:
    """Two-objective (bbob-biobj) and constrained (bbob-constrained) COCO problems, d = 2."""
    import cocoex

    out: list[Problem] = []
    quick = config == "quick"
    biobj = (1, 2, 11, 21) if not quick else (1, 11)
    suite = cocoex.Suite(
        "bbob-biobj",
        "",
        f"function_indices:{','.join(map(str, biobj))} dimensions:2 instance_indices:1",
    )
    _KEEP.append(suite)
    for index in range(len(suite)):
        problem = suite.get_problem(index)
        _KEEP.append(problem)
        space: Space = {f"x{i}": {"bounds": [-5.0, 5.0]} for i in range(problem.dimension)}

        def f(p: Mapping[str, Any], problem: Any = problem) -> tuple[float, float]:
            v = problem(np.array([p[f"x{i}"] for i in range(problem.dimension)]))
            return float(v[0]), float(v[1])

        ref = [float(x) for x in problem.largest_fvalues_of_interest]
        out.append((problem.id, space, f, 60, "mo", ref))
    # bbob-constrained: 9 functions x 6 numbers of constraints; index 6*k+j: function k+1
    cons = (1, 13, 31, 44) if not quick else (1, 31)
    suite = cocoex.Suite(
        "bbob-constrained",
        "",
        f"function_indices:{','.join(map(str, cons))} dimensions:2 instance_indices:1",
    )
    _KEEP.append(suite)
    for index in range(len(suite)):
        problem = suite.get_problem(index)
        _KEEP.append(problem)
        space = {f"x{i}": {"bounds": [-5.0, 5.0]} for i in range(problem.dimension)}

        def g(p: Mapping[str, Any], problem: Any = problem) -> tuple[float, list[float]]:
            x = np.array([p[f"x{i}"] for i in range(problem.dimension)])
            return float(problem(x)), [float(c) for c in problem.constraint(x)]

        out.append((problem.id, space, g, 40, "constrained", None))
    return out


def _cv(model: Any, data: tuple[Any, Any]) -> float:
    from sklearn.model_selection import KFold, cross_val_score

    x, y = data
    scores = cross_val_score(model, x, y, cv=KFold(3, shuffle=True, random_state=0))
    return 1.0 - float(np.mean(scores))  # error rate: minimise


def ml_problems(config: str) -> list[Problem]:
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
    quick = config == "quick"
    if config == "full":
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
    out: list[Problem] = []
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

            out.append((f"{fname}/{dname}", space, f, budget, "single", None))
        # mixed/conditional: choose the family, then its parameters
        mixed: Space = {"model": {"values": ["svm", "logreg", "knn"]}}
        for fam in ("svm", "logreg", "knn"):
            for k, v in families[fam][0].items():
                mixed[k] = {**v, "only": f"model == '{fam}'"}

        def g(p: Mapping[str, Any], data: Any = data) -> float:
            return _cv(families[p["model"]][1](p), data)

        out.append((f"mixed/{dname}", mixed, g, budget, "single", None))
    return out


# ---------------------------------------------------------------------- optimizers


#: acquisition settings of the GP measured as ``auto-<variant>`` (see GP_ACQUISITION_KNOBS)
MO_ACQUISITION: dict[str, dict[str, int]] = {
    "acqdef": {"n_preliminary_samples": 2048, "n_local_search": 10, "n_qmc_samples_ehvi": 128},
    "acqmid": {"n_preliminary_samples": 512, "n_local_search": 5, "n_qmc_samples_ehvi": 64},
    "acqlean": {"n_preliminary_samples": 256, "n_local_search": 4, "n_qmc_samples_ehvi": 32},
    "acqmin": {"n_preliminary_samples": 128, "n_local_search": 2, "n_qmc_samples_ehvi": 16},
}


def _variant_policy(variant: str) -> Callable[[Any], Any]:
    """Experimental ``auto`` policies (``auto-<variant>``) measured against the adopted one."""
    from dataclasses import replace

    from sigtune._samplers import AutoChoice, auto_policy

    def policy(ctx: Any) -> Any:
        c = auto_policy(ctx)
        budget = ctx.n_trials or 0
        if variant == "gpcat" and ctx.categorical and not ctx.conditional and c.name == "tpe":
            return AutoChoice("gp", {}, "categorical parameters, no conditions (variant)")
        if c.name != "gp":
            return c
        if variant in MO_ACQUISITION:  # lighter / default acquisition optimisation of the GP
            return replace(c, options={**c.options, "acquisition": MO_ACQUISITION[variant]})
        if variant == "motpe":  # GP (EHVI) for the first half, then multivariate TPE
            then = AutoChoice("tpe", {"multivariate": True}, "TPE after the GP (variant)")
            return replace(c, then=then, switch_after=max(20, budget // 2))
        after = max(20, budget // 2)
        if variant == "ws":  # warm-started CMA-ES (from the GP trials) for the second half
            then = AutoChoice("cmaes", {"source_trials": "completed"}, "ws-cma")
            return replace(c, then=then, switch_after=after)
        if variant == "x0":  # CMA-ES around the incumbent, small step, for the second half
            then = AutoChoice(
                "cmaes", {"x0": "incumbent", "sigma0": 0.05, "restart_strategy": "ipop"}, "cma"
            )
            return replace(c, then=then, switch_after=after)
        if variant in ("ws75", "ws25"):  # warm-started CMA-ES for the last 25 % / 75 %
            then = AutoChoice("cmaes", {"source_trials": "completed"}, "ws-cma")
            frac = 0.75 if variant == "ws75" else 0.25
            return replace(c, then=then, switch_after=max(20, int(budget * frac)))
        if variant == "wsstall":  # warm-started CMA-ES once GP stops improving
            then = AutoChoice("cmaes", {"source_trials": "completed"}, "ws-cma")
            k = max(8, 2 * ctx.dimension)
            return replace(c, then=then, switch_after=max(20, budget // 4), switch_patience=k)
        if variant in ("x075", "x0s1"):  # CMA-ES around the incumbent: last 25 % / sigma 0.1
            sigma = 0.1 if variant == "x0s1" else 0.05
            then = AutoChoice("cmaes", {"x0": "incumbent", "sigma0": sigma}, "cma")
            frac = 0.75 if variant == "x075" else 0.5
            return replace(c, then=then, switch_after=max(20, int(budget * frac)))
        if variant == "stall":  # CMA-ES around the incumbent once GP stops improving
            then = AutoChoice(
                "cmaes", {"x0": "incumbent", "sigma0": 0.05, "restart_strategy": "ipop"}, "cma"
            )
            k = max(8, 2 * ctx.dimension)
            return replace(c, then=then, switch_after=max(20, budget // 4), switch_patience=k)
        if variant == "det":
            return replace(c, options={**c.options, "deterministic_objective": True})
        return c

    return policy


def _constraints(trial: Any) -> Any:
    return trial.user_attrs["constraints"]


def run_optuna(
    name: str, space_def: Space, f: Objective, budget: int, seed: int, kind: str, ref: Any
) -> dict[str, Any]:
    import optuna

    from sigtune import SearchSpace
    from sigtune._samplers import AutoSampler, make_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = SearchSpace.from_dict(space_def)
    n_obj = 2 if kind == "mo" else 1
    opts: dict[str, Any] = {}
    if name == "tpe":
        opts = {"multivariate": True}
    if kind == "constrained" and name != "random":
        opts["constraints_func"] = _constraints
    if name.startswith("auto"):
        if name != "auto":
            opts["policy"] = _variant_policy(name.split("-", 1)[1])
        sampler = make_sampler(
            "auto", seed=seed, space=space, n_trials=budget, n_objectives=n_obj, options=opts
        )
    else:
        sampler = make_sampler(name, seed=seed, options=opts, space=space)
    study = optuna.create_study(sampler=sampler, directions=["minimize"] * n_obj)
    overhead: list[float] = []
    used: dict[str, int] = {}
    best = math.inf
    points: list[tuple[float, float]] = []
    for _ in range(budget):
        t0 = time.perf_counter()
        trial = study.ask()
        params = space.suggest(trial)
        t1 = time.perf_counter()
        value = f(params)
        t2 = time.perf_counter()
        if kind == "constrained":
            value, cons = value
            trial.set_user_attr("constraints", cons)
            if all(c <= 0 for c in cons):
                best = min(best, value)
        elif kind == "mo":
            points.append(value)
        else:
            best = min(best, value)
        study.tell(trial, value)
        overhead.append((t1 - t0) + (time.perf_counter() - t2))
        if isinstance(sampler, AutoSampler):
            key = str(study.trials[-1].user_attrs.get("auto:sampler", "?"))
            used[key] = used.get(key, 0) + 1
    if kind == "mo":
        best = -_hypervolume(points, ref)
    return {"best": best, "overhead": statistics.median(overhead), "used": used}


def _hypervolume(points: list[tuple[float, float]], ref: Any) -> float:
    """Two-objective hypervolume (minimisation) dominated by ``points`` up to ``ref``."""
    pts = sorted((p for p in points if p[0] < ref[0] and p[1] < ref[1]), key=lambda p: p[0])
    hv, y_best = 0.0, float(ref[1])
    for x, y in pts:
        if y < y_best:
            hv += (ref[0] - x) * (y_best - y)
            y_best = y
    return hv


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


def run_hebo(space_def: Space, f: Objective, budget: int, seed: int) -> dict[str, Any]:
    from hebo.design_space.design_space import DesignSpace
    from hebo.optimizers.hebo import HEBO

    flat = _flat(space_def)
    spec = []
    for k, v in flat.items():
        if "values" in v:
            spec.append({"name": k, "type": "cat", "categories": list(v["values"])})
        else:
            lo, hi = v["bounds"]
            typ = "num"
            if v.get("value_type") == "int":
                typ = "int"
            elif v.get("sampling") == "log":
                typ = "pow"
            spec.append({"name": k, "type": typ, "lb": lo, "ub": hi})
    np.random.seed(seed)  # noqa: NPY002  (HEBO draws from the global generator)
    import torch

    torch.manual_seed(seed)
    opt = HEBO(DesignSpace().parse(spec), scramble_seed=seed)
    times: list[float] = []
    best = math.inf
    for _ in range(budget):
        t0 = time.perf_counter()
        rec = opt.suggest(n_suggestions=1)
        t1 = time.perf_counter()
        p = {
            k: (int(x) if flat[k].get("value_type") == "int" else x) for k, x in rec.iloc[0].items()
        }
        val = f(p)
        t2 = time.perf_counter()
        opt.observe(rec, np.array([[val]]))
        times.append((t1 - t0) + (time.perf_counter() - t2))
        best = min(best, val)

    return {"best": best, "overhead": statistics.median(times)}


def run_one(
    opt: str, space: Space, f: Objective, budget: int, seed: int, kind: str, ref: Any
) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if opt == "hyperopt":
            return run_hyperopt(space, f, budget, seed)
        if opt == "ngopt":
            return run_ngopt(space, f, budget, seed)
        if opt == "hebo":
            return run_hebo(space, f, budget, seed)
        return run_optuna(opt, space, f, budget, seed, kind, ref)


# ---------------------------------------------------------------------- scoring


def summarize(results: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    by_problem: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_problem.setdefault(r["problem"], []).append(r)
    scores: dict[str, list[float]] = {}
    ranks: dict[str, list[float]] = {}
    overheads: dict[str, list[float]] = {}
    for rs in by_problem.values():
        finite = [r["best"] for r in rs if math.isfinite(r["best"])]
        worst = max(finite) if finite else 0.0
        # no feasible point found (constrained): scored as the worst best of the problem
        rs = [{**r, "best": r["best"] if math.isfinite(r["best"]) else worst} for r in rs]
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
    """``auto``'s rank by (mean normalized score, average rank); exact ties share the rank."""

    def key(o: str) -> tuple[float, float]:
        return summary[o]["score"], summary[o]["rank"]

    ahead = sum(1 for o in summary if key(o) < key("auto"))
    return ahead + 1, len(summary), summary["auto"]["score"]


def results_path(suite: str, config: str, tag: str | None = None) -> Path:
    stem = f"results_{suite}{'' if config == 'full' else '_' + config}"
    return HERE / f"{stem}{'_' + tag if tag else ''}.json"


def load(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text()) if path.exists() else []


def overhead(
    dims: list[int], budgets: list[int], n_objectives: int = 1, kind: str = "numeric"
) -> None:
    """Median sampler time per ask (ask + suggest + tell) of ``auto`` on a synthetic problem.

    Printed: the median CPU time of the process per ask (what one unloaded core would take; it
    does not grow when other processes share the machine), the median over the last 10 asks,
    and the median wall-clock time (an upper bound on a loaded machine).

    ``kind``: ``numeric`` (d floats), ``constrained`` (the same with one constraint, 1
    objective), ``categorical`` (d - 1 floats and a choice), ``conditional`` (a choice of two
    families with their own floats), ``large`` (numeric with a budget of 300, timed over the
    first ``n`` asks: the CMA-ES branch). Single thread: torch and BLAS are limited to one
    thread here; pin the process to one core with ``taskset -c 1`` for the figures in the docs.
    """
    import optuna
    import torch

    from sigtune import SearchSpace
    from sigtune._samplers import make_sampler

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for d in dims:
        space_def: dict[str, Any] = {f"x{i}": {"bounds": [-5.0, 5.0]} for i in range(d)}
        if kind == "categorical":
            space_def = {f"x{i}": {"bounds": [-5.0, 5.0]} for i in range(d - 1)}
            space_def["c"] = {"values": ["a", "b", "c"]}
        elif kind == "conditional":
            space_def = {"family": {"values": ["a", "b"]}}
            for i in range(d):
                fam = "ab"[i % 2]
                space_def[f"x{i}"] = {"bounds": [-5.0, 5.0], "only": f"family == '{fam}'"}
        space = SearchSpace.from_dict(space_def)
        for n in budgets:
            opts: dict[str, Any] = {}
            if kind == "constrained":
                opts["constraints_func"] = _constraints
            sampler = make_sampler(
                "auto",
                seed=0,
                space=space,
                n_trials=300 if kind == "large" else n,
                n_objectives=n_objectives,
                options=opts,
            )
            study = optuna.create_study(sampler=sampler, directions=["minimize"] * n_objectives)
            times: list[float] = []
            cpu: list[float] = []
            for _ in range(n):
                t0, c0 = time.perf_counter(), time.process_time()
                trial = study.ask()
                p = space.suggest(trial)
                t1, c1 = time.perf_counter(), time.process_time()
                x = np.array(
                    [float(v) for k, v in p.items() if k.startswith("x") and v is not None]
                )
                f1 = float(np.sum(x**2) + np.sum(np.sin(3 * x))) + (p.get("c") == "b")
                value: Any = f1 if n_objectives == 1 else (f1, float(np.sum((x - 1) ** 2)))
                if kind == "constrained":
                    trial.set_user_attr("constraints", [float(x[0] - 1.0)])
                t2, c2 = time.perf_counter(), time.process_time()
                study.tell(trial, value)
                times.append((t1 - t0) + (time.perf_counter() - t2))
                cpu.append((c1 - c0) + (time.process_time() - c2))
            used = ">".join(
                dict.fromkeys(str(t.user_attrs.get("auto:sampler")) for t in study.trials)
            )
            print(
                f"{kind:<11} {n_objectives:>3} {d:>4} {n:>7} {used:<12} "
                f"{statistics.median(cpu):>12.4f} {statistics.median(cpu[-10:]):>12.4f} "
                f"{statistics.median(times):>12.4f}",
                flush=True,
            )


def problems_of(suite: str, config: str) -> list[Problem]:
    if suite == "bbob":
        return bbob_problems(config)
    if suite == "ml":
        return ml_problems(config)
    return moc_problems(config)


def run_suite(
    suite: str,
    config: str,
    seeds: int,
    optimizers: list[str],
    dims: str | None = None,
    tag: str | None = None,
) -> None:
    path = results_path(suite, config, tag)
    results = load(path)
    done = {(r["optimizer"], r["problem"], r["seed"]) for r in results}
    for pid, space, f, budget, kind, ref in problems_of(suite, config):
        if (
            dims
            and suite == "bbob"
            and not any(pid.endswith(f"_d{int(d):02d}") for d in dims.split(","))
        ):
            continue
        for seed in range(seeds):
            for opt in optimizers:
                if (opt, pid, seed) in done:
                    continue
                t0 = time.perf_counter()
                r = run_one(opt, space, f, budget, seed, kind, ref)
                r.update(
                    optimizer=opt,
                    problem=pid,
                    kind=kind,
                    seed=seed,
                    budget=budget,
                    wall=time.perf_counter() - t0,
                )
                results.append(r)
                path.write_text(json.dumps(results, indent=1))  # resumable
                print(
                    f"{pid:<28} seed {seed} {opt:<11} best {r['best']:.6g} ({r['wall']:.1f} s)",
                    flush=True,
                )


def peers(suite: str, results: list[dict[str, Any]], chosen: list[str] | None) -> list[str]:
    """The optimizers a table compares: ``chosen``, else the suite's peers (+ optional ones run)."""
    if chosen:
        return chosen
    if suite == "moc":
        return list(MOC_OPTIMIZERS)
    ran = {r["optimizer"] for r in results}
    return [*OPTIMIZERS, *(o for o in OPTIONAL if o in ran)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("suite", choices=("bbob", "ml", "moc", "report", "overhead"))
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small configuration (minutes)")
    size.add_argument(
        "--medium", action="store_true", help="full problem list, instance 1, no digits"
    )
    ap.add_argument(
        "--seeds", type=int, default=None, help="seeds per problem (2 quick, 3 medium, 5 full)"
    )
    ap.add_argument(
        "--optimizers",
        default=None,
        help="comma-separated (default: the suite's peers; auto-<variant> for policy experiments)",
    )
    ap.add_argument("--dims", default=None, help="bbob: only these dimensions, e.g. 2")
    ap.add_argument(
        "--instance",
        type=int,
        default=None,
        help="bbob: the medium problem list on this instance (results_bbob_instanceN.json)",
    )
    ap.add_argument(
        "--tag",
        default=None,
        help="results file results_<suite>_<config>_<tag>.json (e.g. a check on more seeds)",
    )
    args = ap.parse_args(argv)
    if args.suite == "overhead":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            print(
                f"{'problem':<11} {'obj':>3} {'dim':>4} {'trials':>7} {'auto uses':<12} "
                f"{'cpu s/ask':>12} {'last 10 cpu':>12} {'wall s/ask':>12}"
            )
            dims = [int(d) for d in (args.dims or "2,5,10").split(",")]
            overhead(dims, [48, 200])
            overhead([2, 5], [48, 100, 200], n_objectives=2)
            overhead([2, 5], [48, 200], kind="constrained")
            overhead([5], [48, 200], kind="categorical")
            overhead([6], [48, 200], kind="conditional")
            overhead([5], [200], kind="large")
        return 0
    config = "quick" if args.quick else "medium" if args.medium else "full"
    if args.instance is not None:
        config = f"instance{args.instance}"
    seeds = args.seeds or {"quick": 2, "full": 5}.get(config, 3)
    chosen = args.optimizers.split(",") if args.optimizers else None
    if args.suite != "report":
        default = MOC_OPTIMIZERS if args.suite == "moc" else OPTIMIZERS
        run_suite(args.suite, config, seeds, chosen or list(default), args.dims, args.tag)
    out = {}
    for suite in ("bbob", "ml", "moc"):
        results = load(results_path(suite, config, args.tag))
        if not results:
            continue
        names = set(peers(suite, results, chosen))
        results = [r for r in results if r["optimizer"] in names]
        label = suite + ("" if config == "full" else f" ({config})")
        if suite == "moc":
            for kind, title in (
                ("mo", "two objectives, -hypervolume"),
                ("constrained", "constrained"),
            ):
                part = [r for r in results if r.get("kind") == kind]
                if part:
                    print(table(f"{label}: {title}", summarize(part)))
            continue
        out[suite] = summarize(results)
        print(table(label, out[suite]))
    parts = {s: position(out[s]) if s in out and "auto" in out[s] else None for s in ("bbob", "ml")}
    if all(parts.values()):
        (r1, n1, s1), (r2, n2, s2) = parts["bbob"], parts["ml"]  # type: ignore[misc]
        print(
            f"auto rank: bbob {r1} of {n1}, ml {r2} of {n2}; mean normalized bbob {s1:.3f}, ml {s2:.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

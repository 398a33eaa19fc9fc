"""Pruning benchmark: epochs spent and best validation loss of an MLP search, with and without pruners.

An MLP on a generated HEP-like sample (5000 events, 4 informative / 2 correlated / 4 noise
variables) is tuned with 40 trials of a seeded random sampler, so every pruner sees exactly the
same hyperparameters in the same order; only the pruning differs. Every trial may run
``max_epochs`` epochs (no early stopping), reporting its validation loss after each epoch.

    python bench/pruning.py            # prints the Markdown table quoted in docs/ml-pipeline.md
    python bench/pruning.py --trials 20 --epochs 15   # quicker

Columns: total epochs trained, the ratio to the unpruned search, the best validation loss and its
relative difference to the unpruned best, and the number of pruned trials.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import optuna

import sigtune
from sigtune.pipelines.ml._cv import TrainableSpec
from sigtune.pipelines.ml._generate import make_hep_dataset
from sigtune.pipelines.ml._pipeline import TrialObjective
from sigtune.pipelines.ml._splits import split_random

PRUNERS: dict[str, tuple[str, dict[str, Any]]] = {
    "none": ("none", {}),
    "median": ("median", {"n_startup_trials": 5, "n_warmup_steps": 2}),
    "ASHA": ("successive_halving", {"min_resource": 1, "reduction_factor": 3}),
    "Hyperband": ("hyperband", {"min_resource": 1, "reduction_factor": 3}),
}


def space(max_epochs: int) -> dict[str, Any]:
    return {
        "num_layers": {"type": "range", "value_type": "int", "bounds": [1, 3]},
        "units": {"type": "range", "value_type": "int", "bounds": [4, 64]},
        "activation": {"type": "choice", "values": ["relu", "tanh", "sigmoid"]},
        "learning_rate": {"type": "range", "bounds": [1e-4, 3e-2], "sampling": "log"},
        "dropout": {"type": "range", "bounds": [0.0, 0.3]},
        "batch_size": {"type": "choice", "values": [64, 256]},
        "max_epochs": max_epochs,
        "patience": None,
        "overtraining_patience": None,
    }


def run(name: str, n_trials: int, max_epochs: int, seed: int) -> dict[str, Any]:
    data = make_hep_dataset(5000, n_informative=4, n_correlated=2, n_noise=4, seed=11)
    splits = split_random(data, val_fraction=0.3, test_fraction=0.0, seed=seed)
    factory = TrainableSpec("mlp", {"metrics": [], "n_threads": 1})
    objective = TrialObjective(factory, splits.train, splits.val, "val_loss", seed=seed)
    pruner, options = PRUNERS[name]
    if name == "Hyperband":
        options = {**options, "max_resource": max_epochs}
    start = time.perf_counter()
    study = sigtune.optimize(
        objective,
        n_trials,
        space=space(max_epochs),
        direction="minimize",
        sampler="random",
        seed=seed,
        pruner=pruner,
        pruner_options=options,
    )
    trials = study.optuna.get_trials(deepcopy=False)
    return {
        "pruner": name,
        "epochs": sum(int(t.user_attrs.get("epochs", 0)) for t in trials),
        "best": float(study.best_value),
        "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in trials),
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("sigtune").setLevel(logging.WARNING)
    rows = [run(name, args.trials, args.epochs, args.seed) for name in PRUNERS]
    ref = rows[0]
    print(
        f"MLP search: {args.trials} trials, up to {args.epochs} epochs each, random sampler seed {args.seed}\n"
    )
    print(
        "| pruner | total epochs | fewer epochs | best val_loss | vs. no pruning | pruned trials | time [s] |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['pruner']} | {r['epochs']} | {ref['epochs'] / r['epochs']:.2f}x | {r['best']:.4f} | "
            f"{100 * (r['best'] - ref['best']) / ref['best']:+.2f} % | {r['pruned']} | {r['seconds']:.0f} |"
        )


if __name__ == "__main__":
    main()

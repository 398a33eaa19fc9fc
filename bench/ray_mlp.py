"""16 MLP trials of ``examples/mlp``'s main search: local engine vs Ray engine on a 2-node cluster.

The search space, data (generated, same seed), split, sampler (TPE, seed 1) and pruner (median,
4 startup trials, 3 warm-up epochs) are those of ``examples/mlp/config.yaml``; the objective trains
the built-in MLP and reports ``val_loss`` per epoch to the pruner. The Ray engine runs on a
``ray.cluster_utils.Cluster`` with two worker nodes (one CPU each) on this machine, once with
``max_concurrent: 1`` (the same trials as the local engine, so the same best validation loss) and
once with ``max_concurrent: 2`` (both nodes busy; TPE then sees fewer finished trials per ask, so
its best may differ). Prints a Markdown table.

Usage::

    python bench/ray_mlp.py
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna

import sigtune
from sigtune.pipelines.ml import make_hep_dataset, make_trainable, optuna_reporter, split_random

SPACE = {
    "num_layers": {"type": "range", "value_type": "int", "bounds": [1, 3]},
    "units": {"type": "range", "value_type": "int", "bounds": [8, 48]},
    "activation": {"type": "choice", "values": ["relu", "tanh"]},
    "learning_rate": {"type": "range", "bounds": [0.001, 0.02], "sampling": "log"},
    "dropout": {"type": "range", "bounds": [0.0, 0.2]},
}
FIXED = {"batch_size": 256, "max_epochs": 20, "patience": 5}


class MLPObjective:
    def __init__(self) -> None:
        data = make_hep_dataset(6000, n_informative=4, n_correlated=2, n_noise=4, seed=7)
        self.splits = split_random(data, val_fraction=0.25, test_fraction=0.2, seed=1)

    def __call__(self, params: dict[str, Any], trial: optuna.Trial) -> float:
        t = make_trainable("mlp", metrics=["auc"], n_threads=1, device="auto")
        hist = t.fit(
            self.splits.train,
            self.splits.val,
            {**params, **FIXED},
            report=optuna_reporter(trial, "val_loss"),
        )
        if hist.pruned:
            raise optuna.TrialPruned()
        return float(min(hist.metrics["val_loss"]))


def _run(run_dir: Path, **engine: Any) -> tuple[sigtune.Study, float]:
    t0 = time.perf_counter()
    study = sigtune.optimize(
        MLPObjective(),
        n_trials=16,
        space=SPACE,
        sampler="tpe",
        seed=1,
        pruner="median",
        pruner_options={"n_startup_trials": 4, "n_warmup_steps": 3},
        run_dir=run_dir,
        **engine,
    )
    return study, time.perf_counter() - t0


def main() -> None:
    import ray
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        local, t_local = _run(Path(tmp) / "local")
        rows.append(("local", local, t_local))
        cluster = Cluster(
            initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False}
        )
        cluster.add_node(num_cpus=1)
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, logging_level="ERROR")
        try:
            for conc in (1, 2):
                study, t = _run(
                    Path(tmp) / f"ray{conc}",
                    engine="ray",
                    engine_options={"max_concurrent": conc},
                )
                rows.append((f"ray, 2 nodes, max_concurrent {conc}", study, t))
        finally:
            ray.shutdown()
            cluster.shutdown()
    print("| engine | best val_loss | complete | pruned | same trials as local | wall (s) |")
    print("|---|---:|---:|---:|---|---:|")
    for name, study, t in rows:
        c = study.count()
        same = [tr.params for tr in study.trials] == [tr.params for tr in local.trials]
        print(
            f"| {name} | {study.best_value:.6f} | {c['COMPLETE']} | {c['PRUNED']} | "
            f"{'yes' if same else 'no'} | {t:.1f} |"
        )


if __name__ == "__main__":
    main()

"""PBT benchmark: the ``pbt`` stage against a search alone, and against a bare Ray Tune PBT run.

Data: ``examples/mlp``'s generated sample (6000 events, 4 informative / 2 correlated / 4 noise
variables; random split 25 % validation, 20 % test).

1. **Budget**: a main search alone (``search + pbt`` trials' worth of epochs) against a main
   search followed by the ``pbt`` stage, at the same total number of epochs. Compared: the best
   validation loss (the search's best trial at its best epoch; the PBT winner at its last
   epoch) and the test AUC of that model (the search's best parameters trained once more).
2. **Overhead**: Ray Tune's own PBT example setup (a function trainable with a hand-written
   torch loop that checkpoints its model and optimiser every epoch, as in Ray Tune's
   ``pbt_function`` example) against sigtune's stage, both training the same network with the
   same population, mutations, interval, seed and CPUs. Wall time includes starting Ray.

    python bench/pbt.py                   # the table quoted in docs/ml-pipeline.md
    python bench/pbt.py --quick           # fewer trials and epochs

The last two lines read ``pbt val_loss A vs search-only B at equal epochs`` and
``ratio sigtune-pbt / tune-pbt wall = R``.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

import sigtune
from sigtune.pipelines.ml._cv import TrainableSpec
from sigtune.pipelines.ml._generate import make_hep_dataset
from sigtune.pipelines.ml._metrics import compute_metric
from sigtune.pipelines.ml._pbt import MutationRange, PBTStage, initial_population, run_pbt
from sigtune.pipelines.ml._pipeline import TrialObjective
from sigtune.pipelines.ml._splits import split_random
from sigtune.pipelines.ml._trainables import load_trainable

SPACE: dict[str, Any] = {
    "num_layers": {"type": "range", "value_type": "int", "bounds": [1, 3]},
    "units": {"type": "range", "value_type": "int", "bounds": [8, 48]},
    "activation": {"type": "choice", "values": ["relu", "tanh"]},
    "learning_rate": {"type": "range", "bounds": [0.001, 0.02], "sampling": "log"},
    "dropout": {"type": "range", "bounds": [0.0, 0.2]},
    "batch_size": 256,
    "patience": None,
}
MUTATIONS = {
    "learning_rate": MutationRange(low=1e-4, high=0.02, log=True),
    "dropout": MutationRange(low=0.0, high=0.2),
}


def _data() -> Any:
    data = make_hep_dataset(6000, n_informative=4, n_correlated=2, n_noise=4, seed=7)
    return split_random(data, val_fraction=0.25, test_fraction=0.2, seed=1)


def _search(splits: Any, n_trials: int, epochs: int, seed: int, run_dir: Path) -> Any:
    factory = TrainableSpec("mlp", {"metrics": [], "n_threads": 1})
    objective = TrialObjective(factory, splits.train, splits.val, "val_loss", seed=seed)
    return sigtune.optimize(
        objective,
        n_trials,
        space={**SPACE, "max_epochs": epochs},
        direction="minimize",
        sampler="tpe",
        pruner="none",
        seed=seed,
        run_dir=run_dir,
    )


def _test_auc(model: Any, splits: Any) -> float:
    return float(compute_metric("auc", splits.test.y, model.predict(splits.test.X), splits.test.w))


def _retrain(params: dict[str, Any], splits: Any, epochs: int, seed: int) -> Any:
    model = TrainableSpec("mlp", {"metrics": [], "n_threads": 1})(seed=seed)
    model.fit(splits.train, splits.val, {**params, "max_epochs": epochs})
    return model


# ---------------------------------------------------------------------- bare Ray Tune PBT
def _tune_member(config: dict[str, Any], *, train: Any, val: Any, arch: dict[str, Any]) -> None:
    """Ray Tune's PBT example pattern (``pbt_function``): restore, train, report+checkpoint."""
    import torch
    from ray import tune

    from sigtune.pipelines.ml._mlp import build_mlp
    from sigtune.pipelines.ml._scaling import InputScaler
    from sigtune.pipelines.ml._weights import normalize_class_weights, training_weights

    torch.set_num_threads(1)
    torch.manual_seed(int(config["seed"]))
    # the same input scaling and event weights as sigtune's trainable, so the losses compare
    scaler = InputScaler(None).fit(train)
    tw = training_weights(train, normalize=True)
    vw = normalize_class_weights(val)
    Xt = torch.as_tensor(scaler.transform(tw), dtype=torch.float32)
    yt = torch.as_tensor(np.array(tw.y), dtype=torch.float32)
    wt = torch.as_tensor(tw.w, dtype=torch.float32)
    Xv = torch.as_tensor(scaler.transform(vw), dtype=torch.float32)
    model = build_mlp(Xt.shape[1], 1, {**arch, "dropout": config["dropout"]})
    opt = torch.optim.Adam(model.parameters(), lr=config["learning_rate"])
    start = 0
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state = torch.load(Path(d) / "state.pt", weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start = int(state["epoch"])
        for g in opt.param_groups:
            g["lr"] = config["learning_rate"]
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = config["dropout"]
    loss_fn = torch.nn.BCEWithLogitsLoss(reduction="none")
    for epoch in range(start + 1, int(config["max_epochs"]) + 1):
        model.train()
        perm = torch.randperm(len(Xt))
        for i in range(0, len(Xt), int(arch["batch_size"])):
            idx = perm[i : i + int(arch["batch_size"])]
            loss = (loss_fn(model(Xt[idx]).reshape(-1), yt[idx]) * wt[idx]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            p = torch.sigmoid(model(Xv).reshape(-1)).numpy().astype(np.float64)
        val_loss = compute_metric("weighted_loss", vw.y, p, vw.w)
        with tempfile.TemporaryDirectory() as d:
            torch.save(
                {"model": model.state_dict(), "opt": opt.state_dict(), "epoch": epoch},
                Path(d) / "state.pt",
            )
            tune.report(
                {"val_loss": val_loss, "epoch": epoch},
                checkpoint=tune.Checkpoint.from_directory(d),
            )


def _bare_tune(
    splits: Any, members: list[dict[str, Any]], stage: PBTStage, seed: int, root: Path
) -> tuple[float, float]:
    import ray
    from ray import tune
    from ray.tune.schedulers import PopulationBasedTraining

    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=stage.num_cpus, include_dashboard=False, log_to_driver=False)
    try:
        random.seed(seed)
        arch = {k: members[0][k] for k in ("num_layers", "units", "activation", "batch_size")}
        scheduler = PopulationBasedTraining(
            time_attr="epoch",
            perturbation_interval=stage.perturbation_interval,
            hyperparam_mutations={
                "learning_rate": tune.loguniform(1e-4, 0.02),
                "dropout": tune.uniform(0.0, 0.2),
            },
            quantile_fraction=stage.quantile_fraction,
            resample_probability=stage.resample_probability,
            synch=stage.synch,
        )
        tuner = tune.Tuner(
            tune.with_resources(
                tune.with_parameters(_tune_member, train=splits.train, val=splits.val, arch=arch),
                {"cpu": 1},
            ),
            param_space={
                "seed": tune.grid_search([seed + i for i in range(len(members))]),
                "learning_rate": members[0]["learning_rate"],
                "dropout": members[0]["dropout"],
                "max_epochs": stage.max_epochs,
            },
            tune_config=tune.TuneConfig(
                scheduler=scheduler, metric="val_loss", mode="min", reuse_actors=True
            ),
            run_config=tune.RunConfig(
                name="tune_pbt",
                storage_path=str(root),
                verbose=0,
                checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
            ),
        )
        grid = tuner.fit()
        best = min(float(r.metrics_dataframe["val_loss"].iloc[-1]) for r in grid)
    finally:
        ray.shutdown()
    return best, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer trials and epochs")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    n_search, epochs, population, pbt_epochs = (4, 6, 4, 6) if args.quick else (8, 10, 4, 20)
    extra = population * pbt_epochs // epochs  # search-only trials with the PBT's epochs
    seed = args.seed
    splits = _data()
    root = Path(tempfile.mkdtemp(prefix="sigtune-bench-pbt-"))

    t0 = time.perf_counter()
    only = _search(splits, n_search + extra, epochs, seed, root / "search_only")
    t_only = time.perf_counter() - t0
    only_model = _retrain(only.best_params, splits, epochs, seed)

    t0 = time.perf_counter()
    first = _search(splits, n_search, epochs, seed, root / "search")
    t_first = time.perf_counter() - t0
    stage = PBTStage.model_validate(
        {
            "population": population,
            "perturbation_interval": max(2, pbt_epochs // 5),
            "max_epochs": pbt_epochs,
            "init": "best",
            "num_cpus": 2,
            "quantile_fraction": 0.25,
        }
    )
    members = initial_population(
        stage, best=first.best_params, ranked=[], space=SPACE, mutations=MUTATIONS, seed=seed
    )
    t0 = time.perf_counter()
    out = run_pbt(
        stage,
        factory=TrainableSpec("mlp", {"metrics": [], "n_threads": 1}),
        train=splits.train,
        val=splits.val,
        monitor="val_loss",
        direction="minimize",
        members=members,
        mutations=MUTATIONS,
        seed=seed,
        stage_dir=root / "pbt",
    )
    t_pbt = time.perf_counter() - t0
    pbt_model = load_trainable(root / "pbt" / "best_model")
    tune_best, t_tune = _bare_tune(splits, members, stage, seed, root / "tune")

    budget = (n_search + extra) * epochs
    budget_pbt = n_search * epochs + out["epochs_trained"]
    print(
        f"data: examples/mlp sample, {len(splits.train)} train / {len(splits.val)} val / "
        f"{len(splits.test)} test events; seed {seed}"
    )
    print()
    print("| run | epochs | best val_loss | test AUC | wall [s] |")
    print("|---|---:|---:|---:|---:|")
    print(
        f"| search only ({n_search + extra} trials x {epochs}) | {budget} | "
        f"{only.best_value:.4f} | {_test_auc(only_model, splits):.4f} | {t_only:.0f} |"
    )
    print(
        f"| search ({n_search} x {epochs}) + pbt ({population} x {pbt_epochs}) | {budget_pbt} | "
        f"{out['value']:.4f} | {_test_auc(pbt_model, splits):.4f} | {t_first + t_pbt:.0f} |"
    )
    print(
        f"| sigtune pbt stage only | {out['epochs_trained']} | {out['value']:.4f} | "
        f"{_test_auc(pbt_model, splits):.4f} | {t_pbt:.0f} |"
    )
    print(
        f"| bare Ray Tune PBT, same network | {population * pbt_epochs} | {tune_best:.4f} | "
        f"- | {t_tune:.0f} |"
    )
    print()
    print(
        f"search best trial val_loss {first.best_value:.4f} ({n_search} trials); "
        f"pbt exploits {out['n_exploits']}"
    )
    print(f"pbt val_loss {out['value']:.4f} vs search-only {only.best_value:.4f} at equal epochs")
    print(f"ratio sigtune-pbt / tune-pbt wall = {t_pbt / t_tune:.2f}")


if __name__ == "__main__":
    main()

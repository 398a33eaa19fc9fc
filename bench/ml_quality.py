"""ML-pipeline quality benchmark: the whole pipeline on a generated sample, scored on an independent one.

The task of issue 11 (side by side with OPTIMA 0.4.0a7): a generated HEP-like sample of 6000
events (4 informative + 2 correlated + 4 noise variables, seed 7), pre-search of 8 trials,
variable selection, main search of 16 trials (TPE, median pruner), at most 20 epochs with
patience 5, batch size 256, trial selection (best-value and best-fit), 3-fold cross-validation
of the selected trials (best-value and best-fit) for their selected number of epochs. The final
classifier is the average of the outputs of every cross-validated fold model; it is scored on an independent sample of 30000 events
generated with another seed (11):

* ``AUC``: unweighted ROC AUC;
* ``loss``: binary cross-entropy with class-normalised event weights (``balanced_loss``: the
  loss the models are trained on, OPTIMA's loss with normalised weights).

    python bench/ml_quality.py                # the table and the last line quoted in the docs
    python bench/ml_quality.py --run-dir /tmp/mlq --keep   # keep the run folder

The reference on this task is OPTIMA's result (AUC 0.9235, loss 0.3545, ~2,500 s on a 2-core
machine); the target is at least as good at <= 1/20 of its wall time. The last line reads
``independent sample: AUC X, loss Y, wall Z s``.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

from sigtune.pipelines.ml._generate import make_hep_dataset
from sigtune.pipelines.ml._metrics import compute_metric
from sigtune.pipelines.ml._pipeline import run_pipeline
from sigtune.pipelines.ml._registry import load_trainable

DATA = {"n_events": 6000, "n_informative": 4, "n_correlated": 2, "n_noise": 4, "seed": 7}
INDEPENDENT_SEED = 11
SPACE: dict[str, Any] = {
    "num_layers": {"type": "range", "value_type": "int", "bounds": [1, 4]},
    "units": {"type": "range", "value_type": "int", "bounds": [16, 128], "sampling": "log"},
    "learning_rate": {"type": "range", "bounds": [3e-4, 1e-2], "sampling": "log"},
    "dropout": {"type": "range", "bounds": [0.0, 0.2]},
    "batch_norm": {"type": "choice", "values": [False, True]},
    "activation": {"type": "choice", "values": ["relu", "tanh", "swish"]},
    "input_normalization": {"type": "choice", "values": ["standard", "quantile"]},
    "batch_size": 256,
    "max_epochs": 20,
    "patience": 5,
}


def config(run_dir: Path, seed: int) -> dict[str, Any]:
    """The pipeline config of the task."""
    return {
        "run_dir": str(run_dir),
        "seed": seed,
        "data": {"generate": DATA},
        "trainable": {"kind": "mlp", "options": {"metrics": [], "n_threads": 1}},
        "search_space": SPACE,
        "presearch": {
            "n_trials": 8,
            "sampler": {"name": "tpe", "options": {"n_startup_trials": 4}},
            "pruner": {"name": "median", "options": {"n_startup_trials": 3, "n_warmup_steps": 8}},
        },
        "varsel": {"mode": "shuffle", "k": 3, "num_repeats": 2, "metric": "balanced_loss"},
        "search": {
            "n_trials": 16,
            "sampler": {"name": "tpe", "options": {"n_startup_trials": 6}},
            "pruner": {"name": "median", "options": {"n_startup_trials": 5, "n_warmup_steps": 8}},
        },
        "selection": {"min_epochs": 6, "use": "both"},
        "cv": {"k": 3, "test": "none", "metrics": ["balanced_loss", "auc"]},
        "evaluation": {"enabled": False},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue in --run-dir (the wall time is then partial)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("optuna").setLevel(logging.WARNING)
    run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="ml_quality_"))
    if run_dir.exists() and args.run_dir is not None and not args.resume:
        shutil.rmtree(run_dir)

    start, cpu_start = time.perf_counter(), time.process_time()
    res = run_pipeline(config(run_dir, args.seed))
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu_start

    features = res.features or []
    search = res.outputs["search"]
    cvs = res.outputs["cv"]["trials"]
    cv = next(iter(cvs.values()))
    models = [load_trainable(Path(p) / "model") for c in cvs.values() for p in c["paths"]]
    indep = make_hep_dataset(**{**DATA, "n_events": 30_000, "seed": INDEPENDENT_SEED})
    indep = indep.select_features(features)
    p_each = [m.predict(indep.X) for m in models]
    p_mean = np.mean(p_each, axis=0)
    auc = compute_metric("auc", indep.y, p_mean)
    loss = compute_metric("balanced_loss", indep.y, p_mean, indep.w)
    fold_auc = [compute_metric("auc", indep.y, p) for p in p_each]

    print("| quantity | value |")
    print("|---|---|")
    print(f"| selected variables | {', '.join(features)} ({len(features)}) |")
    picks = ", ".join(f"{k} ({c['training']})" for k, c in cvs.items())
    print(f"| selected trials (best-value, best-fit) | {picks} |")
    print(f"| epochs trained, main search | {search['total_epochs']} |")
    print(
        f"| trials complete / pruned | {search['counts']['complete']} / "
        f"{search['counts']['pruned']} |"
    )
    print(f"| CV validation AUC (mean of folds) | {cv['center']['val_auc']:.4f} |")
    print(f"| independent AUC per fold model | {', '.join(f'{a:.4f}' for a in fold_auc)} |")
    print(f"| wall time | {wall:.0f} s |")
    print(f"| CPU time of the process (independent of other load) | {cpu:.0f} s |")
    print(f"independent sample: AUC {auc:.4f}, loss {loss:.4f}, wall {wall:.0f} s")
    if args.run_dir is None and not args.keep:
        shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()

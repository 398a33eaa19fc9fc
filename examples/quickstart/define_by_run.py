"""Define-by-run quickstart: an unchanged Optuna objective driven by sigtune.

Run: ``.venv/bin/python examples/quickstart/define_by_run.py``
"""

from __future__ import annotations

from objective import branin

import sigtune

if __name__ == "__main__":
    study = sigtune.optimize(branin, n_trials=80, sampler="tpe", seed=0, direction="minimize")
    print(f"best value {study.best_value:.4f} at {study.best_params} (global minimum 0.3979)")

"""GPU check: MLP trials on ``cuda``, four trials sharing one GPU on Ray, an epoch on CPU vs GPU.

On a machine with a CUDA GPU it prints a Markdown table with

* the time of one training epoch of the built-in MLP on the CPU and on the GPU (same data, same
  params; the minimum of ``--repeats``), and their ratio;
* ``--trials`` MLP trials run locally with ``device: cuda`` (each trial's device is recorded);
* ``--trials`` MLP trials on a local Ray instance with ``gpus_per_trial: 0.25`` and
  ``max_concurrent: 4`` (four trials share one GPU): the devices used and the largest number of
  trials that ran at the same time.

Without a usable GPU it says so and exits 0 (nothing is measured).

Usage::

    python bench/gpu_check.py
    python bench/gpu_check.py --events 200000 --trials 8
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna

import sigtune
from sigtune.pipelines.ml import make_hep_dataset, make_trainable, split_random

PARAMS = {"num_layers": 3, "units": 128, "batch_size": 512, "learning_rate": 1e-3}


def _epoch_time(splits: Any, device: str, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = make_trainable("mlp", device=device, metrics=[], n_threads=os.cpu_count() or 1)
        t0 = time.perf_counter()
        t.fit(splits.train, splits.val, {**PARAMS, "max_epochs": 1})
        best = min(best, time.perf_counter() - t0)
    return best


class _Objective:
    def __init__(self, splits: Any, device: str) -> None:
        self.splits, self.device = splits, device

    def __call__(self, trial: optuna.Trial) -> float:
        from sigtune.pipelines.ml._device import resolve_device

        lr = trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True)
        t0 = time.time()
        t = make_trainable("mlp", device=self.device, metrics=[])
        hist = t.fit(
            self.splits.train, self.splits.val, {**PARAMS, "learning_rate": lr, "max_epochs": 2}
        )
        trial.set_user_attr("device", resolve_device(self.device))
        trial.set_user_attr("span", [t0, time.time()])
        return float(min(hist.metrics["val_loss"]))


def _max_overlap(spans: list[list[float]]) -> int:
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    cur = best = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import torch

    if not torch.cuda.is_available():
        print(
            "no GPU: torch.cuda.is_available() is False on this machine "
            f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); nothing measured"
        )
        return
    name = torch.cuda.get_device_name(0)
    data = make_hep_dataset(args.events, n_informative=8, n_correlated=4, n_noise=4, seed=1)
    splits = split_random(data, val_fraction=0.25, seed=0)
    cpu = _epoch_time(splits, "cpu", args.repeats)
    gpu = _epoch_time(splits, "cuda", args.repeats)

    with tempfile.TemporaryDirectory() as tmp:
        local = sigtune.optimize(
            _Objective(splits, "cuda"),
            n_trials=args.trials,
            sampler="random",
            seed=0,
            run_dir=Path(tmp) / "local",
        )
        import ray

        ray.init(address="local", include_dashboard=False, logging_level="ERROR")
        try:
            shared = sigtune.optimize(
                _Objective(splits, "auto"),
                n_trials=args.trials,
                sampler="random",
                seed=0,
                run_dir=Path(tmp) / "ray",
                engine="ray",
                engine_options={
                    "gpus_per_trial": 0.25,
                    "cpus_per_trial": 0.25,
                    "max_concurrent": 4,
                },
            )
        finally:
            ray.shutdown()
    local_dev = sorted({t.user_attrs.get("device", "?") for t in local.trials})
    ray_dev = sorted({t.user_attrs.get("device", "?") for t in shared.trials})
    overlap = _max_overlap([t.user_attrs["span"] for t in shared.trials if "span" in t.user_attrs])

    print(f"GPU: {name}; {args.events} events; MLP {PARAMS}")
    print()
    print("| check | result |")
    print("|---|---|")
    print(f"| one epoch on CPU ({os.cpu_count()} threads) | {cpu:.3f} s |")
    print(f"| one epoch on GPU | {gpu:.3f} s |")
    print(f"| CPU / GPU epoch time | {cpu / gpu:.2f} |")
    print(f"| local trials with device cuda | {len(local.trials)} trials on {local_dev} |")
    print(
        f"| Ray, gpus_per_trial 0.25 | {len(shared.trials)} trials on {ray_dev}, "
        f"up to {overlap} at once |"
    )
    ok = local.count()["COMPLETE"] == args.trials and shared.count()["COMPLETE"] == args.trials
    print()
    print("all trials complete" if ok else f"NOT all complete: {local.count()} {shared.count()}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

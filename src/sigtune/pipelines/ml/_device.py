"""Which device a trainable uses: ``device: auto | cpu | cuda | cuda:N``.

* ``cpu``: the CPU.
* ``cuda``: the GPU assigned to this worker (see below); an error if there is no usable GPU.
* ``cuda:N``: GPU ``N`` of the GPUs this process sees; an error if it does not exist.
* ``auto``: the GPU assigned to this worker when the process sees a GPU, else the CPU.

Which GPU is "assigned": the Ray engine gives each trial its GPU(s) by setting
``CUDA_VISIBLE_DEVICES`` for the trial's worker, so the process sees only what Ray gave it and the
first visible GPU is the assigned one (with ``gpus_per_trial: 0.25`` four trials see the same
GPU). The local engine runs ``n_jobs`` worker processes on one machine and exports the worker's
index as ``SIGTUNE_WORKER_INDEX``; worker ``i`` of a machine with ``k`` visible GPUs gets GPU
``i % k`` (round robin), so eight workers on four GPUs put two trials on each.

Checkpoints: :func:`load_torch` loads with ``map_location`` = the device in use (the CPU on a
machine without CUDA), so a checkpoint written on a GPU loads on a CPU-only machine.

PyTorch is imported inside the functions only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sigtune._exceptions import ConfigError
from sigtune.engines._local import WORKER_INDEX_ENV, cuda_initialized

__all__ = [
    "WORKER_INDEX_ENV",
    "check_device",
    "cuda_initialized",
    "load_torch",
    "resolve_device",
    "worker_device",
]

_SPEC = re.compile(r"^(auto|cpu|cuda|cuda:(\d+))$")


def check_device(spec: str) -> str:
    """Validate a device spec (``auto``, ``cpu``, ``cuda``, ``cuda:N``) and return it.

    Raises:
        ConfigError: Anything else.
    """
    if not isinstance(spec, str) or not _SPEC.match(spec.strip().lower()):
        raise ConfigError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {spec!r}")
    return spec.strip().lower()


def worker_device(n_gpus: int, env: Mapping[str, str] | None = None) -> str:
    """The GPU of this worker: ``cuda:(worker_index % n_gpus)``, or ``"cpu"`` without GPUs.

    Args:
        n_gpus: GPUs visible to this process.
        env: Environment to read ``SIGTUNE_WORKER_INDEX`` from (default ``os.environ``).
    """
    if n_gpus <= 0:
        return "cpu"
    env = os.environ if env is None else env
    try:
        index = int(env.get(WORKER_INDEX_ENV, "0"))
    except ValueError:
        index = 0
    return f"cuda:{max(index, 0) % n_gpus}"


def _cuda_count() -> int:
    import torch

    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def resolve_device(
    spec: str = "auto", *, n_gpus: int | None = None, env: Mapping[str, str] | None = None
) -> str:
    """Turn a device spec into a concrete torch device string (``"cpu"`` or ``"cuda:N"``).

    Args:
        spec: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        n_gpus: GPUs visible to this process (default: asked from torch).
        env: Environment for the worker index (default ``os.environ``).

    Raises:
        ConfigError: An invalid spec, or a GPU asked for that this process does not see.
    """
    spec = check_device(spec)
    if spec == "cpu":
        return "cpu"
    count = _cuda_count() if n_gpus is None else int(n_gpus)
    if spec == "auto":
        return worker_device(count, env)
    if count == 0:
        raise ConfigError(
            f"device {spec!r} but no CUDA GPU is visible to this process (torch.cuda.is_available()"
            " is False, or CUDA_VISIBLE_DEVICES hides them); use device 'auto' or 'cpu', or give"
            " trials GPUs (ray: gpus_per_trial)"
        )
    if spec == "cuda":
        return worker_device(count, env)
    index = int(spec.split(":", 1)[1])
    if index >= count:
        raise ConfigError(f"device {spec!r} but this process sees only {count} GPU(s)")
    return spec


def load_torch(path: Path | str, device: str = "cpu", *, weights_only: bool = False) -> Any:
    """``torch.load`` with ``map_location`` so GPU checkpoints load where there is no GPU.

    Tensors saved on any CUDA device land on ``device`` when CUDA is usable here, else on the CPU.
    """
    import torch

    target = device if device.startswith("cuda") and torch.cuda.is_available() else "cpu"
    return torch.load(Path(path), map_location=target, weights_only=weights_only)

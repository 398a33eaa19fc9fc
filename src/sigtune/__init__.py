"""sigtune: tune what an analysis depends on against the figure of merit that matters.

The public API is re-exported here; implementation modules are private (``sigtune._study`` ...).
Names are resolved lazily so that ``import sigtune`` stays cheap and never imports optional heavy
libraries.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sigtune._exceptions import (
    ConfigError,
    ObjectiveError,
    RunFailedError,
    SearchSpaceError,
    SigtuneError,
    StorageError,
    TrialTimeoutError,
)

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    "SearchSpace": "sigtune._space",
    "make_sampler": "sigtune._samplers",
    "AutoSampler": "sigtune._samplers",
    "make_pruner": "sigtune._pruners",
    "RunConfig": "sigtune._config",
    "RunSettings": "sigtune._settings",
    "load_config": "sigtune._config",
    "Study": "sigtune._study",
    "optimize": "sigtune._study",
    "load_study": "sigtune._study",
}

if TYPE_CHECKING:  # pragma: no cover
    from sigtune._config import RunConfig, load_config
    from sigtune._pruners import make_pruner
    from sigtune._samplers import AutoSampler, make_sampler
    from sigtune._settings import RunSettings
    from sigtune._space import SearchSpace
    from sigtune._study import Study, load_study, optimize


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sigtune' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "AutoSampler",
    "ConfigError",
    "ObjectiveError",
    "RunConfig",
    "RunFailedError",
    "RunSettings",
    "SearchSpace",
    "SearchSpaceError",
    "SigtuneError",
    "StorageError",
    "Study",
    "TrialTimeoutError",
    "__version__",
    "load_config",
    "load_study",
    "make_pruner",
    "make_sampler",
    "optimize",
]

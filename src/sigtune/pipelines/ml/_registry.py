"""The trainable registry: ``kind`` -> how to build one and how to load a saved one.

Each trainable module registers its own kinds when imported (``register_trainable`` at its end),
so this module lists no class: it only knows which modules of the package hold the built-in
kinds, and imports them the first time the registry is read. A kind is registered with a factory
``factory(**options) -> Trainable`` and a loader ``load(path, meta, **kwargs) -> Trainable`` (by
default the factory's ``load`` classmethod); :func:`load_trainable` dispatches on the ``kind`` a
saved ``trainable.json`` records, so a user's registered trainable loads like a built-in one.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

from sigtune._exceptions import ConfigError

__all__ = ["TRAINABLES", "load_trainable", "make_trainable", "register_trainable"]

# Modules whose import registers the built-in kinds (torch, lightning, keras, sklearn, boosters
# are imported inside their functions, so importing these modules is cheap).
_BUILTIN_MODULES = (
    "sigtune.pipelines.ml._trainables",
    "sigtune.pipelines.ml._mlp",
    "sigtune.pipelines.ml._frameworks",
)


class _Registry(MutableMapping[str, Callable[..., Any]]):
    """``kind -> factory`` (a mapping), plus ``kind -> loader``; built-ins appear on first read."""

    def __init__(self) -> None:
        self._factories: dict[str, Callable[..., Any]] = {}
        self.loaders: dict[str, Callable[..., Any]] = {}
        self._loaded = False
        self._loading = False

    def ensure_builtins(self) -> None:
        if self._loaded or self._loading:
            return
        self._loading = True
        try:
            for name in _BUILTIN_MODULES:
                importlib.import_module(name)
            self._loaded = True
        finally:
            self._loading = False

    def add(
        self, kind: str, factory: Callable[..., Any], load: Callable[..., Any], *, builtin: bool
    ) -> None:
        if builtin and kind in self._factories:
            return  # a user registration made before the built-ins loaded wins
        self._factories[kind] = factory
        self.loaders[kind] = load

    def __getitem__(self, kind: str) -> Callable[..., Any]:
        self.ensure_builtins()
        return self._factories[kind]

    def __setitem__(self, kind: str, factory: Callable[..., Any]) -> None:
        register_trainable(kind, factory, overwrite=True)

    def __delitem__(self, kind: str) -> None:
        self.ensure_builtins()
        del self._factories[kind]
        self.loaders.pop(kind, None)

    def __iter__(self) -> Iterator[str]:
        self.ensure_builtins()
        return iter(dict(self._factories))

    def __len__(self) -> int:
        self.ensure_builtins()
        return len(self._factories)

    def __contains__(self, kind: object) -> bool:
        self.ensure_builtins()
        return kind in self._factories


#: ``kind -> factory(**options)`` of every registered trainable (built-ins and users').
TRAINABLES = _Registry()


def register_trainable(
    kind: str,
    factory: Callable[..., Any],
    *,
    load: Callable[..., Any] | None = None,
    overwrite: bool = False,
    builtin: bool = False,
) -> None:
    """Register ``factory(**options) -> Trainable`` under ``kind``.

    Args:
        kind: The name used in ``make_trainable(kind)`` and the ``trainable.kind`` config key.
        factory: Builds an untrained trainable from keyword options.
        load: ``load(path, meta, **kwargs) -> Trainable`` rebuilding a saved one (``meta`` is its
            ``trainable.json``); default: ``factory.load`` (a classmethod of the class).
        overwrite: Replace an existing registration.
        builtin: Used by the package's own modules (never replaces a user's registration).

    Raises:
        ConfigError: ``kind`` taken (without ``overwrite``) or no loader.
    """
    loader = load if load is not None else getattr(factory, "load", None)
    if not callable(loader):
        raise ConfigError(
            f"trainable kind {kind!r}: {factory!r} has no `load` classmethod; give "
            "register_trainable(..., load=fn(path, meta, **kwargs))"
        )
    if not builtin:
        TRAINABLES.ensure_builtins()
        if kind in TRAINABLES._factories and not overwrite:
            raise ConfigError(
                f"trainable kind {kind!r} is already registered (pass overwrite=True)"
            )
    TRAINABLES.add(kind, factory, loader, builtin=builtin)


def make_trainable(kind: str, **options: Any) -> Any:
    """Create a trainable.

    Args:
        kind: ``"mlp"`` (built-in PyTorch MLP), ``"torch"`` (``module=`` factory),
            ``"lightning"`` (``module=`` LightningModule factory), ``"keras"`` (``builder=``),
            ``"sklearn"`` (``estimator=`` class or import path), ``"lightgbm"``, ``"xgboost"``,
            or a kind added with :func:`register_trainable`.
        **options: Kind-specific options; common ones are ``monitor``, ``metrics``,
            ``overtraining_conditions``, ``scaling``, ``normalize_weights``, ``class_weights``,
            ``n_threads`` (default 1) and ``seed``.

    Raises:
        ConfigError: Unknown kind or invalid options.

    Example:
        >>> t = make_trainable("mlp", max_epochs=20, metrics=["auc"])
        >>> type(t).__name__
        'TorchTrainable'
    """
    if kind not in TRAINABLES:
        raise ConfigError(f"unknown trainable kind {kind!r}; known: {sorted(TRAINABLES)}")
    try:
        return TRAINABLES[kind](**options)
    except TypeError as exc:
        raise ConfigError(f"make_trainable({kind!r}): invalid option(s): {exc}") from exc


def load_trainable(path: Path | str, **kwargs: Any) -> Any:
    """Load a trainable saved with ``save(path)``; ``kwargs`` (e.g. ``module=``) help rebuild
    user models whose factory was not importable when saving."""
    root = Path(path)
    meta_file = root / "trainable.json"
    if not meta_file.exists():
        raise ConfigError(f"{root} is not a saved trainable (no trainable.json)")
    meta = json.loads(meta_file.read_text())
    kind = meta.get("kind")
    TRAINABLES.ensure_builtins()
    loader = TRAINABLES.loaders.get(kind) if isinstance(kind, str) else None
    if loader is None:
        raise ConfigError(
            f"{meta_file}: unknown trainable kind {kind!r}; register it with register_trainable"
        )
    return loader(root, meta, **kwargs)

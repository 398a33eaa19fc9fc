"""One importer for ``"module:function"`` and ``"path/to/file.py:function"`` references.

Every place of sigtune that turns a string of a config into a Python object (objectives,
constraints, callbacks, sampler options, engines) goes through :func:`resolve_callable`, so the
references are written the same way everywhere and fail with the same :class:`ObjectiveError`
naming what is missing. It depends on nothing of sigtune but the exceptions, so any module can
use it without an import cycle.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sigtune._exceptions import ObjectiveError

__all__ = ["resolve_callable"]

_FILE_MODULES: dict[Path, Any] = {}


def resolve_callable(
    ref: str, base_dir: str | os.PathLike[str] | None = None
) -> Callable[..., Any]:
    """Import ``"package.module:function"`` or ``"path/to/file.py:function"``.

    A relative file path is looked up in ``base_dir`` (the config file's directory) first,
    then in the current directory. The file's directory is put on ``sys.path`` so it can
    import its neighbours. ``function`` may be dotted (``Class.method``).

    Args:
        ref: The reference.
        base_dir: Directory relative file paths start from.

    Returns:
        The callable.

    Raises:
        ObjectiveError: Saying what is missing (module, file or attribute) or not callable.
    """
    if not isinstance(ref, str) or ":" not in ref:
        raise ObjectiveError(
            f"{ref!r} is not a callable reference: write 'package.module:function' or "
            f"'path/to/file.py:function'"
        )
    target, _, attr = ref.rpartition(":")
    if not target or not attr:
        raise ObjectiveError(
            f"{ref!r}: both the module/file and the function name are needed ('module:function')"
        )
    if target.endswith(".py") or "/" in target or os.sep in target:
        module = _import_file(ref, target, base_dir)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise ObjectiveError(f"{ref!r}: cannot import module {target!r}: {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ObjectiveError(
                f"{ref!r}: {getattr(module, '__name__', target)!r} has no attribute {part!r}"
            ) from None
    if not callable(obj):
        raise ObjectiveError(f"{ref!r}: {attr!r} is not callable (got {type(obj).__name__})")
    return obj  # type: ignore[no-any-return]


def _import_file(ref: str, target: str, base_dir: str | os.PathLike[str] | None) -> Any:
    raw = Path(target).expanduser()
    candidates = [raw] if raw.is_absolute() else []
    if not raw.is_absolute():
        if base_dir is not None:
            candidates.append(Path(base_dir) / raw)
        candidates.append(Path.cwd() / raw)
    path = next((c.resolve() for c in candidates if c.is_file()), None)
    if path is None:
        looked = ", ".join(str(c) for c in candidates)
        raise ObjectiveError(f"{ref!r}: file {target!r} not found (looked at {looked})")
    if path in _FILE_MODULES:
        return _FILE_MODULES[path]
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    name = f"sigtune_user_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ObjectiveError(f"{ref!r}: cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    parent = str(path.parent)
    if parent not in sys.path:
        sys.path.insert(0, parent)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise ObjectiveError(
            f"{ref!r}: importing {path} failed: {type(exc).__name__}: {exc}"
        ) from exc
    _FILE_MODULES[path] = module
    return module

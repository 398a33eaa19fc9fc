"""Validation of pyhf JSON documents against the vendored HistFactory JSON schema (v1.0.0).

The schema files in ``schemas/1.0.0/`` are pyhf's, unchanged (Apache-2.0, see ``schemas/NOTICE``).
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

import jsonschema
from referencing import Registry, Resource

from sigtune.hep._exceptions import HepWorkspaceError

__all__ = ["SCHEMA_VERSION", "validate"]

SCHEMA_VERSION = "1.0.0"
_BASE_URI = f"https://scikit-hep.org/pyhf/schemas/{SCHEMA_VERSION}/"
_NAMES = ("defs", "jsonpatch", "measurement", "model", "patchset", "workspace")
_DEFINITIONS = ("jsonpatch", "measurement", "model", "patchset", "workspace")


@functools.cache
def _registry() -> Registry[Any]:
    folder = resources.files("sigtune.hep").joinpath("schemas").joinpath(SCHEMA_VERSION)
    resources_ = []
    for name in _NAMES:
        contents = json.loads(folder.joinpath(f"{name}.json").read_text(encoding="utf-8"))
        resources_.append((_BASE_URI + f"{name}.json", Resource.from_contents(contents)))
    return Registry().with_resources(resources_)


@functools.cache
def _validator(name: str) -> jsonschema.Draft6Validator:
    # The top-level files only hold a sibling "$ref" next to "$id", which draft 6 ignores;
    # point straight at the definition instead.
    schema = {"$ref": _BASE_URI + f"defs.json#/definitions/{name}"}
    return jsonschema.Draft6Validator(schema, registry=_registry())


def _json_path(path: Any) -> str:
    out = "$"
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def validate(document: Any, name: str = "workspace") -> None:
    """Validate ``document`` against the pyhf schema ``name`` (``workspace``, ``patchset``...).

    Args:
        document: The decoded JSON document.
        name: Schema name, one of ``jsonpatch measurement model patchset workspace``.

    Raises:
        HepWorkspaceError: The document violates the schema; the message carries the JSON
            path of the first offending element (the most specific error jsonschema reports).
    """
    if name not in _DEFINITIONS:
        raise HepWorkspaceError(f"unknown schema {name!r}; expected one of {list(_DEFINITIONS)}")
    validator = _validator(name)
    error = jsonschema.exceptions.best_match(validator.iter_errors(document))
    if error is not None:
        raise HepWorkspaceError(
            f"{name} does not follow the pyhf {SCHEMA_VERSION} schema at "
            f"{_json_path(error.absolute_path)}: {error.message}"
        )

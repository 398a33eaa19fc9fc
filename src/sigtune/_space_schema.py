"""The vocabulary of a search-space parameter definition, defined once as pydantic models.

:mod:`sigtune._space` takes its parameter types, keys, value types and samplings from these
models (and adds the checks a schema cannot express: dependencies between parameters, expression
strings, bounds against ``sampling: log`` ...); :func:`sigtune._config.config_json_schema`
derives the ``search_space`` part of the run-config's JSON Schema from them. Adding a key here
makes both know it.

Example:
    >>> PARAM_TYPES
    ('range', 'choice', 'fixed')
    >>> sorted(PARAM_KEYS["fixed"])
    ['only', 'type', 'value']
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "PARAM_KEYS",
    "PARAM_TYPES",
    "SAMPLINGS",
    "VALUE_TYPES",
    "ChoiceParam",
    "FixedParam",
    "RangeParam",
    "param_json_schema",
]

ValueType = Literal["float", "int"]
Sampling = Literal["uniform", "log", "normal"]
Only = str | list[Any]
_MUTABLE_DOC = (
    "Population Based Training may change this hyperparameter during a training (read by "
    "the ML pipeline's PBT stage; no effect on other searches)."
)


class _Param(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RangeParam(_Param):
    """A number between ``bounds`` (``type: range``, the default)."""

    type: Literal["range"] = "range"
    value_type: ValueType = Field("float", description="float (default) or int.")
    bounds: tuple[float | str, float | str] | str | None = Field(
        None, description="[low, high], inclusive; each entry may be an expression string."
    )
    sampling: Sampling = Field("uniform", description="uniform (default), log or normal.")
    mean: float | None = Field(None, description="Centre of sampling: normal.")
    std: float | None = Field(None, gt=0, description="Width of sampling: normal.")
    step: float | None = Field(None, gt=0, description="Quantisation step (not with log).")
    only: Only | None = Field(None, description='Condition: "expr" or [dep, ..., "expr"].')
    mutable: bool = Field(False, description=_MUTABLE_DOC)


class ChoiceParam(_Param):
    """One of ``values`` (``type: choice``, the default when ``values`` is given)."""

    type: Literal["choice"] = "choice"
    values: list[Any] | str = Field(
        description="The choices (a non-empty list), or an expression string."
    )
    value_type: ValueType | None = Field(None, description="Checks the choices' type.")
    only: Only | None = Field(None, description='Condition: "expr" or [dep, ..., "expr"].')
    mutable: bool = Field(False, description=_MUTABLE_DOC)


class FixedParam(_Param):
    """A fixed value (``type: fixed``; needed only to fix a parameter to a mapping)."""

    type: Literal["fixed"]
    value: Any = Field(description="The value passed to the objective.")
    only: Only | None = Field(None, description='Condition: "expr" or [dep, ..., "expr"].')


_MODELS: tuple[type[_Param], ...] = (RangeParam, ChoiceParam, FixedParam)


def _literal_values(annotation: Any) -> tuple[str, ...]:
    return tuple(typing.get_args(annotation))


PARAM_TYPES: tuple[str, ...] = tuple(
    _literal_values(m.model_fields["type"].annotation)[0] for m in _MODELS
)
PARAM_KEYS: Mapping[str, frozenset[str]] = {
    t: frozenset(m.model_fields) for t, m in zip(PARAM_TYPES, _MODELS, strict=True)
}
VALUE_TYPES: tuple[str, ...] = _literal_values(ValueType)
SAMPLINGS: tuple[str, ...] = _literal_values(Sampling)


def param_json_schema() -> dict[str, Any]:
    """JSON Schema of one entry of ``search_space`` (a definition, or any non-mapping value)."""
    variants: list[dict[str, Any]] = []
    defs: dict[str, Any] = {}
    for model in _MODELS:
        schema = model.model_json_schema(ref_template="#/$defs/{model}")
        defs.update(schema.pop("$defs", {}))
        variants.append(schema)
    out: dict[str, Any] = {
        "description": "A parameter definition (mapping) or a fixed value (anything else).",
        "anyOf": [*variants, {"not": {"type": "object"}}],
    }
    if defs:
        out["$defs"] = defs
    return out

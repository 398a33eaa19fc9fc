"""The YAML run-config: pydantic models, loading, callable references, objective types.

A run-config describes one study (see ``docs/config.md``)::

    study_name: demo
    n_trials: 100
    direction: maximize
    sampler: {name: tpe, options: {multivariate: true}}
    pruner: median
    search_space:
      x: {type: range, bounds: [-5, 5]}
    objective: "objective.py:evaluate"      # relative to this file's directory

:func:`load_config` validates everything at load time (unknown keys, types, sampler/pruner
options, the search space, the objective section of a registered type) and raises one
:class:`~sigtune.ConfigError` that lists every problem with its field path.

Objective types: ``objective`` is a ``"module:function"`` / ``"file.py:function"`` string, or
a mapping with a ``type``. ``type: function`` wraps a user function; other types are plug-ins
registered with :func:`register_objective_type`. The builtin types ``binning`` and ``ml`` are
registered when their module (:data:`BUILTIN_OBJECTIVE_TYPES`) is imported, which happens only
when a config uses them.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from sigtune._exceptions import ConfigError, SearchSpaceError
from sigtune._imports import resolve_callable
from sigtune._pruners import PRUNER_NAMES, pruner_option_errors
from sigtune._samplers import SAMPLER_NAMES, sampler_option_errors
from sigtune._space import SearchSpace
from sigtune._space_schema import param_json_schema
from sigtune._tracking_config import TrackingConfig

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

__all__ = [
    "BUILTIN_OBJECTIVE_TYPES",
    "EngineConfig",
    "FunctionObjectiveConfig",
    "ObjectiveSpec",
    "PrunerConfig",
    "RunConfig",
    "SamplerConfig",
    "WarmStartConfig",
    "build_objective",
    "config_json_schema",
    "load_config",
    "register_objective_type",
    "resolve_callable",
]

Direction = Literal["minimize", "maximize"]


# ---------------------------------------------------------------------- errors


class _FieldErrors(ValueError):
    """Problems found by a validator, each with a path relative to the validated field."""

    def __init__(self, errors: Sequence[tuple[str, str]]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(f"{p}: {m}" for p, m in self.errors))


def _loc(parts: Sequence[Any]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _format_validation_error(exc: ValidationError) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for err in exc.errors():
        loc = _loc(err["loc"])
        inner = err.get("ctx", {}).get("error")
        if isinstance(inner, _FieldErrors):
            for path, msg in inner.errors:
                problems.append((path if not loc else f"{loc}.{path}" if path else loc, msg))
            continue
        msg = err["msg"]
        if err["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field (remove it or check the spelling)"
        problems.append((loc or "(config)", msg))
    return problems


def _raise_problems(problems: Sequence[tuple[str, str]], source: str) -> None:
    unique = list(dict.fromkeys(problems))
    lines = "\n".join(f"  - {p}: {m}" for p, m in unique)
    raise ConfigError(f"invalid run-config {source} ({len(unique)} problem(s)):\n{lines}")


# ---------------------------------------------------------------------- models


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)


class SamplerConfig(_Model):
    """``sampler:``: a name, or ``{name, options}``."""

    name: str = Field("auto", description=f"One of: {', '.join(SAMPLER_NAMES)}.")
    options: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments of the Optuna sampler class."
    )

    @model_validator(mode="after")
    def _check(self) -> SamplerConfig:
        errors = sampler_option_errors(self.name, self.options)
        if errors:
            raise _FieldErrors([(p.removeprefix("sampler."), m) for p, m in errors])
        self.name = self.name.lower()
        return self


class PrunerConfig(_Model):
    """``pruner:``: a name, or ``{name, options}``."""

    name: str = Field("none", description=f"One of: {', '.join(PRUNER_NAMES)}.")
    options: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments of the Optuna pruner class."
    )

    @model_validator(mode="after")
    def _check(self) -> PrunerConfig:
        errors = pruner_option_errors(self.name, self.options)
        if errors:
            raise _FieldErrors([(p.removeprefix("pruner."), m) for p, m in errors])
        return self


class EngineConfig(_Model):
    """``engine:``: a name (``local``), or ``{name, options}``; see :mod:`sigtune._run`."""

    name: str = Field(
        "local",
        description="A registered engine (local, ...) or 'module:factory' of a custom engine.",
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments of the engine's factory."
    )

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        from sigtune._run import engine_names

        if ":" not in value and value not in engine_names():
            raise ValueError(
                f"unknown engine {value!r}; valid: {', '.join(engine_names())} "
                "(or 'module:factory' of a custom engine)"
            )
        return value


class WarmStartConfig(_Model):
    """``warm_start:``: copy the trials of an earlier study before running."""

    storage: str | None = Field(None, description="Storage URL; null = the run's own storage.")
    study_name: str = Field(description="Name of the earlier study.")


class FunctionObjectiveConfig(_Model):
    """``objective: {type: function, target: "module:function", kwargs: {...}}``."""

    type: Literal["function"] = "function"
    target: str = Field(description="'module:function' or 'path/to/file.py:function'.")
    kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Extra keyword arguments passed to the function."
    )


class RaySection(_Model):
    """``ray:``: options of ``engine: ray`` (see docs/cluster.md)."""

    address: str | None = Field(
        None, description="null: RAY_ADDRESS or a new local Ray; 'auto'; 'ray://host:port'."
    )
    cpus_per_trial: float = Field(1.0, ge=0, description="CPUs reserved per trial.")
    gpus_per_trial: float = Field(0.0, ge=0, description="GPUs per trial (0.25: 4 per GPU).")
    max_concurrent: int | None = Field(
        None, ge=1, description="Trials at once (default: cluster CPUs / cpus_per_trial)."
    )
    max_retries: int = Field(3, ge=0, description="Retries of a trial whose worker/node died.")
    runtime_env: dict[str, Any] | None = Field(None, description="Ray runtime_env of the trials.")
    presample: bool = Field(
        True, description="Sample a static search space on the driver (no round trips)."
    )


def _named_section(value: Any) -> Any:
    if isinstance(value, str):
        return {"name": value}
    return value


class RunConfig(_Model):
    """A validated run-config. Build it with :func:`load_config`.

    After validation, :attr:`space` is the built :class:`~sigtune.SearchSpace` (or ``None``)
    and :attr:`objective_config` the validated objective section.
    """

    study_name: str = Field("sigtune", min_length=1, description="Name of the study.")
    run_dir: Path | None = Field(
        None, description="Output directory (default runs/<study_name>, relative to the cwd)."
    )
    storage: str | None = Field(None, description="Storage URL; null = embedded file in run_dir.")
    n_trials: int = Field(ge=1, description="Total trials wanted in the study (required).")
    n_jobs: int = Field(1, ge=1, description="Number of worker processes.")
    timeout: float | None = Field(None, gt=0, description="Seconds for the whole run.")
    trial_timeout: float | None = Field(None, gt=0, description="Seconds per trial.")
    max_failures: Any = Field(
        None, description="Stop after this many failed trials (int) or this fraction (0 < f < 1)."
    )
    seed: int | None = Field(None, description="Sampler seed (null: not reproducible).")
    direction: Direction | None = Field(None, description="Single objective direction.")
    directions: list[Direction] | None = Field(
        None, min_length=1, description="One direction per objective."
    )
    sampler: SamplerConfig = Field(default_factory=lambda: SamplerConfig.model_validate({}))
    pruner: PrunerConfig = Field(default_factory=lambda: PrunerConfig.model_validate({}))
    search_space: dict[str, Any] | None = Field(
        None, description="Declarative search space (OPTIMA semantics), see docs/config.md."
    )
    objective: Any = Field(
        description="'module:function', 'file.py:function' or a mapping with a `type`."
    )
    constraints: str | None = Field(
        None, description="'module:function' returning constraint values (<= 0 feasible)."
    )
    enqueue: list[dict[str, Any]] = Field(
        default_factory=list, description="Parameter sets evaluated first."
    )
    warm_start: WarmStartConfig | None = None
    on_stale_running: Literal["fail", "requeue"] = Field(
        "fail", description="What to do with RUNNING trials of a dead process on resume."
    )
    report: bool = Field(True, description="Write run_dir/report.html after the run.")
    isolate: bool = Field(
        False,
        description="Run each trial in a child process also with n_jobs: 1 (a segfaulting "
        "objective is a FAIL trial; trial_timeout can end C code).",
    )
    tracking: TrackingConfig | None = Field(
        None, description="Experiment tracking: {mlflow: {...}, wandb: {...}} (docs/report.md)."
    )
    callbacks: list[str] = Field(
        default_factory=list,
        description="'module:function' callbacks called as fn(study, frozen_trial) after each "
        "trial (Optuna's callback signature).",
    )
    engine: EngineConfig = Field(default_factory=lambda: EngineConfig.model_validate({}))
    ray: RaySection = Field(default_factory=lambda: RaySection.model_validate({}))

    @property
    def engine_options(self) -> dict[str, Any]:
        """Options of the selected engine: ``engine.options``, plus the ``ray:`` section for
        ``engine: ray`` (``engine.options`` win)."""
        options = dict(self.engine.options)
        if self.engine.name == "ray":
            options = {**self.ray.model_dump(exclude_unset=True), **options}
        return options

    _space: SearchSpace | None = PrivateAttr(default=None)
    _objective_config: BaseModel | None = PrivateAttr(default=None)
    _base_dir: Path | None = PrivateAttr(default=None)

    @field_validator("sampler", "pruner", "engine", mode="before")
    @classmethod
    def _name_only(cls, value: Any) -> Any:
        return _named_section(value)

    @field_validator("max_failures", mode="before")
    @classmethod
    def _check_max_failures(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"must be an integer count or a fraction in (0, 1), got {value!r}")
        if isinstance(value, int) and value < 0:
            raise ValueError(f"a count must be >= 0, got {value}")
        if isinstance(value, float) and not (0.0 < value < 1.0):
            if value.is_integer() and value >= 0:
                return int(value)
            raise ValueError(f"a fraction must be in (0, 1), got {value}")
        return value

    @field_validator("objective", mode="before")
    @classmethod
    def _check_objective_shape(cls, value: Any) -> Any:
        if isinstance(value, str):
            if ":" not in value:
                raise ValueError(
                    f"must be 'module:function' or 'path/to/file.py:function', got {value!r}"
                )
            return value
        if callable(value):
            return value
        if isinstance(value, Mapping):
            if "type" not in value:
                raise ValueError(
                    f"a mapping needs a `type` (function or one of {', '.join(objective_types())})"
                )
            return dict(value)
        raise ValueError(
            f"must be 'module:function', 'path/to/file.py:function' or a mapping with a `type`, "
            f"got {value!r}"
        )

    @field_validator("constraints")
    @classmethod
    def _check_constraints(cls, value: str | None) -> str | None:
        if value is not None and ":" not in value:
            raise ValueError(
                f"must be 'module:function' or 'path/to/file.py:function', got {value!r}"
            )
        return value

    @field_validator("callbacks")
    @classmethod
    def _check_callbacks(cls, value: list[str]) -> list[str]:
        bad = [ref for ref in value if ":" not in ref]
        if bad:
            raise ValueError(
                f"each callback must be 'module:function' or 'path/to/file.py:function', "
                f"got {bad[0]!r}"
            )
        return value

    @model_validator(mode="after")
    def _check_all(self, info: ValidationInfo) -> RunConfig:
        if self.direction is not None and self.directions is not None:
            raise _FieldErrors([("direction", "give either `direction` or `directions`, not both")])
        context = info.context if isinstance(info.context, Mapping) else {}
        base = context.get("base_dir")
        self._base_dir = Path(base) if base is not None else None
        if self.run_dir is None:
            self.run_dir = Path("runs") / self.study_name
        problems: list[tuple[str, str]] = []
        self._space, space_problems = _build_space(self.search_space)
        problems += space_problems
        self._objective_config, objective_problems = _validate_objective(self.objective)
        problems += objective_problems
        if self._space is not None:
            for i, point in enumerate(self.enqueue):
                try:
                    self._space.to_optuna_params(point)
                except SearchSpaceError as exc:
                    problems.append((f"enqueue[{i}]", str(exc).partition(": ")[2] or str(exc)))
        if problems:
            raise _FieldErrors(problems)
        return self

    @property
    def space(self) -> SearchSpace | None:
        """The search space built from ``search_space`` (``None`` if not given)."""
        return self._space

    @property
    def objective_config(self) -> BaseModel:
        """The validated objective section (a :class:`FunctionObjectiveConfig` for functions)."""
        assert self._objective_config is not None
        return self._objective_config

    @property
    def objective_type(self) -> str:
        """``function`` or the registered type name."""
        return str(getattr(self.objective_config, "type", None) or self.objective["type"])

    @property
    def objective_key(self) -> str:
        """A fingerprint of the ``objective:`` section as written (a study run with another one
        is refused, or forked with ``--force``)."""
        import hashlib
        import json

        raw = self.objective
        if callable(raw):
            raw = f"{getattr(raw, '__module__', '?')}:{getattr(raw, '__qualname__', repr(raw))}"
        text = json.dumps(raw, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def base_dir(self) -> Path | None:
        """Directory of the config file (``None`` for a mapping): relative paths start here."""
        return self._base_dir

    @property
    def n_objectives(self) -> int:
        """Number of objectives declared by ``directions`` (1 otherwise)."""
        return len(self.directions) if self.directions else 1

    @property
    def resolved_directions(self) -> list[str]:
        """The directions: ``directions``, ``[direction]`` or ``["minimize"]``."""
        if self.directions:
            return list(self.directions)
        return [self.direction or "minimize"]


def _build_space(raw: Any) -> tuple[SearchSpace | None, list[tuple[str, str]]]:
    if raw is None:
        return None, []
    try:
        return SearchSpace.from_dict(raw), []
    except SearchSpaceError as exc:
        path, sep, msg = str(exc).partition(": ")
        return None, [
            (path, msg) if sep and path.startswith("search_space") else ("search_space", str(exc))
        ]


def _validate_objective(raw: Any) -> tuple[BaseModel | None, list[tuple[str, str]]]:
    if isinstance(raw, str) or callable(raw):
        target = raw if isinstance(raw, str) else "<callable>"
        model = FunctionObjectiveConfig.model_construct(type="function", target=target, kwargs={})
        return model, []
    if not isinstance(raw, Mapping):
        return None, []
    kind = raw.get("type")
    if kind == "function":
        model_cls: type[BaseModel] = FunctionObjectiveConfig
        section = dict(raw)
    else:
        try:
            entry = _lookup_type(kind)
        except ConfigError as exc:
            return None, [("objective.type", str(exc))]
        model_cls = entry.config_model
        section = dict(raw)
        if "type" not in model_cls.model_fields:
            section.pop("type")
    try:
        return model_cls.model_validate(section), []
    except ValidationError as exc:
        return None, [(f"objective.{p}", m) for p, m in _format_validation_error(exc)]


# ---------------------------------------------------------------------- loading


def _deep_merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    result = dict(base)
    for key, value in overrides.items():
        if value is None:
            continue  # None means "not overridden" (e.g. an unset CLI flag)
        if "." in key:
            head, rest = key.split(".", 1)
            inner = result.get(head)
            if isinstance(inner, str) and head in ("sampler", "pruner", "engine"):
                inner = {"name": inner}
            result[head] = _deep_merge(inner if isinstance(inner, dict) else {}, {rest: value})
        elif isinstance(value, Mapping) and isinstance(result.get(key), dict):
            result[key] = _deep_merge(result[key], value)
        else:
            result[key] = value
    return result


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that rejects duplicate keys (YAML would keep the last silently)."""


def _construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:  # unhashable key: the normal constructor reports it
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found duplicate key {key!r}",
                key_node.start_mark,
            )
    loader.flatten_mapping(node)
    return dict(loader.construct_pairs(node))


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_unique_mapping,  # type: ignore[arg-type]
)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"run-config {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read run-config {path}: {exc}") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: safe
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"run-config {path}: YAML syntax error{where}: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"run-config {path}: the top level must be a mapping of fields, got "
            f"{type(data).__name__}"
        )
    return data


def load_config(
    source: str | os.PathLike[str] | Mapping[str, Any],
    overrides: Mapping[str, Any] | None = None,
) -> RunConfig:
    """Read and validate a run-config.

    Args:
        source: Path of a YAML file, or the config as a mapping (relative paths then start
            at the current directory).
        overrides: Values replacing those of the file (e.g. from CLI flags); nested mappings
            merge, dotted keys address nested fields (``{"sampler.name": "tpe"}``) and
            ``None`` values are ignored.

    Returns:
        The validated config.

    Raises:
        ConfigError: Listing every problem with its field path (and the line of a YAML
            syntax error).
    """
    if isinstance(source, Mapping):
        data = dict(source)
        base_dir: Path | None = None
        label = "(mapping)"
    else:
        path = Path(source)
        data = _read_yaml(path)
        base_dir = path.resolve().parent
        label = str(path)
    if overrides:
        data = _deep_merge(data, overrides)
    try:
        return RunConfig.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        problems = _format_validation_error(exc)
        # The whole-model checks did not run if a field failed: list their problems too.
        flagged = {p.split(".")[0].split("[")[0] for p, _ in problems}
        if "search_space" not in flagged and isinstance(data.get("search_space"), Mapping):
            problems += _build_space(data["search_space"])[1]
        if "objective" not in flagged and isinstance(data.get("objective"), Mapping | str):
            problems += _validate_objective(data["objective"])[1]
        _raise_problems(problems, label)
    raise AssertionError("unreachable")  # pragma: no cover


def config_json_schema() -> dict[str, Any]:
    """JSON Schema of the run-config (printed by ``sigtune schema``), for editors."""
    schema = RunConfig.model_json_schema()
    props = schema["properties"]
    props["objective"] = {
        "description": props["objective"].get("description", ""),
        "anyOf": [
            {"type": "string", "pattern": ".+:.+"},
            {"$ref": "#/$defs/FunctionObjectiveConfig"},
            {
                "type": "object",
                "required": ["type"],
                "properties": {"type": {"enum": sorted(objective_types())}},
            },
        ],
    }
    schema.setdefault("$defs", {})["FunctionObjectiveConfig"] = (
        FunctionObjectiveConfig.model_json_schema()
    )
    from sigtune._run import engine_names

    sections = (("sampler", SAMPLER_NAMES), ("pruner", PRUNER_NAMES), ("engine", engine_names()))
    for section, names in sections:
        ref = props[section]
        props[section] = {"anyOf": [{"type": "string", "enum": list(names)}, ref]}
    props["max_failures"] = {
        "description": props["max_failures"].get("description", ""),
        "anyOf": [
            {"type": "integer", "minimum": 0},
            {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            {"type": "null"},
        ],
    }
    param = param_json_schema()  # derived from the pydantic models of sigtune._space_schema
    schema.setdefault("$defs", {}).update(param.pop("$defs", {}))
    props["search_space"] = {
        "description": props["search_space"].get("description", ""),
        "anyOf": [
            {"type": "object", "additionalProperties": param},
            {"type": "null"},
        ],
    }
    return schema


# ---------------------------------------------------------------------- objective types


@dataclass
class ObjectiveSpec:
    """What an objective type gives the study runner.

    Attributes:
        objective: ``fn(trial) -> float | Sequence[float]``, Optuna style.
        directions: Directions the type imposes (``None``: use the run-config's).
        constraints: ``fn(FrozenTrial) -> Sequence[float]`` (<= 0 feasible), or ``None``.
        space: The search space the objective samples from, if declarative.
        after_run: ``fn(study, run_dir)`` writing the type's outputs after the run.
        runner: Replaces :func:`sigtune._study.run_study` (same signature) for types that
            run their trials differently, e.g. in batches (``None``: the default runner).
    """

    objective: Callable[[optuna.Trial], float | Sequence[float]]
    directions: list[str] | None = None
    constraints: Callable[[FrozenTrial], Sequence[float]] | None = None
    space: SearchSpace | None = None
    after_run: Callable[[Any, Path], str | None] | None = None
    runner: Callable[..., Any] | None = None


@dataclass(frozen=True)
class _TypeEntry:
    config_model: type[BaseModel]
    factory: Callable[[Any, RunConfig], ObjectiveSpec]


#: Builtin objective types: name -> (module that registers it, extra that provides it).
BUILTIN_OBJECTIVE_TYPES: Mapping[str, tuple[str, str]] = {
    "binning": ("sigtune.pipelines.binning._config", "hep"),
    "ml": ("sigtune.pipelines.ml._config", "ml"),
}
_REGISTRY: dict[str, _TypeEntry] = {}


def register_objective_type(
    name: str,
    config_model: type[BaseModel],
    factory: Callable[[Any, RunConfig], ObjectiveSpec],
) -> None:
    """Register an objective ``type`` usable in run-configs.

    Args:
        name: The value of ``objective.type``.
        config_model: Pydantic model validating the ``objective`` section (with or without a
            ``type`` field; without, ``type`` is removed before validation).
        factory: ``factory(section, config) -> ObjectiveSpec``.

    Raises:
        ConfigError: If ``name`` is ``function`` or the arguments have the wrong kind.
    """
    if not isinstance(name, str) or not name or name == "function":
        raise ConfigError(
            f"objective type name must be a non-empty string other than 'function', got {name!r}"
        )
    if not (isinstance(config_model, type) and issubclass(config_model, BaseModel)):
        raise ConfigError(f"objective type {name!r}: config_model must be a pydantic model class")
    if not callable(factory):
        raise ConfigError(f"objective type {name!r}: factory must be callable")
    _REGISTRY[name] = _TypeEntry(config_model, factory)


def objective_types() -> list[str]:
    """Names usable as ``objective.type`` (registered and builtin)."""
    return sorted({"function", *_REGISTRY, *BUILTIN_OBJECTIVE_TYPES})


def _lookup_type(kind: Any) -> _TypeEntry:
    if not isinstance(kind, str):
        raise ConfigError(f"must be a string, one of {', '.join(objective_types())}; got {kind!r}")
    if kind in _REGISTRY:
        return _REGISTRY[kind]
    if kind in BUILTIN_OBJECTIVE_TYPES:
        module, extra = BUILTIN_OBJECTIVE_TYPES[kind]
        try:
            importlib.import_module(module)
        except ImportError as exc:
            if exc.name is not None and module.startswith(exc.name):
                raise ConfigError(
                    f"objective type {kind!r} is unavailable in this installation "
                    f"({module} is missing)"
                ) from None
            raise ConfigError(
                f"objective type {kind!r} is unavailable: importing {module} failed ({exc}); "
                f"install the extra with: pip install 'sigtune[{extra}]'"
            ) from None
        if kind in _REGISTRY:
            return _REGISTRY[kind]
        raise ConfigError(f"objective type {kind!r} is unavailable: {module} did not register it")
    raise ConfigError(f"unknown objective type {kind!r}; valid: {', '.join(objective_types())}")


class _FunctionObjective:
    """Picklable wrapper calling a user function, Optuna style or with the params dict."""

    def __init__(
        self, fn: Callable[..., Any], kwargs: Mapping[str, Any], space: SearchSpace | None
    ) -> None:
        self.fn = fn
        self.kwargs = dict(kwargs)
        self.space = space

    def __call__(self, trial: optuna.Trial) -> Any:
        if self.space is not None:
            return self.fn(self.space.suggest(trial), trial, **self.kwargs)
        return self.fn(trial, **self.kwargs)

    def __repr__(self) -> str:
        return f"_FunctionObjective({getattr(self.fn, '__qualname__', self.fn)!r})"


def build_objective(config: RunConfig) -> ObjectiveSpec:
    """Turn the ``objective`` section of ``config`` into an :class:`ObjectiveSpec`.

    For ``type: function`` (or a plain reference) the user function is called as
    ``fn(params, trial, **kwargs)`` when ``search_space`` is set, else ``fn(trial, **kwargs)``.
    The spec's ``constraints`` default to the config's ``constraints`` reference and its
    ``space`` to the config's search space.

    Raises:
        ObjectiveError: If a referenced function cannot be imported.
        ConfigError: If the objective type is unavailable.
    """
    section = config.objective_config
    raw = config.objective
    if isinstance(section, FunctionObjectiveConfig):
        fn = raw if callable(raw) else resolve_callable(section.target, config.base_dir)
        spec = ObjectiveSpec(
            objective=_FunctionObjective(fn, section.kwargs, config.space), space=config.space
        )
    else:
        entry = _lookup_type(raw["type"])
        spec = entry.factory(section, config)
        if not isinstance(spec, ObjectiveSpec):
            raise ConfigError(
                f"objective type {raw['type']!r}: its factory returned {type(spec).__name__}, "
                f"not an ObjectiveSpec"
            )
        if spec.space is None:
            spec.space = config.space
    if spec.constraints is None and config.constraints is not None:
        spec.constraints = resolve_callable(config.constraints, config.base_dir)
    return spec

"""``sigtune import-optima RUN_CONFIG.py -o config.yaml``: translate an OPTIMA run-config.

OPTIMA's run-config is a Python file of module-level assignments (defaults in its
``defaults.py``). It is read here as data, never executed: the file is parsed with :mod:`ast`,
literal values are read with :func:`ast.literal_eval`, ``np.inf`` is understood, and a
condition ``((name, ...), lambda ...: expr)`` of the search space becomes a sigtune expression
string when the lambda's body is a plain expression of its arguments. Everything else (function
definitions such as ``get_inputs`` or ``build_model``, callables in metric lists, PBT settings)
is listed as *not translated*, with what to do instead, in the header of the written YAML and in
the returned :class:`Translation`.

The output is a ``sigtune run`` config with an ``objective: {type: ml, ...}`` section (see
docs/ml-pipeline.md, "Coming from OPTIMA", for the option-by-option table).
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sigtune._exceptions import ConfigError

__all__ = ["OPTION_MAP", "Translation", "import_optima", "translate_optima", "write_translation"]

_MISSING = object()


@dataclass
class Translation:
    """The translated run-config and what could not be translated.

    Attributes:
        config: The sigtune run-config (a mapping ready for YAML).
        untranslated: ``(option, why / what to do)`` pairs.
        unknown: Top-level names that are not OPTIMA options (ignored).
    """

    config: dict[str, Any]
    untranslated: list[tuple[str, str]] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)


def _read_assignments(source: str, where: str) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Module-level ``name = value`` pairs whose value is data; the rest as (name, reason)."""
    try:
        tree = ast.parse(source, filename=where)
    except SyntaxError as exc:
        raise ConfigError(f"{where}: not valid Python ({exc.msg}, line {exc.lineno})") from None
    values: dict[str, Any] = {}
    skipped: list[tuple[str, str]] = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            skipped.append((node.name, _HOOKS.get(node.name, "Python code: rewrite as a hook")))
            continue
        targets: list[ast.expr] = []
        value: ast.expr | None = None
        if isinstance(node, ast.Assign):
            targets, value = list(node.targets), node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        if value is None:
            continue
        for target in targets:
            if not isinstance(target, ast.Name):
                continue
            data = _data(value)
            if data is _MISSING:
                skipped.append((target.id, "not a literal value (computed or callable)"))
            else:
                values[target.id] = data
    return values, skipped


def _data(node: ast.expr) -> Any:
    """A literal (with ``np.inf`` / ``math.inf``), a condition tuple, or ``_MISSING``."""
    if isinstance(node, ast.Attribute) and node.attr == "inf":
        return math.inf
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _data(node.operand)
        return -inner if isinstance(inner, (int, float)) else _MISSING
    if isinstance(node, ast.Lambda):
        return _Lambda(node)
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_data(e) for e in node.elts]
        if any(i is _MISSING for i in items):
            return _MISSING
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.Dict):
        out: dict[Any, Any] = {}
        for k, v in zip(node.keys, node.values, strict=True):
            if k is None:
                return _MISSING
            key, val = _data(k), _data(v)
            if key is _MISSING or val is _MISSING:
                return _MISSING
            out[key] = val
        return out
    try:
        return ast.literal_eval(node)
    except ValueError:
        return _MISSING


@dataclass(frozen=True)
class _Lambda:
    node: ast.Lambda

    def expression(self, names: tuple[str, ...]) -> str | None:
        """The body as an expression of ``names`` (the lambda's arguments renamed), or None."""
        args = [a.arg for a in self.node.args.args]
        if len(args) != len(names) or self.node.args.vararg or self.node.args.kwarg:
            return None
        rename = dict(zip(args, names, strict=True))

        class _Rename(ast.NodeTransformer):
            def visit_Name(self, n: ast.Name) -> ast.AST:
                return ast.copy_location(ast.Name(rename.get(n.id, n.id), n.ctx), n)

        body = _Rename().visit(ast.parse(ast.unparse(self.node.body), mode="eval").body)
        return ast.unparse(body)


def _condition(value: Any) -> str | None:
    """OPTIMA's ``((name, ...), lambda ...)`` as a sigtune expression, or None."""
    if (
        isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[0], tuple)
        and all(isinstance(n, str) for n in value[0])
        and isinstance(value[1], _Lambda)
    ):
        return value[1].expression(tuple(value[0]))
    return None


# Python hooks of OPTIMA's run-config and their sigtune counterparts.
_HOOKS = {
    "get_inputs": "input reading: convert the inputs once to Parquet (data.source) or keep the "
    "pickle (data.allow_pickle: true, OPTIMA's column groups are read natively)",
    "build_model": "model: trainable.kind torch/lightning/keras with options.module or "
    "options.builder: 'package.module:factory'",
    "compile_model": "compile: a keras builder may return a compiled model",
    "update_model": "PBT model update: the PBT stage (sigtune issue 13)",
    "evaluate": "custom evaluation: run your function on <run_dir>/cv/<trial>/fold_*/model "
    "(load_trainable)",
    "finalize_model": "final-model post-processing: load the fold models with load_trainable",
    "get_experiment_folder": "output folder: run_dir",
}

# OPTIMA option -> sigtune run-config path (the "Coming from OPTIMA" table of the docs is this).
OPTION_MAP: dict[str, str] = {
    "output_name": "study_name (run_dir: <output_path>/<output_name>)",
    "output_path": "run_dir",
    "use_exact_name": "(run_dir is used as given)",
    "produce_inputs_plots": "evaluation (inputs.png per class)",
    "inputs_file": "objective.data.source (+ allow_pickle: true for .pkl)",
    "input_vars": "objective.data.features",
    "input_scaling": "objective.trainable.options.scaling",
    "max_num_events": "(select events before; not translated when finite)",
    "max_event_weight": "search_space.max_event_weight",
    "use_testing_dataset": "objective.split.test_fraction (0 without) and objective.cv.test",
    "fixed_testing_dataset": "objective.cv.test: fixed | rotating",
    "use_eventNums_splitting": "objective.split.method: event_number",
    "eventNums_splitting_offset_val": "objective.split.val_fold (offset 0)",
    "eventNums_splitting_offset_test": "objective.split.test_fold",
    "eventNums_splitting_N": "objective.split.n_folds",
    "validation_fraction": "objective.split.val_fraction",
    "test_fraction": "objective.split.test_fraction",
    "model_type": "objective.trainable.kind (mlp: the built-in MLP, PyTorch)",
    "monitor_name": "objective.monitor",
    "monitor_op": "objective.direction",
    "optimize_on_best_value": "objective.trial_value: best_epoch (True) | last_valid_epoch",
    "max_epochs": "search_space.max_epochs",
    "early_stopping_patience": "search_space.patience",
    "overtraining_patience": "search_space.overtraining_patience",
    "random_seed": "seed",
    "fit_min_R_squared": "objective.selection.min_r2",
    "check_overtraining_with_fit": "(always: best-fit checks the fitted values)",
    "use_early_stopping_for_crossvalidation": "objective.cv.early_stopping",
    "evaluation_class_labels": "objective.evaluation.class_names",
    "num_samples_variableOpt": "objective.presearch.n_trials",
    "num_samples_main": "n_trials",
    "use_TPESampler": "sampler: tpe | random",
    "use_multivariate_TPE": "sampler.options.multivariate",
    "use_ASHAScheduler": "pruner: successive_halving (ASHA) | none",
    "ASHA_grace_period": "pruner.options.min_resource",
    "ASHA_reduction_factor": "pruner.options.reduction_factor",
    "ASHA_max_t": "(max_epochs bounds the resource)",
    "perform_variable_opt": "objective.presearch.enabled and objective.varsel.enabled",
    "perform_main_hyperopt": "(the main search is the study of `sigtune run`)",
    "var_metric": "objective.varsel.metric (loss -> balanced_loss)",
    "var_metric_op": "(the metric's direction)",
    "variable_optimization_mode": "objective.varsel.mode",
    "acceptance_criterion": "objective.varsel.acceptance",
    "max_rel_change": "objective.varsel.max_rel_change",
    "var_opt_patience": "objective.varsel.patience",
    "choose_best_var_set": "objective.varsel.choose: best | last",
    "num_repeats": "objective.varsel.num_repeats",
    "reevaluate_candidate_to_drop": "objective.varsel.reevaluate",
    "use_median_for_averages": "objective.cv.aggregate: median | mean",
    "search_space": "search_space (supports_mutation as mutable, conditions as expressions)",
    "overtraining_conditions": "objective.selection.overtraining (expressions)",
}

_NOT_YET = {
    "perform_PBT_hyperopt": "PBT stage: sigtune issue 13",
    "num_samples_PBT": "PBT stage: sigtune issue 13",
    "use_fit_results_for_PBT": "PBT stage: sigtune issue 13",
    "perturbation_interval": "PBT stage: sigtune issue 13",
    "burn_in_period": "PBT stage: sigtune issue 13",
    "restore_on_best_checkpoint": "checkpoints keep the best epoch (restore_best_weights)",
    "checkpoint_frequency": "search.checkpoints saves every epoch",
    "reuse_seed_for_crossvalidation": "cv folds use seed + fold",
    "fixed_seed_for_crossvalidation": "cv folds use seed + fold",
    "use_OT_conditions_for_crossvalidation": "cv trains the selected epochs",
    "hybrid_revert_to_best_before_switch": "varsel hybrid reverts to the best set",
    "num_repeats_hybrid_retrain": "varsel.num_repeats",
    "retrain_for_reevaluation": "varsel.reevaluate retrains",
    "num_repeats_for_reevaluation": "varsel.num_repeats",
    "use_fit_results_for_varOpt": "varsel uses the pre-search's best trial",
    "callbacks": "framework callbacks: Python objects, give them in your torch/lightning factory",
    "native_metrics": "metrics: register_metric(...) and trainable.options.metrics",
    "weighted_native_metrics": "metrics: weighted_* metrics or register_metric",
    "custom_metrics": "metrics: register_metric(...); FoMs s_sqrt_b, z_asimov, ... built in",
    "composite_metrics": "composite_metric(name, 'expression of metrics')",
    "path_to_setup_file": "cluster setup: engine settings",
    "max_pending_trials": "n_jobs",
}


def translate_optima(values: Mapping[str, Any]) -> Translation:
    """Translate OPTIMA option values (read by :func:`import_optima`) to a sigtune run-config."""
    v = dict(values)
    t = Translation(config={})
    notes = t.untranslated

    def get(name: str, default: Any = None) -> Any:
        return v.get(name, default)

    out_name = str(get("output_name", "optima_run"))
    cfg: dict[str, Any] = {
        "study_name": out_name,
        "run_dir": str(Path(str(get("output_path", "runs"))) / out_name),
        "n_trials": int(get("num_samples_main", 1)),
        "sampler": {
            "name": "tpe" if get("use_TPESampler", True) else "random",
            "options": {"multivariate": True} if get("use_multivariate_TPE") else {},
        },
        "pruner": (
            {
                "name": "successive_halving",
                "options": {
                    "min_resource": int(get("ASHA_grace_period", 15)),
                    "reduction_factor": int(get("ASHA_reduction_factor", 2)),
                },
            }
            if get("use_ASHAScheduler", True)
            else {"name": "none"}
        ),
    }
    if get("random_seed") is not None:
        cfg["seed"] = int(get("random_seed"))

    space, space_notes = _space(get("search_space", {}))
    notes.extend(space_notes)
    max_epochs = get("max_epochs", 200)
    space.setdefault("max_epochs", int(max_epochs) if math.isfinite(max_epochs) else 200)
    space.setdefault("patience", int(get("early_stopping_patience", 6)))
    space.setdefault("overtraining_patience", int(get("overtraining_patience", 6)))
    mew = get("max_event_weight", math.inf)
    if isinstance(mew, (int, float)) and math.isfinite(mew):
        space.setdefault("max_event_weight", float(mew))
    cfg["search_space"] = space

    objective: dict[str, Any] = {"type": "ml"}
    inputs = get("inputs_file")
    if inputs is None:
        notes.append(("inputs_file", "not given: set objective.data.source"))
        data: dict[str, Any] = {"source": "CHANGE_ME.parquet"}
    else:
        data = {"source": str(inputs)}
        if str(inputs).endswith((".pkl", ".pickle")):
            data["allow_pickle"] = True
    data["features"] = list(get("input_vars")) if get("input_vars") is not None else None
    data["target"] = "targets"  # OPTIMA's column group; one-hot or one column
    objective["data"] = data
    max_events = get("max_num_events", math.inf)
    if isinstance(max_events, (int, float)) and math.isfinite(max_events):
        notes.append(("max_num_events", f"{max_events}: select the events before (not an option)"))

    if get("use_eventNums_splitting", False):
        n = int(get("eventNums_splitting_N", 5))
        split: dict[str, Any] = {
            "method": "event_number",
            "n_folds": n,
            "offset": 0,
            "val_fold": (-int(get("eventNums_splitting_offset_val", 0))) % n,
            "test_fold": (-int(get("eventNums_splitting_offset_test", 1))) % n,
        }
    else:
        split = {
            "method": "random",
            "val_fraction": float(get("validation_fraction", 0.2)),
            "test_fraction": float(get("test_fraction", 0.2))
            if get("use_testing_dataset", True)
            else 0.0,
        }
    objective["split"] = split

    model_type = str(get("model_type", "Keras"))
    trainable: dict[str, Any] = {"kind": "mlp", "options": {}}
    if model_type not in ("Keras", "Lightning"):
        notes.append(("model_type", f"{model_type!r}: unknown; the built-in MLP is used"))
    scaling = get("input_scaling")
    if isinstance(scaling, Mapping):
        trainable["options"]["scaling"] = {
            str(var): {
                "kind": str(spec[0]),
                "scale": float(spec[1][0]),
                "offset": float(spec[1][1]),
            }
            for var, spec in scaling.items()
        }
    objective["trainable"] = trainable
    objective["monitor"] = str(get("monitor_name", "val_loss"))
    objective["direction"] = "minimize" if get("monitor_op", "min") == "min" else "maximize"
    objective["trial_value"] = (
        "best_epoch" if get("optimize_on_best_value", False) else "last_valid_epoch"
    )

    var_opt = bool(get("perform_variable_opt", True))
    objective["presearch"] = {
        "enabled": var_opt,
        "n_trials": int(get("num_samples_variableOpt", 1)),
        "sampler": cfg["sampler"],
        "pruner": cfg["pruner"],
    }
    metric = str(get("var_metric", "loss"))
    objective["varsel"] = {
        "enabled": var_opt,
        "mode": str(get("variable_optimization_mode", "hybrid")),
        "metric": "balanced_loss" if metric == "loss" else metric,
        "acceptance": str(get("acceptance_criterion", "improvement")),
        "max_rel_change": float(get("max_rel_change", 0.5)),
        "patience": int(get("var_opt_patience", 3)),
        "choose": "best" if get("choose_best_var_set", True) else "last",
        "num_repeats": int(get("num_repeats", 5)),
        "reevaluate": bool(get("reevaluate_candidate_to_drop", True)),
    }
    conditions, cond_notes = _conditions(get("overtraining_conditions", []))
    notes.extend(cond_notes)
    objective["selection"] = {
        "min_r2": float(get("fit_min_R_squared", 0.9)),
        "overtraining": conditions,
    }
    if not get("use_testing_dataset", True):
        cv_test = "none"
    else:
        cv_test = "fixed" if get("fixed_testing_dataset", True) else "rotating"
    objective["cv"] = {
        "test": cv_test,
        "early_stopping": bool(get("use_early_stopping_for_crossvalidation", False)),
        "aggregate": "median" if get("use_median_for_averages", False) else "mean",
    }
    labels = get("evaluation_class_labels")
    if labels is not None:
        # OPTIMA lists the "1" label first for binary problems; sigtune names class 0 first
        names = [str(x) for x in labels]
        objective["evaluation"] = {"class_names": names[::-1] if len(names) == 2 else names}
    cfg["objective"] = objective
    if not get("perform_main_hyperopt", True):
        notes.append(("perform_main_hyperopt", "False: sigtune's main search always runs"))

    for name in v:
        if name in _NOT_YET and v[name] not in (None, [], {}, False):
            notes.append((name, _NOT_YET[name]))
        elif name not in OPTION_MAP and name not in _NOT_YET and not name.startswith("_"):
            t.unknown.append(name)
    t.config = cfg
    return t


def _space(raw: Any) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    notes: list[tuple[str, str]] = []
    if not isinstance(raw, Mapping):
        return {}, [("search_space", "not a literal mapping")]
    out: dict[str, Any] = {}
    for name, spec in raw.items():
        where = f"search_space.{name}"
        if not isinstance(spec, Mapping):
            out[str(name)] = spec
            continue
        entry: dict[str, Any] = {}
        ok = True
        for key, val in spec.items():
            if key == "supports_mutation":
                if val is True:  # read by the PBT stage (objective.pbt)
                    entry["mutable"] = True
                continue
            if key in ("only", "bounds", "values") and isinstance(val, tuple) and _condition(val):
                if key == "only":
                    entry["only"] = _condition(val)
                else:
                    notes.append((f"{where}.{key}", "conditional bounds/values: not translated"))
                    ok = False
                continue
            if isinstance(val, _Lambda):
                notes.append((f"{where}.{key}", "a lambda: not translated"))
                ok = False
                continue
            entry[str(key)] = list(val) if isinstance(val, tuple) else val
        if ok:
            out[str(name)] = entry
    return out, notes


def _conditions(raw: Any) -> tuple[list[str], list[tuple[str, str]]]:
    out: list[str] = []
    notes: list[tuple[str, str]] = []
    for i, item in enumerate(raw if isinstance(raw, list) else []):
        expr = None
        if isinstance(item, tuple) and len(item) == 3:
            expr = _condition((item[1], item[2]))
        if expr is None:
            notes.append(
                (f"overtraining_conditions[{i}]", "not a plain lambda: write it as an expression")
            )
            continue
        out.append(expr.replace("train_", ""))  # OPTIMA's train_x is sigtune's x
    return out, notes


def import_optima(path: str | Path) -> Translation:
    """Read an OPTIMA run-config (without executing it) and translate it.

    Raises:
        ConfigError: The file does not exist or is not valid Python.
    """
    src = Path(path)
    if not src.is_file():
        raise ConfigError(f"OPTIMA run-config {str(src)!r} does not exist")
    values, skipped = _read_assignments(src.read_text(), str(src))
    t = translate_optima(values)
    t.untranslated[:0] = [(name, why) for name, why in skipped]
    return t


def write_translation(t: Translation, output: Path | None, echo: Callable[[str], None]) -> str:
    """The YAML text (header listing what was not translated); written to ``output`` if given."""
    import yaml

    header = ["# sigtune run-config translated from an OPTIMA run-config (sigtune import-optima)"]
    if t.untranslated:
        header.append("# NOT translated:")
        header += [f"#   {name}: {why}" for name, why in t.untranslated]
    if t.unknown:
        header.append(f"# ignored (not OPTIMA options): {', '.join(t.unknown)}")
    text = "\n".join(header) + "\n" + yaml.safe_dump(t.config, sort_keys=False)
    if output is not None:
        output.write_text(text)
    for name, why in t.untranslated:
        echo(f"not translated: {name}: {why}")
    return text


def main(source: Path, output: Path | None, echo: Callable[[str], None]) -> str:
    """CLI body of ``sigtune import-optima`` (kept out of cli.py)."""
    return write_translation(import_optima(source), output, echo)

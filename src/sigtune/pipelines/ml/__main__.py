"""``python -m sigtune.pipelines.ml CONFIG.yaml``: run (or resume) the whole ML pipeline.

``CONFIG.yaml`` is either a pipeline config (:class:`~sigtune.pipelines.ml.PipelineConfig`) or a
run-config whose ``objective`` has ``type: ml``. Exit codes: 0 done, 2 invalid config, 1 a stage
failed.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from sigtune._exceptions import ConfigError, SigtuneError


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        return 0 if args and args[0] in ("-h", "--help") else 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("optuna").setLevel(logging.WARNING)
    from sigtune.pipelines.ml._pipeline import load_pipeline_config, run_pipeline

    path = Path(args[0])
    try:
        import yaml

        raw = yaml.safe_load(path.read_text()) if path.is_file() else None
        if isinstance(raw, dict) and "objective" in raw:
            from sigtune._config import load_config
            from sigtune.pipelines.ml._config import MLObjectiveConfig, pipeline_config_from_run

            run_cfg = load_config(path)
            section = run_cfg.objective_config
            if not isinstance(section, MLObjectiveConfig):
                raise ConfigError(f"{path}: objective.type must be 'ml' for this command")
            cfg = pipeline_config_from_run(section, run_cfg)
        else:
            cfg = load_pipeline_config(path)
        result = run_pipeline(cfg)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SigtuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    summary: dict[str, object] = {
        "run_dir": str(result.run_dir),
        "ran": result.ran,
        "skipped": result.skipped,
        "selected_variables": result.features,
    }
    cv = result.outputs.get("cv")
    if cv:
        summary["cv"] = {label: res["summary"] for label, res in cv["trials"].items()}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

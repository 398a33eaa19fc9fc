"""Population Based Training: the fine-tuning stage of the ML pipeline, on Ray Tune's schedulers.

A population of trainings runs in parallel under Ray Tune's ``PopulationBasedTraining`` (or
``PB2``) scheduler; every ``perturbation_interval`` epochs the members in the worst
``quantile_fraction`` copy the checkpoint (weights, optimiser state, epoch counter, input
scaler) and the hyperparameters of a member of the best quantile (exploit), and the mutable
hyperparameters are perturbed inside their declared mutations (explore). This module only
adapts sigtune's trainables to Ray Tune: the scheduling, exploit and explore are Ray Tune's.

Each member is a Ray Tune function trainable that trains a torch trainable (``mlp``/``torch``,
``lightning``, ``keras`` on the torch backend) with a reporter that checkpoints every epoch (:meth:`TorchTrainable.save_checkpoint`) and
reports the epoch's metrics to Tune. When Tune restarts a member from another member's
checkpoint with a new config (exploit), the trainable continues from the checkpoint's epoch
with the new hyperparameters (``fit(..., start_from=checkpoint)``). The hyperparameters of each
epoch travel with the checkpoints, so a member's final checkpoint holds its whole schedule.

Outputs (in ``<run_dir>/pbt/``): ``best_model/`` (the winner's final model), ``schedule.json``
(the value of each mutable hyperparameter per epoch), ``pbt.png`` (the population's monitored
metric against epochs with exploits marked), the members as trials of the study ``pbt`` in the
stage's storage, and Ray Tune's experiment in ``ray/`` (a killed run resumes from it).
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickletools
import random
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from sigtune._exceptions import ConfigError
from sigtune._figures import save_tight
from sigtune.engines._ray import start_local_ray

__all__ = ["MutationRange", "PBTStage", "run_pbt", "split_mutable"]

log = logging.getLogger(__name__)

#: Columns of a member's reported row that are not metrics.
_HP_PREFIX = "hp_"
EXPERIMENT = "pbt"
#: Next to the experiment: the last complete copy of each of Tune's experiment-level state files.
STATE_BACKUP = "state-backup"
#: Tune's experiment-level state files that a resume reads (JSON; the search state and the
#: tuner, which holds the scheduler, are pickles).
_STATE_GLOBS = ("experiment_state-*.json", "basic-variant-state-*.json", "tuner.pkl")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class MutationRange(_Model):
    """A mutation as a range: ``{low, high, log, type}`` (inclusive bounds)."""

    low: float
    high: float
    log: bool = False
    type: Literal["float", "int"] = "float"

    @model_validator(mode="after")
    def _order(self) -> MutationRange:
        if not self.low < self.high:
            raise ValueError(f"low must be < high, got [{self.low}, {self.high}]")
        if self.log and self.low <= 0:
            raise ValueError(f"log mutation needs low > 0, got {self.low}")
        return self

    def clip(self, value: Any) -> float | int:
        """``value`` inside ``[low, high]`` (rounded for ``type: int``)."""
        v = min(max(float(value), self.low), self.high)
        return round(v) if self.type == "int" else v

    def sample(self, rng: random.Random) -> float | int:
        """A random value (log-uniform with ``log``)."""
        if self.log:
            v = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            v = rng.uniform(self.low, self.high)
        return self.clip(v)


Mutation = MutationRange | list[Any]


class PBTStage(_Model):
    """``pbt:`` Population Based Training after the search (off unless this section is given).

    Attributes:
        population: Number of members trained in parallel.
        scheduler: ``pbt`` (Ray Tune's PopulationBasedTraining) or ``pb2`` (PB2: a GP-bandit
            explore; ranges only, needs GPy and scikit-learn).
        perturbation_interval: Epochs between exploit/explore decisions.
        burn_in: Epochs before the first decision (``pbt`` only).
        quantile_fraction: Fraction of members in the top / bottom quantile.
        resample_probability: Probability of resampling a value instead of perturbing it.
        max_epochs: Epochs of every member.
        init: ``best`` (the best trial replicated, with different seeds), ``top_k`` (the best
            ``population`` trials of the main search) or ``sample`` (samples of the space).
        mutations: Mutable hyperparameter -> a range ``{low, high, log, type}`` or a list of
            values; added to the search-space parameters marked ``mutable: true``.
        synch: Synchronous PBT (every member waits at each interval; needed for a fair
            comparison when fewer members than ``population`` run at once).
        max_concurrent: Members running at once (``None``: as many as Ray's CPUs allow).
        address: Ray cluster address (``None``: a local Ray instance).
        num_cpus: CPUs of the local Ray instance (``None``: Ray's default).
    """

    enabled: bool = True
    population: int = Field(8, ge=2)
    scheduler: Literal["pbt", "pb2"] = "pbt"
    perturbation_interval: int = Field(4, ge=1)
    burn_in: int = Field(0, ge=0)
    quantile_fraction: float = Field(0.25, gt=0, le=0.5)
    resample_probability: float = Field(0.25, ge=0, le=1)
    max_epochs: int = Field(40, ge=1)
    init: Literal["best", "top_k", "sample"] = "best"
    mutations: dict[str, MutationRange | list[Any]] = Field(default_factory=dict)
    synch: bool = True
    max_concurrent: int | None = Field(None, ge=1)
    address: str | None = None
    num_cpus: int | None = Field(None, ge=1)
    storage: str | None = Field(None, description="Storage of the members' study (null: stage).")
    study_name: str | None = Field(None, description="Study name of the members (null: pbt).")

    @model_validator(mode="after")
    def _check(self) -> PBTStage:
        from sigtune.pipelines.ml._mlp import is_architecture

        arch = sorted(k for k in self.mutations if is_architecture(k))
        if arch:
            raise ValueError(
                f"{arch} change the network's architecture and cannot be mutated during "
                "training; mutate training hyperparameters (learning_rate, dropout, ...)"
            )
        for name, m in self.mutations.items():
            if isinstance(m, list) and not m:
                raise ValueError(f"mutations.{name}: the list of values is empty")
        if self.scheduler == "pb2":
            lists = sorted(k for k, m in self.mutations.items() if isinstance(m, list))
            if lists:
                raise ValueError(f"scheduler pb2 needs ranges {{low, high}}, not lists: {lists}")
        return self


# ---------------------------------------------------------------------- mutable parameters
def split_mutable(space: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Mutation]]:
    """Remove ``mutable: true`` from a search space; return the plain space and the mutations
    that the marked parameters' definitions imply (``bounds`` -> a range, ``values`` -> a list).

    Raises:
        ConfigError: An architecture parameter (layers, units, ...) is marked mutable, or a
            marked parameter has no numeric bounds / value list.
    """
    from sigtune.pipelines.ml._mlp import is_architecture

    clean: dict[str, Any] = {}
    mutations: dict[str, Mutation] = {}
    for name, raw in space.items():
        if not (isinstance(raw, Mapping) and "mutable" in raw):
            clean[name] = raw
            continue
        d = dict(raw)
        mutable = d.pop("mutable")
        clean[name] = d
        if not isinstance(mutable, bool):
            raise ConfigError(f"search_space.{name}.mutable must be true or false, got {mutable!r}")
        if not mutable:
            continue
        if is_architecture(name):
            raise ConfigError(
                f"search_space.{name}: {name!r} changes the network's architecture and cannot "
                "be mutable (Population Based Training changes hyperparameters during a "
                "training); remove `mutable: true`"
            )
        if "values" in d:
            values = d["values"]
            if not isinstance(values, list):
                raise ConfigError(f"search_space.{name}: a mutable choice needs a list of values")
            mutations[name] = list(values)
            continue
        bounds = d.get("bounds")
        if (
            not isinstance(bounds, list | tuple)
            or len(bounds) != 2
            or not all(isinstance(b, int | float) and not isinstance(b, bool) for b in bounds)
        ):
            raise ConfigError(
                f"search_space.{name}: a mutable parameter needs numeric bounds or a list of "
                "values (or give its range in pbt.mutations)"
            )
        try:
            mutations[name] = MutationRange(
                low=float(bounds[0]),
                high=float(bounds[1]),
                log=d.get("sampling") == "log",
                type="int" if d.get("value_type") == "int" else "float",
            )
        except ValueError as exc:
            raise ConfigError(f"search_space.{name}: {exc}") from None
    return clean, mutations


def _explore_clip(mutations: Mapping[str, Mutation]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Ray Tune's ``custom_explore_fn``: Tune perturbs a range by factors 0.8 / 1.2 without
    bounds; this keeps every perturbed value inside its declared range."""

    def explore(config: dict[str, Any]) -> dict[str, Any]:
        for name, m in mutations.items():
            if isinstance(m, MutationRange) and name in config:
                config[name] = m.clip(config[name])
        return config

    return explore


def _ray_mutation(m: Mutation) -> Any:
    from ray import tune

    if isinstance(m, list):
        return list(m)
    if m.type == "int":
        return (
            tune.lograndint(int(m.low), int(m.high) + 1)
            if m.log
            else tune.randint(int(m.low), int(m.high) + 1)
        )
    return tune.loguniform(m.low, m.high) if m.log else tune.uniform(m.low, m.high)


# ---------------------------------------------------------------------- one member
def _member(
    config: dict[str, Any],
    *,
    factory: Any,
    train: Any,
    val: Any,
    init: Sequence[Mapping[str, Any]],
    mutable: Sequence[str],
    max_epochs: int,
    seed: int,
) -> None:
    """A Ray Tune function trainable: one member of the population."""
    from ray import tune

    from sigtune.pipelines.ml._history import EpochAction
    from sigtune.pipelines.ml._mlp import weights_digest

    idx = int(config["member"])
    hp = {k: _py(config[k]) for k in mutable}
    params = {
        **init[idx],
        **hp,
        "max_epochs": int(max_epochs),
        "patience": None,  # a member runs all epochs; PBT replaces the bad ones
        "schedule": None,
    }
    ctx = tune.get_context()
    trial_id = str(ctx.get_trial_id())
    # not inside the trial folder: Tune syncs that folder, and these files come and go
    scratch = Path(tempfile.mkdtemp(prefix=f"sigtune-pbt-{trial_id}-"))
    schedule: list[dict[str, Any]] = []
    start_from: Path | None = None
    exploited_from, source_digest = "", ""
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        start_from = Path(ckpt.to_directory(str(scratch / "start")))
        meta = json.loads((start_from / "member.json").read_text())
        schedule = [dict(s) for s in meta["schedule"][: int(meta["epoch"])]]
        if meta["trial_id"] != trial_id:  # another member's checkpoint: an exploit
            exploited_from, source_digest = str(meta["trial_id"]), str(meta["digest"])
    model = factory(seed=seed + idx)
    if not hasattr(model, "save_checkpoint"):
        raise ConfigError(
            f"Population Based Training needs a trainable that checkpoints during training "
            f"(kind 'mlp', 'torch', 'lightning' or 'keras'), got {type(model).__name__}"
        )
    first = [True]

    def report(epoch: int, metrics: Mapping[str, float]) -> EpochAction:
        schedule.append(dict(hp))  # the hyperparameters this epoch was trained with
        out = scratch / f"epoch_{epoch}"
        model.save_checkpoint(out)
        digest = weights_digest(model._live["model"].state_dict())
        doc = {
            "trial_id": trial_id,
            "member": idx,
            "epoch": epoch,
            "schedule": schedule,
            "digest": digest,
        }
        (out / "member.json").write_text(json.dumps(doc))
        row: dict[str, Any] = {**metrics, "epoch": epoch, "member": idx}
        row.update({f"{_HP_PREFIX}{k}": v for k, v in hp.items()})
        row["exploited_from"] = exploited_from if first[0] else ""
        row["source_digest"] = source_digest if first[0] else ""
        row["loaded_digest"] = (model.loaded_digest_ or "") if first[0] else ""
        first[0] = False
        tune.report(row, checkpoint=tune.Checkpoint.from_directory(str(out)))
        shutil.rmtree(out, ignore_errors=True)  # Tune has persisted it
        return EpochAction.proceed()

    try:
        model.fit(train, val, params, report=report, start_from=start_from)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# ---------------------------------------------------------------------- the stage
def initial_population(
    stage: PBTStage,
    *,
    best: Mapping[str, Any] | None,
    ranked: Sequence[Mapping[str, Any]],
    space: Mapping[str, Any],
    mutations: Mapping[str, Mutation],
    seed: int,
) -> list[dict[str, Any]]:
    """The members' initial hyperparameters (see :attr:`PBTStage.init`)."""
    n = stage.population
    if stage.init == "best":
        if best is None:
            raise ConfigError("pbt.init best needs a search (or selection) before the pbt stage")
        members = [dict(best) for _ in range(n)]
    elif stage.init == "top_k":
        if not ranked:
            raise ConfigError("pbt.init top_k needs completed trials of the main search")
        members = [dict(ranked[i % len(ranked)]) for i in range(n)]
    else:
        import optuna

        from sigtune._space import SearchSpace

        sp = SearchSpace.from_dict(dict(space))
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        members = []
        for _ in range(n):
            trial = study.ask()
            members.append(sp.suggest(trial))
            study.tell(trial, 0.0)
    rng = random.Random(seed)
    for m in members:
        m.pop("schedule", None)
        for name, mut in mutations.items():
            if m.get(name) is None:  # not tuned by the search: start anywhere in the mutation
                m[name] = rng.choice(mut) if isinstance(mut, list) else mut.sample(rng)
            elif isinstance(mut, MutationRange):
                m[name] = mut.clip(m[name])
    return members


def _init_ray(stage: PBTStage) -> bool:
    """Start (or connect to) Ray; True if this call started it."""
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "configure_logging": False,
    }
    if stage.address is not None:
        ray.init(address=stage.address, **kwargs)
    else:
        # a new instance, never a cluster that happens to run on this machine
        start_local_ray(ray, num_cpus=stage.num_cpus, **kwargs)
    return True


_RESUMABLE: dict[type, type] = {}


def _resumable_synch(cls: type) -> type:
    """Ray Tune's ``cls`` (``PopulationBasedTraining`` or ``PB2``) whose synchronous mode
    survives a resume.

    A restored experiment gets a fresh scheduler: its first sync point is one interval in, while
    the members are further on. When they have all reported, Tune sets the next sync point to
    ``max(next + interval, latest member time)``; if that equals the members' time, no member is
    ever runnable again (a member runs only below the sync point) and the experiment waits
    forever with every member PAUSED (ray-project/ray PR 48616, not merged in Ray 2.60). Here
    the next sync point always lies one interval after the latest member's time.
    """
    if cls not in _RESUMABLE:

        class _Resumable(cls):  # type: ignore[valid-type,misc]
            def on_trial_result(
                self, tune_controller: Any, trial: Any, result: dict[str, Any]
            ) -> str:
                decision: str = super().on_trial_result(tune_controller, trial, result)
                if self._synch:
                    times = [
                        self._trial_state[t].last_train_time
                        for t in tune_controller.get_live_trials()
                        if t in self._trial_state
                    ]
                    sync: float = self._next_perturbation_sync  # type: ignore[has-type]
                    if times and min(times) >= sync:
                        self._next_perturbation_sync = max(times) + self._perturbation_interval
                return decision

        _Resumable.__name__ = _Resumable.__qualname__ = cls.__name__
        _RESUMABLE[cls] = _Resumable
    return _RESUMABLE[cls]


_KEEP_ACTORS: list[type] = []


def _member_generator() -> Any:
    """Ray Tune's ``BasicVariantGenerator`` (the members' grid) that counts as finished only when
    every member it created has finished.

    With ``reuse_actors``, Tune keeps a stopped member's actor for the next member only while
    the search is not over. The plain generator is over once it has created every member, so at
    each synchronous perturbation (every member paused) the last member's actor was ended and a
    new process started for the next one: Python, Ray, torch and sigtune imported again, several
    seconds per perturbation interval (ray-project/ray ``TuneController._maybe_cache_trial_actor``).
    A finished member is one Tune itself counts finished (TERMINATED or ERROR), so the experiment
    still ends when Tune's own check says so. A restored experiment starts with no created
    members here and behaves like the plain generator.
    """
    if not _KEEP_ACTORS:
        from ray.tune.search.basic_variant import BasicVariantGenerator

        class _MemberGenerator(BasicVariantGenerator):  # type: ignore[misc]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                self._created: list[Any] = []

            def next_trial(self) -> Any:
                trial = super().next_trial()  # type: ignore[no-untyped-call]
                if trial is not None:
                    self._created.append(trial)
                return trial

            def is_finished(self) -> bool:
                return bool(super().is_finished()) and all(t.is_finished() for t in self._created)

            def get_state(self) -> Any:
                state = super().get_state()  # type: ignore[no-untyped-call]
                if isinstance(state, dict):
                    state.pop("_created", None)
                return state

            def set_state(self, state: Any) -> None:
                super().set_state(state)  # type: ignore[no-untyped-call]
                self._created = []

            def __getstate__(self) -> dict[str, Any]:
                return {**self.__dict__, "_created": []}

        _KEEP_ACTORS.append(_MemberGenerator)
    return _KEEP_ACTORS[0]()


def _state_file_ok(path: Path, name: str | None = None) -> bool:
    """Whether one of Tune's experiment-level state files is complete (it parses); ``name``: the
    state file's own name where ``path`` is a temporary copy."""
    try:
        data = path.read_bytes()
    except OSError:
        return False
    if not data:
        return False
    try:
        if (name or path.name).startswith("experiment_state-"):
            json.loads(data)
        else:  # a pickle: walk its opcodes up to STOP (nothing is unpickled)
            ops = list(pickletools.genops(data))
            return bool(ops) and ops[-1][0].name == "STOP" and ops[-1][2] == len(data) - 1
    except ValueError:  # not JSON, or a pickle cut short: torn
        return False
    return True


def _state_files(exp: Path) -> list[Path]:
    return sorted(f for g in _STATE_GLOBS for f in exp.glob(g) if f.is_file())


def _copy_whole(src: Path, dst: Path) -> bool:
    """Copy ``src`` over ``dst`` atomically (a temporary file renamed), if the copy is a complete
    state file; False (``dst`` untouched) if not."""
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copyfile(src, tmp)
    if _state_file_ok(tmp, dst.name):
        os.replace(tmp, dst)
        return True
    tmp.unlink(missing_ok=True)
    return False


def _mirror_state(exp: Path, backup: Path, seen: dict[str, tuple[int, int]]) -> None:
    """Copy each of Tune's state files in ``exp`` that changed since ``seen`` to ``backup``,
    where the copy is complete (Tune's syncer may be writing it: the next step sees it)."""
    for f in _state_files(exp):
        try:
            st = f.stat()
        except OSError:
            continue
        stamp = (st.st_mtime_ns, st.st_size)
        if seen.get(f.name) == stamp:
            continue
        backup.mkdir(parents=True, exist_ok=True)
        if _copy_whole(f, backup / f.name):
            seen[f.name] = stamp


def _state_mirror(exp: Path, backup: Path) -> Any:
    """A Tune callback that keeps ``backup`` holding the last complete copy of each state file."""
    from ray.tune import Callback

    class _StateMirror(Callback):  # type: ignore[misc]
        def __init__(self) -> None:
            self._seen: dict[str, tuple[int, int]] = {}

        def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
            _mirror_state(exp, backup, self._seen)

        def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
            _mirror_state(exp, backup, self._seen)

    return _StateMirror()


# Each member's rows as the driver received them, one JSON line per epoch, appended and flushed
# at once. Tune's own progress.csv is written to a staging folder under /tmp/ray and copied to
# the storage folder by an asynchronous syncer that rewrites the whole file: a kill while it
# copies, or before it runs, loses rows that a resumed run never writes again (a resumed
# member's progress.csv then starts at its checkpoint's epoch).
ROWS_FILE = "member_rows.jsonl"


def _row_log() -> Any:
    """A Tune callback that appends every member result to ``ROWS_FILE`` in its trial folder."""
    from ray.tune import Callback
    from ray.tune.utils import flatten_dict

    class _RowLog(Callback):  # type: ignore[misc]
        def on_trial_result(
            self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
        ) -> None:
            row = flatten_dict({k: v for k, v in result.items() if k != "config"}, delimiter="/")
            line = (json.dumps(row, default=_json_value) + "\n").encode()
            folder = Path(trial.path)
            folder.mkdir(parents=True, exist_ok=True)
            with open(folder / ROWS_FILE, "a+b") as fh:
                if fh.tell() > 0:  # a line cut short (a crash mid-write) stays a line of its own
                    fh.seek(-1, os.SEEK_END)
                    if fh.read(1) != b"\n":
                        line = b"\n" + line
                fh.write(line)

    return _RowLog()


def _json_value(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else str(v)


def member_rows(folder: Path) -> list[dict[str, Any]]:
    """The rows of one member's trial folder, in the order they were received.

    Reads ``ROWS_FILE``; a line that a kill cut short is skipped (its epoch is trained again on
    resume).
    """
    path = Path(folder) / ROWS_FILE
    rows: list[dict[str, Any]] = []
    with open(path) as fh:
        for line in fh:
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    return rows


def _repair_state(exp: Path, backup: Path) -> list[str]:
    """Before a resume: put back the last complete copy of each state file that a kill left torn.

    Tune rewrites ``experiment_state-*.json`` in place while it runs, so a SIGKILL can leave it
    empty or cut; Tune then cannot resume ("Expecting value: line 1 column 1"). A torn file with
    no complete copy is set aside (``*.torn``); if no experiment state or no tuner is left, the
    experiment directory is set aside too and the stage starts afresh. Returns the names put
    back.
    """
    repaired: list[str] = []
    if not exp.is_dir():
        return repaired
    for f in _state_files(exp):
        if _state_file_ok(f):
            continue
        copy = backup / f.name
        if copy.is_file() and _copy_whole(copy, f):
            repaired.append(f.name)
            log.warning(
                "pbt: %s was torn (the run was killed while writing it); "
                "restored its last complete copy from %s",
                f,
                backup,
            )
        else:
            f.rename(f.with_name(f.name + ".torn"))
            log.warning(
                "pbt: %s was torn and has no complete copy; set aside as %s.torn", f, f.name
            )
    if not any(exp.glob("experiment_state-*.json")) or not (exp / "tuner.pkl").is_file():
        k = 1
        while (aside := exp.with_name(f"{exp.name}.unrestorable-{k}")).exists():
            k += 1
        exp.rename(aside)
        log.warning(
            "pbt: no complete experiment state in %s (moved to %s): the stage starts afresh",
            exp,
            aside,
        )
    return repaired


def run_pbt(
    stage: PBTStage,
    *,
    factory: Any,
    train: Any,
    val: Any,
    monitor: str,
    direction: str,
    members: Sequence[Mapping[str, Any]],
    mutations: Mapping[str, Mutation],
    seed: int,
    stage_dir: Path,
) -> dict[str, Any]:
    """Run (or resume) the PBT stage into ``stage_dir``; returns the stage's ``done.json``.

    Raises:
        ConfigError: No mutation declared, PB2 not installed, or a member failed.
    """
    if not mutations:
        raise ConfigError(
            "pbt needs mutable hyperparameters: mark search-space parameters `mutable: true` "
            "or give pbt.mutations"
        )
    try:
        import ray
        from ray import tune
    except ImportError as exc:  # pragma: no cover
        raise ConfigError("the pbt stage needs Ray Tune: pip install 'sigtune[pbt]'") from exc
    stage_dir = Path(stage_dir).resolve()
    mode = "min" if direction == "minimize" else "max"
    mutable = sorted(mutations)
    if stage.scheduler == "pb2":
        try:
            from ray.tune.schedulers.pb2 import PB2
        except ImportError as exc:  # pragma: no cover
            raise ConfigError(
                "scheduler pb2 needs GPy and scikit-learn: pip install 'sigtune[pbt]'"
            ) from exc
        scheduler: Any = _resumable_synch(PB2)(
            time_attr="epoch",
            perturbation_interval=stage.perturbation_interval,
            hyperparam_bounds={
                k: [m.low, m.high] for k, m in mutations.items() if isinstance(m, MutationRange)
            },
            quantile_fraction=stage.quantile_fraction,
            synch=stage.synch,
            custom_explore_fn=_explore_clip(mutations),
        )
    else:
        from ray.tune.schedulers import PopulationBasedTraining

        scheduler = _resumable_synch(PopulationBasedTraining)(
            time_attr="epoch",
            perturbation_interval=stage.perturbation_interval,
            burn_in_period=stage.burn_in,
            hyperparam_mutations={k: _ray_mutation(m) for k, m in mutations.items()},
            quantile_fraction=stage.quantile_fraction,
            resample_probability=stage.resample_probability,
            custom_explore_fn=_explore_clip(mutations),
            synch=stage.synch,
        )
    init = [dict(m) for m in members]
    # every member must exist as a Tune trial from the start (PBT compares the population):
    # concurrency is limited through the CPUs a member asks for, not max_concurrent_trials,
    # which would create the trials one by one
    os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", str(max(len(init), 16)))
    started = _init_ray(stage)
    cpus = float(ray.cluster_resources().get("CPU", 1.0))  # type: ignore[no-untyped-call]
    per_member = 1.0 if stage.max_concurrent is None else cpus / stage.max_concurrent
    trainable = tune.with_resources(
        tune.with_parameters(
            _member,
            factory=factory,
            train=train,
            val=val,
            init=init,
            mutable=mutable,
            max_epochs=stage.max_epochs,
            seed=seed,
        ),
        {"cpu": per_member},
    )
    param_space: dict[str, Any] = {"member": tune.grid_search(list(range(len(init))))}
    for k in mutable:
        param_space[k] = tune.sample_from(_InitValue(init, k))
    storage_path = stage_dir / "ray"
    exp = storage_path / EXPERIMENT
    backup = storage_path / STATE_BACKUP
    _repair_state(exp, backup)
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "0")  # experiment state after each step
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no progress tables
    random.seed(seed)  # Tune's exploit/explore draw from these generators
    np.random.seed(seed % 2**32)  # noqa: NPY002 (PB2 and GPy use the global generator)
    try:
        if tune.Tuner.can_restore(str(exp)):
            log.info("pbt: resuming the Ray Tune experiment %s", exp)
            tuner = tune.Tuner.restore(
                str(exp), trainable, resume_unfinished=True, resume_errored=True
            )
        else:
            tuner = tune.Tuner(
                trainable,
                param_space=param_space,
                tune_config=tune.TuneConfig(
                    scheduler=scheduler,
                    metric=monitor,
                    mode=mode,
                    num_samples=1,
                    search_alg=_member_generator(),
                    reuse_actors=True,
                ),
                run_config=tune.RunConfig(
                    name=EXPERIMENT,
                    storage_path=str(storage_path),
                    verbose=0,
                    # keep all: with num_to_keep, a donor may delete the checkpoint that PBT
                    # chose for an exploit before the child restores it (then the child fails)
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
                    # a failed member ends the experiment: synchronous PBT would otherwise wait
                    # for it at the next interval forever
                    failure_config=tune.FailureConfig(max_failures=0, fail_fast=True),
                    # Tune rewrites its state files in place: a kill mid-write leaves them torn
                    callbacks=[_state_mirror(exp, backup), _row_log()],
                ),
            )
        grid = tuner.fit()
    finally:
        if started:
            ray.shutdown()
    errors = [grid[i].error for i in range(len(grid)) if grid[i].error is not None]
    if errors:
        lines = [ln for ln in str(errors[0]).splitlines() if ln.strip()]
        log.error("first failed PBT member:\n%s", errors[0])
        raise ConfigError(
            f"{len(errors)} PBT member(s) failed; first: {lines[-1] if lines else errors[0]!r}"
        )
    return _collect(
        grid,
        stage,
        factory=factory,
        train=train,
        val=val,
        init=init,
        mutable=mutable,
        monitor=monitor,
        direction=direction,
        stage_dir=stage_dir,
    )


def _collect(
    grid: Any,
    stage: PBTStage,
    *,
    factory: Any,
    train: Any,
    val: Any,
    init: Sequence[Mapping[str, Any]],
    mutable: Sequence[str],
    monitor: str,
    direction: str,
    stage_dir: Path,
) -> dict[str, Any]:
    """Winner, schedule, final model, members' study and plot from Tune's results.

    Everything is read from the trial folders (progress rows, checkpoints): after an exploit,
    the ``Result`` objects of Ray Tune 2.60 may show the donor's last metrics and checkpoint.
    """
    members = [_read_member(Path(grid[i].path)) for i in range(len(grid))]
    members.sort(key=lambda m: m["trial_id"])
    frames = {m["trial_id"]: m["frame"] for m in members}
    sign = 1.0 if direction == "minimize" else -1.0
    final = {m["trial_id"]: float(m["frame"][monitor].iloc[-1]) for m in members}
    wid = min(final, key=lambda t: sign * final[t])
    winner = next(m for m in members if m["trial_id"] == wid)
    ckdir = stage_dir / "winner_checkpoint"
    shutil.rmtree(ckdir, ignore_errors=True)
    shutil.copytree(winner["checkpoint"], ckdir)
    meta = json.loads((ckdir / "member.json").read_text())
    schedule: list[dict[str, Any]] = meta["schedule"]
    idx = int(meta["member"])
    params = _schedule_params(init[idx], schedule, stage.max_epochs)
    # the winner's final model: its last checkpoint (fit from it runs no epoch)
    model = factory(seed=0)
    model.fit(train, val, {**params, "schedule": None, **schedule[-1]}, start_from=ckdir)
    model.save(stage_dir / "best_model")
    (stage_dir / "schedule.json").write_text(
        json.dumps({"per_epoch": schedule, "params": params}, indent=2)
    )
    exploits = {
        tid: [
            (int(row["epoch"]), str(row["exploited_from"]))
            for _, row in df.iterrows()
            if isinstance(row.get("exploited_from"), str) and row["exploited_from"]
        ]
        for tid, df in frames.items()
    }
    plot = _plot(frames, exploits, monitor, stage_dir / "pbt.png", wid)
    for m in members:  # the stage is done: each member's last checkpoint is enough
        for d in Path(m["checkpoint"]).parent.glob("checkpoint_*"):
            if d != Path(m["checkpoint"]):
                shutil.rmtree(d, ignore_errors=True)
    total = int(sum(len(df) for df in frames.values()))
    _record_trials(
        stage,
        members,
        frames,
        exploits,
        monitor=monitor,
        direction=direction,
        stage_dir=stage_dir,
    )
    return {
        "scheduler": stage.scheduler,
        "population": stage.population,
        "max_epochs": stage.max_epochs,
        "mutable": list(mutable),
        "winner": wid,
        "value": final[wid],
        "final_values": final,
        "params": params,
        "schedule": schedule,
        "n_exploits": int(sum(len(v) for v in exploits.values())),
        "exploits": {k: [list(e) for e in v] for k, v in exploits.items()},
        "epochs_trained": total,
        "files": [str(stage_dir / "best_model"), str(stage_dir / "schedule.json"), str(plot)],
    }


def _schedule_params(
    base: Mapping[str, Any], schedule: Sequence[Mapping[str, Any]], max_epochs: int
) -> dict[str, Any]:
    """Hyperparameters that replay a per-epoch schedule: the first epoch's values plus the
    ``schedule`` hyperparameter's change points."""
    params = {**base, **(schedule[0] if schedule else {}), "max_epochs": int(max_epochs)}
    params["patience"] = None
    changes: dict[str, dict[str, Any]] = {}
    for e in range(1, len(schedule)):
        diff = {k: v for k, v in schedule[e].items() if schedule[e - 1].get(k) != v}
        if diff:
            changes[str(e + 1)] = diff
    params["schedule"] = changes or None
    return params


def _plot(
    frames: Mapping[str, Any],
    exploits: Mapping[str, Sequence[tuple[int, str]]],
    monitor: str,
    path: Path,
    winner: str,
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for tid, df in frames.items():
        if df is None or monitor not in df:
            continue
        df = df.sort_values("epoch")
        win = tid == winner
        ax.plot(
            df["epoch"],
            df[monitor],
            color="tab:red" if win else "grey",
            linewidth=1.8 if win else 0.8,
            alpha=1.0 if win else 0.6,
            label="winner" if win else None,
        )
        for epoch, _ in exploits.get(tid, ()):
            y = df.loc[df["epoch"] == epoch, monitor]
            if len(y):
                ax.scatter([epoch], [float(y.iloc[0])], marker="v", color="tab:blue", zorder=3)
    ax.scatter([], [], marker="v", color="tab:blue", label="exploit (copied a better member)")
    ax.set(xlabel="epoch", ylabel=monitor, title="Population Based Training")
    ax.legend(fontsize=8)
    save_tight(fig, path, dpi=100)
    plt.close(fig)
    return path


def _record_trials(
    stage: PBTStage,
    members: Sequence[Mapping[str, Any]],
    frames: Mapping[str, Any],
    exploits: Mapping[str, Sequence[tuple[int, str]]],
    *,
    monitor: str,
    direction: str,
    stage_dir: Path,
) -> None:
    """Write the members as COMPLETE trials of a study (skipping members already recorded)."""
    import optuna

    from sigtune._storage import resolve_storage
    from sigtune.pipelines.ml._selection import HISTORY_ATTR

    ref = resolve_storage(stage.storage, run_dir=stage_dir)
    study = optuna.create_study(
        storage=ref.open(track_owner=False),
        study_name=stage.study_name or "pbt",
        direction="minimize" if direction == "minimize" else "maximize",
        load_if_exists=True,
    )
    done = {t.user_attrs.get("ray_trial_id") for t in study.get_trials(deepcopy=False)}
    for m in members:
        tid = str(m["trial_id"])
        if tid in done:
            continue
        df = frames[tid]
        last = df.iloc[-1]
        config = {k[len(_HP_PREFIX) :]: last[k] for k in df.columns if k.startswith(_HP_PREFIX)}
        config = {"member": int(last["member"]), **{k: _py(v) for k, v in config.items()}}
        metric_cols = [
            c
            for c in df.columns
            if c == monitor
            or c in ("loss", "val_loss")
            or (c.startswith(("val_",)) and df[c].dtype.kind == "f")
        ]
        history = {c: [float(x) for x in df[c]] for c in metric_cols}
        params: dict[str, Any] = {}
        dists: dict[str, optuna.distributions.BaseDistribution] = {}
        for k, v in config.items():
            if isinstance(v, bool) or not isinstance(v, int | float | str):
                continue
            params[k] = v
            if isinstance(v, str):
                dists[k] = optuna.distributions.CategoricalDistribution([v])
            elif isinstance(v, int):
                dists[k] = optuna.distributions.IntDistribution(v, v)
            else:
                dists[k] = optuna.distributions.FloatDistribution(float(v), float(v))
        trial = optuna.trial.create_trial(
            state=optuna.trial.TrialState.COMPLETE,
            value=float(last[monitor]),
            params=params,
            distributions=dists,
            intermediate_values={
                int(e): float(v) for e, v in zip(df["epoch"], df[monitor], strict=True)
            },
            user_attrs={
                "ray_trial_id": tid,
                HISTORY_ATTR: history,
                "params": {k: v for k, v in config.items() if _is_json(v)},
                "epochs": len(df),
                "exploits": [list(e) for e in exploits.get(tid, ())],
                "schedule": [
                    {
                        k[len(_HP_PREFIX) :]: _py(row[k])
                        for k in df.columns
                        if k.startswith(_HP_PREFIX)
                    }
                    for _, row in df.iterrows()
                ],
            },
        )
        study.add_trial(trial)


def _read_member(path: Path) -> dict[str, Any]:
    """One member's rows (``ROWS_FILE``) and last checkpoint, from its trial folder."""
    import pandas as pd

    if (path / ROWS_FILE).is_file():
        df = pd.DataFrame(member_rows(path))
    elif (path / "progress.csv").is_file():  # a stage started before ROWS_FILE existed
        df = pd.read_csv(path / "progress.csv", keep_default_na=False, na_values=[""])
    else:
        df = pd.DataFrame()
    if "epoch" not in df:
        raise ConfigError(f"PBT member folder {path} has no rows ({ROWS_FILE}): did it run?")
    df = df.sort_values("epoch", kind="stable").drop_duplicates("epoch", keep="last")
    df = df.reset_index(drop=True)
    for col in ("exploited_from", "source_digest", "loaded_digest"):
        if col in df:
            df[col] = df[col].astype(object).where(df[col].notna(), "").astype(str)
    best: tuple[int, Path] | None = None
    for d in path.glob("checkpoint_*"):
        f = d / "member.json"
        if f.is_file():
            e = int(json.loads(f.read_text())["epoch"])
            if best is None or e > best[0]:
                best = (e, d)
    if best is None:
        raise ConfigError(f"PBT member folder {path} has no checkpoint")
    return {"trial_id": str(df["trial_id"].iloc[-1]), "frame": df, "checkpoint": best[1]}


class _InitValue:
    """``sample_from`` function: member ``config["member"]``'s initial value of ``name``."""

    def __init__(self, init: Sequence[Mapping[str, Any]], name: str) -> None:
        self.init, self.name = init, name

    def __call__(self, config: Any) -> Any:
        inner = config.get("config", config) if isinstance(config, Mapping) else config.config
        return self.init[int(inner["member"])][self.name]


def _py(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _is_json(v: Any) -> bool:
    try:
        json.dumps(v)
    except TypeError:
        return False
    return True

"""The Ray engine: the same study, its trials run as Ray tasks on a Ray cluster.

Design (chosen by measured overhead, see ``bench/ray_overhead.py`` and docs/cluster.md):
**driver-side ask/tell**. The driver (the process running ``sigtune run``) is the only process
that opens the study's storage; it asks a trial, submits the objective as a Ray task with the
trial's resources (``cpus_per_trial``, ``gpus_per_trial``), and tells the result when the task
returns. Worker nodes therefore never need the driver's filesystem (an embedded journal file
works on a cluster) nor database credentials, and every trial is in the one storage, so
``status``/``best``/``export``/the report/resume behave as for local runs and a study can move
between engines.

Parameters: a remote trial is a small proxy (:class:`RemoteTrial`). Parameters whose distribution
was the same in every finished trial (Optuna's intersection search space, in suggestion order)
are sampled by the driver when it asks the trial (``study.ask(fixed_distributions)``: the same
sampler calls, in the same order, as a local run), so a static search space costs no round trip.
Any other ``suggest_*`` call (conditional or dependent parameters, the first trial) and
``should_prune()`` go through a small broker actor to the driver, which answers them on the real
``optuna.Trial``. Intermediate values reported with ``trial.report`` reach the driver with the
next ``should_prune()`` (so the pruner sees them) or with the result; a pruned trial raises
``TrialPruned`` on its worker and stops there.

Failures: an exception in the objective is a FAILED trial with its reason and traceback (like the
local engine). A worker process or node that dies makes Ray retry the task (``max_retries``);
after the last retry the trial is FAILED with the Ray error as its reason. ``trial_timeout`` is
enforced by the driver, counted from the start of the task on its worker: the task is cancelled
(its worker process is killed) and the trial FAILED. Ctrl-C cancels the running tasks and marks
their trials FAILED (``interrupted``); the driver takes it at its next pass of the loop (within
``_POLL_S``), never in the middle of a storage write, and a second Ctrl-C raises at once. A
driver killed with SIGKILL leaves RUNNING trials that the next ``sigtune run`` marks FAILED
(owner stamps), then the run continues: the study ends with exactly ``n_trials`` finished
trials.

Per-trial output: stdout/stderr of the objective are captured on the worker (and still printed);
their last characters are stored in the trial's ``system_attrs["sigtune:log"]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState

from sigtune._exceptions import ConfigError
from sigtune._optuna_compat import stop_requested, study_storage, tell, trial_id
from sigtune._run import ProgressSink, RunOutcome, RunPlan, StudyRef, TrialFunction
from sigtune._storage import FAIL_REASON_KEY
from sigtune._trial_logs import LOG_CHARS, LOG_KEY, captured_output
from sigtune.engines._local import _Shared
from sigtune.engines._trial import (
    INTERRUPTED_REASON,
    TRACEBACK_KEY,
    _call_callbacks,
    _store_constraints,
    callbacks_enabled,
    fail_reason,
    open_study,
    progress_value,
    validate_values,
)

__all__ = ["LOG_KEY", "TRACEBACK_KEY", "RayEngine", "RemoteTrial", "start_local_ray"]

_POLL_S = 0.2


#: Niceness of the worker processes of a Ray instance that sigtune starts itself. Ray's default
#: is 15: its workers then yield to every normal process, and on a busy machine (a CI runner,
#: a shared workstation) a trial can get a few percent of a CPU and seem to hang. Trials of the
#: local engine run at the caller's priority; so do those of a local Ray instance. A cluster
#: started with ``ray start`` keeps its own setting; ``RAY_worker_niceness`` set by the user wins.
WORKER_NICENESS = "0"


def start_local_ray(ray: Any, **kwargs: Any) -> None:
    """``ray.init(address="local", **kwargs)``: a new Ray instance on this machine whose workers
    run at normal priority (:data:`WORKER_NICENESS`), never one that happens to run here."""
    os.environ.setdefault("RAY_worker_niceness", WORKER_NICENESS)
    ray.init(address="local", **kwargs)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ConfigError("engine 'ray' needs Ray: pip install 'sigtune[ray]' (ray[tune])") from exc
    return ray


# ---------------------------------------------------------------------- worker side
class RemoteTrial:
    """The ``optuna.Trial`` an objective sees inside a Ray task.

    Supports ``suggest_float/int/categorical``, ``report``, ``should_prune``, ``set_user_attr``,
    ``set_constraint``, ``params``, ``distributions``, ``user_attrs`` and ``number``.
    """

    def __init__(
        self,
        broker: Any,
        trial_id: int,
        number: int,
        params: Mapping[str, Any],
        distributions: Mapping[str, BaseDistribution],
        pruning: bool,
    ) -> None:
        self._broker = broker
        self._trial_id = trial_id
        self.number = number
        self._params = dict(params)
        self._dists = dict(distributions)
        self._presampled = set(self._params)
        self._pruning = pruning
        self._reports: dict[int, float] = {}
        self._unsent: dict[int, float] = {}
        self.user_attrs: dict[str, Any] = {}
        self.constraints: dict[str, float] = {}

    # -------------------------------------------------------------- parameters
    @property
    def params(self) -> dict[str, Any]:
        return dict(self._params)

    @property
    def distributions(self) -> dict[str, BaseDistribution]:
        return dict(self._dists)

    def _call(self, op: str, payload: Any) -> Any:
        import ray

        status, value = ray.get(self._broker.call.remote(self._trial_id, op, payload))
        if status == "error":
            raise ValueError(value)
        return value

    def _suggest(self, name: str, dist: BaseDistribution) -> Any:
        if name in self._params:
            if name in self._presampled:
                self._presampled.discard(name)
                if dist != self._dists[name]:
                    raise ValueError(
                        f"parameter {name!r} asked with {dist}, but it had {self._dists[name]} in "
                        "every earlier trial and was sampled ahead; set ray.presample: false for "
                        "search spaces whose distributions change between trials"
                    )
            return self._params[name]
        value = self._call("suggest", (name, dist))
        self._params[name] = value
        self._dists[name] = dist
        return value

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        return float(self._suggest(name, FloatDistribution(low, high, step=step, log=log)))

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int:
        return int(self._suggest(name, IntDistribution(low, high, step=step, log=log)))

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self._suggest(name, CategoricalDistribution(choices))

    # -------------------------------------------------------------- pruning, attributes
    def report(self, value: float, step: int) -> None:
        step = int(step)
        if step in self._reports:
            return  # Optuna ignores a second report of the same step
        self._reports[step] = float(value)
        self._unsent[step] = float(value)

    def should_prune(self) -> bool:
        if not self._pruning:
            return False
        unsent, self._unsent = self._unsent, {}
        return bool(self._call("prune", unsent))

    def set_user_attr(self, key: str, value: Any) -> None:
        self.user_attrs[key] = value

    def set_constraint(self, name: str, value: float) -> None:
        self.constraints[name] = float(value)

    def pending(self) -> dict[str, Any]:
        """What the driver records with the result."""
        return {
            "reports": dict(self._unsent),
            "user_attrs": dict(self.user_attrs),
            "constraints": dict(self.constraints),
        }


def _execute(
    objective: TrialFunction,
    broker: Any,
    trial_id: int,
    number: int,
    params: Mapping[str, Any],
    distributions: Mapping[str, BaseDistribution],
    pruning: bool,
    timed: bool = False,
) -> dict[str, Any]:
    """Body of the Ray task of one trial."""
    if timed:  # trial_timeout counts from here (not from the submission), per attempt
        broker.call.remote(trial_id, "start", None)
    trial = RemoteTrial(broker, trial_id, number, params, distributions, pruning)
    buf = io.StringIO()
    out: dict[str, Any] = {"state": "complete", "result": None}
    with captured_output(buf):
        try:
            out["result"] = objective(trial)  # type: ignore[arg-type]
        except optuna.TrialPruned:
            out["state"] = "pruned"
        except Exception as exc:  # the objective's failure becomes a FAILED trial
            out["state"] = "fail"
            out["reason"] = fail_reason(exc)
            out["traceback"] = traceback.format_exc()[-LOG_CHARS:]
    out.update(trial.pending())
    out["log"] = buf.getvalue()[-LOG_CHARS:]
    return out


class _Broker:
    """Relays the remote trials' requests to the driver (an async Ray actor on the driver's node).

    ``call`` waits for the driver's answer; the driver collects requests with ``fetch`` and
    answers with ``respond``.
    """

    def __init__(self) -> None:
        self._futures: dict[int, asyncio.Future[Any]] = {}
        self._pending: list[tuple[int, int, str, Any]] = []
        self._event: asyncio.Event | None = None
        self._n = 0

    def _ev(self) -> asyncio.Event:
        if self._event is None:
            self._event = asyncio.Event()
        return self._event

    async def call(self, trial_id: int, op: str, payload: Any) -> Any:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._n += 1
        self._futures[self._n] = fut
        self._pending.append((self._n, trial_id, op, payload))
        self._ev().set()
        return await fut

    async def fetch(self) -> list[tuple[int, int, str, Any]]:
        while not self._pending:
            self._ev().clear()
            await self._ev().wait()
        out, self._pending = self._pending, []
        return out

    async def respond(self, answers: list[tuple[int, Any]]) -> None:
        for rid, answer in answers:
            fut = self._futures.pop(rid, None)
            if fut is not None and not fut.done():
                fut.set_result(answer)


# ---------------------------------------------------------------------- driver side
def _presample(study: optuna.Study) -> dict[str, BaseDistribution]:
    """Parameters with the same distribution in every finished trial, in suggestion order."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    if not trials:
        return {}
    last = trials[-1].distributions
    common = dict(last)
    for t in trials:
        for name in list(common):
            if t.distributions.get(name) != common[name]:
                del common[name]
        if not common:
            break
    return {name: last[name] for name in last if name in common}


def _suggest_on(trial: optuna.Trial, name: str, dist: BaseDistribution) -> Any:
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, list(dist.choices))
    raise ValueError(f"unsupported distribution {dist!r}")


def _user_modules(obj: Any, depth: int = 0) -> set[str]:
    """Modules of user code reachable from the objective (pickled by value for the workers)."""
    names: set[str] = set()
    mod = getattr(obj, "__module__", None)
    if isinstance(mod, str):
        names.add(mod)
    if depth < 2 and not isinstance(obj, type):
        for value in getattr(obj, "__dict__", {}).values():
            if callable(value):
                names |= _user_modules(value, depth + 1)
    return names


def _register_by_value(objective: Any) -> None:
    """Let workers unpickle objectives of modules they cannot import (files, test modules)."""
    from ray import cloudpickle

    for name in _user_modules(objective):
        module = sys.modules.get(name)
        path = getattr(module, "__file__", None) or ""
        if (
            module is None
            or name == "__main__"
            or name.split(".")[0] in ("sigtune", "optuna", "builtins", "functools")
            or "site-packages" in path
            or "dist-packages" in path
            or not path
        ):
            continue
        with contextlib.suppress(Exception):
            cloudpickle.register_pickle_by_value(module)  # type: ignore[no-untyped-call]


class _DeferredInterrupt:
    """Ctrl-C in the Ray driver, taken where the loop can act on it.

    While installed (main thread only; elsewhere it does nothing), SIGINT only records that it
    came; :meth:`check`, called once per pass of the driver loop (at least every ``_POLL_S``),
    raises ``KeyboardInterrupt`` there. A KeyboardInterrupt raised wherever the main thread
    happens to be can land inside a storage write (``study.ask``, a ``tell``) or in a finalizer,
    where Python prints and drops it; the run then went on with its trial blocked. A second
    Ctrl-C raises at once (a loop that no longer checks can still be left).
    """

    def __init__(self) -> None:
        self.pending = False
        self._old: Any = None
        self._installed = False

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self.pending:
            raise KeyboardInterrupt
        self.pending = True

    def check(self) -> None:
        if self.pending:
            raise KeyboardInterrupt

    def __enter__(self) -> _DeferredInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._on_sigint)
            self._installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            # None: the previous handler was not installed from Python; Python's own is the
            # nearest thing to put back
            signal.signal(
                signal.SIGINT, self._old if self._old is not None else signal.default_int_handler
            )
            self._installed = False


class _Running:
    __slots__ = ("attempt_start", "number", "trial")

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial
        self.number = trial.number
        self.attempt_start: float | None = None  # set when the task reports its start


class RayEngine:
    """Runs each trial as a Ray task (see the module docstring).

    Args:
        address: ``None`` (connect to ``RAY_ADDRESS`` if set, else start a local Ray instance),
            ``"auto"`` (a running cluster on this machine) or ``"ray://host:port"``.
        cpus_per_trial: CPUs reserved per trial (fractions allowed).
        gpus_per_trial: GPUs per trial (fractions: ``0.25`` puts four trials on one GPU).
        max_concurrent: Trials running at once (default: the ``n_jobs`` of the run when > 1,
            else the cluster's CPUs divided by ``cpus_per_trial``).
        max_retries: Retries of a trial whose worker process or node died.
        runtime_env: Ray ``runtime_env`` of the trials (``pip``, ``env_vars``, ...).
        presample: Sample parameters of a static search space on the driver when asking the
            trial (no round trip per ``suggest``); turn off if a parameter's distribution changes
            between trials in a way the first trials do not show.
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        cpus_per_trial: float = 1.0,
        gpus_per_trial: float = 0.0,
        max_concurrent: int | None = None,
        max_retries: int = 3,
        runtime_env: Mapping[str, Any] | None = None,
        presample: bool = True,
    ) -> None:
        if cpus_per_trial < 0 or gpus_per_trial < 0:
            raise ConfigError("ray: cpus_per_trial and gpus_per_trial must be >= 0")
        if gpus_per_trial > 1 and not float(gpus_per_trial).is_integer():
            raise ConfigError(
                f"ray: gpus_per_trial above 1 must be a whole number, got {gpus_per_trial}"
            )
        if max_concurrent is not None and max_concurrent < 1:
            raise ConfigError(f"ray: max_concurrent must be >= 1, got {max_concurrent}")
        if max_retries < 0:
            raise ConfigError(f"ray: max_retries must be >= 0, got {max_retries}")
        self.address = address
        self.cpus_per_trial = float(cpus_per_trial)
        self.gpus_per_trial = float(gpus_per_trial)
        self.max_concurrent = max_concurrent
        self.max_retries = int(max_retries)
        self.runtime_env = dict(runtime_env) if runtime_env else None
        self.presample = bool(presample)

    # -------------------------------------------------------------- setup
    def _connect(self, ray: Any) -> bool:
        """Connect (or start) Ray; returns whether this call started it."""
        if ray.is_initialized():
            return False
        # address None: RAY_ADDRESS if set, else a new local instance ("local"; a bare
        # ray.init() would join any other Ray instance running on this machine)
        kwargs: dict[str, Any] = {
            "include_dashboard": False,
            "logging_level": "WARNING",
            "configure_logging": True,
        }
        address = self.address or os.environ.get("RAY_ADDRESS")
        if address is None or address == "local":
            start_local_ray(ray, **kwargs)
        else:
            ray.init(address=address, **kwargs)
        return True

    def _concurrency(self, ray: Any, n_jobs: int) -> int:
        if self.max_concurrent is not None:
            return self.max_concurrent
        if n_jobs > 1:
            return n_jobs
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        if self.cpus_per_trial <= 0:
            return max(int(cpus), 1)
        return max(int(cpus // self.cpus_per_trial), 1)

    # -------------------------------------------------------------- run
    def run(
        self,
        study_ref: StudyRef,
        objective: TrialFunction,
        plan: RunPlan,
        *,
        n_jobs: int = 1,
        progress: ProgressSink | None = None,
    ) -> RunOutcome:
        ray = _import_ray()
        start = time.monotonic()
        deadline = None if plan.timeout is None else start + plan.timeout
        started = self._connect(ray)
        try:
            return self._run(ray, study_ref, objective, plan, n_jobs, progress, deadline, start)
        finally:
            if started:
                ray.shutdown()

    def _run(
        self,
        ray: Any,
        study_ref: StudyRef,
        objective: TrialFunction,
        plan: RunPlan,
        n_jobs: int,
        progress: ProgressSink | None,
        deadline: float | None,
        start: float,
    ) -> RunOutcome:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        study = open_study(study_ref, plan, 0)
        n_objectives = len(study.directions)
        pruning = not isinstance(plan.pruner, optuna.pruners.NopPruner | type(None))
        shared = _Shared(None, plan)
        concurrency = self._concurrency(ray, n_jobs)

        _register_by_value(objective)
        objective_ref = ray.put(objective)
        here = ray.get_runtime_context().get_node_id()
        broker = (
            ray.remote(_Broker)
            .options(
                num_cpus=0,
                max_concurrency=10_000,
                scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False),
            )
            .remote()
        )
        options: dict[str, Any] = {
            "num_cpus": self.cpus_per_trial,
            "num_gpus": self.gpus_per_trial,
            "max_retries": self.max_retries,
            "retry_exceptions": False,
        }
        if self.runtime_env:
            options["runtime_env"] = self.runtime_env
        task = ray.remote(_execute).options(**options)
        running: dict[Any, _Running] = {}

        def submit() -> None:
            dists = _presample(study) if self.presample else {}
            trial = study.ask(fixed_distributions=dists) if dists else study.ask()
            params = {k: trial.params[k] for k in dists if k in trial.params}
            ref = task.remote(
                objective_ref,
                broker,
                trial_id(trial),
                trial.number,
                params,
                {k: dists[k] for k in params},
                pruning,
                plan.trial_timeout is not None,
            )
            running[ref] = _Running(trial)

        try:
            with callbacks_enabled(study), _DeferredInterrupt() as ctrl_c:
                self._loop(
                    ray,
                    study,
                    broker,
                    running,
                    submit,
                    plan,
                    shared,
                    n_objectives,
                    concurrency,
                    deadline,
                    progress,
                    ctrl_c,
                )
        except KeyboardInterrupt:
            shared.request_stop("interrupted")
            for ref, run in list(running.items()):
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
                _conclude(study, run.trial, plan, shared, TrialState.FAIL, INTERRUPTED_REASON)
            running.clear()
        finally:
            with contextlib.suppress(Exception):
                ray.kill(broker)
        if progress is not None:
            progress.update(shared.finished.value, shared.failed.value, shared.best_value())
        return shared.outcome(time.monotonic() - start)

    def _loop(
        self,
        ray: Any,
        study: optuna.Study,
        broker: Any,
        running: dict[Any, _Running],
        submit: Any,
        plan: RunPlan,
        shared: _Shared,
        n_objectives: int,
        concurrency: int,
        deadline: float | None,
        progress: ProgressSink | None,
        ctrl_c: _DeferredInterrupt | None = None,
    ) -> None:
        fetch_ref = broker.fetch.remote()
        last_progress = 0.0
        while True:
            if ctrl_c is not None:
                ctrl_c.check()
            while (
                len(running) < concurrency
                and not shared.stop.value
                and (deadline is None or time.monotonic() < deadline)
                and shared.claim()
            ):
                submit()
            if deadline is not None and time.monotonic() >= deadline and not running:
                shared.request_stop("timeout")
            if not running:
                break
            ready, _ = ray.wait([fetch_ref, *running], num_returns=1, timeout=_POLL_S)
            if fetch_ref in ready:
                self._answer(ray, broker, ray.get(fetch_ref), running)
                fetch_ref = broker.fetch.remote()
            done, _ = ray.wait(list(running), num_returns=len(running), timeout=0)
            for ref in done:
                run = running.pop(ref)
                self._finish(ray, study, ref, run, plan, shared, n_objectives)
            if plan.trial_timeout is not None:
                self._enforce_timeout(ray, study, running, plan, shared)
            if deadline is not None and time.monotonic() >= deadline:
                shared.request_stop("timeout")
            now = time.monotonic()
            if progress is not None and now - last_progress >= 0.1:
                last_progress = now
                progress.update(shared.finished.value, shared.failed.value, shared.best_value())

    # -------------------------------------------------------------- driver helpers
    @staticmethod
    def _answer(
        ray: Any, broker: Any, requests: list[tuple[int, int, str, Any]], running: dict[Any, Any]
    ) -> None:
        runs = {trial_id(r.trial): r for r in running.values()}
        answers: list[tuple[int, Any]] = []
        for rid, tid, op, payload in requests:
            run = runs.get(tid)
            if run is None:
                answers.append((rid, ("error", f"trial {tid} is not running any more")))
                continue
            trial = run.trial
            try:
                if op == "start":
                    run.attempt_start = time.monotonic()
                    answers.append((rid, ("ok", None)))
                elif op == "suggest":
                    name, dist = payload
                    answers.append((rid, ("ok", _suggest_on(trial, name, dist))))
                elif op == "prune":
                    for step, value in sorted(payload.items()):
                        trial.report(value, step)
                    answers.append((rid, ("ok", bool(trial.should_prune()))))
                else:
                    answers.append((rid, ("error", f"unknown request {op!r}")))
            except Exception as exc:
                answers.append((rid, ("error", fail_reason(exc))))
        broker.respond.remote(answers)

    def _finish(
        self,
        ray: Any,
        study: optuna.Study,
        ref: Any,
        run: _Running,
        plan: RunPlan,
        shared: _Shared,
        n_objectives: int,
    ) -> None:
        trial = run.trial
        try:
            out = ray.get(ref)
        except Exception as exc:  # worker/node died after every retry, cancelled, lost
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            msg = f"ray: {type(exc).__name__}" + (f": {first}" if first else "")
            if self.max_retries:
                msg += f" (after {self.max_retries} retries)"
            _conclude(study, trial, plan, shared, TrialState.FAIL, msg[:1000])
            return
        storage = study_storage(study)
        tid = trial_id(trial)
        for step, value in sorted(out.get("reports", {}).items()):
            trial.report(value, step)
        for key, value in out.get("user_attrs", {}).items():
            trial.set_user_attr(key, value)
        set_constraint = getattr(trial, "set_constraint", None)
        for name, value in out.get("constraints", {}).items():
            if set_constraint is not None:
                set_constraint(name, value)
        if out.get("log"):
            storage.set_trial_system_attr(tid, LOG_KEY, out["log"])
        state = out["state"]
        if state == "pruned":
            _conclude(study, trial, plan, shared, TrialState.PRUNED)
            return
        if state == "fail":
            if out.get("traceback"):
                storage.set_trial_system_attr(tid, TRACEBACK_KEY, out["traceback"])
            _conclude(study, trial, plan, shared, TrialState.FAIL, out["reason"])
            return
        checked = validate_values(out["result"], n_objectives)
        reason: str | None = None
        if isinstance(checked, str):
            reason = checked
        elif plan.constraints is not None:
            reason = _store_constraints(study, trial, checked, plan)
        if reason is not None:
            _conclude(study, trial, plan, shared, TrialState.FAIL, reason)
            return
        assert not isinstance(checked, str)
        _conclude(study, trial, plan, shared, TrialState.COMPLETE, values=checked)

    @staticmethod
    def _enforce_timeout(
        ray: Any,
        study: optuna.Study,
        running: dict[Any, _Running],
        plan: RunPlan,
        shared: _Shared,
    ) -> None:
        assert plan.trial_timeout is not None
        now = time.monotonic()
        for ref, run in list(running.items()):
            if run.attempt_start is not None and now - run.attempt_start > plan.trial_timeout:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
                running.pop(ref)
                reason = f"TrialTimeoutError: trial exceeded trial_timeout={plan.trial_timeout:g}s"
                _conclude(study, run.trial, plan, shared, TrialState.FAIL, reason)


def _conclude(
    study: optuna.Study,
    trial: optuna.Trial,
    plan: RunPlan,
    shared: _Shared,
    state: TrialState,
    reason: str | None = None,
    values: list[float] | None = None,
) -> None:
    """Tell the trial, count it, call the callbacks (as :func:`engines._trial.run_trial` does)."""
    if state == TrialState.FAIL:
        study_storage(study).set_trial_user_attr(trial_id(trial), FAIL_REASON_KEY, reason)
        frozen = tell(study, trial, state=TrialState.FAIL)
        shared.record(state, None, reason)
    elif state == TrialState.PRUNED:
        frozen = tell(study, trial, state=TrialState.PRUNED)
        shared.record(state, None, None)
    else:
        assert values is not None
        frozen = tell(study, trial, values)
        assert frozen is not None  # read back (the default)
        shared.record(state, progress_value(frozen), None)
    if plan.callbacks:
        error = _call_callbacks(study, frozen, plan)
        if error is not None:
            shared.request_stop("error", error)
    if stop_requested(study):
        shared.request_stop("stopped")

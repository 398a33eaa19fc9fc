"""Trial selection: best-value vs best-fit on synthetic learning curves."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from sigtune._exceptions import ConfigError
from sigtune.pipelines.ml._selection import (
    HISTORY_ATTR,
    TrialCurves,
    fit_learning_curve,
    select_trials,
)


def _curve(x: np.ndarray, floor: float, drop: float, rise: float, x0: float) -> np.ndarray:
    """A validation-loss-like curve: falls like 1/x, rises quadratically after x0."""
    return floor + drop / x + rise * np.clip(x - x0, 0.0, None) ** 2


def _trials(seed: int = 0) -> tuple[list[TrialCurves], int, int]:
    rng = np.random.default_rng(seed)
    x = np.arange(1, 41, dtype=float)
    trials = []
    # Trial 0..4: smooth curves with small noise; trial 2 has the lowest underlying minimum.
    floors = [0.40, 0.38, 0.30, 0.36, 0.42]
    for i, floor in enumerate(floors):
        val = _curve(x, floor, 0.5, 2e-4, 20.0) + rng.normal(0, 0.004, x.size)
        loss = floor - 0.02 + 0.5 / x + rng.normal(0, 0.002, x.size)
        trials.append(TrialCurves(i, {"lr": 0.1 * (i + 1)}, {"val_loss": val, "loss": loss}))
    # Trial 5: a worse underlying curve with one lucky epoch far below everything.
    val = _curve(x, 0.37, 0.5, 2e-4, 20.0) + rng.normal(0, 0.004, x.size)
    val[25] = 0.27
    loss = 0.35 + 0.5 / x
    trials.append(TrialCurves(5, {"lr": 0.6}, {"val_loss": val, "loss": loss}))
    return trials, 2, 5


def test_fit_recovers_exact_coefficients() -> None:
    x = np.arange(1, 31, dtype=float)
    coef = np.array([0.3, 0.7, 1e-4, -0.01, 0.5])
    y = coef[0] / x**2 + coef[1] / x + coef[2] * x**2 + coef[3] * x + coef[4]
    fitted_coef, fitted, r2 = fit_learning_curve(y)
    np.testing.assert_allclose(fitted_coef, coef, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(fitted, y, rtol=1e-9)
    assert r2 == pytest.approx(1.0)


def test_fit_r2_matches_numpy_polyfit_definition() -> None:
    rng = np.random.default_rng(3)
    y = 0.5 + 1.0 / np.arange(1, 21) + rng.normal(0, 0.05, 20)
    _, fitted, r2 = fit_learning_curve(y)
    oracle = 1 - np.sum((y - fitted) ** 2) / np.sum((y - y.mean()) ** 2)
    assert r2 == pytest.approx(oracle)
    assert 0.0 < r2 < 1.0


def test_best_fit_picks_right_trial_and_best_value_takes_lucky_epoch() -> None:
    trials, right, lucky = _trials()
    res = select_trials(trials, target="val_loss", direction="minimize")
    assert res.best_value[0].number == lucky
    assert res.best_value[0].epoch == 26  # 1-based: index 25
    assert res.best_value[0].value == pytest.approx(0.27)
    assert res.best_fit[0].number == right
    # the fitted minimum sits near the underlying curve's minimum, not at the noise floor
    assert res.best_fit[0].value == pytest.approx(0.30 + 0.5 / 21, abs=0.02)
    assert res.best_fit[0].r2["val_loss"] >= 0.9
    assert res.skipped_fit == {}


def test_best_fit_skips_short_and_noisy_trials() -> None:
    trials, right, _ = _trials()
    rng = np.random.default_rng(1)
    trials.append(TrialCurves(10, {}, {"val_loss": [0.01] * 9, "loss": [0.01] * 9}))
    noise = 0.1 + rng.uniform(0, 0.2, 40)
    noise[3] = 0.001
    trials.append(TrialCurves(11, {}, {"val_loss": noise, "loss": noise}))
    res = select_trials(trials, n_select=3)
    assert "min_epochs" in res.skipped_fit[10]
    assert "R^2" in res.skipped_fit[11]
    assert [s.number for s in res.best_value][:2] == [11, 10]
    assert res.best_fit[0].number == right
    assert 10 not in {s.number for s in res.best_fit}
    assert len(res.best_fit) == 3


def test_overtraining_condition_excludes_epochs() -> None:
    trials, _, lucky = _trials()
    # Mark the lucky epoch overtrained by making its train/val gap large.
    loss = np.asarray(trials[lucky].metrics["loss"], dtype=float).copy()
    val = np.asarray(trials[lucky].metrics["val_loss"], dtype=float)
    loss[25] = val[25] - 0.5
    trials[lucky] = TrialCurves(lucky, {}, {"val_loss": val, "loss": loss})
    res = select_trials(trials, overtraining=["val_loss - loss > 0.3"])
    assert res.best_value[0].number != lucky or res.best_value[0].epoch != 26
    res_callable = select_trials(trials, overtraining=[lambda m: m["val_loss"] - m["loss"] > 0.3])
    assert res_callable.best_value[0].number == res.best_value[0].number


def test_maximize_direction() -> None:
    trials, right, _ = _trials()
    flipped = [
        TrialCurves(t.number, t.params, {k: -np.asarray(v) for k, v in t.metrics.items()})
        for t in trials
    ]
    res = select_trials(flipped, direction="maximize")
    assert res.best_fit[0].number == right


def test_reads_histories_from_optuna_study() -> None:
    trials, right, lucky = _trials()
    study = optuna.create_study()
    for t in trials:
        ft = optuna.trial.create_trial(
            params={"lr": float(t.params["lr"])},
            distributions={"lr": optuna.distributions.FloatDistribution(0.0, 1.0)},
            value=float(np.min(t.metrics["val_loss"])),
            user_attrs={HISTORY_ATTR: {k: list(map(float, v)) for k, v in t.metrics.items()}},
        )
        study.add_trial(ft)
    res = select_trials(study)
    assert res.best_fit[0].number == right
    assert res.best_value[0].number == lucky
    assert {s.number for s in res.selected()} == {right, lucky}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"direction": "up"}, "direction"),
        ({"n_select": 0}, "n_select"),
        ({"min_epochs": 3}, "min_epochs"),
        ({"target": "val_auc"}, "val_auc"),
        ({"overtraining": ["import os"]}, "overtraining"),
    ],
)
def test_bad_input_raises_config_error(kwargs: dict, match: str) -> None:
    trials, _, _ = _trials()
    with pytest.raises(ConfigError, match=match):
        select_trials(trials, **kwargs)


def test_fit_rejects_short_or_non_finite_histories() -> None:
    with pytest.raises(ValueError, match="at least 5"):
        fit_learning_curve([0.5, 0.4, 0.3, 0.3])
    with pytest.raises(ValueError, match="finite"):
        fit_learning_curve([0.5, 0.4, float("nan"), 0.3, 0.3, 0.3])


def test_non_finite_target_is_skipped_by_best_fit_but_not_best_value() -> None:
    x = np.arange(1, 21, dtype=float)
    val = 0.3 + 0.5 / x
    val[4] = np.nan  # a diverged epoch
    res = select_trials([TrialCurves(0, {}, {"val_loss": val})])
    assert res.best_value[0].epoch == 20
    assert res.best_fit == ()
    assert "non-finite" in res.skipped_fit[0]


def test_trial_value_options() -> None:
    from sigtune.pipelines.ml._selection import trial_value

    loss = [1.0, 0.8, 0.6, 0.5, 0.45, 0.44, 0.46, 0.5]
    val = [1.0, 0.8, 0.61, 0.55, 0.5, 0.52, 0.56, 0.6]
    m = {"loss": loss, "val_loss": val}
    assert trial_value(m, "val_loss", "minimize") == (0.5, 5)
    # OPTIMA's default: the last epoch that passes the overtraining conditions
    cond = ["val_loss - loss > 0.09"]
    assert trial_value(m, "val_loss", "minimize", "last_valid_epoch", cond) == (0.52, 6)
    assert trial_value(m, "val_loss", "minimize", "last_valid_epoch") == (0.6, 8)
    value, epoch = trial_value(m, "val_loss", "minimize", "best_fit")
    _, fitted, _ = fit_learning_curve(np.array(val))
    assert value == pytest.approx(float(fitted.min())) and epoch == int(fitted.argmin()) + 1
    with pytest.raises(ConfigError, match="trial_value"):
        trial_value(m, "val_loss", "minimize", "median")  # type: ignore[arg-type]


def test_pruned_trials_optionally_eligible() -> None:
    import optuna

    study = optuna.create_study()
    for state, curve in [("complete", [0.9, 0.8, 0.7]), ("pruned", [0.6, 0.5])]:
        t = study.ask()
        t.set_user_attr("history", {"val_loss": curve})
        if state == "complete":
            study.tell(t, curve[-1])
        else:
            study.tell(t, state=optuna.trial.TrialState.PRUNED)
    assert select_trials(study, min_epochs=5).best_value[0].number == 0
    assert select_trials(study, min_epochs=5, include_pruned=True).best_value[0].number == 1

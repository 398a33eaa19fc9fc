"""InputScaler: per-variable transforms, standardisation fitted on the training split only."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sigtune._exceptions import ConfigError
from sigtune.pipelines.ml import InputScaler, make_hep_dataset, split_random

DATA = make_hep_dataset(800, n_informative=3, n_correlated=0, n_noise=2, seed=4)
SPLITS = split_random(DATA, val_fraction=0.3, seed=0)
TRANSFORMS = {
    "inf_0": {"kind": "log10", "scale": 2.0, "offset": 1.0},
    "inf_1": {"kind": "sqrt", "scale": 0.5},
    "noise_0": {"kind": "linear", "scale": 3.0, "offset": -2.0},
}


def _manual(X: np.ndarray, features: tuple[str, ...]) -> np.ndarray:
    out = X.copy()
    out[:, features.index("inf_0")] = np.log10(2.0 * X[:, features.index("inf_0")] + 1.0)
    out[:, features.index("inf_1")] = np.sqrt(0.5 * X[:, features.index("inf_1")])
    out[:, features.index("noise_0")] = 3.0 * X[:, features.index("noise_0")] - 2.0
    return out


def test_transform_matches_closed_form_and_training_statistics() -> None:
    train, val = SPLITS.train, SPLITS.val
    scaler = InputScaler(TRANSFORMS).fit(train)
    t_train = _manual(train.X, train.features)
    np.testing.assert_allclose(scaler.mean_, t_train.mean(axis=0))
    np.testing.assert_allclose(scaler.std_, t_train.std(axis=0))
    z_val = scaler.transform(val)
    np.testing.assert_allclose(
        z_val, (_manual(val.X, val.features) - t_train.mean(0)) / t_train.std(0)
    )
    z_train = scaler.transform(train.X)
    np.testing.assert_allclose(z_train.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(z_train.std(axis=0), 1.0, atol=1e-12)


def test_fitted_on_training_split_only() -> None:
    """Changing validation events does not change the scaler; changing training events does."""
    train, val = SPLITS.train, SPLITS.val
    a = InputScaler(TRANSFORMS).fit(train)
    z1 = a.transform(val)
    # the validation set statistics differ from the training ones, so it was not fitted on them
    assert not np.allclose(z1.mean(axis=0), 0.0, atol=1e-3)
    b = InputScaler(TRANSFORMS).fit(train)
    np.testing.assert_array_equal(a.mean_, b.mean_)
    shifted = train.with_inputs(train.X * 1.5)
    c = InputScaler(TRANSFORMS).fit(shifted)
    assert not np.allclose(a.mean_, c.mean_)
    everything = InputScaler(TRANSFORMS).fit(DATA)
    assert not np.allclose(a.mean_, everything.mean_)


def test_serialisation_round_trip() -> None:
    scaler = InputScaler(TRANSFORMS).fit(SPLITS.train)
    state = json.loads(json.dumps(scaler.to_dict()))
    back = InputScaler.from_dict(state)
    assert back.is_fitted and back.features == SPLITS.train.features
    np.testing.assert_array_equal(back.transform(SPLITS.val.X), scaler.transform(SPLITS.val.X))
    with pytest.raises(ConfigError, match="unknown InputScaler state"):
        InputScaler.from_dict({**state, "extra": 1})


def test_constant_column_and_no_standardisation() -> None:
    X = np.column_stack([np.ones(10), np.arange(10.0)])
    s = InputScaler(features=["c", "x"]).fit(X)
    np.testing.assert_array_equal(s.transform(X)[:, 0], 0.0)
    raw = InputScaler({"x": {"kind": "sqrt"}}, features=["c", "x"], standardize=False).fit(X)
    np.testing.assert_allclose(raw.transform(X)[:, 1], np.sqrt(np.arange(10.0)))


def test_errors_say_what_to_fix() -> None:
    with pytest.raises(ConfigError, match="kind must be one of"):
        InputScaler({"a": {"kind": "exp"}})
    with pytest.raises(ConfigError, match="unknown key"):
        InputScaler({"a": {"kind": "log10", "base": 10}})
    with pytest.raises(ConfigError, match="unknown variable"):
        InputScaler({"zz": "log10"}).fit(SPLITS.train)
    with pytest.raises(ConfigError, match="not fitted"):
        InputScaler().transform(SPLITS.val.X)
    bad = SPLITS.train.with_inputs(SPLITS.train.X - 1000.0)
    with pytest.raises(ConfigError, match="raise `offset`"):
        InputScaler({"inf_0": {"kind": "log10"}}).fit(bad)
    with pytest.raises(ConfigError, match="no feature names"):
        InputScaler({"a": "log10"}).fit(np.ones((3, 1)))
    s = InputScaler().fit(SPLITS.train)
    with pytest.raises(ConfigError, match="expects 5 columns"):
        s.transform(np.ones((2, 3)))


def test_quantile_normalization_maps_inputs_to_normal() -> None:
    from scipy import stats as st

    rng = np.random.default_rng(3)
    X = np.column_stack([rng.exponential(2.0, 5000), rng.standard_cauchy(5000)])
    scaler = InputScaler(features=["a", "b"], normalization="quantile").fit(X)
    Z = scaler.transform(X)
    for j in range(2):  # heavy tails and skew are gone: close to N(0, 1)
        assert st.kstest(Z[:, j], "norm").statistic < 0.02
    # monotone per variable, and the fitted state round-trips through JSON
    order = np.argsort(X[:, 0])
    assert np.all(np.diff(Z[order, 0]) >= -1e-12)
    back = InputScaler.from_dict(scaler.to_dict())
    np.testing.assert_allclose(back.transform(X[:100]), Z[:100])
    with pytest.raises(ConfigError, match="normalization"):
        InputScaler(normalization="rank")


def test_mlp_input_normalization_is_a_hyperparameter(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from sigtune.pipelines.ml import load_trainable, make_trainable

    splits = split_random(DATA, val_fraction=0.25, seed=0)
    t = make_trainable("mlp", metrics=[], max_epochs=2, batch_size=128)
    t.fit(
        splits.train, splits.val, {"num_layers": 1, "units": 4, "input_normalization": "quantile"}
    )
    assert t.scaler_.normalization == "quantile" and t.scaler_.quantiles_ is not None
    t.save(tmp_path / "m")
    back = load_trainable(tmp_path / "m")
    np.testing.assert_allclose(back.predict(splits.val.X), t.predict(splits.val.X), rtol=1e-6)

"""EventData, load_data (Parquet, CSV, npz, ROOT, DataFrame, pickle) and the dataset generator."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from sigtune._exceptions import ConfigError
from sigtune.pipelines.ml import EventData, load_data, make_hep_dataset


def _frame(n: int = 50, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "a": rng.normal(size=n),
            "b": rng.exponential(size=n),
            "label": rng.integers(0, 2, n),
            "w": rng.uniform(0.5, 2.0, n),
            "evt": rng.permutation(n) + 1000,
        }
    )


def _check_same(data: EventData, df: pd.DataFrame) -> None:
    np.testing.assert_array_equal(data.X, df[["a", "b"]].to_numpy())
    np.testing.assert_array_equal(data.y, df["label"].to_numpy())
    np.testing.assert_array_equal(data.w, df["w"].to_numpy())
    np.testing.assert_array_equal(data.event_number, df["evt"].to_numpy())
    assert data.features == ("a", "b")
    assert data.n_classes == 2


KW = {"features": ["a", "b"], "target": "label", "weight": "w", "event_number": "evt"}


# ---------------------------------------------------------------------- EventData
def test_eventdata_validates_shapes_and_classes() -> None:
    X = np.zeros((3, 2))
    ok = EventData(X, np.array([0, 1, 1]), np.ones(3), np.arange(3), ("a", "b"), 2)
    assert len(ok) == 3 and ok.n_features == 2 and ok.is_binary
    with pytest.raises(ConfigError, match="feature names"):
        EventData(X, np.array([0, 1, 1]), np.ones(3), np.arange(3), ("a",), 2)
    with pytest.raises(ConfigError, match=r"y must lie in \[0, 2\)"):
        EventData(X, np.array([0, 1, 2]), np.ones(3), np.arange(3), ("a", "b"), 2)
    with pytest.raises(ConfigError, match="w must have shape"):
        EventData(X, np.array([0, 1, 1]), np.ones(4), np.arange(3), ("a", "b"), 2)
    with pytest.raises(ConfigError, match="unique"):
        EventData(X, np.array([0, 1, 1]), np.ones(3), np.arange(3), ("a", "a"), 2)
    with pytest.raises(ConfigError, match="NaN"):
        EventData(X, np.array([0, 1, 1]), np.array([1.0, np.nan, 1.0]), np.arange(3), ("a", "b"), 2)


def test_eventdata_is_immutable_and_views_work() -> None:
    d = make_hep_dataset(40, n_noise=1, n_correlated=0, seed=3)
    with pytest.raises(ValueError):
        d.X[0, 0] = 1.0  # arrays are read-only
    sub = d.subset(np.array([3, 1]))
    np.testing.assert_array_equal(sub.X, d.X[[3, 1]])
    np.testing.assert_array_equal(sub.event_number, d.event_number[[3, 1]])
    mask = d.y == 1
    assert len(d.subset(mask)) == int(mask.sum())
    sel = d.select_features(["noise_0", "inf_1"])
    assert sel.features == ("noise_0", "inf_1")
    np.testing.assert_array_equal(sel.X[:, 0], d.X[:, d.features.index("noise_0")])
    with pytest.raises(ConfigError, match="unknown feature"):
        d.select_features(["nope"])
    both = EventData.concatenate([d.subset(slice(0, 10)), d.subset(slice(10, None))])
    np.testing.assert_array_equal(both.X, d.X)
    oh = d.one_hot()
    assert oh.shape == (40, 2) and np.all(oh.argmax(axis=1) == d.y)
    np.testing.assert_allclose(d.class_weight_sums(), [d.w[d.y == 0].sum(), d.w[d.y == 1].sum()])


# ---------------------------------------------------------------------- formats
def test_load_from_dataframe_and_mapping() -> None:
    df = _frame()
    _check_same(load_data(df, **KW), df)
    _check_same(load_data({c: df[c].to_numpy() for c in df.columns}, **KW), df)


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".npz"])
def test_load_files(tmp_path: Path, suffix: str) -> None:
    df = _frame()
    path = tmp_path / f"events{suffix}"
    if suffix == ".parquet":
        df.to_parquet(path)
    elif suffix == ".csv":
        df.to_csv(path, index=False)
    else:
        np.savez(path, **{c: df[c].to_numpy() for c in df.columns})
    data = load_data(path, **KW)
    if suffix == ".csv":  # text round trip of floats
        np.testing.assert_allclose(data.X, df[["a", "b"]].to_numpy(), rtol=1e-15)
        np.testing.assert_array_equal(data.y, df["label"].to_numpy())
    else:
        _check_same(data, df)


def test_load_root_ttree(tmp_path: Path) -> None:
    uproot = pytest.importorskip("uproot")
    df = _frame()
    path = tmp_path / "events.root"
    with uproot.recreate(path) as f:
        tree = f.mktree("Events", {c: df[c].dtype for c in df.columns})
        tree.extend({c: df[c].to_numpy() for c in df.columns})
        f["Other"] = {"x": np.arange(3.0)}  # uproot 5.7 writes an RNTuple: both kinds are read
    _check_same(load_data(path, tree="Events", **KW), df)
    _check_same(load_data(f"{path}:Events", **KW), df)
    with pytest.raises(ConfigError, match="choose one with tree"):
        load_data(path, **KW)
    with pytest.raises(ConfigError, match="TTree 'Nope' not in"):
        load_data(path, tree="Nope", **KW)


def test_pickle_needs_allow_pickle(tmp_path: Path) -> None:
    df = _frame()
    path = tmp_path / "inputs.pickle"
    df.to_pickle(path)
    with pytest.raises(ConfigError, match="allow_pickle=True"):
        load_data(path, **KW)
    with pytest.warns(UserWarning, match="only do this for files you trust"):
        data = load_data(path, allow_pickle=True, **KW)
    _check_same(data, df)
    # a pickled mapping of arrays works too
    path2 = tmp_path / "inputs.pkl"
    path2.write_bytes(pickle.dumps({c: df[c].to_numpy() for c in df.columns}))
    with pytest.warns(UserWarning):
        _check_same(load_data(path2, allow_pickle=True, **KW), df)


def test_multiindex_columns_of_optima_style_frames() -> None:
    df = _frame()
    df.columns = pd.MultiIndex.from_tuples([("inputs", c) for c in df.columns])
    _check_same(load_data(df, **KW), _frame())
    data = load_data(df, features=["inputs/a"], target="inputs/label")
    np.testing.assert_array_equal(data.X[:, 0], _frame()["a"].to_numpy())


# ---------------------------------------------------------------------- targets
def test_one_hot_target_columns() -> None:
    df = _frame()
    for k in range(3):
        df[f"c{k}"] = (np.arange(len(df)) % 3 == k).astype(int)
    data = load_data(df, features=["a", "b"], target=["c0", "c1", "c2"])
    assert data.n_classes == 3
    np.testing.assert_array_equal(data.y, np.arange(len(df)) % 3)
    df.loc[0, "c1"] = 1  # two ones in a row
    with pytest.raises(ConfigError, match="exactly one 1"):
        load_data(df, features=["a", "b"], target=["c0", "c1", "c2"])


def test_integer_classes_and_labels() -> None:
    df = _frame()
    df["cls"] = np.arange(len(df)) % 4
    data = load_data(df, features=["a"], target="cls")
    assert data.n_classes == 4
    df["name"] = np.where(df["label"] == 1, "signal", "background")
    data = load_data(df, features=["a"], target="name", classes=["background", "signal"])
    np.testing.assert_array_equal(data.y, df["label"].to_numpy())
    with pytest.raises(ConfigError, match="pass classes"):
        load_data(df, features=["a"], target="name")
    with pytest.raises(ConfigError, match="not in classes"):
        load_data(df, features=["a"], target="name", classes=["background"])
    df["bad"] = df["a"]  # floats are not class indices
    with pytest.raises(ConfigError, match="class indices"):
        load_data(df, features=["b"], target="bad")


def test_defaults_and_errors() -> None:
    df = _frame()
    data = load_data(df, features=None, target="label", weight="w")
    assert data.features == ("a", "b", "evt")
    np.testing.assert_array_equal(data.event_number, np.arange(len(df)))
    no_w = load_data(df, features=["a"], target="label")
    assert np.all(no_w.w == 1.0)
    with pytest.raises(ConfigError, match=r"column\(s\) \['zz'\] not found"):
        load_data(df, features=["a", "zz"], target="label")
    df["text"] = "x"
    with pytest.raises(ConfigError, match="not numeric"):
        load_data(df, features=["text"], target="label")
    with pytest.raises(ConfigError, match="unknown data format"):
        p = Path(__file__)
        load_data(p, features=["a"], target="label")
    with pytest.raises(ConfigError, match="does not exist"):
        load_data("/nonexistent/file.parquet", features=["a"], target="label")
    df2 = _frame()
    df2.loc[3, "a"] = np.nan
    with pytest.raises(ConfigError, match="NaN"):
        load_data(df2, **KW)


def test_roundtrip_generated_data_through_parquet(tmp_path: Path) -> None:
    d = make_hep_dataset(200, seed=5)
    d.to_dataframe().to_parquet(tmp_path / "gen.parquet")
    back = load_data(
        tmp_path / "gen.parquet",
        features=list(d.features),
        target="target",
        weight="weight",
        event_number="event_number",
    )
    np.testing.assert_array_equal(back.X, d.X)
    np.testing.assert_array_equal(back.y, d.y)
    np.testing.assert_array_equal(back.w, d.w)
    np.testing.assert_array_equal(back.event_number, d.event_number)


# ---------------------------------------------------------------------- generator
def test_generator_is_seeded_and_structured() -> None:
    a = make_hep_dataset(4000, n_informative=4, n_correlated=1, n_noise=8, seed=11)
    b = make_hep_dataset(4000, n_informative=4, n_correlated=1, n_noise=8, seed=11)
    c = make_hep_dataset(4000, n_informative=4, n_correlated=1, n_noise=8, seed=12)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.w, b.w)
    assert not np.array_equal(a.X, c.X)
    assert a.features[:4] == ("inf_0", "inf_1", "inf_2", "inf_3")
    assert a.features[4] == "corr_0" and len(a.features) == 13
    assert len(np.unique(a.event_number)) == len(a)
    np.testing.assert_allclose(a.class_weight_sums(), [1000.0, 50.0])
    sig = a.y == 1
    for name in a.features:
        col = a.X[:, a.features.index(name)]
        p = stats.ks_2samp(col[sig], col[~sig]).pvalue
        if name.startswith("noise_"):
            assert p > 1e-4, name  # same distribution for both classes
        else:
            assert p < 1e-10, name  # informative and correlated variables separate
    corr = np.corrcoef(a.X[:, 0], a.X[:, 4])[0, 1]
    assert corr > 0.5


def test_generator_negative_weights_and_errors() -> None:
    d = make_hep_dataset(2000, negative_weight_fraction=0.2, seed=1)
    frac = np.mean(d.w < 0)
    assert 0.15 < frac < 0.25
    np.testing.assert_allclose(d.class_weight_sums(), [1000.0, 50.0])
    with pytest.raises(ConfigError, match="signal_fraction"):
        make_hep_dataset(100, signal_fraction=1.5)
    with pytest.raises(ConfigError, match="n_informative"):
        make_hep_dataset(100, n_informative=0)


def test_package_import_does_not_import_heavy_libraries() -> None:
    import subprocess

    code = (
        "import sys, sigtune.pipelines.ml as ml; ml.load_data; ml.make_trainable; ml.compute_metric;"
        "ml.InputScaler; ml.split_random; heavy = {'torch', 'lightning', 'sklearn', 'lightgbm',"
        " 'xgboost', 'uproot', 'keras'} & set(sys.modules); print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------- OPTIMA pickles
def _optima_frame(n: int = 60, seed: int = 1) -> pd.DataFrame:
    """A frame in OPTIMA's pickled-input layout: column groups on the first level."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    cols = {
        ("features", "x1"): rng.normal(size=n),
        ("features", "x2"): rng.normal(size=n),
        ("targets", "background"): (y == 0).astype(int),
        ("targets", "signal"): (y == 1).astype(int),
        ("weights", "weights"): rng.uniform(0.5, 2.0, n),
        ("weights", "normalized_weights"): rng.uniform(0.5, 2.0, n),
        ("event_number", "event_number"): np.arange(n) + 7,
    }
    return pd.DataFrame(cols)


def test_optima_pickle_layout_has_no_target_leak(tmp_path: Path) -> None:
    """features: null on OPTIMA's layout used to feed targets/weights/event numbers as inputs."""
    df = _optima_frame()
    path = tmp_path / "inputs.pkl"
    df.to_pickle(path)
    with pytest.warns(UserWarning):
        data = load_data(path, features=None, target="target", allow_pickle=True)
    assert data.features == ("x1", "x2")
    np.testing.assert_array_equal(data.X[:, 0], df[("features", "x1")].to_numpy())
    np.testing.assert_array_equal(data.y, df[("targets", "signal")].to_numpy())
    np.testing.assert_array_equal(data.w, df[("weights", "weights")].to_numpy())  # physics
    np.testing.assert_array_equal(data.event_number, np.arange(60) + 7)


def test_flat_frame_without_features_excludes_reserved_columns() -> None:
    df = _frame()
    df["weight"] = 1.0
    df["split"] = 0
    data = load_data(df, features=None, target="label", event_number="evt")
    assert data.features == ("a", "b", "w")  # an unreserved name stays an input
    with pytest.raises(ConfigError, match="are the target"):
        load_data(df, features=["a", "label"], target="label")


@pytest.mark.parametrize(
    ("labels", "weights", "match"),
    [
        ([0, 0, 0, 0], [1, 1, 1, 1], "single class"),
        ([0, 2, 0, 2], [1, 1, 1, 1], r"no events of class\(es\) \[1\]"),
        ([0, 1, 0, 1], [0, 0, 0, 0], "sums to 0"),
    ],
)
def test_check_events_refuses_degenerate_data(
    labels: list[int], weights: list[float], match: str
) -> None:
    from sigtune.pipelines.ml._data import check_events

    data = load_data(
        {"a": np.arange(4.0), "y": np.array(labels), "w": np.array(weights, float)},
        features=["a"],
        target="y",
        weight="w",
    )
    with pytest.raises(ConfigError, match=match) as info:
        check_events(data, where="events.csv", target="y", weight="w")
    assert "\n" not in str(info.value) and "events.csv" in str(info.value)

"""Reading event samples from files / frames and their validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sigtune.pipelines.binning import BinningError, EventSample, load_events


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    n = 50
    return pd.DataFrame(
        {
            "score": rng.random(n),
            "w": rng.uniform(0.5, 1.5, n),
            "w_up": rng.uniform(0.5, 1.5, n),
            "w_dn": rng.uniform(0.5, 1.5, n),
            "score_up": rng.random(n),
            "score_dn": rng.random(n),
            "eta": rng.normal(0, 2, n),
        }
    )


def _check(sample: EventSample, frame: pd.DataFrame, scale: float = 1.0) -> None:
    np.testing.assert_allclose(sample.discriminant, frame["score"])
    np.testing.assert_allclose(sample.weight, frame["w"] * scale)
    np.testing.assert_allclose(sample.columns["eta"], frame["eta"])
    assert sample.variations["sf"].kind == "weight"
    np.testing.assert_allclose(sample.variations["sf"].up, frame["w_up"] * scale)
    assert sample.variations["jes"].kind == "discriminant"
    np.testing.assert_allclose(sample.variations["jes"].down, frame["score_dn"])


KW = {
    "name": "bkg",
    "discriminant": "score",
    "weight": "w",
    "columns": ["eta"],
    "weight_variations": {"sf": ("w_up", "w_dn")},
    "discriminant_variations": {"jes": ("score_up", "score_dn")},
}


@pytest.mark.parametrize("fmt", ["frame", "mapping", "parquet", "csv", "npz", "npy", "root"])
def test_load_every_format(fmt: str, frame: pd.DataFrame, tmp_path: Path) -> None:
    source: object
    if fmt == "frame":
        source = frame
    elif fmt == "mapping":
        source = {c: frame[c].to_numpy() for c in frame.columns}
    elif fmt == "parquet":
        source = tmp_path / "ev.parquet"
        frame.to_parquet(source)
    elif fmt == "csv":
        source = tmp_path / "ev.csv"
        frame.to_csv(source, index=False)
    elif fmt == "npz":
        source = tmp_path / "ev.npz"
        np.savez(source, **{c: frame[c].to_numpy() for c in frame.columns})
    elif fmt == "npy":
        source = tmp_path / "ev.npy"
        np.save(source, frame.to_records(index=False))
    else:
        uproot = pytest.importorskip("uproot")
        source = tmp_path / "ev.root"
        with uproot.recreate(source) as f:
            f["events"] = {c: frame[c].to_numpy() for c in frame.columns}
    sample = load_events(source, tree="events" if fmt == "root" else None, scale=2.0, **KW)
    _check(sample, frame, scale=2.0)


def test_missing_column_lists_available(frame: pd.DataFrame) -> None:
    with pytest.raises(BinningError, match=r"columns \['nope'\] not found; available"):
        load_events(frame, name="b", discriminant="nope")


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(BinningError, match="does not exist"):
        load_events(tmp_path / "x.parquet", name="b", discriminant="s")
    (tmp_path / "x.txt").write_text("1")
    with pytest.raises(BinningError, match="unsupported event file"):
        load_events(tmp_path / "x.txt", name="b", discriminant="s")
    (tmp_path / "x.root").write_bytes(b"")
    with pytest.raises(BinningError, match="tree="):
        load_events(tmp_path / "x.root", name="b", discriminant="s")


def test_validation_messages() -> None:
    with pytest.raises(BinningError, match="1 NaN"):
        EventSample.from_arrays("s", [0.1, np.nan], [1, 1])
    with pytest.raises(BinningError, match="weight of sample 's' has shape"):
        EventSample.from_arrays("s", [0.1, 0.2], [1, 1, 1])
    with pytest.raises(BinningError, match="both as weight and as discriminant"):
        EventSample.from_arrays(
            "s",
            [0.1, 0.2],
            weight_variations={"a": ([1, 1], [1, 1])},
            discriminant_variations={"a": ([0.1, 0.2], [0.1, 0.2])},
        )

"""Fits of small models run with one BLAS thread (``_fit._one_blas_thread``) and restore the
caller's BLAS threads afterwards, also when nested or when the fit raises."""

from __future__ import annotations

import numpy as np
import pytest
from _generate import synthetic_workspace

import sigtune.hep as hep
from sigtune.hep import _fit

threadpoolctl = pytest.importorskip("threadpoolctl")


def _blas_threads() -> list[int]:
    return [
        int(i["num_threads"]) for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"
    ]


def _model() -> tuple[hep.Model, np.ndarray]:
    ws = hep.Workspace(synthetic_workspace(n_bins=4, n_nps=3, seed=1))
    model = ws.model()
    return model, ws.data(model)


def test_one_blas_thread_inside_and_restored_after(monkeypatch: pytest.MonkeyPatch) -> None:
    model, data = _model()
    monkeypatch.setattr(_fit, "BLAS_ONE_MIN", 0)  # a small model stands in for a wide one
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        before = _blas_threads()
        seen: list[list[int]] = []
        with _fit._one_blas_thread(model):
            seen.append(_blas_threads())
            with _fit._one_blas_thread(model):  # nested: still one, not restored early
                seen.append(_blas_threads())
            seen.append(_blas_threads())
        assert all(t == 1 for s in seen for t in s), seen
        assert _blas_threads() == before
        with pytest.raises(RuntimeError), _fit._one_blas_thread(model):
            raise RuntimeError("boom")
        assert _blas_threads() == before
        r = hep.fit(model, data)
        assert r.converged
        assert _blas_threads() == before


@pytest.mark.parametrize(("lo", "hi"), [(0, 0), (10_000, 20_000)])
def test_tiny_and_large_models_keep_their_blas_threads(
    monkeypatch: pytest.MonkeyPatch, lo: int, hi: int
) -> None:
    model, _ = _model()
    monkeypatch.setattr(_fit, "BLAS_ONE_MIN", lo)
    monkeypatch.setattr(_fit, "SMALL_BLAS", hi)
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        before = _blas_threads()
        with _fit._one_blas_thread(model):
            assert _blas_threads() == before

"""The compiled kernels (sigtune.hep._jit) against the NumPy engine they replace.

The NumPy engine is itself checked against finite differences (test_model) and pyhf
(test_against_pyhf); here the compiled likelihood, gradient and Hessian, the compiled Newton
iteration and the batched row loop must give the same numbers as the NumPy code paths.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from _generate import (
    arrowhead_model,
    random_workspace,
    saddle_workspace,
    synthetic_workspace,
    workspaces,
)
from hypothesis import HealthCheck, given, settings

import sigtune.hep as hep
from sigtune.hep import _fit as fit_module
from sigtune.hep import _jit
from sigtune.hep import _model as model_module

pytest.importorskip("numba")  # a dev dependency: never skipped in CI

CODES = (("code4", "code4p"), ("code1", "code0"))


def _random_pars(model: hep.Model, rng: np.random.Generator, n: int = 3) -> np.ndarray:
    lo, hi = model.suggested_bounds().T
    width = np.minimum(hi - lo, 2.0) * 0.6  # also beyond |alpha| = 1 (the polynomial region)
    x = model.suggested_init() + rng.uniform(-1, 1, (n, model.n_pars)) * width
    return np.asarray(np.clip(x, lo + 1e-3 * (hi - lo), hi))


def test_enabled_in_the_test_environment() -> None:
    assert _jit.ENABLED, "numba is a dev dependency: the compiled path must be what the tests run"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=workspaces())
def test_derivatives_equal_numpy_engine(spec: dict[str, Any]) -> None:
    ws = hep.Workspace(spec)
    for normsys, histosys in CODES:
        model = ws.model(normsys_interp=normsys, histosys_interp=histosys)
        assert model.arrays.dense_layout
        data = ws.data(model)
        x = _random_pars(model, np.random.default_rng(7))
        consts = model._constants(np.repeat(data[None], len(x), axis=0))
        ours = _jit.derivatives(model.arrays, x, consts)
        ref = model_module._derivatives_dense_impl(model, x, consts)
        for i in (0, 1, 2, 5):
            scale = max(1.0, float(np.abs(ref[i]).max()))
            np.testing.assert_allclose(ours[i], ref[i], rtol=1e-10, atol=1e-10 * scale)


def test_zero_rate_and_negative_rate_are_handled_like_numpy() -> None:
    ws = hep.Workspace(synthetic_workspace(5, 2))
    model = ws.model()
    data = ws.data(model)
    x = model.suggested_init()[None].copy()
    x[0, model.poi_index] = 0.0  # signal switched off: its rates are exactly 0
    consts = model._constants(data[None])
    ours = _jit.derivatives(model.arrays, x, consts)
    ref = model_module._derivatives_dense_impl(model, x, consts)
    np.testing.assert_allclose(ours[0], ref[0], rtol=1e-12)
    np.testing.assert_allclose(ours[2], ref[2], rtol=1e-10, atol=1e-10)
    # a negative expected rate makes -2 ln L infinite in both
    x[0, model.par_index("mu")] = -1e6
    assert np.isinf(_jit.derivatives(model.arrays, x, consts, order=0)[0][0])
    assert np.isinf(model_module._derivatives_dense_impl(model, x, consts)[0][0])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=workspaces())
def test_fit_equals_numpy_minimiser(spec: dict[str, Any]) -> None:
    ws = hep.Workspace(spec)
    model = ws.model()
    data = ws.data(model)
    ours = hep.fit(model, data)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_jit, "ENABLED", False)
        ref = hep.fit(model, data)
    assert ours.converged == ref.converged
    assert ours.twice_nll == pytest.approx(ref.twice_nll, abs=1e-8)
    # (the reference is the batched NumPy iteration; both stop once the edm is below
    # _jit.EDM_TOL = 1e-9 nll units, i.e. each within 2e-9 of the minimum in -2 ln L)
    assert ours.twice_nll <= ref.twice_nll + 4.0 * _jit.EDM_TOL
    # the errors are the NumPy engine's Hessian errors at our minimum (the two minimisers may
    # stop at different points along flat directions, so their errors are not compared)
    consts = model._constants(data[None])
    H = model_module._derivatives_dense_impl(model, ours.bestfit[None], consts)[2][0]
    free = ~model.suggested_fixed()
    ref_errors, _ = fit_module._errors_and_cov_single(H, free, False)
    # (random workspaces can leave parameters undetermined -- e.g. shapefactors times the POI --
    # and the inverse of a singular Hessian is noise in both engines: compared when invertible)
    if np.linalg.cond(H[np.ix_(free, free)]) < 1e8:
        np.testing.assert_allclose(ours.errors, ref_errors[0], rtol=1e-6, atol=1e-9)


def test_conditional_fit_and_fixed_parameters() -> None:
    ws = hep.Workspace(synthetic_workspace(12, 4))
    model = ws.model()
    data = ws.data(model)
    fixed = {model.par_names[1]: 0.3}
    for kwargs in ({"poi_value": 0.0}, {"poi_value": 2.0, "fixed": fixed}):
        ours = hep.fit(model, data, **kwargs)  # type: ignore[arg-type]
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(_jit, "ENABLED", False)
            ref = hep.fit(model, data, **kwargs)  # type: ignore[arg-type]
        assert ours.twice_nll == pytest.approx(ref.twice_nll, abs=1e-8)
        np.testing.assert_allclose(ours.bestfit, ref.bestfit, atol=1e-5)
        assert ours.bestfit[model.poi_index] == kwargs["poi_value"]


def test_one_compiled_version_whatever_the_batch_size_and_input_flags() -> None:
    """numba compiles a kernel once per argument type, and a read-only array is another type:
    the model's own (read-only) arrays against broadcast copies gave the row kernel up to three
    versions, each about 12 s to compile on a cold cache, depending on the batch size."""
    ws = hep.Workspace(synthetic_workspace(6, 2))
    model = ws.model()
    data = ws.data(model)
    x = _random_pars(model, np.random.default_rng(3), n=4)
    x_ro = x.copy()
    x_ro.flags.writeable = False
    for pars in (x, x[:1], x_ro, x_ro[:1], model.suggested_init()):
        model.twice_nll(pars, data)
        model.expected_data(pars)
    hep.fit(model, data)
    for kernel in (_jit._derivs_rows, _jit._const_rows):
        assert len(kernel.signatures) == 1, (kernel, kernel.signatures)


def test_no_kernel_version_for_an_intermediate_or_runtime_literal() -> None:
    """numba compiles a callee once per argument type, and a constant argument is a literal
    type: ``m = 0`` before ``m += 1`` made ``_minimize_row`` compile ``_newton_solve`` for
    ``Literal[int](0)`` as well as for int64 while typing its loop (two extra versions, about
    5 CPU-s on a cold cache), and ``_derivs_rows`` passed a runtime order where
    ``_minimize_row`` passes the literals 0 and 2 (a third version of ``_derivs``, about 4 CPU-s).

    The callers are type-inferred here (no code generation, under a second): the versions of the
    callees that typing asks for are what a cold cache compiles; a warm one loads the callers
    whole and would show nothing."""
    numba = pytest.importorskip("numba")
    from numba.core import compiler, registry, typed_passes
    from numba.core.ssa import reconstruct_ssa

    ws = hep.Workspace(synthetic_workspace(6, 2))
    model = ws.model()
    tables = numba.typeof(_jit.tables(model.arrays).tables)
    P = model.n_pars

    def ro(a: np.ndarray) -> Any:
        a.flags.writeable = False
        return numba.typeof(a)

    v, v_ro, b_ro = numba.typeof(np.zeros(P)), ro(np.zeros(P)), ro(np.zeros(P, bool))
    m2, m3 = numba.typeof(np.zeros((P, P))), numba.typeof(np.zeros((2, P, P)))
    rows2, rows2_ro = numba.typeof(np.zeros((2, P))), ro(np.zeros((2, P)))
    i64, f64 = numba.int64, numba.float64
    typing = registry.cpu_target.typing_context
    target = registry.cpu_target.target_context
    typing.refresh()
    target.refresh()
    for func, args in (
        (_jit._minimize_row, (v, i64, tables, v_ro, v_ro, v_ro, f64, b_ro, v_ro, v_ro, i64, v, m2, v, v)),
        (_jit._derivs_rows, (rows2, numba.typeof(np.zeros(2, np.int64)), tables, rows2_ro, rows2_ro, rows2_ro, v_ro, i64, v, rows2, m3, rows2)),
    ):  # fmt: skip
        interp = reconstruct_ssa(compiler.run_frontend(func.py_func))  # as numba's pipeline
        typed_passes.type_inference_stage(typing, target, interp, args, None)
    literal = numba.types.Literal
    assert _jit._newton_solve.signatures
    for sig in _jit._newton_solve.signatures:
        assert not isinstance(sig[3], literal), sig  # m
    orders = [sig[7] for sig in _jit._derivs.signatures]
    assert orders and all(isinstance(o, literal) for o in orders), orders
    assert {o.literal_value for o in orders} <= {0, 2}, orders


def test_batched_rows_equal_single_fits() -> None:
    specs = [synthetic_workspace(10, 2, seed=100 + i) for i in range(12)]
    models, datas = [], []
    for spec in specs:
        ws = hep.Workspace(spec)
        models.append(ws.model())
        datas.append(ws.data(models[-1]))
    batch = hep.fit_batch(hep.stack_models(models), np.stack(datas), uncertainties=True)
    assert batch.converged.all()
    for i, (m, d) in enumerate(zip(models, datas, strict=True)):
        single = hep.fit(m, d)
        assert batch.twice_nll[i] == pytest.approx(single.twice_nll, abs=1e-9)
        np.testing.assert_allclose(batch.bestfit[i], single.bestfit, atol=1e-6)
        np.testing.assert_allclose(batch.errors[i], single.errors, rtol=1e-6)


def test_toys_batch_on_one_model() -> None:
    rng = np.random.default_rng(3)
    ws = hep.Workspace(random_workspace(rng))
    model = ws.model()
    expected = model.expected_data(model.suggested_init())
    toys = np.concatenate(
        [
            rng.poisson(expected[: model.n_main], (20, model.n_main)),
            np.tile(model.auxdata, (20, 1)),
        ],
        axis=1,
    ).astype(float)
    ours = hep.fit_batch(model, toys)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_jit, "ENABLED", False)
        ref = hep.fit_batch(model, toys)
    np.testing.assert_allclose(ours.twice_nll, ref.twice_nll, atol=1e-7)
    assert (ours.twice_nll <= ref.twice_nll + 1e-9).all()


def test_uncompiled_kernels_give_the_same_numbers() -> None:
    """The Python bodies of the kernels (what numba compiles) run as plain Python too."""
    ws = hep.Workspace(synthetic_workspace(4, 2))
    model = ws.model()
    data = ws.data(model)
    x = _random_pars(model, np.random.default_rng(1), n=1)
    consts = model._constants(data[None])
    jt = _jit.tables(model.arrays)
    P = model.n_pars
    g, H, nu = np.empty(P), np.empty((P, P)), np.empty(model.n_main)
    py_derivs = _jit._derivs.py_func
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_jit, "_interp", _jit._interp.py_func)
        f = py_derivs(x[0], 0, jt.tables, consts[0][0], consts[1][0], consts[2][0],
                      float(consts[3][0]), 2, g, H, nu)  # fmt: skip
    ref = _jit.derivatives(model.arrays, x, consts)
    assert f == pytest.approx(ref[0][0], rel=1e-13)
    np.testing.assert_allclose(g, ref[1][0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(H, ref[2][0], rtol=1e-12, atol=1e-12)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=workspaces())
def test_arrowhead_derivatives_equal_numpy_engine(spec: dict[str, Any]) -> None:
    ws = hep.Workspace(spec)
    for normsys, histosys in CODES:
        model = arrowhead_model(ws, normsys_interp=normsys, histosys_interp=histosys)
        data = ws.data(model)
        x = _random_pars(model, np.random.default_rng(11))
        consts = model._constants(np.repeat(data[None], len(x), axis=0))
        ours = _jit.derivatives_arrow(model.arrays, x, consts)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(_jit, "ENABLED", False)
            ref = model._derivatives(x, consts)
            ref_f = model._f(x, None, consts)  # type: ignore[arg-type]
        np.testing.assert_allclose(_jit.value(model.arrays, x, consts), ref_f, rtol=1e-12)
        for i in range(6):
            scale = max(1.0, float(np.abs(ref[i]).max(initial=0.0)))
            np.testing.assert_allclose(ours[i], ref[i], rtol=1e-10, atol=1e-10 * scale)


def test_arrowhead_layout_of_a_dense_model_gets_its_own_tables() -> None:
    """A dense model's arrowhead copy shares its attributes; the kernel tables must not."""
    ws = hep.Workspace(synthetic_workspace(10, 2))
    model = ws.model()
    data = ws.data(model)
    consts = model._constants(data[None])
    x = model.suggested_init()[None]
    model._derivatives(x, consts)  # caches the dense tables
    arrow = model._arrow
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_jit, "ENABLED", False)
        ref = arrow._derivatives(x, consts)
    ours = arrow._derivatives(x, consts)
    for i in range(6):
        np.testing.assert_allclose(ours[i], ref[i], rtol=1e-10, atol=1e-9)


def test_profile_predicted_starts_give_the_same_test_statistics() -> None:
    """Large models start conditional fits on the profile's tangent; the minima are the same."""
    from sigtune.hep import _profile
    from sigtune.hep._infer import discovery, hypotest

    ws = hep.Workspace(synthetic_workspace(60, 8))
    model = arrowhead_model(ws)
    data = ws.data(model)
    calls: list[float] = []
    real = _profile._Profile._predicted

    def counting(self: Any, base: Any, mu: float) -> Any:
        out = real(self, base, mu)
        calls.append(mu)
        assert out is not None  # the prediction is used on this model
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_profile._Profile, "_predicted", lambda self, base, mu: None)
        ref_d = discovery(model, data)
        ref_h = hypotest(model, data, 1.0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_profile._Profile, "_predicted", counting)
        ours_d = discovery(model, data)
        ours_h = hypotest(model, data, 1.0)
    assert calls
    assert ours_d.z0_obs == pytest.approx(ref_d.z0_obs, rel=1e-6)
    assert ours_d.z0_exp == pytest.approx(ref_d.z0_exp, rel=1e-6)
    assert ours_h.cls_obs == pytest.approx(ref_h.cls_obs, rel=1e-6)
    np.testing.assert_allclose(ours_h.cls_exp, ref_h.cls_exp, rtol=1e-6)


def test_numpy_engine_alone_gives_the_same_numbers() -> None:
    """SIGTUNE_HEP_JIT=0 (or no numba): the NumPy engine, built and run without the kernels."""
    import json
    import os
    import subprocess
    import sys

    script = (
        "import json, sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from _generate import synthetic_workspace\n"
        "import sigtune.hep as hep\n"
        "from sigtune.hep import _jit\n"
        "from sigtune.hep._infer import discovery, hypotest\n"
        "assert not _jit.ENABLED\n"
        "out = []\n"
        "for shape in [(10, 2), (200, 40)]:\n"
        "    ws = hep.Workspace(synthetic_workspace(*shape))\n"
        "    m = ws.model(); d = ws.data(m)\n"
        "    f = hep.fit(m, d)\n"
        "    out.append([f.twice_nll, discovery(m, d).z0_exp, hypotest(m, d, 1.0).cls_obs])\n"
        "print(json.dumps(out))\n"
    )
    here = os.path.dirname(os.path.abspath(__file__))
    env = {**os.environ, "SIGTUNE_HEP_JIT": "0"}
    proc = subprocess.run(
        [sys.executable, "-c", script, here], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    numpy_values = json.loads(proc.stdout.strip().splitlines()[-1])
    from sigtune.hep._infer import discovery, hypotest

    for shape, ref in zip([(10, 2), (200, 40)], numpy_values, strict=True):
        ws = hep.Workspace(synthetic_workspace(*shape))
        m = ws.model()
        d = ws.data(m)
        ours = [hep.fit(m, d).twice_nll, discovery(m, d).z0_exp, hypotest(m, d, 1.0).cls_obs]
        assert ours[0] == pytest.approx(ref[0], abs=1e-7)
        np.testing.assert_allclose(ours[1:], ref[1:], rtol=1e-6)


def _indefinite(rng: np.random.Generator, n: int, low: list[float]) -> np.ndarray:
    """A symmetric ``n x n`` matrix whose lowest eigenvalues are ``low`` (the rest in
    [0.5, 1e5], spread like a HistFactory Hessian) and random eigenvectors."""
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    ev = np.concatenate([low, np.geomspace(0.5, 1e5, n - len(low))])
    return np.asarray((q * ev) @ q.T)


def _abs_step(S: np.ndarray, rhs: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """The |H|-Newton step by a full eigh (the NumPy engine's rule) and the scaled lowest
    eigenvector; whether there is negative curvature."""
    ev, vec = np.linalg.eigh(S)
    scale = np.abs(ev).max()
    lam = np.maximum(np.abs(ev), _jit.EIG_FLOOR * scale)
    return (
        vec @ ((vec.T @ rhs) / lam),
        vec[:, 0] / np.sqrt(abs(ev[0])),
        ev[0] < -_jit.NEG_CURV_REL * scale,
    )


@pytest.mark.parametrize(
    "low",
    [
        [-30.0, -4.0, -1.0],  # far from a minimum: several negative directions
        [-1.2e-5],  # near a flat valley: one tiny negative eigenvalue, below the floor
        [-2.0, 3e-6, 8e-6],  # small positive eigenvalues below the floor too
    ],
)
def test_low_eigenpair_step_equals_full_eigh(low: list[float]) -> None:
    """The damped step of wide Schur complements (eigenpairs below the floor only, then a
    deflated Cholesky) is the |H| step of a full eigh."""
    rng = np.random.default_rng(len(low))
    n = 2 * _jit.CHOL_LAPACK
    S = _indefinite(rng, n, low)
    rhs = rng.normal(size=n)
    d = np.empty(n)
    neg = np.empty(n)
    res = _jit._abs_newton_low(S.copy(), rhs, d, neg)
    ref, ref_neg, has_neg = _abs_step(S, rhs)
    assert res == (1 if has_neg else 0)
    # both are backward stable: an eigenvalue lam is known to ~eps x |largest| only, so the
    # step along it to ~eps x |largest| / |lam| relative (2e-6 for the tiny one here)
    lam = np.maximum(np.abs(low), _jit.EIG_FLOOR * 1e5)
    tol = 1e-9 + 20 * np.finfo(float).eps * 1e5 / lam.min()
    np.testing.assert_allclose(d, ref, rtol=0, atol=tol * np.abs(ref).max())
    if has_neg:
        sign = np.sign(neg @ ref_neg)
        np.testing.assert_allclose(sign * neg, ref_neg, rtol=0, atol=tol * np.abs(ref_neg).max())


def test_wide_newton_solve_equals_numpy_solve() -> None:
    """The compiled Newton solve of a wide, indefinite dense system, asked for the exact step,
    takes the low-eigenpair path and gives the NumPy engine's step (``_fit._solve``, full
    eigh)."""
    rng = np.random.default_rng(7)
    n = _jit.CHOL_LAPACK + 36
    H = _indefinite(rng, n, [-9.0, -0.3])
    g = rng.normal(size=n)
    idx = np.arange(n, dtype=np.int64)
    d = np.empty(n)
    neg = np.empty(n)
    has_neg = _jit._newton_solve(H, g, idx, n, np.zeros(n, np.bool_), d, neg, True) == 1
    dD, _, negD, *_ = fit_module._solve(
        H[None], np.zeros((1, n, 0)), np.zeros((1, 0)), g[None], np.zeros((1, 0))
    )
    assert has_neg
    np.testing.assert_allclose(d, dD[0], rtol=0, atol=1e-9 * np.abs(dD).max())
    np.testing.assert_allclose(np.abs(neg), np.abs(negD[0]), rtol=0, atol=1e-9 * np.abs(negD).max())


def _modified_ldl_step(S: np.ndarray, rhs: np.ndarray) -> tuple[np.ndarray, bool]:
    """Oracle of the modified LDL^T step: SciPy's Bunch-Kaufman ``S = L D L^T`` (``ldl``),
    every eigenvalue of D's blocks by its magnitude, floored at ``EIG_FLOOR`` x the largest;
    the step solves ``L |D| L^T d = rhs`` by dense linear algebra."""
    import scipy.linalg

    lu, D, _ = scipy.linalg.ldl(S, lower=True)
    ev, vec = np.linalg.eigh(D)  # D is block diagonal: its eigenpairs are the blocks'
    floor = _jit.EIG_FLOOR * np.abs(ev).max()
    D_abs = (vec * np.maximum(np.abs(ev), floor)) @ vec.T
    return np.linalg.solve(lu @ D_abs @ lu.T, rhs), bool(ev.min() < 0)


@pytest.mark.parametrize(
    "low",
    [
        [-30.0, -4.0, -1.0],  # far from a minimum: several negative directions
        [-1.2e-5],  # near a flat valley: one tiny negative eigenvalue
        [2.0, 3.0],  # positive definite: the plain Newton step
    ],
)
def test_modified_ldl_step_matches_its_oracle_and_goes_downhill(low: list[float]) -> None:
    """The cheap step of wide indefinite Schur complements (one Bunch-Kaufman factorisation,
    |D|) equals SciPy's LDL^T with the same modification, sees negative curvature exactly
    (Sylvester's inertia), is a descent direction, and is the Newton step where the matrix is
    positive definite."""
    rng = np.random.default_rng(len(low) + 11)
    n = _jit.CHOL_LAPACK + 40
    S = _indefinite(rng, n, low)
    rhs = rng.normal(size=n)
    d = np.empty(n)
    res = _jit._abs_newton_ldl(S.copy(), rhs, d)
    ref, ref_neg = _modified_ldl_step(S, rhs)
    assert res == (1 if min(low) < 0 else 0) == int(ref_neg)
    np.testing.assert_allclose(d, ref, rtol=1e-6, atol=1e-9 * np.abs(ref).max())
    assert rhs @ d > 0  # -d is downhill for the gradient rhs
    if min(low) > 0:
        np.testing.assert_allclose(d, np.linalg.solve(S, rhs), rtol=1e-8)


def test_newton_solve_defers_the_saddle_direction_to_the_exact_step() -> None:
    """Between exact steps the wide indefinite solve takes the modified LDL^T step and reports
    negative curvature without its direction (code 2, ``neg`` zero); asked for the exact step it
    forms the direction (code 1) -- what the fit uses to leave a saddle point."""
    rng = np.random.default_rng(5)
    n = _jit.CHOL_LAPACK + 20
    H = _indefinite(rng, n, [-3.0])
    g = rng.normal(size=n)
    idx = np.arange(n, dtype=np.int64)
    local = np.zeros(n, np.bool_)
    d, neg = np.empty(n), np.empty(n)
    assert _jit._newton_solve(H, g, idx, n, local, d, neg, False) == 2
    assert not neg.any()
    np.testing.assert_allclose(d, _modified_ldl_step(H, g)[0], rtol=1e-6, atol=1e-12)
    assert _jit._newton_solve(H, g, idx, n, local, d, neg, True) == 1
    _, vec = np.linalg.eigh(H)
    np.testing.assert_allclose(np.abs(neg), np.abs(vec[:, 0]) / np.sqrt(3.0), atol=1e-8)


def test_wide_fit_leaves_a_saddle_point() -> None:
    """``test_fit_leaves_a_saddle_point`` with a Schur complement wide enough for the modified
    LDL^T step: 70 more normsys parameters in a second channel whose data equal its
    expectation, so the start is still a stationary point (zero gradient) with negative
    curvature along ``shape``. The cheap step alone would stop there (edm 0); the exact
    eigenpairs must find the way out."""
    extra = _jit.CHOL_LAPACK + 6
    spec = saddle_workspace(extra)
    ws = hep.Workspace(spec)
    model = ws.model()
    data = ws.data(model)
    assert model.arrays.dense_layout and model.n_pars == extra + 2
    i = model.par_index("shape")
    start = model.suggested_init()
    start[model.poi_index] = 0.0
    consts = model._constants(data[None])
    _, g, H, *_ = model._derivatives(start[None], consts)
    nuis = np.arange(model.n_pars) != model.poi_index  # the POI is held at 0
    assert np.abs(g[0, nuis]).max() == pytest.approx(0.0, abs=1e-9)
    assert H[0, i, i] < 0
    res = hep.fit(model, data, poi_value=0.0)
    assert res.converged
    assert abs(res.bestfit[i]) > 0.5
    at_start = float(model.twice_nll(start[None], data[None])[0])
    assert res.twice_nll < at_start - 1.0


def _flat_valley(eps: float) -> dict[str, Any]:
    """Two background normfactors whose samples differ in shape by ``eps`` only: an almost
    flat valley along ``mu_A - mu_B`` (as ``mu_ZZ``/``mu_WZ`` on the ttZ likelihood), whose
    lowest point lies on ``mu_B``'s upper bound."""
    s_a = [30.0, 20.0, 10.0]
    s_b = [30.0 * (1 + eps), 20.0, 10.0 * (1 - eps)]
    hist = {"hi_data": [31.0, 21.0, 11.0], "lo_data": [29.0, 19.0, 9.0]}
    return {
        "channels": [
            {
                "name": "SR",
                "samples": [
                    {
                        "name": "sig",
                        "data": [1.0, 2.0, 1.0],
                        "modifiers": [{"name": "mu", "type": "normfactor", "data": None}],
                    },
                    {
                        "name": "A",
                        "data": s_a,
                        "modifiers": [
                            {"name": "mu_A", "type": "normfactor", "data": None},
                            {"name": "sysA", "type": "normsys", "data": {"hi": 1.05, "lo": 0.95}},
                        ],
                    },
                    {
                        "name": "B",
                        "data": s_b,
                        "modifiers": [
                            {"name": "mu_B", "type": "normfactor", "data": None},
                            {"name": "sysB", "type": "histosys", "data": hist},
                        ],
                    },
                    {
                        "name": "bkg",
                        "data": [50.0, 50.0, 50.0],
                        "modifiers": [
                            {"name": "norm", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}}
                        ],
                    },
                ],
            }
        ],
        "observations": [{"name": "SR", "data": [160.0, 95.0, 75.0]}],
        "measurements": [
            {
                "name": "m",
                "config": {
                    "poi": "mu",
                    "parameters": [
                        {"name": "mu_A", "bounds": [[-5.0, 5.0]]},
                        {"name": "mu_B", "bounds": [[-5.0, 5.0]]},
                    ],
                },
            }
        ],
        "version": "1.0.0",
    }


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "numpy"])
@pytest.mark.parametrize("eps", [0.01, 0.02, 0.05])
def test_flat_valley_reaches_its_bound_in_few_steps(eps: float, compiled: bool) -> None:
    """Newton's step along an almost flat valley is long: it crosses ``mu_B``'s bound, and the
    projection clips ``mu_B`` alone while ``mu_A`` takes its whole share (the bent step makes
    yields negative). Backtracking from there approached the bound by halves, one iteration
    each: 20-27 iterations. The step up to the first bound it crosses (unbent) is tried first:
    6-7 iterations, in both engines, to the same minimum (checked along the valley)."""
    ws = hep.Workspace(_flat_valley(eps))
    model = ws.model()
    data = ws.data(model)
    with pytest.MonkeyPatch.context() as mp:
        if not compiled:
            mp.setattr(_jit, "ENABLED", False)
        res = hep.fit(model, data, poi_value=0.0)
    i_b = model.par_index("mu_B")
    assert res.converged
    assert res.bestfit[i_b] == 5.0
    assert res.n_iter <= 10
    # no lower point along the valley: mu_B on a grid, the rest refitted
    init = model.suggested_init()
    fixed = model.suggested_fixed()
    for b in (4.0, 4.9):
        init[i_b] = b
        fixed[i_b] = True
        pinned = hep.fit(model, data, poi_value=0.0, init=init, fixed=fixed)
        assert pinned.twice_nll > res.twice_nll

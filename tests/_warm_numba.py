"""Compile sigtune.hep's kernels into numba's on-disk cache (run by tests/conftest.py).

On a clean clone the cache is empty and the first fit, limit or binning evaluation of every test
process compiles the kernels: about 50 s of CPU for the 20 versions this script reaches (every
version the suite uses but one that only tests/hep/test_jit.py calls directly).
conftest.py runs this script once, in the background, while the first (core) tests run; a test
process that needs a kernel later loads it from the cache, and one that needs it while this
script compiles waits for it (the compile lock of sigtune.hep._jit: before it, both test
processes and this script compiled the same kernels side by side). A kernel version that this
script does not reach is compiled where it is first needed, as before. Nothing here is
asserted: a failure only means that the tests compile what they need themselves.
"""

from __future__ import annotations

import numpy as np

import sigtune.hep as hep
from sigtune.hep._fit import fit_batch
from sigtune.hep._infer import discovery, hypotest, upper_limit
from sigtune.pipelines.binning import expected_z0


def _spec(n_bins: int) -> dict:
    sig = [5.0 + i for i in range(n_bins)]
    bkg = [50.0 + 3 * i for i in range(n_bins)]
    return {
        "channels": [
            {
                "name": "sr",
                "samples": [
                    {
                        "name": "sig",
                        "data": sig,
                        "modifiers": [{"name": "mu", "type": "normfactor", "data": None}],
                    },
                    {
                        "name": "bkg",
                        "data": bkg,
                        "modifiers": [
                            {"name": "unc", "type": "shapesys", "data": [0.1 * b for b in bkg]},
                            {
                                "name": "jes",
                                "type": "histosys",
                                "data": {
                                    "hi_data": [1.04 * b for b in bkg],
                                    "lo_data": [0.97 * b for b in bkg],
                                },
                            },
                            {"name": "xs", "type": "normsys", "data": {"hi": 1.05, "lo": 0.95}},
                            {"name": "stat", "type": "staterror", "data": [2.0] * n_bins},
                        ],
                    },
                ],
            }
        ],
        "observations": [{"name": "sr", "data": [s + b for s, b in zip(sig, bkg, strict=True)]}],
        "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }


def _lean_spec() -> dict:
    """A binning study's workspace: signal and a normsys background, observed = expected."""
    spec = _spec(3)
    bkg = spec["channels"][0]["samples"][1]
    bkg["modifiers"] = [m for m in bkg["modifiers"] if m["type"] == "normsys"]
    return spec


def main() -> None:
    # first the binning studies' compiled q0 path, which the core tests' binning runs need
    # earliest (the fits below reuse most of its kernel versions)
    expected_z0(_lean_spec(), validate=False)
    ws = hep.Workspace(_spec(3))
    model = ws.model()
    data = ws.data(model)
    hep.fit(model, data)
    hypotest(model, data, 1.0)
    discovery(model, data)
    upper_limit(model, data)
    fit_batch(model, np.tile(np.asarray(data, float), (8, 1)))
    # a model above the dense layout's size (183 parameters): the arrowhead kernels
    big = hep.Workspace(_spec(90))
    hep.fit(big.model(), big.data(big.model()))


if __name__ == "__main__":
    main()

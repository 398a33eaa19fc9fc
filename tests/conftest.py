"""Shared test configuration."""

from __future__ import annotations

import os

# Keep BLAS single-threaded: reproducible numbers and no oversubscription on 2-core CI.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

# Property-based tests draw the same examples on every run (a fixed, derandomised search and no
# example database): a test suite must not pass or fail by the luck of the draw. A property found
# to fail for some input is then a reproducible failure, fixed or recorded as a known defect.
from hypothesis import settings

settings.register_profile("sigtune", derandomize=True, database=None, print_blob=True)
settings.load_profile("sigtune")

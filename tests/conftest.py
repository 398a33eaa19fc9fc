"""Shared test configuration."""

from __future__ import annotations

import os

# Keep BLAS single-threaded: reproducible numbers and no oversubscription on 2-core CI.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

"""lfr-edge: the software of a live-facial-recognition van unit."""

import os

__version__ = "0.1.0"

# numpy's OpenBLAS threads busy-wait for ~0.1 s after every matrix product (the watchlist search, once a
# frame) and steal the cores XNNPACK runs the models on: a 5-face 720p frame took 48 ms instead of 33 ms.
# A short spin keeps the multi-threaded search (1.8 ms for 100,000 subjects) without that cost. It must be
# in the environment before numpy loads OpenBLAS, hence here, the first module of the package to run.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

"""A job's thread pools capped to the cores it was given.

OpenMP, OpenBLAS and MKL size their pools from environment variables when they are loaded, and TensorFlow
its inter- and intra-op pools when its runtime starts (``TF_NUM_INTEROP_THREADS`` / ``TF_NUM_INTRAOP_THREADS``).
:func:`limit_threads` sets those variables, so it is effective for every library loaded after it, and caps the
pools of the libraries already loaded with threadpoolctl. TensorFlow is never imported here unless asked
(:func:`limit_tensorflow`, for keras models).
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTEROP_THREADS",
               "TF_NUM_INTRAOP_THREADS")


def thread_env(n: int) -> dict[str, str]:
    """The environment variables that cap the math libraries' pools to ``n`` threads (none for n <= 0)."""
    return {var: str(n) for var in THREAD_VARS} if n > 0 else {}


def limit_threads(n: int) -> None:
    """Cap the OpenMP/BLAS pools to ``n`` threads: libraries loaded later through the environment, libraries
    already loaded through threadpoolctl. Nothing happens for n <= 0."""
    if n <= 0:
        return
    os.environ.update(thread_env(n))
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n)


def limit_tensorflow(n: int) -> None:
    """Cap TensorFlow's inter- and intra-op pools to ``n`` threads; a warning if its runtime already started."""
    if n <= 0:
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_inter_op_parallelism_threads(n)
        tf.config.threading.set_intra_op_parallelism_threads(n)
    except RuntimeError as err:  # TensorFlow was initialised before: its pools keep their size
        log.warning("TensorFlow thread pools not capped to %d: %s", n, err)

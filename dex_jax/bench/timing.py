"""Wall-clock timing of jitted functions: compile once, then the median of repeated runs."""

import time

import jax
import numpy as np


def time_jitted(fn, *args, repeats=5, warmup=1):
    """(compile + first run seconds, median seconds per call) of `fn(*args)`, blocking on results."""
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - start
    for _ in range(warmup - 1):
        jax.block_until_ready(fn(*args))
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        samples.append(time.perf_counter() - start)
    return first, float(np.median(samples))

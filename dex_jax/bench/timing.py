"""Wall-clock timing of jitted functions (compile once, then the median of repeated runs), FLOPs, peak FLOP/s,
and the machine every figure is printed with."""

import os
import platform
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


def peak_flops(dtype, n):
    """FLOP/s of one large n x n matmul in `dtype` on the default device: the MFU denominator."""
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    matmul = jax.jit(lambda x: x @ x)
    _, seconds = time_jitted(matmul, a)
    return 2 * n**3 / seconds


def xla_flops(compiled):
    """The FLOPs XLA's cost analysis counts for one call of a compiled or lowered function."""
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    return float(analysis.get("flops", 0.0))


def machine():
    """The machine a figure was measured on: CPU model and usable cores, plus the accelerator if JAX has one."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), model)
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    text = f"{model}, {cores} cores"
    if jax.default_backend() != "cpu":
        text += f"; {jax.device_count()} x {jax.devices()[0].device_kind}"
    return text + f"; jax {jax.__version__}"

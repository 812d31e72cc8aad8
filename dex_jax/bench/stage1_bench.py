"""`dex-portrait bench stage1`: one Stage-1 update (generator, discriminator, EMA) on random batches.

Prints the step's time, examples/s, XLA's FLOP count, MFU against a measured matmul peak, and memory: the
compiled step's argument and temporary buffers, and on GPU the device's peak bytes in use. The timed steps skip
lazy R1 (the first, untimed step runs it), as 15 of 16 steps do. No data pipeline: batches come from memory.
"""

import argparse
import time

import flax.linen as nn
import jax
import jax.numpy as jnp

from dex_jax.bench.timing import peak_flops, time_jitted, xla_flops
from dex_jax.config_loading import load_config
from dex_jax.train import stage1
from dex_jax.train.input import make_iterator


def _parse(argv):
    parser = argparse.ArgumentParser(prog="dex-portrait bench stage1", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/motion_paper.py", help="a Stage-1 train config")
    parser.add_argument("--batch", type=int, default=8, help="examples per step (each has num_driving pairs)")
    parser.add_argument("--num-driving", type=int, help="driving frames per example (default: the config's)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), help="compute dtype (default: the config's)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    return parser.parse_args(argv)


def bench_step(config, steps):
    """Figures of one compiled Stage-1 step under `config` (its data fields set the batch)."""
    config.data.source = "random"
    stage = stage1.make_stage(config, lpips=stage1.random_lpips_params(config.seed))
    state = jax.jit(lambda rng: nn.unbox(stage.init(rng)))(jax.random.PRNGKey(config.seed))
    batch = jax.tree.map(jnp.asarray, next(make_iterator(config.data)))
    frozen = stage.frozen
    started = time.perf_counter()
    compiled = jax.jit(stage.step, donate_argnums=(0,)).lower(state, batch, frozen).compile()
    compile_seconds = time.perf_counter() - started
    holder = {"state": compiled(state, batch, frozen)[0]}

    def one_step():
        holder["state"], metrics, _ = compiled(holder["state"], batch, frozen)
        return metrics

    _, seconds = time_jitted(one_step, repeats=steps)
    memory = compiled.memory_analysis()
    stats = jax.devices()[0].memory_stats() or {}
    return dict(compile_s=compile_seconds, step_s=seconds, flops=xla_flops(compiled),
                argument_bytes=getattr(memory, "argument_size_in_bytes", 0),
                temp_bytes=getattr(memory, "temp_size_in_bytes", 0), peak_bytes=stats.get("peak_bytes_in_use"))


def main(argv=None):
    args = _parse(argv)
    config = load_config(args.config)
    config.data.batch_size = args.batch
    if args.num_driving:
        config.data.num_driving = args.num_driving
    if args.dtype:
        config.model.dtype = args.dtype
    dtype = jnp.dtype(config.model.dtype)
    gpu = jax.default_backend() == "gpu"
    peak = peak_flops(dtype, 8192 if gpu else 1024)
    pairs = args.batch * config.data.num_driving
    r = bench_step(config, args.steps)
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}); measured peak "
          f"{peak / 1e12:.2f} TFLOP/s ({dtype.name} matmul)")
    print(f"{args.config}: {config.model.image_size}px, {dtype.name}, batch {args.batch} x {config.data.num_driving} "
          f"driving = {pairs} pairs")
    print(f"compile {r['compile_s']:.1f} s | step {1e3 * r['step_s']:.1f} ms | {args.batch / r['step_s']:.2f} examples/s "
          f"| {pairs / r['step_s']:.2f} pairs/s | {r['flops'] / 1e9:.1f} GFLOP/step | "
          f"MFU {100 * r['flops'] / r['step_s'] / peak:.1f}%")
    peak_text = f" | device peak {r['peak_bytes'] / 2**20:.1f} MiB" if r["peak_bytes"] is not None else ""
    print(f"memory: arguments {r['argument_bytes'] / 2**20:.1f} MiB | temporaries {r['temp_bytes'] / 2**20:.1f} MiB"
          f"{peak_text}")
    return 0

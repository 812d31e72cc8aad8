"""`dex-portrait bench stage1`: one Stage-1 update (generator, discriminator, EMA) on random batches.

Prints the step's time, examples/s, XLA's FLOP count, MFU against a measured matmul peak, and memory: the
compiled step's argument and temporary buffers, and on GPU the device's peak bytes in use. The timed steps skip
lazy R1 (the first, untimed step runs it), as 15 of 16 steps do. No data pipeline: batches come from memory.
--flops-only prints the FLOP count of the lowered step and stops, so paper-size steps can be counted on a CPU.
"""

import time

import flax.linen as nn
import jax
import jax.numpy as jnp

from dex_jax.arguments import ArgumentParser
from dex_jax.bench.timing import peak_flops, time_jitted, xla_flops
from dex_jax.config_loading import load_config
from dex_jax.train.input import make_iterator
from dex_jax.train.stages import stage1


def _parse(argv):
    parser = ArgumentParser(prog="dex-portrait bench stage1", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="motion_paper", help="a Stage-1 train config")
    parser.add_argument("--batch", type=int, default=8, help="examples per step (each has num_driving pairs)")
    parser.add_argument("--num-driving", type=int, help="driving frames per example (default: the config's)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), help="compute dtype (default: the config's)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument("--flops-only", action="store_true",
                        help="print XLA's FLOP count of the lowered step and stop: no compile, no device time")
    return parser.parse_args(argv)


def _stage_and_batch(config):
    config.data.source = "random"
    stage = stage1.make_stage(config, lpips=stage1.random_lpips_params(config.seed))
    return stage, jax.tree.map(jnp.asarray, next(make_iterator(config.data)))


def lowered_flops(config):
    """XLA's FLOP count of one Stage-1 step under `config`, from the lowered step (abstract state, nothing runs)."""
    stage, batch = _stage_and_batch(config)
    state = jax.eval_shape(lambda rng: nn.unbox(stage.init(rng)), jax.random.PRNGKey(config.seed))
    return xla_flops(jax.jit(stage.step).lower(state, batch, stage.frozen))


def bench_step(config, steps):
    """Figures of one compiled Stage-1 step under `config` (its data fields set the batch)."""
    stage, batch = _stage_and_batch(config)
    state = jax.jit(lambda rng: nn.unbox(stage.init(rng)))(jax.random.PRNGKey(config.seed))
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
    pairs = args.batch * config.data.num_driving
    shape_line = (f"{args.config}: {config.model.image_size}px, {dtype.name}, batch {args.batch} x "
                  f"{config.data.num_driving} driving = {pairs} pairs")
    if args.flops_only:
        print(shape_line)
        print(f"{lowered_flops(config) / 1e9:.1f} GFLOP/step (XLA cost analysis of the lowered step)")
        return 0
    gpu = jax.default_backend() == "gpu"
    peak = peak_flops(dtype, 8192 if gpu else 1024)
    r = bench_step(config, args.steps)
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}); measured peak "
          f"{peak / 1e12:.2f} TFLOP/s ({dtype.name} matmul)")
    print(shape_line)
    print(f"compile {r['compile_s']:.1f} s | step {1e3 * r['step_s']:.1f} ms | {args.batch / r['step_s']:.2f} examples/s "
          f"| {pairs / r['step_s']:.2f} pairs/s | {r['flops'] / 1e9:.1f} GFLOP/step | "
          f"MFU {100 * r['flops'] / r['step_s'] / peak:.1f}%")
    peak_text = f" | device peak {r['peak_bytes'] / 2**20:.1f} MiB" if r["peak_bytes"] is not None else ""
    print(f"memory: arguments {r['argument_bytes'] / 2**20:.1f} MiB | temporaries {r['temp_bytes'] / 2**20:.1f} MiB"
          f"{peak_text}")
    return 0

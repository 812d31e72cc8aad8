"""`dex-portrait bench motion`: Stage-1 parameter counts (jax.eval_shape) and the generator's jitted forward time
per config and batch size."""

import argparse

import jax

from dex_jax.arguments import ArgumentParser
from dex_jax.bench.timing import time_jitted
from dex_jax.config_loading import load_config
from dex_jax.motion.generator import build_motion_generator
from dex_jax.motion.summary import example_inputs, parameter_counts


def bench_config(variant, batch, repeats):
    config = load_config(f"motion_model:{variant}")
    trainer = build_motion_generator(config)
    inputs = example_inputs(config, batch)
    variables = jax.jit(trainer.init)(jax.random.key(0), *inputs)
    forward = jax.jit(trainer.apply)
    first, per_call = time_jitted(forward, variables, *inputs, repeats=repeats)
    return first, per_call


def main(argv):
    parser = ArgumentParser(prog="dex-portrait bench motion", description=__doc__,
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--variants", default="tiny,paper", help="comma-separated configs/motion_model.py variants")
    parser.add_argument("--batch", type=int, default=1, help="images per forward")
    parser.add_argument("--repeats", type=int, default=5, help="timed forwards per variant")
    args = parser.parse_args(argv)
    variants = args.variants.split(",")
    counts = {v: parameter_counts(load_config(f"motion_model:{v}")) for v in variants}
    print("parameters (jax.eval_shape, nothing allocated):")
    print(f"{'network':<22}" + "".join(f"{v:>14}" for v in variants))
    for name in counts[variants[0]]:
        print(f"{name:<22}" + "".join(f"{counts[v][name]:>14,}" for v in variants))
    print(f"\ndevice: {jax.devices()[0].device_kind} x{jax.device_count()}  batch {args.batch}")
    print(f"{'config':<8} {'compile+first (s)':>18} {'forward (ms)':>13} {'images/s':>9}")
    for variant in variants:
        first, per_call = bench_config(variant, args.batch, args.repeats)
        print(f"{variant:<8} {first:>18.2f} {per_call * 1e3:>13.1f} {args.batch / per_call:>9.2f}")

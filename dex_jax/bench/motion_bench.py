"""Jitted forward time of the Stage-1 generator (motion trainer) per config at a given batch size."""

import argparse

import jax

from dex_jax.bench.timing import time_jitted
from dex_jax.config_loading import load_config
from dex_jax.motion.motion_trainer import build_motion_trainer
from dex_jax.motion.summary import example_inputs


def bench_config(variant, batch, repeats):
    config = load_config(f"configs/motion_model.py:{variant}")
    trainer = build_motion_trainer(config)
    inputs = example_inputs(config, batch)
    variables = jax.jit(trainer.init)(jax.random.key(0), *inputs)
    forward = jax.jit(trainer.apply)
    first, per_call = time_jitted(forward, variables, *inputs, repeats=repeats)
    return first, per_call


def main(argv):
    parser = argparse.ArgumentParser(prog="dex-portrait bench motion")
    parser.add_argument("--variants", default="tiny,paper")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}  batch {args.batch}")
    print(f"{'config':<8} {'compile+first (s)':>18} {'forward (ms)':>13} {'images/s':>9}")
    for variant in args.variants.split(","):
        first, per_call = bench_config(variant, args.batch, args.repeats)
        print(f"{variant:<8} {first:>18.2f} {per_call * 1e3:>13.1f} {args.batch / per_call:>9.2f}")

"""`dex-portrait animate`: until a trained checkpoint is bundled, an honest preview of the Stage-1 model."""

import argparse
import time

import flax.linen as nn
import jax
import numpy as np

from dex_jax.config_loading import load_config
from dex_jax.motion.motion_trainer import build_motion_trainer
from dex_jax.motion.summary import example_inputs, parameter_counts

NOTICE = ("No trained checkpoint is bundled yet: this runs the UNTRAINED tiny motion trainer "
          "(random weights) to show the pipeline compiles and runs; its output is not a portrait.")


def main(argv):
    parser = argparse.ArgumentParser(prog="dex-portrait animate", description=NOTICE)
    parser.add_argument("--model", default="configs/motion_model.py:tiny",
                        help="model config to run (default: the tiny motion trainer)")
    args = parser.parse_args(argv)
    print(NOTICE)
    print("\nStage-1 parameter counts, paper-size config (jax.eval_shape, nothing allocated):")
    for name, value in parameter_counts(load_config("configs/motion_model.py:paper")).items():
        print(f"  {name:<20} {value:>13,}")

    config = load_config(args.model)
    trainer = build_motion_trainer(config)
    keys = jax.random.split(jax.random.key(0), 3)
    inputs = [jax.random.uniform(k, x.shape, minval=-1, maxval=1) for k, x in zip(keys, example_inputs(config))]
    variables = nn.unbox(jax.jit(trainer.init)(jax.random.key(1), *inputs))
    forward = jax.jit(trainer.apply)
    start = time.perf_counter()
    image = np.asarray(forward(variables, *inputs))
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    jax.block_until_ready(forward(variables, *inputs))
    run_ms = (time.perf_counter() - start) * 1e3
    print(f"\n{args.model}: jitted forward -> image {image.shape}, values in "
          f"[{image.min():.2f}, {image.max():.2f}], compile {compile_s:.1f} s, forward {run_ms:.1f} ms "
          f"on {jax.devices()[0].device_kind}")

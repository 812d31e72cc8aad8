"""The reconstruction gate's short test under other optimiser settings: docs/experiments/learnability.md
("The short version is capacity and steps, not the optimiser").

    python -m tools.reconstruction_short_study --steps 600 base \\
        "optimizer.lr=2e-3,optimizer.generator_lr_multipliers={}" "optimizer.grad_clip_norm=0.0"

Each variant (`base`, or comma-separated config overrides as Python literals) trains the short test's own set-up
(`tests/test_learnability.py`: the `test` model in the `tiny` layout, its 4 frames of 32 px, the reconstruction
gate's recipe with a cosine schedule over --steps) and prints the L1 at steps 1, 50, 100, 200, 400, 600, ...
beside the frames' mean-image L1. About 2 minutes per variant of 600 steps on 2 CPU cores.
"""

import argparse
import ast
import json
import re
import sys
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np

from dex_jax.compilation_cache import enable_compilation_cache
from dex_jax.train.stages import reconstruction

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_learnability import gate_config, synth_batch  # noqa: E402  (the short test's own set-up)

REPORTED = (1, 50, 100, 200, 400, 600, 800, 1000, 1500, 2000)


def run(variant, steps, batch):
    config = gate_config("reconstruction", steps)
    config.model.appearance.block_channels = (4, 8)  # as the short test lays the `test` model out
    config.model.decoder.update(up_channels=(16, 8), skip_channels=(8, 8, 4, 3))
    if variant != "base":
        for item in re.split(r",(?=[\w.]+=)", variant):  # a comma inside a tuple value does not split
            key, value = item.split("=", 1)
            config.update_from_flattened_dict({key: ast.literal_eval(value)})
    stage = reconstruction.make_stage(config)
    state = jax.jit(lambda rng: nn.unbox(stage.init(rng)))(jax.random.PRNGKey(0))
    step = jax.jit(stage.step)
    l1 = {}
    for i in range(1, steps + 1):
        state, metrics, _ = step(state, batch, stage.frozen)
        if i in REPORTED:
            l1[i] = round(float(metrics["l1"]), 3)
    return l1


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="+")
    parser.add_argument("--steps", type=int, default=600)
    args = parser.parse_args()
    if args.steps < 11:
        parser.error("--steps must exceed the short test's 10 warmup steps")
    enable_compilation_cache()
    batch = synth_batch(4)
    frames = batch["driving"][:, 0]
    mean_image_l1 = round(float(np.mean(np.abs(frames - frames.mean(0)))), 3)
    for variant in args.variants:
        print(json.dumps({"variant": variant, "mean_image_l1": mean_image_l1, "l1": run(variant, args.steps, batch)}),
              flush=True)


if __name__ == "__main__":
    main()

"""Test helper: an untrained `test` motion model saved as the training loop saves it."""

import flax.linen as nn
import jax
import numpy as np

from dex_jax.config_loading import load_config
from dex_jax.motion.generator import build_motion_generator
from dex_jax.motion.summary import example_inputs
from dex_jax.train.checkpoint import Checkpointer


def write_untrained_run(workdir, step=0, seed=0, expression_norm=None):
    """config.json + checkpoints/<step>/state (params, EMA, an Adam-sized optimizer stand-in) in `workdir`, of the
    test model (with this expression-encoder norm, if given).

    Weights are drawn with numpy into the shapes `jax.eval_shape` gives (N(0, 0.05^2)), which skips compiling
    the model's init.
    """
    config = load_config("configs/motion_test.py")
    if expression_norm:
        config.model.expression.norm = expression_norm
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(config.to_json(indent=2))
    model = config.model
    shapes = nn.unbox(jax.eval_shape(build_motion_generator(model).init, jax.random.key(0), *example_inputs(model)))
    rng = np.random.default_rng(seed)
    params = jax.tree.map(lambda s: rng.normal(0.0, 0.05, s.shape).astype(np.float32), shapes["params"])
    moments = jax.tree.map(np.zeros_like, params)
    checkpoints = Checkpointer(workdir / "checkpoints", keep=1, every_steps=1, async_save=False)
    checkpoints.save(step, {"step": np.int32(step), "params": {"generator": params}, "ema": {"generator": params},
                            "opt_state": {"generator": {"mu": moments, "nu": moments}}}, force=True)
    checkpoints.close()
    return workdir

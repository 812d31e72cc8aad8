"""Test helper: an untrained animator export, written as `dex-portrait export` writes a trained one."""

import flax.linen as nn
import jax
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict
from motion_checkpoint import write_untrained_run

from dex_jax.animator.model import build_animator, init_inputs
from dex_jax.animator.temporal import is_temporal
from dex_jax.config_loading import load_config
from dex_jax.train.animator_checkpoint import read_frozen, write_animator_export

CONFIGS = {"test": "configs/animator_test.py", "tiny": "configs/animator_synth.py",
           "temporal": "configs/animator_temporal_test.py"}


def untrained_params(model_config, seed=0):
    """Animator params of `model_config` drawn with numpy, N(0, 0.05^2) (a temporal module's N(0, 0.3^2), so that
    it changes the frames visibly), into the shapes `jax.eval_shape` gives (nothing compiles; the
    zero-initialised layers are random too, so every branch acts)."""
    model = build_animator(model_config)
    side = model_config.unet.sample_size
    shapes = nn.unbox(jax.eval_shape(model.init, jax.random.key(0), *init_inputs(model, side, side)))["params"]
    rng = np.random.default_rng(seed)
    return unflatten_dict({path: rng.normal(0.0, 0.3 if is_temporal(path) else 0.05, s.shape).astype(np.float32)
                           for path, s in flatten_dict(shapes).items()})


def write_untrained_export(out, variant="test", step=0, seed=0):
    """The export folder `out` of an untrained animator; returns (out, its train config).

    'test': configs/animator_test.py (the `test` animator, 16x16 images), its frozen encoders those of an untrained
    `test` Stage-1 run written to OUT.stage1 (tests/motion_checkpoint.py), which stays as the config's
    motion_from. 'temporal': the same with a temporal module (configs/animator_temporal_test.py, a Stage-3
    export). 'tiny': configs/animator_synth.py (64x64 images), the bundled data/motion_synth's encoders.
    """
    config = load_config(CONFIGS[variant])
    if variant in ("test", "temporal"):
        config.motion_from = str(write_untrained_run(out.with_name(out.name + ".stage1"), seed=seed))
    _, frozen = read_frozen(config)
    write_animator_export(out, config, step, untrained_params(config.model, seed), frozen)
    return out, config

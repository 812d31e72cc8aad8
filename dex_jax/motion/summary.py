"""Parameter counts of every Stage-1 network, computed with `jax.eval_shape` (nothing allocated)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dex_jax.motion.generator import build_discriminator, build_motion_generator


def example_inputs(config, batch=1):
    """Zero inputs of the right shapes: (source, pose input, expression input)."""
    s, e = config.image_size, config.expression.image_size
    return (jnp.zeros((batch, s, s, 3)), jnp.zeros((batch, s, s, 3)), jnp.zeros((batch, e, e, 3)))


def count(tree):
    return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(tree)))


def parameter_counts(config):
    """{network name: parameter count} for the motion trainer's parts and the discriminator."""
    trainer = build_motion_generator(config)
    shapes = jax.eval_shape(lambda: trainer.init(jax.random.key(0), *example_inputs(config)))
    params = nn.unbox(shapes["params"])
    counts = {name: count(tree) for name, tree in params.items()}
    counts["generator (total)"] = count(params)
    disc = build_discriminator(config)
    image = jnp.zeros((1, config.image_size, config.image_size, 3))
    counts["discriminator"] = count(nn.unbox(jax.eval_shape(lambda: disc.init(jax.random.key(0), image))))
    return counts

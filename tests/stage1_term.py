"""One Stage-1 step of the test config with one extra generator-loss term weighted, for that term's tests."""

import jax
import jax.numpy as jnp
import numpy as np

from dex_jax.config_loading import load_config
from dex_jax.train.input import make_iterator
from dex_jax.train.stages import stage1


def check_term_joins_generator_loss(term, weight):
    """Asserts the term is logged, positive and weighted into the generator loss (LPIPS off); returns the stage."""
    config = load_config("configs/motion_test.py")
    config.data.batch_size = 2
    config.loss.update(lpips=0.0, component_lpips=0.0, **{term: weight})
    stage = stage1.make_stage(config)
    assert term in stage.metric_names
    state = jax.jit(stage.init)(jax.random.PRNGKey(0))
    batch = jax.tree.map(jnp.asarray, next(make_iterator(config.data)))
    _, metrics, _ = jax.jit(stage.step)(state, batch, stage.frozen)
    assert float(metrics[term]) > 0
    expected = (config.loss.l1 * metrics["l1"] + config.loss.adversarial * metrics["adversarial"]
                + weight * metrics[term])
    np.testing.assert_allclose(metrics["generator_loss"], expected, rtol=1e-5)
    return stage

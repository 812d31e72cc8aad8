"""The optional supervised pose term of Stage 1 (its value in a real run is checked in test_train_loop.py)."""

import jax
import jax.numpy as jnp
import pytest

from dex_jax.config_loading import load_config
from dex_jax.motion.losses import pose_supervision_loss
from dex_jax.motion.pose_encoder import POSE_KEYS
from dex_jax.train import stage1
from dex_jax.train.input import make_iterator


def test_loss_is_mean_absolute_pose_error():
    pose = {k: jnp.full((2,), float(i)) for i, k in enumerate(POSE_KEYS)}
    target = jnp.arange(6.0)[None].repeat(2, 0) + jnp.array([[0.5, -0.5, 0, 0, 0, 1.5]] * 2)
    assert float(pose_supervision_loss(pose, target)) == pytest.approx(2.5 / 6)
    with pytest.raises(ValueError, match=r"pose targets must be \(N, 6\)"):
        pose_supervision_loss(pose, target[:, :5])


def test_batches_without_poses_are_refused():
    config = load_config("configs/motion_test.py")
    config.data.batch_size = 2
    config.loss.pose_supervision = 1.0
    stage = stage1.make_stage(config, lpips=stage1.random_lpips_params())
    assert "pose_supervision" in stage.metric_names
    state = jax.eval_shape(stage.init, jax.random.PRNGKey(0))
    batch = {k: v for k, v in next(make_iterator(config.data)).items() if k not in ("source_pose", "driving_pose")}
    with pytest.raises(ValueError, match="needs ground-truth poses in the batches, and these have no "
                                         "source_pose, driving_pose"):
        jax.eval_shape(stage.step, state, batch, stage.frozen)

"""Stage-1 training for tests: the `test` model (32x32), random batches, a few steps; the rest is the paper's."""

from pathlib import Path

from dex_jax.config_loading import load_config_file


def get_config():
    config = load_config_file(Path(__file__).parent / "motion_paper.py")
    config.total_steps = 3
    config.nonfinite_limit = 3
    config.model = load_config_file(Path(__file__).parent / "motion_model.py", "test")
    config.allow_random_init = True  # the test model has no pretrained files

    config.data.source = "random"
    config.data.batch_size = 8
    config.data.num_driving = 1
    config.data.image_size = 32
    config.data.expression_size = 32
    config.data.worker_count = 0

    config.optimizer.update(lr=1e-3, disc_lr=1e-3, warmup_steps=0)
    config.loss.r1_every = 2
    config.ema.decay = 0.9

    config.checkpoint.update(every_steps=2, keep=2)
    config.log.update(every_steps=1, image_every_steps=0, num_images=2)
    return config

"""Stage-2 training for tests: the `test` animator (8x8 latents) over 16x16 random batches, a few steps.

Images become latents by an exact 2x2 space-to-depth (16x16x3 -> 8x8x12: no VAE to load), so the UNets take
and give 12 channels. `motion_from` is left empty: a test names a Stage-1 run (tests/motion_checkpoint.py writes
an untrained `test` one, whose expression latent is 16-d, as the `test` animator wants). The rest is the paper's
(configs/animator_paper.py).
"""

from pathlib import Path

from dex_jax.config_loading import load_config_file

HERE = Path(__file__).parent


def get_config():
    config = load_config_file(HERE / "animator_paper.py")
    config.total_steps = 3
    config.nonfinite_limit = 3
    config.model = load_config_file(HERE / "animator_model.py", "test")
    config.model.unet.update(in_channels=12, out_channels=12)
    config.latent = dict(kind="space_to_depth", factor=2)

    config.data.source = "random"
    config.data.batch_size = 8
    config.data.num_driving = 1
    config.data.image_size = 16
    config.data.expression_size = 32
    config.data.worker_count = 0

    # lr 1e-4: Adam divides each gradient by its own scale, so a near-zero gradient's float32 summation-order noise
    # (which differs between meshes) moves a param by up to about lr; at 1e-4 the same 3 steps on different meshes
    # stay within 1e-5 (at 1e-3 they differ by up to 3e-5)
    config.optimizer.update(lr=1e-4, warmup_steps=0)
    config.loss.update(drop_expression=0.25, drop_all=0.25)
    config.ema.decay = 0.9
    config.mesh = dict(data=-1, fsdp=1, tensor=1)

    config.checkpoint.update(every_steps=2, keep=2)
    config.log.update(every_steps=1, image_every_steps=0, num_images=2)
    return config

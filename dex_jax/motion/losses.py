"""Stage-1 motion-trainer losses (supplement B.1): L1, LPIPS, face-masked Component LPIPS, softplus GAN, R1.

Also terms the paper has none of: supervised pose and expression terms for datasets that know the truth
(SynthHeads), and a perceptual term on MediaPipe's face-landmark features for machines without a VGG16.
"""

import jax
import jax.numpy as jnp

from dex_jax.motion.face_perceptual import face_feature_distance
from dex_jax.motion.lpips import DISTANCES, LPIPS, check_lpips_inputs, feature_reduce, spatial_reduce
from dex_jax.motion.pose_encoder import POSE_KEYS

EXPRESSION_VARIANCE_FLOOR = 0.01


def l1_loss(pred, target):
    """Mean absolute difference over every pixel and channel."""
    if pred.shape != target.shape:
        raise ValueError(f"L1 loss inputs differ in shape: {pred.shape} vs {target.shape}")
    return jnp.mean(jnp.abs(pred - target))


def masked_l1_loss(pred, target, mask):
    """Batch mean of each image's mean absolute difference over the pixels (all channels) where mask (N, H, W, 1),
    bool or {0, 1}, is set; an image with an empty mask counts 0."""
    if pred.shape != target.shape or mask.shape != pred.shape[:-1] + (1,):
        raise ValueError(f"masked L1 inputs must be (N, H, W, C) twice and a (N, H, W, 1) mask, got {pred.shape}, "
                         f"{target.shape} and {mask.shape}")
    mask = mask.astype(jnp.float32)
    total = jnp.sum(jnp.abs(pred.astype(jnp.float32) - target.astype(jnp.float32)) * mask, axis=(1, 2, 3))
    return jnp.mean(total / jnp.maximum(jnp.sum(mask, axis=(1, 2, 3)) * pred.shape[-1], 1.0))


def pose_supervision_loss(pose, target):
    """Mean absolute error of a pose dict (yaw, pitch, roll in radians, tx, ty, scale) against target (N, 6)."""
    if target.shape != (pose["yaw"].shape[0], len(POSE_KEYS)):
        raise ValueError(f"pose targets must be (N, {len(POSE_KEYS)}) = {POSE_KEYS}, got shape {target.shape}")
    predicted = jnp.stack([pose[k] for k in POSE_KEYS], axis=-1)
    return jnp.mean(jnp.abs(predicted - target.astype(predicted.dtype)))


def expression_supervision_loss(latent, target, normalised=False):
    """Mean squared error of the first n values of expression latents (N, D) against true expressions (N, n),
    which ties those latent dimensions to the expression and leaves the other D - n free.

    Squared, not absolute: SynthHeads' expression values are 0 about half the time, and the absolute error's
    best guess from an uninformative encoder, the per-value median, is mostly 0; its constant gradient then
    shrank the FAN encoder's output to that constant, where the squared error's moves it towards each
    expression's conditional mean.

    normalised: divide each value's error by that value's variance over the batch plus EXPRESSION_VARIANCE_FLOOR,
    so that each value counts alike however widely it spreads: the loss is then about the mean over values of
    1 - R^2 on the batch, and the best constant scores just under 1. Plain, the values that spread widest
    dominate the error, and in our trials the FAN encoder learned the eyes and the gaze and nothing else."""
    if target.ndim != 2 or target.shape[0] != latent.shape[0] or target.shape[1] > latent.shape[1]:
        raise ValueError(f"expression targets must be (N, n) with N = {latent.shape[0]} and n <= the latent's "
                         f"{latent.shape[1]} dims, got shape {target.shape}")
    target = target.astype(jnp.float32)
    errors = jnp.mean(jnp.square(latent[:, :target.shape[1]].astype(jnp.float32) - target), axis=0)
    if normalised:
        errors = errors / (jnp.var(target, axis=0) + EXPRESSION_VARIANCE_FLOOR)
    return jnp.mean(errors)


def generator_adversarial_loss(fake_logits):
    """Non-saturating generator loss: mean softplus(-D(fake))."""
    return jnp.mean(jax.nn.softplus(-fake_logits))


def discriminator_loss(real_logits, fake_logits):
    """Non-saturating discriminator loss: mean softplus(-D(real)) + mean softplus(D(fake))."""
    return jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(jax.nn.softplus(fake_logits))


def r1_penalty(d_apply, real_images):
    """R1: batch mean of ||d/dx sum D(x)||^2 at the real images (unweighted; the caller applies gamma / 2)."""
    grads = jax.grad(lambda x: jnp.sum(d_apply(x)))(real_images)
    return jnp.mean(jnp.sum(jnp.square(grads), axis=tuple(range(1, grads.ndim))))


def motion_generator_loss(lpips_params, pred, target, face_mask, fake_logits, *, l1_weight=10.0,
                          lpips_weight=1.0, component_lpips_weight=100.0, adversarial_weight=1.0, face_net=None,
                          face_perceptual_weight=0.0, perceptual="lpips", dtype=None):
    """Supplement Eq. 5: l1_weight L1 + lpips_weight LPIPS + component_lpips_weight LPIPS_face + adv weight L_adv.

    perceptual: what the two perceptual terms measure, "lpips" (LPIPS v0.1: unit-normalised VGG16 taps, learned
    heads; `LPIPS`) or "vgg" (B.1's Eq. 2 and 3 as printed: the sum over VGG16 taps of feature distances;
    `feature_reduce`); the terms keep the paper's names, lpips and component_lpips, either way.
    One VGG pass serves both terms; with both their weights 0 there is no VGG pass and no such terms.
    With face_perceptual_weight > 0, plus that weight times the batch mean of `face_feature_distance` under
    face_net = (graph, constants) of `face_perceptual.load_face_net`, as the term "face_perceptual".
    Returns (total, {"l1", "lpips", "component_lpips", "adversarial"[, "face_perceptual"]}), the terms unweighted.
    """
    check_lpips_inputs(pred, target, face_mask)
    if perceptual not in DISTANCES:
        raise ValueError(f"unknown perceptual distance {perceptual!r}: use one of {', '.join(DISTANCES)}")
    terms = {"l1": l1_loss(pred, target), "adversarial": generator_adversarial_loss(fake_logits)}
    total = l1_weight * terms["l1"] + adversarial_weight * terms["adversarial"]
    if lpips_weight or component_lpips_weight:
        method, reduce = (LPIPS.tap_maps, spatial_reduce) if perceptual == "lpips" else (LPIPS.difference_maps,
                                                                                          feature_reduce)
        maps = LPIPS(dtype=dtype).apply({"params": lpips_params}, pred, target, method=method)
        terms["lpips"] = jnp.mean(reduce(maps))
        terms["component_lpips"] = jnp.mean(reduce(maps, face_mask))
        total = total + lpips_weight * terms["lpips"] + component_lpips_weight * terms["component_lpips"]
    if face_perceptual_weight:
        terms["face_perceptual"] = jnp.mean(face_feature_distance(*face_net, pred, target))
        total = total + face_perceptual_weight * terms["face_perceptual"]
    return total, terms

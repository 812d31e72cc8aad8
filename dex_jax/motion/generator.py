"""The Stage-1 motion trainer: (source, pose input, expression input) -> reenacted image (Fig. 2a)."""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from dex_jax import geometry
from dex_jax.motion.appearance_encoder import AppearanceEncoder
from dex_jax.motion.decoder import ExpressionConditionedDecoder
from dex_jax.motion.discriminator import Discriminator
from dex_jax.motion.expression_encoder import ExpressionEncoder
from dex_jax.motion.feature_fusion import AppearanceLatent, FlattenCNN
from dex_jax.motion.pose_encoder import POSE_KEYS, PoseEncoder


def pose_to_matrix(pose):
    """A pose dict {yaw, pitch, roll, tx, ty, scale} -> P = [sR t] of shape (N, 3, 4)."""
    return geometry.pose_from_params(*(pose[k] for k in POSE_KEYS))


class MotionGenerator(nn.Module):
    """Composes the Stage-1 networks; each submodule is usable alone (the diffusion stage reuses two).

    source (N,S,S,3) -> appearance volume V_s and source pose P_s; the pose input (driving image with
    eyes and mouth covered) -> P_d; V_s warped from P_s to P_d; Flatten & CNN on (V_s, warped) feeds the
    decoder at its 4th StyleConv; style = concat(appearance latent of V_s, expression latent of the crop).
    """

    appearance: AppearanceEncoder
    pose: PoseEncoder
    expression: ExpressionEncoder
    fusion: FlattenCNN
    appearance_latent: AppearanceLatent
    decoder: ExpressionConditionedDecoder

    def encode_appearance(self, source):
        """Source image -> (appearance volume, appearance latent)."""
        volume = self.appearance(source)
        return volume, self.appearance_latent(volume)

    def encode_pose(self, image):
        """Image -> pose dict {yaw, pitch, roll (radians), tx, ty, scale}, each (N,)."""
        return self.pose(image)

    def encode_expression(self, crop):
        """Face crop (N, E, E, 3) -> expression latent (N, latent_dim)."""
        return self.expression(crop)

    def render(self, volume, appearance_latent, source_pose, driving_pose, expression_latent):
        """Decode the source volume re-posed from `source_pose` to `driving_pose` (P = [sR t], (N, 3, 4)) with an
        expression latent."""
        warped = geometry.warp_volume(volume, source_pose, driving_pose)
        features = self.fusion(volume, warped)
        style = jnp.concatenate([appearance_latent, expression_latent.astype(appearance_latent.dtype)], -1)
        return self.decoder(features, style)

    def reenact(self, source, pose_input, expression_input, detach_pose=False):
        """-> (reenacted image, source pose, driving pose, expression latent): the image and what it was rendered with.

        source (B, S, S, 3) drives B*K rows of pose and expression inputs, K consecutive rows per source: each
        source is encoded once and its volume, latent and pose are repeated K times (the same result as
        repeating the source K times first, at 1/K of the source encoders' cost). Every output has B*K rows.
        detach_pose: warp with the poses under stop_gradient, so the image's losses do not train the pose encoder.
        """
        k, rest = divmod(pose_input.shape[0], source.shape[0])
        if rest or expression_input.shape[0] != pose_input.shape[0]:
            raise ValueError(f"reenact: {source.shape[0]} sources cannot drive {pose_input.shape[0]} pose inputs "
                             f"and {expression_input.shape[0]} expression inputs: both must be K times the sources")
        repeat = functools.partial(jax.tree.map, lambda x: jnp.repeat(x, k, axis=0))
        volume, appearance_latent = repeat(self.encode_appearance(source))
        source_pose, driving_pose = repeat(self.encode_pose(source)), self.encode_pose(pose_input)
        warp_poses = jax.lax.stop_gradient((source_pose, driving_pose)) if detach_pose else (source_pose, driving_pose)
        expression_latent = self.encode_expression(expression_input)
        image = self.render(volume, appearance_latent, *map(pose_to_matrix, warp_poses), expression_latent)
        return image, source_pose, driving_pose, expression_latent

    def __call__(self, source, pose_input, expression_input):
        return self.reenact(source, pose_input, expression_input)[0]


def _dtype(config):
    return jnp.dtype(config.get("dtype", "float32"))


def _build(cls, name, sub_config, dtype):
    try:
        return cls(**sub_config.to_dict(), dtype=dtype)
    except TypeError as err:
        raise ValueError(f"bad config for {name}: {err}") from None


def build_motion_generator(config: ml_collections.ConfigDict) -> MotionGenerator:
    """The motion trainer described by a `configs/motion_model.py` config."""
    dtype = _dtype(config)
    return MotionGenerator(
        appearance=_build(AppearanceEncoder, "appearance", config.appearance, dtype),
        pose=_build(PoseEncoder, "pose", config.pose, dtype),
        expression=_build(ExpressionEncoder, "expression", config.expression, dtype),
        fusion=_build(FlattenCNN, "fusion", config.fusion, dtype),
        appearance_latent=_build(AppearanceLatent, "appearance_latent", config.appearance_latent, dtype),
        decoder=_build(ExpressionConditionedDecoder, "decoder", config.decoder, dtype),
    )


def submodule_fields(config: ml_collections.ConfigDict) -> dict:
    """{submodule name: the fields it is built with, defaults filled in} of the motion trainer `config` describes."""
    trainer = build_motion_generator(config)
    fields = {}
    for field in dataclasses.fields(trainer):
        submodule = getattr(trainer, field.name)
        if isinstance(submodule, nn.Module):
            fields[field.name] = {f.name: getattr(submodule, f.name) for f in dataclasses.fields(submodule)
                                  if f.name not in ("parent", "name")}
    return fields


def build_discriminator(config: ml_collections.ConfigDict) -> Discriminator:
    """The StyleGAN2 discriminator described by a `configs/motion_model.py` config."""
    return _build(Discriminator, "discriminator", config.discriminator, _dtype(config))

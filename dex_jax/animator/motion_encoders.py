"""The frozen Stage-1 encoders that give the animator its condition: head poses and expression latents.

As in Stage 1 (`MotionGenerator.reenact`, and infer's Stage-1 path): the pose encoder reads the source image
for the source pose and each driving frame's pose input (eyes and mouth covered) for the driving pose; the
expression encoder reads each driving frame's expression crop. Their params are the Stage-1 generator's
'pose' and 'expression' subtrees, `{"pose": ..., "expression": ...}`; the animator never trains them.

Images of another size than the Stage-1 model's (e.g. a 512 animator over a 256 Stage-1 model) are resized
(antialiased bilinear) to its `image_size` for the pose encoder and to its `expression.image_size` for the
expression encoder, our choice: the encoders see inputs of the size they were trained on.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from dex_jax.motion.generator import MotionGenerator, build_motion_generator, pose_to_matrix

FROZEN_ENCODERS = ("pose", "expression")


def _resized(images, size):
    if images.shape[1:3] == (size, size):
        return images
    return jax.image.resize(images, (images.shape[0], size, size, images.shape[-1]), "linear")


@dataclasses.dataclass(frozen=True)
class MotionEncoders:
    """A Stage-1 model's pose and expression encoders; every call takes their params explicitly."""

    generator: MotionGenerator
    image_size: int
    expression_size: int
    latent_dim: int

    def poses(self, params, images):
        """(N, 3, 4) head poses P = [sR | t] of (N, H, W, 3) images in [-1, 1], float32."""
        images = _resized(images, self.image_size)
        pose = self.generator.apply({"params": params}, images, method=MotionGenerator.encode_pose)
        return pose_to_matrix(pose).astype(jnp.float32)

    def expressions(self, params, crops):
        """(N, latent_dim) float32 expression latents of (N, E, E, 3) face crops in [-1, 1]."""
        crops = _resized(crops, self.expression_size)
        latent = self.generator.apply({"params": params}, crops, method=MotionGenerator.encode_expression)
        return latent.astype(jnp.float32)

    def param_shapes(self):
        """{"pose": ..., "expression": ...} ShapeDtypeStructs of the params these encoders take (nothing runs)."""
        s, e = self.image_size, self.expression_size

        def init(key):
            pose = self.generator.init(key, jnp.zeros((1, s, s, 3)), method=MotionGenerator.encode_pose)
            expression = self.generator.init(key, jnp.zeros((1, e, e, 3)), method=MotionGenerator.encode_expression)
            return {"pose": pose["params"]["pose"], "expression": expression["params"]["expression"]}

        return nn.unbox(jax.eval_shape(init, jax.random.key(0)))


def motion_encoders(motion_model: ml_collections.ConfigDict) -> MotionEncoders:
    """The encoders of the Stage-1 model a `configs/motion_model.py` config (a run's `model`) describes."""
    return MotionEncoders(build_motion_generator(motion_model), int(motion_model.image_size),
                          int(motion_model.expression.image_size), int(motion_model.expression.latent_dim))

"""Relative and absolute motion, as LivePortrait users know them, for either engine (pure jnp, used inside the jits).

A motion is (pose P = [sR | t] (n, 3, 4), expression latent (n, D)). Absolute motion drives the source with the
driving frame's own pose and expression. Relative motion applies the change since the driving clip's first frame
(d0) to the source's own motion (s):
    R = R_d R_d0^T R_s,   s = s_s s_d / s_d0,   t = t_s + (t_d - t_d0),   expression = e_s + (e_d - e_d0)
so a driver who starts turned away or smiling moves the source from its own pose and expression. The pose and
the expression each take the reference of their own clip (disentangled drivers).
"""

import jax.numpy as jnp

from dex_jax import geometry

MOTIONS = ("relative", "absolute")


def scale_and_rotation(pose):
    """(s (...,), R (..., 3, 3)) of poses [sR | t] (..., 3, 4) with s > 0."""
    linear = pose[..., :3]
    scale = jnp.cbrt(jnp.linalg.det(linear))
    return scale, linear / scale[..., None, None]


def relative_pose(source, driving, first):
    """The source pose (1, 3, 4) moved by each driving pose (n, 3, 4) relative to the clip's first (1, 3, 4)."""
    s_s, r_s = scale_and_rotation(source)
    s_d, r_d = scale_and_rotation(driving)
    s_0, r_0 = scale_and_rotation(first)
    rotation = r_d @ jnp.swapaxes(r_0, -1, -2) @ r_s
    translation = source[..., :2, 3] + driving[..., :2, 3] - first[..., :2, 3]
    return geometry.pose_matrix(rotation, translation, s_s * s_d / s_0)


def apply_motion(poses, expressions, reference):
    """The motion that drives the source: `poses`, `expressions` as they are when `reference` is None (absolute),
    else relative to reference = (source pose, source expression, first pose, first expression), each one row."""
    if reference is None:
        return poses, expressions
    source_pose, source_expression, first_pose, first_expression = reference
    return (relative_pose(source_pose, poses, first_pose),
            source_expression + (expressions - first_expression).astype(source_expression.dtype))

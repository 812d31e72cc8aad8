"""Head pose (yaw, pitch, roll) from MediaPipe's facial transformation matrix.

Euler angles: R is the rotation part of the transformation matrix (its nearest rotation, by SVD, so
any uniform scale is removed), decomposed as R = Rz(roll) @ Ry(yaw) @ Rx(pitch) in camera axes:
    pitch = atan2(R[2, 1], R[2, 2])            (about x: nodding)
    yaw   = atan2(-R[2, 0], hypot(R[2, 1], R[2, 2]))   (about y: turning left / right)
    roll  = atan2(R[1, 0], R[0, 0])            (about z: in-plane tilt)
Positive roll is a counter-clockwise tilt of the head as seen in the image.
"""

import jax.numpy as jnp


def nearest_rotation(matrices):
    """The rotations closest (Frobenius) to the 3x3 blocks of (..., 4, 4) or (..., 3, 3) matrices."""
    m = jnp.asarray(matrices, jnp.float32)[..., :3, :3]
    u, _, vt = jnp.linalg.svd(m)
    sign = jnp.sign(jnp.linalg.det(u @ vt))
    u = u.at[..., :, 2].multiply(sign[..., None])
    return u @ vt


def head_pose_degrees(matrices):
    """(yaw, pitch, roll) in degrees, shape (..., 3), from facial transformation matrices (..., 4, 4)."""
    r = nearest_rotation(matrices)
    pitch = jnp.arctan2(r[..., 2, 1], r[..., 2, 2])
    yaw = jnp.arctan2(-r[..., 2, 0], jnp.hypot(r[..., 2, 1], r[..., 2, 2]))
    roll = jnp.arctan2(r[..., 1, 0], r[..., 0, 0])
    return jnp.degrees(jnp.stack([yaw, pitch, roll], axis=-1))

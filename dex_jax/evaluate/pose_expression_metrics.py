"""AED and APD: per-frame expression and head-pose distances from MediaPipe face-landmarker outputs.

Inputs come from `dex_jax.face.landmarker` (MediaPipe's FaceLandmarker, IMAGE mode): for each
frame, the 52 blendshape scores (in [0, 1], MediaPipe's order, `_neutral` first) and the 4x4 facial
transformation matrix that maps MediaPipe's canonical face model into camera space (x right, y up,
z towards the viewer).

Definitions (per frame t, prediction p, reference r = the driving frame; see `FrameStatistic` in
`dex_jax.evaluate.clu_metrics` for the averaging over frames and the 95% interval):

    AED_t = (1 / 52) * sum_k |b_p[t, k] - b_r[t, k]|                        (blendshape-score units)
    APD_t = (1 / 3) * sum_{a in yaw, pitch, roll} |wrap(a_p[t] - a_r[t])|  (degrees)
    AED = mean_t AED_t,  APD = mean_t APD_t over the frames where both images have a face.

`wrap(d) = ((d + 180) mod 360) - 180` keeps each angle difference in [-180, 180).
The norm is L1, averaged over components: the reenactment papers that report AED / APD (PIRenderer,
LivePortrait, X-NeMo and DeX-Portrait after them) average absolute differences of the tracker's
expression and pose parameters, and L1 keeps one badly tracked blendshape from dominating a frame.
Averaging over the 52 components (rather than summing) puts AED on the scale of DeX-Portrait's
Table 1 (AED 0.05). Frames where either image has no face are counted separately, never averaged in.

Head pose angles come from `dex_jax.face.head_pose`.
"""

import jax.numpy as jnp

from dex_jax.face.landmarker import NUM_BLENDSHAPES


def wrap_degrees(angles):
    """Angles (degrees) mapped into [-180, 180)."""
    return jnp.mod(angles + 180.0, 360.0) - 180.0


def expression_distance(blendshapes, target_blendshapes):
    """AED_t: mean absolute difference of (N, 52) blendshape scores, shape (N,)."""
    a, b = jnp.asarray(blendshapes, jnp.float32), jnp.asarray(target_blendshapes, jnp.float32)
    if a.shape != b.shape or a.shape[-1] != NUM_BLENDSHAPES:
        raise ValueError(f"AED expects two (N, {NUM_BLENDSHAPES}) blendshape arrays, got {a.shape} and {b.shape}")
    return jnp.mean(jnp.abs(a - b), axis=-1)


def pose_distance(head_pose, target_head_pose):
    """APD_t: mean absolute wrapped difference of (N, 3) (yaw, pitch, roll) angles in degrees, shape (N,)."""
    a, b = jnp.asarray(head_pose, jnp.float32), jnp.asarray(target_head_pose, jnp.float32)
    if a.shape != b.shape or a.shape[-1] != 3:
        raise ValueError(f"APD expects two (N, 3) (yaw, pitch, roll) arrays, got {a.shape} and {b.shape}")
    return jnp.mean(jnp.abs(wrap_degrees(a - b)), axis=-1)

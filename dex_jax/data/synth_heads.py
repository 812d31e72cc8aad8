"""SynthHeads: procedural 3D heads with known pose, expression and identity, as frames, clips and multi-view clips.

Every frame is a dict of arrays:
  image (H, W, 3) uint8; pose (6,) = (yaw, pitch, roll, tx, ty, scale), radians, the P = [sR | t] convention
  of `dex_jax.geometry`; pose_matrix (3, 4) = pose_from_params(*pose); expression (NUM_EXPRESSIONS,), names in
  EXPRESSION_NAMES (gaze_x, gaze_y in [-1, 1], the rest in [0, 1]); identity () int32; landmarks (49, 2)
  pixel (col, row) of the eye, brow, mouth, nose-tip and iris points (synth_face.LANDMARK_GROUPS), projected from
  canonical 3D with `geometry.project_points`; landmarks_visible (49,) bool; face_box (4,) = (x0, y0, x1, y1)
  pixel edges of the face mask (pixel c spans [c - 0.5, c + 0.5]); face_mask (H, W) bool, the skin of the face;
  head_mask (H, W) bool, the foreground (head, hair, neck, torso).

The head geometry (a union of ellipsoids, see synth_identity) depends only on the identity; expressions are
painted on its surface (synth_face), so the outline (head_mask) and the face mask never change with expression.
Images are rendered by orthographic ray casting along +z (synth_render). The neck and torso have their own
body pose (default: the head's translation and scale, unrotated), so the head turns on the neck.

Multi-view clips: camera view v is a similarity V_v = [s_v R_v | t_v] applied on top of the head pose, so
view v at time t sees the head under the composed pose V_v P_t (`geometry.compose`) with its depth
translation dropped (an orthographic camera cannot see it; the P convention has t_z = 0). That composed pose,
as six parameters, is the ground-truth `pose` of the frame.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from dex_jax.data.synth_face import EXPRESSION, EXPRESSION_NAMES, NUM_EXPRESSIONS, SIGNED_EXPRESSIONS
from dex_jax.data.synth_identity import HEAD_UNIT, identity_params
from dex_jax.data.synth_render import (cast_frame, landmark_visibility, landmarks_3d, shade_frame, surface,
                                       unpack_frame)
from dex_jax.geometry import compose, pose_from_params, project_points

POSE_NAMES = ("yaw", "pitch", "roll", "tx", "ty", "scale")
_DEG = math.pi / 180
POSE_RANGES = {"yaw": (-45 * _DEG, 45 * _DEG), "pitch": (-30 * _DEG, 30 * _DEG), "roll": (-30 * _DEG, 30 * _DEG),
               "tx": (-0.1, 0.1), "ty": (-0.1, 0.1), "scale": (0.85, 1.15)}
# Head motion in multi-view clips stays small enough that head pose composed with any view keeps within POSE_RANGES.
MULTIVIEW_HEAD_RANGES = {"yaw": (-12 * _DEG, 12 * _DEG), "pitch": (-12 * _DEG, 12 * _DEG),
                         "roll": (-12 * _DEG, 12 * _DEG), "tx": (-0.06, 0.06), "ty": (-0.06, 0.06), "scale": (0.9, 1.1)}
MAX_VIEW_YAW = 30 * _DEG
MAX_VIEW_PITCH = 10 * _DEG
_SIGNED = np.array([name in SIGNED_EXPRESSIONS for name in EXPRESSION_NAMES])
_PAIRS = (("smile_left", "smile_right"), ("eye_close_left", "eye_close_right"))


def _bounds(ranges):
    low = jnp.array([ranges[name][0] for name in POSE_NAMES])
    high = jnp.array([ranges[name][1] for name in POSE_NAMES])
    return low, high


def _cast(identity_id, pose, body_pose, seed, height, width):
    return cast_frame(identity_params(identity_id, seed), pose, body_pose, height, width)


def _shade(identity_id, pose, body_pose, expr, seed, z, part, height, width):
    return shade_frame(identity_params(identity_id, seed), pose, body_pose, expr, z, part, height, width)


def _annotate(identity_id, pose, body_pose, expr, seed, z, part, packed, height, width, with_hit):
    ident = identity_params(identity_id, seed)
    image, head_mask, face_mask = unpack_frame(packed)
    matrix = pose_from_params(*(pose[i] for i in range(6)))
    points = landmarks_3d(ident, expr)
    cols, rows = face_mask.any(0), face_mask.any(1)
    x0, x1 = jnp.argmax(cols), width - 1 - jnp.argmax(cols[::-1])
    y0, y1 = jnp.argmax(rows), height - 1 - jnp.argmax(rows[::-1])
    out = {
        "image": image,
        "head_mask": head_mask,
        "face_mask": face_mask,
        "pose": pose,
        "pose_matrix": matrix,
        "expression": expr,
        "identity": jnp.asarray(identity_id, jnp.int32),
        "landmarks": project_points(matrix[None], points[None], height, width)[0],
        "landmarks_visible": landmark_visibility(ident, pose, body_pose, points),
        "face_box": jnp.stack([x0, y0, x1, y1]).astype(jnp.float32) + jnp.array([-0.5, -0.5, 0.5, 0.5]),
    }
    if with_hit:
        point = surface(ident, pose, body_pose, z, part, height, width)[0]
        out["hit_point"] = jnp.stack(point, -1) * HEAD_UNIT
        out["part"] = part
    return out


# Three jitted stages rather than one: XLA on CPU does not share a value between fusions, so each stage's
# inputs are materialised here instead of being recomputed inside every consumer of the next stage.
_cast_batch = jax.jit(jax.vmap(_cast, in_axes=(0, 0, 0, None, None, None)), static_argnames=("height", "width"))
_shade_batch = jax.jit(jax.vmap(_shade, in_axes=(0, 0, 0, 0, None, 0, 0, None, None)),
                       static_argnames=("height", "width"))
_annotate_batch = jax.jit(jax.vmap(_annotate, in_axes=(0, 0, 0, 0, None, 0, 0, 0, None, None, None)),
                          static_argnames=("height", "width", "with_hit"))


def body_from_head(poses):
    """Default body poses (..., 6): the head's translation and scale, no rotation (the head turns on the neck)."""
    return poses * jnp.array([0.0, 0.0, 0.0, 1.0, 1.0, 1.0])


def render_frames(identity_ids, poses, expressions, height, width, seed=0, body_poses=None, with_hit=False):
    """Render a batch of frames: identity_ids (N,) int, poses (N, 6), expressions (N, NUM_EXPRESSIONS).

    body_poses (N, 6) place the neck and torso (default `body_from_head(poses)`).
    Returns the frame dict (module docstring) with a leading N axis; with_hit adds `hit_point` (N, H, W, 3),
    the canonical surface point seen by each pixel, and `part` (N, H, W), the ellipsoid index (-1: none).
    """
    poses, expressions = jnp.asarray(poses, jnp.float32), jnp.asarray(expressions, jnp.float32)
    identity_ids = jnp.asarray(identity_ids, jnp.int32)
    if poses.ndim != 2 or poses.shape[1] != 6:
        raise ValueError(f"poses must be (N, 6) = (yaw, pitch, roll, tx, ty, scale), got shape {poses.shape}")
    if expressions.shape != (poses.shape[0], NUM_EXPRESSIONS):
        raise ValueError(f"expressions must be ({poses.shape[0]}, {NUM_EXPRESSIONS}), got shape {expressions.shape}")
    if identity_ids.shape != (poses.shape[0],):
        raise ValueError(f"identity_ids must be ({poses.shape[0]},), got shape {identity_ids.shape}")
    if not (hasattr(height, "__index__") and hasattr(width, "__index__") and height >= 8 and width >= 8):
        raise ValueError(f"height and width must be ints >= 8, got {height!r} x {width!r}")
    height, width = int(height), int(width)
    body_poses = body_from_head(poses) if body_poses is None else jnp.asarray(body_poses, jnp.float32)
    if body_poses.shape != poses.shape:
        raise ValueError(f"body_poses must have the shape of poses {poses.shape}, got {body_poses.shape}")
    seed = jnp.asarray(seed, jnp.int32)
    z, part = _cast_batch(identity_ids, poses, body_poses, seed, height, width)
    packed = _shade_batch(identity_ids, poses, body_poses, expressions, seed, z, part, height, width)
    return _annotate_batch(identity_ids, poses, body_poses, expressions, seed, z, part, packed, height, width, with_hit)


@functools.partial(jax.jit, static_argnames=("shape",))
def sample_pose(key, shape=(), ranges=POSE_RANGES):
    """Uniform random poses (*shape, 6) within `ranges` (POSE_NAMES order)."""
    low, high = _bounds(ranges)
    return jax.random.uniform(key, tuple(shape) + (6,), minval=low, maxval=high)


@functools.partial(jax.jit, static_argnames=("shape",))
def sample_expression(key, shape=()):
    """Random expressions (*shape, NUM_EXPRESSIONS): each channel active with some probability, else neutral 0."""
    k_on, k_value = jax.random.split(key)
    shape = tuple(shape) + (NUM_EXPRESSIONS,)
    p_on = jnp.full((NUM_EXPRESSIONS,), 0.5).at[EXPRESSION["tongue_out"]].set(0.15)
    value = jax.random.uniform(k_value, shape)
    value = jnp.where(_SIGNED, 2.0 * value - 1.0, value)
    return jnp.where(jax.random.uniform(k_on, shape) < p_on, value, 0.0)


def smooth_signal(key, num_frames, channels, fps=25.0, num_waves=3, freq=(0.05, 0.6)):
    """Smooth random signals (num_frames, channels) in [-1, 1]: normalised sums of sinusoids, random phases."""
    k_freq, k_phase, k_amp = jax.random.split(key, 3)
    f = jax.random.uniform(k_freq, (num_waves, channels), minval=freq[0], maxval=freq[1])
    phase = jax.random.uniform(k_phase, (num_waves, channels), maxval=2 * jnp.pi)
    amp = jax.random.uniform(k_amp, (num_waves, channels), minval=0.2, maxval=1.0)
    amp = amp / amp.sum(0)
    t = jnp.arange(num_frames, dtype=jnp.float32)[:, None, None] / fps
    return (amp * jnp.sin(2 * jnp.pi * f * t + phase)).sum(1)


@functools.partial(jax.jit, static_argnames=("num_frames",))
def pose_trajectory(key, num_frames, ranges=POSE_RANGES, fps=25.0):
    """A smooth random head-pose track (num_frames, 6) inside `ranges`."""
    k_signal, k_extent, k_centre = jax.random.split(key, 3)
    low, high = _bounds(ranges)
    extent = jax.random.uniform(k_extent, (6,), minval=0.3, maxval=1.0)
    centre = jax.random.uniform(k_centre, (6,), minval=-1.0, maxval=1.0) * (1.0 - extent)
    signal = centre + extent * smooth_signal(k_signal, num_frames, 6, fps)
    return 0.5 * (low + high) + 0.5 * (high - low) * signal


@functools.partial(jax.jit, static_argnames=("num_frames", "fps", "blinks_per_second"))
def expression_trajectory(key, num_frames, fps=25.0, blinks_per_second=0.3):
    """A smooth random expression track (num_frames, NUM_EXPRESSIONS), with correlated left/right pairs and blinks."""
    k_signal, k_bias, k_gain, k_mix, k_blink = jax.random.split(key, 5)
    signal = smooth_signal(k_signal, num_frames, NUM_EXPRESSIONS, fps)
    bias = jnp.where(_SIGNED, jax.random.uniform(k_bias, (NUM_EXPRESSIONS,), minval=-0.3, maxval=0.3),
                     jax.random.uniform(k_bias, (NUM_EXPRESSIONS,), minval=-0.7, maxval=0.4))
    gain = jax.random.uniform(k_gain, (NUM_EXPRESSIONS,), minval=0.6, maxval=1.4)
    mix = jax.random.uniform(k_mix, (len(_PAIRS),), minval=0.5, maxval=1.0)
    for pair, (left, right) in enumerate(_PAIRS):
        i, j = EXPRESSION[left], EXPRESSION[right]
        signal = signal.at[:, j].set(mix[pair] * signal[:, i] + (1 - mix[pair]) * signal[:, j])
        bias = bias.at[j].set(mix[pair] * bias[i] + (1 - mix[pair]) * bias[j])
    expr = bias + gain * signal
    expr = jnp.where(_SIGNED, jnp.clip(expr, -1.0, 1.0), jnp.clip(expr, 0.0, 1.0))
    num_blinks = max(1, round(num_frames / fps * blinks_per_second))
    times = jax.random.uniform(k_blink, (num_blinks,), maxval=num_frames / fps)
    t = jnp.arange(num_frames, dtype=jnp.float32)[:, None] / fps
    blink = jnp.exp(-(((t - times) / 0.06) ** 2)).sum(1).clip(0.0, 1.0)
    for name in ("eye_close_left", "eye_close_right"):
        expr = expr.at[:, EXPRESSION[name]].max(blink)
    return expr


def euler_from_rotation(rotation):
    """(yaw, pitch, roll) of R = Rz(roll) Ry(yaw) Rx(pitch): inverts `geometry.rotation_from_euler` for |yaw| < 90 deg."""
    yaw = jnp.arcsin(jnp.clip(-rotation[..., 2, 0], -1.0, 1.0))
    pitch = jnp.arctan2(rotation[..., 2, 1], rotation[..., 2, 2])
    roll = jnp.arctan2(rotation[..., 1, 0], rotation[..., 0, 0])
    return yaw, pitch, roll


@jax.jit
def compose_view(view_pose, head_pose):
    """Six pose parameters of the camera view (..., 6) applied on top of the head pose (..., 6), t_z dropped."""
    view = pose_from_params(*jnp.moveaxis(view_pose, -1, 0))
    matrix = compose(view, pose_from_params(*jnp.moveaxis(head_pose, -1, 0)))
    scale = jnp.linalg.norm(matrix[..., :, 0], axis=-1)
    yaw, pitch, roll = euler_from_rotation(matrix[..., :3] / scale[..., None, None])
    return jnp.stack([yaw, pitch, roll, matrix[..., 0, 3], matrix[..., 1, 3], scale], -1)


@functools.partial(jax.jit, static_argnames=("num_views",))
def sample_views(key, num_views):
    """Camera view poses (num_views, 6): yaws spread over +-MAX_VIEW_YAW with jitter, small random pitch."""
    k_yaw, k_pitch = jax.random.split(key)
    spread = jnp.linspace(-1.0, 1.0, num_views) if num_views > 1 else jnp.zeros(1)
    jitter = jax.random.uniform(k_yaw, (num_views,), minval=-5 * _DEG, maxval=5 * _DEG)
    yaw = spread * (MAX_VIEW_YAW - 5 * _DEG) + jitter
    pitch = jax.random.uniform(k_pitch, (num_views,), minval=-MAX_VIEW_PITCH, maxval=MAX_VIEW_PITCH)
    zero = jnp.zeros(num_views)
    return jnp.stack([yaw, pitch, zero, zero, zero, zero + 1.0], -1)


def sample_multiview_clip(key, identity_id, num_views, num_frames, height, width, seed=0, fps=25.0):
    """Synchronised views (num_views, num_frames, ...) of one clip; `pose` is each frame's composed pose.

    Also returns head_pose (num_frames, 6), the head's own track, and view_pose (num_views, 6), the cameras.
    """
    k_pose, k_expr, k_view = jax.random.split(key, 3)
    head = pose_trajectory(k_pose, num_frames, MULTIVIEW_HEAD_RANGES, fps)
    exprs = expression_trajectory(k_expr, num_frames, fps)
    views = sample_views(k_view, num_views)
    poses = compose_view(views[:, None], head[None]).reshape(-1, 6)
    bodies = compose_view(views[:, None], body_from_head(head)[None]).reshape(-1, 6)
    n = num_views * num_frames
    frames = render_frames(jnp.full((n,), identity_id), poses,
                           jnp.broadcast_to(exprs, (num_views,) + exprs.shape).reshape(n, -1), height, width, seed,
                           bodies)
    frames = jax.tree_util.tree_map(lambda a: a.reshape((num_views, num_frames) + a.shape[1:]), frames)
    frames.update({"head_pose": head, "view_pose": views})
    return frames

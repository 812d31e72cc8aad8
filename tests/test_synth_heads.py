"""SynthHeads: landmarks land on their rendered pixels, expressions keep the outline, seeds are deterministic."""

import jax
import numpy as np
import pytest

from dex_jax.data import synth_heads
from dex_jax.data.synth_face import EXPRESSION, LANDMARK_GROUPS, NUM_EXPRESSIONS, NUM_LANDMARKS
from dex_jax.data.synth_identity import FACE_PARTS, PART, identity_params
from dex_jax.data.synth_render import landmarks_3d
from dex_jax.geometry import compose, pose_from_params, rotation_from_euler

SIZE = 64
N = 8  # every render in this file has N frames of SIZE px, so the three stages compile once


def _params(ranges):
    return np.array([ranges[name] for name in synth_heads.POSE_NAMES])


@pytest.fixture(scope="module")
def batch():
    """N frames of identities 0..N-1 with random poses and expressions, eyes open, with canonical hit points."""
    k_pose, k_expr = jax.random.split(jax.random.PRNGKey(7))
    poses = synth_heads.sample_pose(k_pose, (N,))
    expr = synth_heads.sample_expression(k_expr, (N,))
    expr = expr.at[:, EXPRESSION["eye_close_left"]].set(0.0).at[:, EXPRESSION["eye_close_right"]].set(0.0)
    ids = np.arange(N)
    out = synth_heads.render_frames(ids, poses, expr, SIZE, SIZE, with_hit=True)
    return ids, np.asarray(poses), np.asarray(expr), jax.tree_util.tree_map(np.asarray, out)


def test_frame_arrays_have_the_documented_shapes(batch):
    _, _, _, out = batch
    assert out["image"].shape == (N, SIZE, SIZE, 3) and out["image"].dtype == np.uint8
    assert out["pose"].shape == (N, 6) and out["pose_matrix"].shape == (N, 3, 4)
    assert out["expression"].shape == (N, NUM_EXPRESSIONS) and out["identity"].shape == (N,)
    assert out["landmarks"].shape == (N, NUM_LANDMARKS, 2) and out["landmarks_visible"].dtype == bool
    assert out["face_box"].shape == (N, 4)
    assert out["face_mask"].shape == out["head_mask"].shape == (N, SIZE, SIZE)
    np.testing.assert_allclose(out["pose_matrix"], pose_from_params(*out["pose"].T), atol=1e-6)


def test_projected_3d_landmarks_land_on_the_pixels_that_show_them(batch):
    """At a landmark's projection the renderer saw that very 3D point.

    The canonical hit points of the 2x2 pixels around the continuous projection, bilinearly interpolated, give
    the surface point drawn there; where those pixels all show the face's skin (no silhouette or hairline in
    between) it must be the landmark, to a small fraction of one pixel's canonical size. A half-pixel offset
    or a 2% scale mismatch between renderer and landmarks moves the median to about half a pixel.
    """
    ids, poses, expr, out = batch
    errors = []
    all_points = np.asarray(jax.jit(jax.vmap(lambda i, e: landmarks_3d(identity_params(i), e)))(ids, expr))
    for i in range(N):
        points = all_points[i]
        footprint = 2.0 / (SIZE * poses[i, 5])
        for k in np.flatnonzero(out["landmarks_visible"][i]):
            col, row = out["landmarks"][i, k]
            c0, r0 = int(np.floor(col)), int(np.floor(row))
            assert 0 <= c0 < SIZE - 1 and 0 <= r0 < SIZE - 1, (i, k, col, row)
            if not np.isin(out["part"][i, r0:r0 + 2, c0:c0 + 2], FACE_PARTS).all():
                continue
            fc, fr = col - c0, row - r0
            hits = out["hit_point"][i, r0:r0 + 2, c0:c0 + 2]
            seen = ((1 - fr) * ((1 - fc) * hits[0, 0] + fc * hits[0, 1])
                    + fr * ((1 - fc) * hits[1, 0] + fc * hits[1, 1]))
            errors.append(np.linalg.norm(seen - points[k]) / footprint)
    errors = np.array(errors)
    assert len(errors) > N * NUM_LANDMARKS // 2
    assert np.median(errors) < 0.1 and np.percentile(errors, 90) < 0.25, np.percentile(errors, [50, 90, 100])


def test_nose_tip_landmark_projects_onto_the_nose(batch):
    _, _, _, out = batch
    k = LANDMARK_GROUPS["nose_tip"][0]
    nose = [PART[name] for name in ("nose_bridge", "nose_tip", "nose_wing_left", "nose_wing_right")]
    for i in range(N):
        col, row = np.round(out["landmarks"][i, k]).astype(int)
        assert np.isin(out["part"][i, row - 1:row + 2, col - 1:col + 2], nose).any(), i


def test_expression_changes_pixels_but_never_the_head_outline(batch):
    ids, poses, expr, out = batch
    other = synth_heads.sample_expression(jax.random.PRNGKey(99), (N,)).at[:, EXPRESSION["jaw_open"]].set(1.0)
    changed = synth_heads.render_frames(ids, poses, other, SIZE, SIZE, with_hit=True)
    changed = jax.tree_util.tree_map(np.asarray, changed)
    np.testing.assert_array_equal(changed["head_mask"], out["head_mask"])
    np.testing.assert_array_equal(changed["face_mask"], out["face_mask"])
    for i in range(N):
        assert (changed["image"][i] != out["image"][i]).any(axis=-1).sum() > 10, f"frame {i} did not change"


def test_same_seed_same_pixels_other_identity_or_seed_other_heads(batch):
    ids, poses, expr, out = batch
    again = synth_heads.render_frames(ids, poses, expr, SIZE, SIZE, with_hit=True)
    np.testing.assert_array_equal(np.asarray(again["image"]), out["image"])
    shifted = synth_heads.render_frames((ids + 1) % N + N, poses, expr, SIZE, SIZE, with_hit=True)
    reseeded = synth_heads.render_frames(ids, poses, expr, SIZE, SIZE, seed=1, with_hit=True)
    for other in (shifted, reseeded):
        assert all((np.asarray(other["image"][i]) != out["image"][i]).any() for i in range(N))
    a, b = identity_params(3), identity_params(4)
    assert not np.allclose(a["radii"], b["radii"]) and not np.allclose(a["skin"], b["skin"])
    np.testing.assert_array_equal(identity_params(3)["radii"], a["radii"])


def test_landmarks_inside_face_box_and_face_mask_inside_foreground(batch):
    _, _, _, out = batch
    for i in range(N):
        face, head = out["face_mask"][i], out["head_mask"][i]
        assert face.sum() > 0.1 * SIZE * SIZE and not (face & ~head).any()
        x0, y0, x1, y1 = out["face_box"][i]
        rows, cols = np.nonzero(face)
        assert (x0, y0, x1, y1) == (cols.min() - 0.5, rows.min() - 0.5, cols.max() + 0.5, rows.max() + 0.5)
        points = out["landmarks"][i][out["landmarks_visible"][i]]
        assert len(points) > 0
        assert (points[:, 0] >= x0).all() and (points[:, 0] <= x1).all(), i
        assert (points[:, 1] >= y0).all() and (points[:, 1] <= y1).all(), i


def test_samplers_respect_their_ranges():
    key = jax.random.PRNGKey(0)
    low, high = _params(synth_heads.POSE_RANGES).T
    poses = np.asarray(synth_heads.sample_pose(key, (2000,)))
    assert (poses >= low).all() and (poses <= high).all()
    assert (poses.min(0) < low + 0.05 * (high - low)).all() and (poses.max(0) > high - 0.05 * (high - low)).all()
    np.testing.assert_allclose(np.degrees(high[:3]), [45, 30, 30])
    np.testing.assert_allclose(np.degrees(low[:3]), [-45, -30, -30])
    signed = np.array([name in ("gaze_x", "gaze_y") for name in synth_heads.EXPRESSION_NAMES])
    for expr in (synth_heads.sample_expression(key, (500,)), synth_heads.expression_trajectory(key, 200)):
        expr = np.asarray(expr)
        assert (expr[:, ~signed] >= 0).all() and (expr[:, ~signed] <= 1).all()
        assert (expr[:, signed] >= -1).all() and (expr[:, signed] <= 1).all()
    keys = jax.random.split(jax.random.PRNGKey(1), 20)
    tracks = np.asarray(jax.vmap(lambda k: synth_heads.pose_trajectory(k, 100))(keys))
    assert (tracks >= low - 1e-6).all() and (tracks <= high + 1e-6).all()
    assert (np.abs(np.diff(tracks, axis=1)) < 0.05 * (high - low)).all(), "pose track is not smooth"

    def multiview(key):
        k_view, k_head = jax.random.split(key)
        head = synth_heads.pose_trajectory(k_head, 50, synth_heads.MULTIVIEW_HEAD_RANGES)
        return synth_heads.compose_view(synth_heads.sample_views(k_view, 4)[:, None], head[None])

    composed = np.asarray(jax.jit(jax.vmap(multiview))(keys))
    assert (composed >= low).all() and (composed <= high).all()


def test_euler_from_rotation_inverts_rotation_from_euler():
    angles = np.asarray(synth_heads.sample_pose(jax.random.PRNGKey(1), (50,)))[:, :3]
    recovered = synth_heads.euler_from_rotation(rotation_from_euler(*angles.T))
    np.testing.assert_allclose(np.stack(recovered, -1), angles, atol=1e-5)


def test_multiview_clip_views_share_expression_and_compose_with_the_head_pose():
    clip = synth_heads.sample_multiview_clip(jax.random.PRNGKey(5), 11, 2, N // 2, SIZE, SIZE)
    assert clip["image"].shape == (2, N // 2, SIZE, SIZE, 3)
    np.testing.assert_array_equal(clip["expression"][0], clip["expression"][1])
    assert not np.array_equal(np.asarray(clip["image"][0]), np.asarray(clip["image"][1]))
    head = pose_from_params(*clip["head_pose"].T)
    for v in range(2):
        expected = compose(pose_from_params(*clip["view_pose"][v]), head)
        np.testing.assert_allclose(clip["pose_matrix"][v][..., :3], expected[..., :3], atol=1e-5)
        np.testing.assert_allclose(clip["pose_matrix"][v][..., :2, 3], expected[..., :2, 3], atol=1e-6)


def test_bad_inputs_raise_value_errors():
    ids, poses, expr = np.zeros(2, int), np.zeros((2, 6)), np.zeros((2, NUM_EXPRESSIONS))
    with pytest.raises(ValueError, match="poses"):
        synth_heads.render_frames(ids, np.zeros((2, 5)), expr, SIZE, SIZE)
    with pytest.raises(ValueError, match="expressions"):
        synth_heads.render_frames(ids, poses, np.zeros((2, 3)), SIZE, SIZE)
    with pytest.raises(ValueError, match="identity_ids"):
        synth_heads.render_frames(np.zeros(3, int), poses, expr, SIZE, SIZE)
    with pytest.raises(ValueError, match="height and width"):
        synth_heads.render_frames(ids, poses, expr, 4, SIZE)

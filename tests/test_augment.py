"""Fig. 3 augmentations and face crops: masks cover the eye/mouth landmarks, crops centre the face."""

import cv2
import jax
import numpy as np
import pytest

from dex_jax.data import synth_heads
from dex_jax.data.augment import (ALIGN_TEMPLATE, expression_crop, expression_matrix, eyes_and_mouth, pose_input,
                                   region_mask, landmark_align_matrix)
from dex_jax.data.face_crop import crop_box, crop_matrix, transform_points, warp
from dex_jax.data.synth_face import REGIONS
from dex_jax.face.regions import masked_groups

SIZE = 64
GROUPS = masked_groups(REGIONS)


@pytest.fixture(scope="module")
def frames():
    """16 SynthHeads frames at 64 px with random poses and expressions (jaw open in half of them)."""
    k_pose, k_expr = jax.random.split(jax.random.PRNGKey(3))
    expr = synth_heads.sample_expression(k_expr, (16,)).at[::2, 0].set(1.0)
    out = synth_heads.render_frames(np.arange(16) % 5, synth_heads.sample_pose(k_pose, (16,)), expr, SIZE, SIZE)
    return jax.tree_util.tree_map(np.asarray, out)


def _covered(mask, points):
    cols, rows = np.round(points[:, 0]).astype(int), np.round(points[:, 1]).astype(int)
    inside = (cols >= 0) & (cols < mask.shape[1]) & (rows >= 0) & (rows < mask.shape[0])
    return mask[rows[inside], cols[inside]]


def test_pose_input_mask_covers_every_eye_and_mouth_landmark(frames):
    for i in range(16):
        image, points, box = frames["image"][i], frames["landmarks"][i], frames["face_box"][i]
        covered, mask = pose_input(image, points, GROUPS, box, 0.04, np.uint8(128))
        for group in GROUPS:
            assert _covered(mask, points[group]).all(), f"frame {i}: a landmark of {group} is not covered"
        assert (covered[mask] == 128).all() and (covered[~mask] == image[~mask]).all()
        face = frames["face_mask"][i]
        assert mask.sum() < 0.4 * face.sum(), f"frame {i}: the mask hides {mask.sum()} of {face.sum()} face pixels"


def test_region_mask_covers_points_even_without_dilation():
    rng = np.random.default_rng(0)
    for _ in range(20):
        points = rng.uniform(-3, 35, (6, 2))
        mask = region_mask(points, [range(6)], 32, 32, dilation=0.0)
        assert _covered(mask, points).all()
    line = np.array([[5.0, 5.0], [20.0, 5.0], [12.0, 5.0]])
    assert _covered(region_mask(line, [range(3)], 32, 32, 0.0), line).all()


def _box_centre(mask):
    rows, cols = np.nonzero(mask)
    return np.array([(cols.min() + cols.max()) / 2, (rows.min() + rows.max()) / 2])


def _centroid(mask):
    rows, cols = np.nonzero(mask)
    return np.array([cols.mean(), rows.mean()])


@pytest.mark.parametrize("degrees", [0.0, -25.0, 25.0])
def test_expression_crop_centres_the_face(frames, degrees):
    """Unrotated, the face box's centre lands on the crop centre; rotated, the face's centroid lands where the
    rotation about that centre puts it (a similarity keeps centroids), within a pixel either way."""
    out = 48
    for i in range(16):
        face = frames["face_mask"][i].astype(np.uint8) * 255
        crop = expression_crop(face, frames["face_box"][i], out, degrees) > 127
        if degrees == 0.0:
            error = np.abs(_box_centre(crop) - (out - 1) / 2).max()
        else:
            matrix = expression_matrix(frames["face_box"][i], out, degrees)
            expected = matrix[:2, :2] @ _centroid(face > 127) + matrix[:2, 2]
            error = np.abs(_centroid(crop) - expected).max()
        assert error <= 1.0, f"frame {i} at {degrees} deg: face {error:.2f} px from where it belongs"


def test_expression_rotation_is_counter_clockwise_on_screen():
    matrix = expression_matrix((0.0, 0.0, 20.0, 20.0), 40, degrees=30.0)
    a, b = transform_points(np.array([[10.0, 10.0], [15.0, 10.0]]), matrix)
    angle = np.degrees(np.arctan2(-(b[1] - a[1]), b[0] - a[0]))
    assert np.isclose(angle, 30.0, atol=1e-6)
    assert np.allclose(a, [(40 - 1) / 2] * 2)


def test_crop_box_follows_a_similarity_transform():
    rng = np.random.default_rng(1)
    points = rng.normal(0, 20, (30, 2)) + [100, 120]
    left, right, mouth = [0, 1, 2], [3, 4, 5], [6, 7, 8]
    points[left] = [[85, 100], [90, 98], [95, 100]]
    points[right] = [[105, 100], [110, 98], [115, 100]]
    points[mouth] = [[92, 140], [100, 143], [108, 140]]
    box0 = crop_box(points, left, right, mouth)
    for degrees, scale, shift in [(20, 1.2, (15, -8)), (-35, 0.7, (-30, 12))]:
        m = cv2.getRotationMatrix2D((100.0, 120.0), degrees, scale)
        m[:, 2] += shift
        box = crop_box(transform_points(points, m), left, right, mouth)
        assert np.allclose(box[:2], transform_points(box0[:2], m), atol=1e-6)
        assert np.isclose(box[2], box0[2] * scale)


def test_crop_matrix_maps_the_box_centre_to_the_crop_centre():
    image = np.zeros((300, 400, 3), np.uint8)
    cv2.circle(image, (250, 120), 30, (255, 255, 255), -1)
    box = np.array([250.0, 120.0, 120.0])
    crop = warp(image, crop_matrix(box, 64), 64)
    assert crop.shape == (64, 64, 3)
    assert np.abs(_box_centre(crop[..., 0] > 127) - 31.5).max() <= 0.5
    assert np.allclose(transform_points([250.0, 120.0], crop_matrix(box, 64)), 31.5)
    big_box = np.array([250.0, 120.0, 600.0])
    big = warp(image, crop_matrix(big_box, 64), 64)
    assert np.abs(_box_centre(big[..., 0] > 127) - 31.5).max() <= 1.0


def test_landmark_align_matrix_recovers_a_similarity_and_levels_the_eyes():
    rng = np.random.default_rng(2)
    for _ in range(5):
        source = rng.normal(0, 10, (4, 2))
        m = cv2.getRotationMatrix2D((3.0, -2.0), rng.uniform(-60, 60), rng.uniform(0.5, 2.0))
        m[:, 2] += rng.normal(0, 10, 2)
        assert np.allclose(landmark_align_matrix(source, transform_points(source, m)), m, atol=1e-9)
        template = ALIGN_TEMPLATE * 64
        face = transform_points(template + rng.normal(0, 2, (4, 2)), m)
        moved = transform_points(face, landmark_align_matrix(face, template))
        assert np.isclose(moved[0, 1], moved[1, 1]) and moved[0, 0] < moved[1, 0]
    with pytest.raises(ValueError, match="coincide"):
        landmark_align_matrix(np.ones((4, 2)), ALIGN_TEMPLATE)
    with pytest.raises(ValueError, match="not a face"):
        landmark_align_matrix(ALIGN_TEMPLATE[[0, 1, 3, 2]] * [1, -1] + [0, 2], ALIGN_TEMPLATE)


def _aligned(image, points, out, degrees=0.0):
    return expression_crop(image, None, out, degrees, align="landmarks", landmarks=points, groups=GROUPS)


def test_landmark_aligned_crop_undoes_a_rotation_scale_and_shift_of_the_frame(frames):
    """A frame turned 25 degrees on screen, scaled and shifted gives the same aligned crop as the frame itself,
    where the box crop turns with it."""
    out = 48
    for i in range(0, 16, 3):
        image, points, box = frames["image"][i], frames["landmarks"][i][:, :2], frames["face_box"][i]
        m = cv2.getRotationMatrix2D((SIZE / 2, SIZE / 2), 25.0, 1.2)
        m[:, 2] += (3.0, -2.0)
        moved = cv2.warpAffine(image, m, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        moved_points = transform_points(points, m)
        moved_box = np.concatenate([moved_points.min(0), moved_points.max(0)])
        aligned = np.abs(_aligned(image, points, out).astype(float) - _aligned(moved, moved_points, out)).mean()
        boxed = np.abs(expression_crop(image, box, out).astype(float) - expression_crop(moved, moved_box, out)).mean()
        assert aligned < 0.4 * boxed, f"frame {i}: aligned crops differ by {aligned:.1f}, box crops by {boxed:.1f}"


def test_landmark_aligned_crop_puts_eyes_and_mouth_at_the_template_over_the_pose_range(frames):
    """Eye centres and mouth corners land nearer ALIGN_TEMPLATE than in the box crop, the eye line level;
    the scheme's left/right naming does not matter."""
    out = 64
    template = ALIGN_TEMPLATE * out - 0.5
    for i in range(16):
        points, box = frames["landmarks"][i], frames["face_box"][i]
        matrix = expression_matrix(box, out, align="landmarks", landmarks=points, groups=GROUPS)
        swapped = expression_matrix(box, out, align="landmarks", landmarks=points, groups=[GROUPS[1], GROUPS[0],
                                                                                            GROUPS[2]])
        assert np.allclose(matrix, swapped)
        aligned = transform_points(eyes_and_mouth(points, GROUPS), matrix)
        boxed = transform_points(eyes_and_mouth(points, GROUPS), expression_matrix(box, out))
        assert np.abs(aligned - template).mean() < np.abs(boxed - template).mean() + 1e-9, f"frame {i}"
        assert np.isclose(aligned[0, 1], aligned[1, 1]), f"frame {i}: eye line not level"


def test_landmark_aligned_rotation_turns_the_crop_about_its_centre(frames):
    points, out = frames["landmarks"][0], 40
    level = expression_matrix(None, out, 0.0, align="landmarks", landmarks=points, groups=GROUPS)
    turned = expression_matrix(None, out, 30.0, align="landmarks", landmarks=points, groups=GROUPS)
    rotation = cv2.getRotationMatrix2D(((out - 1) / 2, (out - 1) / 2), 30.0, 1.0)
    assert np.allclose(turned, rotation @ np.vstack([level, [0, 0, 1]]))
    with pytest.raises(ValueError, match="expression_align"):
        expression_matrix(None, out, align="eyes")
    with pytest.raises(ValueError, match="landmarks"):
        expression_matrix(None, out, align="landmarks")

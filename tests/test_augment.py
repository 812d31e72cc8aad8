"""Fig. 3 augmentations and face crops: masks cover the eye/mouth landmarks, crops centre the face."""

import cv2
import jax
import numpy as np
import pytest

from dex_jax.data import synth_heads
from dex_jax.data.augment import expression_crop, expression_matrix, pose_input, region_mask
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

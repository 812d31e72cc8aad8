"""AED / APD definitions, the MediaPipe landmarker wrapper, and the astronaut real-image checks."""

import hashlib

import cv2
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
from scipy.spatial.transform import Rotation

from dex_jax.evaluate import clu_metrics
from dex_jax.evaluate.pose_expression_metrics import expression_distance, pose_distance
from dex_jax.face.head_pose import head_pose_degrees
from dex_jax.face.landmarker import (
    FACE_LANDMARKER_SHA256,
    NUM_BLENDSHAPES,
    NUM_LANDMARKS,
    FaceLandmarker,
    default_model_path,
    observe_frames,
    read_verified_model,
)

ROLLS = (-20.0, -10.0, -5.0, 5.0, 10.0, 20.0)
PAD = 64


def _transform(yaw, pitch, roll, scale=1.0):
    """A 4x4 pose matrix R = Rz(roll) Ry(yaw) Rx(pitch) (degrees), scaled, with some translation."""
    matrix = np.eye(4)
    matrix[:3, :3] = scale * Rotation.from_euler("ZYX", [roll, yaw, pitch], degrees=True).as_matrix()
    matrix[:3, 3] = (3.0, -2.0, -60.0)
    return matrix


def test_head_pose_recovers_euler_angles():
    angles = np.array([[10.0, -20.0, 30.0], [-45.0, 5.0, -170.0], [0.0, 0.0, 0.0], [80.0, 30.0, 15.0]])
    matrices = np.stack([_transform(*a, scale=s) for a, s in zip(angles, (1.0, 0.9, 1.1, 1.0))])
    np.testing.assert_allclose(np.asarray(head_pose_degrees(matrices)), angles, atol=1e-3)


def test_distances_follow_their_definitions():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0, 1, (3, NUM_BLENDSHAPES)), rng.uniform(0, 1, (3, NUM_BLENDSHAPES))
    np.testing.assert_allclose(np.asarray(expression_distance(a, b)), np.abs(a - b).mean(axis=1), rtol=1e-5)
    pose = np.array([[179.0, 10.0, -5.0]])
    other = np.array([[-179.0, 4.0, 7.0]])
    np.testing.assert_allclose(np.asarray(pose_distance(pose, other)), [(2.0 + 6.0 + 12.0) / 3], rtol=1e-5)
    with pytest.raises(ValueError, match="blendshape"):
        expression_distance(a[:, :51], b[:, :51])
    with pytest.raises(ValueError, match="yaw, pitch, roll"):
        pose_distance(pose, other[:, :2])


def test_face_metrics_count_frames_without_a_face():
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0, 1, (5, NUM_BLENDSHAPES)), rng.uniform(0, 1, (5, NUM_BLENDSHAPES))
    found = np.array([True, False, True, True, False])
    mask = np.array([True, True, True, False, False])
    stats = clu_metrics.AED.from_model_output(a, b, found, mask=mask).compute()
    assert int(stats["count"]) == 2 and int(stats["no_face"]) == 1
    np.testing.assert_allclose(stats["mean"], np.abs(a - b).mean(axis=1)[[0, 2]].mean(), rtol=1e-5)
    merged = clu_metrics.AED.empty().merge(clu_metrics.AED.from_model_output(a, b, found))
    assert int(merged.compute()["count"]) == 3 and int(merged.compute()["no_face"]) == 2
    none = clu_metrics.APD.from_model_output(np.zeros((2, 3)), np.zeros((2, 3)), np.zeros(2, bool)).compute()
    assert int(none["count"]) == 0 and int(none["no_face"]) == 2 and np.isnan(none["mean"])


def test_model_file_is_verified(tmp_path):
    path = default_model_path()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == FACE_LANDMARKER_SHA256
    tampered = tmp_path / "face_landmarker.task"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    tampered.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256"):
        read_verified_model(tampered)
    with pytest.raises(ValueError, match="SHA-256"):
        FaceLandmarker(model_path=tampered)


@pytest.fixture(scope="module")
def astronaut_observations():
    """Landmarker outputs: the padded astronaut (twice), its rotations about the face centre, a faceless frame."""
    image = cv2.copyMakeBorder(skimage.data.astronaut(), PAD, PAD, PAD, PAD, cv2.BORDER_CONSTANT, value=0)
    with FaceLandmarker() as landmarker:
        face = landmarker.detect(image)
        centre = tuple(float(c) for c in face.landmarks[:, :2].mean(axis=0))
        frames = [image, image.copy()]
        for angle in ROLLS:  # cv2: positive angles rotate the picture counter-clockwise
            warp = cv2.getRotationMatrix2D(centre, angle, 1.0)
            frames.append(cv2.warpAffine(image, warp, image.shape[1::-1], flags=cv2.INTER_LINEAR, borderValue=0))
        frames.append(np.full_like(image, 127))
        with pytest.raises(ValueError, match="uint8 RGB"):
            landmarker.detect(image.astype(np.float32))
        return observe_frames(landmarker, frames)


def test_landmarker_outputs(astronaut_observations):
    obs = astronaut_observations
    assert obs["found"].tolist() == [True] * (2 + len(ROLLS)) + [False]
    assert obs["blendshapes"].shape == (len(obs["found"]), NUM_BLENDSHAPES)
    assert obs["landmarks"].shape == (len(obs["found"]), NUM_LANDMARKS, 3)
    nose = obs["landmarks"][0, 1, :2]  # the astronaut's nose tip, in pixels of the padded image
    assert 200 + PAD < nose[0] < 250 + PAD and 110 + PAD < nose[1] < 150 + PAD
    assert not obs["blendshapes"][-1].any()


def test_astronaut_aed_with_itself_is_zero(astronaut_observations):
    obs = astronaut_observations
    stats = clu_metrics.AED.from_model_output(obs["blendshapes"][:1], obs["blendshapes"][1:2], obs["found"][:1])
    assert float(stats.compute()["mean"]) == 0.0 and int(stats.compute()["count"]) == 1


def test_astronaut_apd_recovers_in_plane_rotations(astronaut_observations):
    obs = astronaut_observations
    rotated = obs["head_pose"][2:2 + len(ROLLS)]
    upright = np.repeat(obs["head_pose"][:1], len(ROLLS), axis=0)
    change = rotated - upright
    print("\nupright (yaw, pitch, roll):", np.round(obs["head_pose"][0], 2))
    for angle, delta, apd in zip(ROLLS, change, np.asarray(pose_distance(rotated, upright))):
        print(f"rotation {angle:+5.1f}: roll change {delta[2]:+7.2f}, yaw {delta[0]:+5.2f}, "
              f"pitch {delta[1]:+5.2f}, APD {apd:.2f} deg")
    np.testing.assert_allclose(change[:, 2], ROLLS, atol=2.0)
    assert np.all(np.abs(change[:, :2]) < 3.0)
    found = jnp.asarray(obs["found"][2:2 + len(ROLLS)])
    stats = clu_metrics.APD.from_model_output(rotated, upright, found).compute()
    expected = np.mean(np.abs(ROLLS)) / 3
    assert abs(float(stats["mean"]) - expected) < 2.0 and int(stats["count"]) == len(ROLLS)

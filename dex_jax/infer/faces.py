"""Faces of a source photo, small ones included, largest first; the photo size limits.

MediaPipe's landmarker finds faces with its short-range detector, which sees the whole picture at 128x128 and
misses a face that is small in it. `find_faces` looks at the whole photo, then at overlapping windows of 1/2 and
1/4 of its longer side (stride half a window, each shrunk to at most WINDOW_PIXELS; at most 59 landmarker calls):
a face of 1/16 of the longer side (64 px in a 1024x1024 photo) is a quarter of a window at the finest scale,
where the detector finds it. In a window, a face whose landmarks reach the window's border is cut and left to
another window; a face seen several times is kept once (the centre of its landmarks' box inside the box of one
already kept, coarser scales first). Each face's landmarks are then measured again on its own crop
(`paste_back.crop`, CROP_SIZE pixels), so they come from the photo's full resolution. Faces are sorted by the size
of their crop box, largest first.
"""

import numpy as np

from dex_jax.data.face_crop import CROP_SIZE, crop_matrix
from dex_jax.image import resize
from dex_jax.infer.paste_back import crop, face_box

MAX_FACES = 8
WINDOW_PIXELS = 1024
SCALES = (1, 2, 4)  # windows of the longer side / each
EDGE = 2  # pixels: a face whose landmarks come this close to a window's border is cut by it
MIN_SIDE, MAX_SIDE = 32, 8192


def check_photo_size(image, what):
    """ValueError unless both sides of `image` are in [MIN_SIDE, MAX_SIDE] pixels."""
    h, w = image.shape[:2]
    if min(h, w) < MIN_SIDE or max(h, w) > MAX_SIDE:
        raise ValueError(f"the {what} is {w}x{h} pixels; each side must be {MIN_SIDE} to {MAX_SIDE} pixels")


def _starts(length, window):
    if length <= window:
        return [0]
    stride = window // 2
    starts = list(range(0, length - window + 1, stride))
    return starts if starts[-1] == length - window else starts + [length - window]


def _windows(height, width, divisor):
    """(x0, y0, x1, y1) windows of side longer / divisor (the image's extent where it is shorter)."""
    side = max(height, width) // divisor
    return [(x, y, min(x + side, width), min(y + side, height))
            for y in _starts(height, side) for x in _starts(width, side)]


def _faces_in(landmarker, image, window):
    """Landmarks (478, 2) in image pixels of every face MediaPipe finds whole in `window` of `image`."""
    x0, y0, x1, y1 = window
    part = image[y0:y1, x0:x1]
    factor = min(1.0, WINDOW_PIXELS / max(part.shape[:2]))
    if factor < 1:
        part = resize(part, max(1, round(part.shape[0] * factor)), max(1, round(part.shape[1] * factor)))
    fx, fy = part.shape[1] / (x1 - x0), part.shape[0] / (y1 - y0)
    whole = (x0, y0, x1, y1) == (0, 0, image.shape[1], image.shape[0])
    faces = [(face.landmarks[:, :2] + 0.5) / (fx, fy) - 0.5 + (x0, y0) for face in landmarker.detect_all(part)]
    return [points for points in faces if whole or (
        points.min(0) > (x0 + EDGE, y0 + EDGE)).all() and (points.max(0) < (x1 - 1 - EDGE, y1 - 1 - EDGE)).all()]


def _box(points):
    return np.concatenate([points.min(0), points.max(0)])


def _remeasured(landmarker, image, points):
    """The landmarks of the face at `points`, found again on its own crop; `points` if the crop shows none."""
    box = face_box(points)
    faces = landmarker.detect_all(crop(image, box))
    if not faces:
        return points
    centre = (CROP_SIZE - 1) / 2
    nearest = min(faces, key=lambda f: np.linalg.norm(f.landmarks[:, :2].mean(0) - centre))
    inverse = np.linalg.inv(np.vstack([crop_matrix(box, CROP_SIZE), [0, 0, 1]]))[:2]
    return nearest.landmarks[:, :2] @ inverse[:, :2].T + inverse[:, 2]


def find_faces(landmarker, image):
    """Landmarks (478, 2) in pixels of each face of an (H, W, 3) uint8 photo, largest first (module docstring);
    `landmarker` is a FaceLandmarker that reports up to MAX_FACES faces."""
    height, width = image.shape[:2]
    found = []
    for divisor in SCALES:
        for window in _windows(height, width, divisor):
            for points in _faces_in(landmarker, image, window):
                centre = (points.min(0) + points.max(0)) / 2
                if not any(b[0] <= centre[0] <= b[2] and b[1] <= centre[1] <= b[3] for b in map(_box, found)):
                    found.append(points)
    faces = [_remeasured(landmarker, image, points) for points in found]
    return sorted(faces, key=lambda points: (-face_box(points)[2], points[:, 0].mean()))

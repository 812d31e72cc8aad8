"""LivePortrait-style square face crops: centre and size from 2D landmarks, independent of roll, resized to 512.

As in LivePortrait's cropper, the face's own axes come from the eye centres and the mouth centre (y from the
eyes' midpoint towards the mouth, x perpendicular), and the centre of the landmarks' bounding box in those axes,
moved by `vy_ratio * size` along the face's y (negative: towards the forehead), is the crop centre. The size
is `scale` times the landmarks' standard deviation along the face's y rather than LivePortrait's longest box
side: the spread of all points varies less from frame to frame than the extreme points do (on the astronaut
clip of tests/test_astronaut_video.py, +-1.8% against +-4%), and turning the head (yaw) barely changes it.
Unlike LivePortrait's source crops the crop stays axis-aligned, so the head's roll stays in the data for the
pose encoder to learn. Points are continuous pixel coordinates (x, y) with pixel centres at integers
(OpenCV's convention); a crop of `out` pixels maps the box centre to ((out - 1) / 2, (out - 1) / 2).
"""

import cv2
import numpy as np

CROP_SIZE = 512
# MediaPipe's 478-point mesh (forehead to chin) is about 4.6 standard deviations tall, so the crop is about
# 2.2 times the mesh's height: the whole head with its hair, the neck and the top of the shoulders.
CROP_SCALE = 10.0
CROP_VY_RATIO = -0.08


def face_axes(points, left_eye, right_eye, mouth):
    """Unit vectors (x, y) of the face in the image: y from the eyes' midpoint to the mouth centre."""
    eyes = 0.5 * (points[left_eye].mean(0) + points[right_eye].mean(0))
    down = points[mouth].mean(0) - eyes
    length = np.linalg.norm(down)
    uy = down / length if length > 1e-6 else np.array([0.0, 1.0])
    return np.array([uy[1], -uy[0]]), uy


def crop_box(points, left_eye, right_eye, mouth, scale=CROP_SCALE, vy_ratio=CROP_VY_RATIO):
    """(cx, cy, size) of the square crop, in the points' pixel frame; the index lists pick the eyes and mouth."""
    points = np.asarray(points, np.float64)[:, :2]
    ux, uy = face_axes(points, left_eye, right_eye, mouth)
    centre0 = points.mean(0)
    local = (points - centre0) @ np.stack([ux, uy]).T
    low, high = local.min(0), local.max(0)
    mid = 0.5 * (low + high)
    size = float(local[:, 1].std() * scale)
    centre = centre0 + ux * mid[0] + uy * (mid[1] + vy_ratio * size)
    return np.array([centre[0], centre[1], size])


def crop_matrix(box, out_size=CROP_SIZE):
    """2x3 affine matrix from the frame to the crop of `box` = (cx, cy, size) resized to out_size."""
    cx, cy, size = box
    s = out_size / size
    half = (out_size - 1) / 2
    return np.array([[s, 0.0, half - s * cx], [0.0, s, half - s * cy]])


def transform_points(points, matrix):
    """Apply a 2x3 affine matrix to (..., 2) points."""
    points = np.asarray(points, np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def warp(image, matrix, out_size, border=cv2.BORDER_CONSTANT):
    """`image` resampled by the 2x3 frame-to-output `matrix` into out_size x out_size.

    Strong shrinking first averages whole pixel blocks (INTER_AREA) so the bilinear warp does not alias.
    """
    shrink = int(1.0 / np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    if shrink >= 2 and min(image.shape[:2]) >= shrink:
        h, w = (n // shrink for n in image.shape[:2])
        image = cv2.resize(image[: h * shrink, : w * shrink], (w, h), interpolation=cv2.INTER_AREA)
        to_small = np.array([[1 / shrink, 0, 0.5 / shrink - 0.5], [0, 1 / shrink, 0.5 / shrink - 0.5], [0, 0, 1]])
        matrix = matrix @ np.linalg.inv(to_small)
    return cv2.warpAffine(image, matrix.astype(np.float64), (out_size, out_size), flags=cv2.INTER_LINEAR,
                          borderMode=border)

"""Fig. 3 augmentations: the pose input hides the eyes and mouth; the expression input is a rotated face crop.

Pose input: the driving image with the convex hull of each landmark group (left eye, right eye, mouth) filled,
dilated by a fraction of the face size, so most expression information is gone but the head is intact.
Expression input: the driving image rotated by a random angle about the face-box centre (or, in multi-view
data, another camera's view of the same instant), then the square around the face box resized to a fixed
size (224 in the paper), which removes the head's translation and scale (`align="box"`, the paper's). Ours, as
an option (`align="landmarks"`): the similarity transform (rotation, uniform scale, shift) that levels the eye
line and best puts the two eye centres and the two mouth corners where ALIGN_TEMPLATE places them, then the same
random rotation about the crop centre; it also removes the head's roll and keeps the eyes and mouth in place over
the pose range (docs/experiments/learnability.md). Points and boxes are pixel coordinates with pixel centres at
integers; images are numpy arrays (any dtype OpenCV warps).
"""

import cv2
import numpy as np

from dex_jax.data.face_crop import crop_matrix, warp

EXPRESSION_ALIGNMENTS = ("box", "landmarks")
# Eye centres (image-left first) and mouth corners (likewise) of a landmark-aligned expression crop, as fractions of
# its side (x right, y down) at box_scale 1: their mean over box crops of frontal SynthHeads heads, rounded (ours).
ALIGN_TEMPLATE = np.array([[0.35, 0.44], [0.65, 0.44], [0.38, 0.78], [0.62, 0.78]])


def region_mask(landmarks, groups, height, width, dilation):
    """(H, W) bool: the convex hull of each group of landmark indices, dilated by `dilation` pixels (>= 1)."""
    mask = np.zeros((height, width), np.uint8)
    points = np.asarray(landmarks, np.float64)[:, :2]
    for group in groups:
        hull = cv2.convexHull(np.round(points[list(group)] * 16).astype(np.int32))
        cv2.fillConvexPoly(mask, hull, 1, lineType=cv2.LINE_8, shift=4)
    radius = max(1, int(round(dilation)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(mask, kernel) > 0


def face_size(face_box):
    """The longer side of a face box (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = face_box
    return max(x1 - x0, y1 - y0)


def pose_input(image, landmarks, groups, face_box, dilation_ratio, fill):
    """The image with every landmark group's hull (dilated by dilation_ratio * face size) set to `fill`.

    Returns (covered image, mask (H, W) bool).
    """
    height, width = image.shape[:2]
    mask = region_mask(landmarks, groups, height, width, dilation_ratio * face_size(face_box))
    return np.where(mask[..., None], np.asarray(fill, image.dtype), image), mask


def face_square(face_box, box_scale=1.0):
    """(cx, cy, size): the square around a face box, its longer side times box_scale."""
    x0, y0, x1, y1 = face_box
    return np.array([(x0 + x1) / 2, (y0 + y1) / 2, face_size(face_box) * box_scale])


def _farthest_pair(points):
    distances = ((points[:, None] - points[None]) ** 2).sum(-1)
    i, j = np.unravel_index(np.argmax(distances), distances.shape)
    return points[i], points[j]


def eyes_and_mouth(landmarks, groups):
    """(4, 2): the two eye centres (each the midpoint of its group's two farthest points, the eye corners) and the
    two mouth corners (the mouth group's two farthest points), each pair ordered along the line from one eye centre
    to the other, image-left first whatever the scheme calls left. `groups`: left eye, right eye, mouth indices."""
    points = np.asarray(landmarks, np.float64)[:, :2]
    eyes = np.array([np.mean(_farthest_pair(points[list(group)]), 0) for group in groups[:2]])
    eyes = eyes[np.argsort(eyes[:, 0])]
    axis = eyes[1] - eyes[0]
    mouth = np.array(_farthest_pair(points[list(groups[2])]))
    return np.concatenate([eyes, mouth[np.argsort(mouth @ axis)]])


def landmark_align_matrix(points, target):
    """2x3 similarity taking the (4, 2) `eyes_and_mouth` points towards `target`'s: the rotation that makes the
    eye line parallel to the target's, then the least-squares uniform scale and shift of all four points (so the
    eyes stay level at any yaw and pitch, where a free least-squares rotation tilts them). Raises ValueError when
    the eye centres coincide or the mouth sits on the wrong side of the eyes."""
    points, target = np.asarray(points, np.float64), np.asarray(target, np.float64)
    eye, eye_target = points[1] - points[0], target[1] - target[0]
    if np.hypot(*eye) < 1e-6:
        raise ValueError("cannot align the expression crop: its eye centres coincide")
    angle = np.arctan2(eye_target[1], eye_target[0]) - np.arctan2(eye[1], eye[0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    turned = points @ rotation.T
    a0, b0 = turned - turned.mean(0), target - target.mean(0)
    scale = (a0 * b0).sum() / (a0 * a0).sum()
    if scale <= 0:
        raise ValueError("cannot align the expression crop: its eye and mouth landmarks are not a face's")
    return np.hstack([scale * rotation, (target.mean(0) - scale * turned.mean(0))[:, None]])


def expression_matrix(face_box, out_size, degrees=0.0, box_scale=1.0, align="box", landmarks=None, groups=None):
    """2x3 matrix from the frame to the expression crop (module docstring), rotated by `degrees`
    (counter-clockwise on screen) about the face centre. `align="landmarks"` needs the frame's `landmarks` and
    the eyes' and mouth's index `groups`; a larger box_scale shows more around the face either way."""
    if align == "box":
        box = face_square(face_box, box_scale)
        rotation = np.vstack([cv2.getRotationMatrix2D((float(box[0]), float(box[1])), float(degrees), 1.0),
                              [0.0, 0.0, 1.0]])
        return crop_matrix(box, out_size) @ rotation
    if align != "landmarks":
        raise ValueError(f"expression_align must be one of {EXPRESSION_ALIGNMENTS}, got {align!r}")
    if landmarks is None or groups is None:
        raise ValueError("expression_align 'landmarks' needs the frame's landmarks and the eye and mouth groups")
    target = (0.5 + (ALIGN_TEMPLATE - 0.5) / box_scale) * out_size - 0.5
    centre = (out_size - 1) / 2
    rotation = cv2.getRotationMatrix2D((centre, centre), float(degrees), 1.0)
    return rotation @ np.vstack([landmark_align_matrix(eyes_and_mouth(landmarks, groups), target), [0.0, 0.0, 1.0]])


def expression_crop(image, face_box, out_size, degrees=0.0, box_scale=1.0, align="box", landmarks=None,
                    groups=None):
    """The expression input: `image` warped by `expression_matrix` (same arguments) to out_size x out_size."""
    return warp(image, expression_matrix(face_box, out_size, degrees, box_scale, align, landmarks, groups), out_size,
                border=cv2.BORDER_REFLECT_101)

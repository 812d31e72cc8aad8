"""Fig. 3 augmentations: the pose input hides the eyes and mouth; the expression input is a rotated face crop.

Pose input: the driving image with the convex hull of each landmark group (left eye, right eye, mouth) filled,
dilated by a fraction of the face size, so most expression information is gone but the head is intact.
Expression input: the driving image rotated by a random angle about the face-box centre (or, in multi-view
data, another camera's view of the same instant), then the square around the face box resized to a fixed
size (224 in the paper), which removes the head's translation and scale. Points and boxes are pixel
coordinates with pixel centres at integers; images are numpy arrays (any dtype OpenCV warps).
"""

import cv2
import numpy as np

from dex_jax.data.face_crop import crop_matrix, warp


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


def expression_matrix(face_box, out_size, degrees=0.0, box_scale=1.0):
    """2x3 matrix: rotate by `degrees` (counter-clockwise on screen) about the face-box centre, then crop."""
    box = face_square(face_box, box_scale)
    rotation = np.vstack([cv2.getRotationMatrix2D((float(box[0]), float(box[1])), float(degrees), 1.0),
                          [0.0, 0.0, 1.0]])
    return crop_matrix(box, out_size) @ rotation


def expression_crop(image, face_box, out_size, degrees=0.0, box_scale=1.0):
    """The expression input: `image` rotated about the face-box centre, cropped to the face square, resized."""
    return warp(image, expression_matrix(face_box, out_size, degrees, box_scale), out_size,
                border=cv2.BORDER_REFLECT_101)

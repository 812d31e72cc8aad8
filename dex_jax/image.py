"""Image range and dtype conversions: uint8 RGB at the edges, float32 in [-1, 1] inside the models.

`to_float` and `to_uint8` are exact inverses on uint8 input. `to_float` keeps the array's kind (numpy in,
numpy out; a jax array stays on its device); `to_uint8` returns numpy.
"""

import cv2
import numpy as np


def to_float(images):
    """uint8 images (any shape) -> float32 in [-1, 1]: x / 127.5 - 1."""
    if not hasattr(images, "astype"):
        images = np.asarray(images)
    return images.astype(np.float32) / 127.5 - 1.0


def to_uint8(images):
    """Float images in [-1, 1] -> numpy uint8 in [0, 255], rounded and clipped."""
    return np.clip(np.round((np.asarray(images, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def resize(image, height, width):
    """One (H, W, C) uint8 image resized (area averaging when shrinking, bilinear when growing)."""
    if image.shape[:2] == (height, width):
        return image
    interpolation = cv2.INTER_AREA if image.shape[0] > height else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation).reshape(height, width, -1)


def to_model(image, size):
    """uint8 (H, W, C) -> float32 (size, size, C) in [-1, 1]: resized, then `to_float`."""
    return to_float(resize(image, size, size))

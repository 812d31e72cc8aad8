"""Whether a source photo looks like a SynthHeads render, so that a model trained on SynthHeads only can say when
it is shown something else.

The rule: take the data builder's crop of the face (`paste_back.crop`) at RENDER_CHECK_SIZE pixels, make it grey,
and measure the absolute 3x3 Laplacian inside the face oval (MediaPipe's face_oval hull, eroded by 2 pixels).
SynthHeads' shading is smooth, so the median is at most MAX_RENDER_LAPLACIAN grey levels on its renders (2-3 on
the bundled demo source and clips, also as JPEG or resized); skin texture and camera noise give more (5 to 14 on
skimage's astronaut at 128 to 2048 px). A real photo that is very smooth (heavily blurred) can pass as a render.
"""

import cv2
import numpy as np

from dex_jax.face.regions import MEDIAPIPE_REGIONS
from dex_jax.infer.paste_back import crop, crop_points, face_box

RENDER_CHECK_SIZE = 128
MAX_RENDER_LAPLACIAN = 4.0


def face_laplacian(image, points):
    """The median absolute Laplacian (grey levels) inside the face oval of the face at landmarks `points`."""
    box = face_box(points)
    grey = cv2.cvtColor(crop(image, box, RENDER_CHECK_SIZE), cv2.COLOR_RGB2GRAY).astype(np.float32)
    oval = crop_points(points, box, RENDER_CHECK_SIZE)[MEDIAPIPE_REGIONS["face_oval"]]
    mask = np.zeros(grey.shape, np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(oval).astype(np.int32)), 1)
    mask = cv2.erode(mask, np.ones((5, 5), np.uint8))
    values = np.abs(cv2.Laplacian(grey, cv2.CV_32F))[mask > 0]
    return float(np.median(values)) if values.size else 0.0


def looks_rendered(image, points):
    """Whether the face at landmarks `points` in `image` looks like a SynthHeads render (module docstring)."""
    return face_laplacian(image, points) <= MAX_RENDER_LAPLACIAN

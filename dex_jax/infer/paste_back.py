"""Face crop and paste-back geometry of inference: the data builder's crop, smoothed over time for video, and the
feathered paste of a generated crop back into the full-resolution frame.

Crop: `face_box(points, framing)` is `data.face_crop.crop_box` on MediaPipe's eye and mouth groups with the
framing of the data the model trained on (`training_framing`): PORTRAIT_VIDEOS, the parameters `data build
portrait_videos` crops with (CROP_SCALE, CROP_VY_RATIO), or SYNTH_HEADS, the same crop scaled and shifted so that
on SynthHeads renders (whole frames, never cropped) the box matches the render's own frame, measured on 96
renders of held-out identities at 256x256 (`tests/test_paste_back.py` checks it). `crop(frame, box)` resamples the box to
CROP_SIZE x CROP_SIZE as that builder does (`face_crop.warp`, black outside the frame); the model's input is this
crop resized to its image size, as the training pipeline resizes the builder's crops. Boxes are (cx, cy, size) in
frame pixels, crops axis-aligned (the head's roll stays in the picture, as in training).

Paste-back: the crop mask is 1 inside the crop square and falls linearly to 0 at its border over FEATHER of its
side; out = m * result + (1 - m) * frame, with the result resampled onto the box. Only the pixels of the box are
computed: every frame pixel where m = 0 (outside the box, or outside the frame) keeps the frame's value exactly,
and the output has the frame's size whatever its aspect ratio.
"""

import dataclasses
from pathlib import Path

import cv2
import numpy as np

from dex_jax.data.face_crop import CROP_SCALE, CROP_SIZE, CROP_VY_RATIO, crop_box, crop_matrix, transform_points, warp
from dex_jax.face.regions import MEDIAPIPE_REGIONS, masked_groups

FEATHER = 0.1  # the mask's linear ramp, a fraction of the crop's side
BOX_SMOOTHING = 2.0  # standard deviation, in frames, of the Gaussian that smooths a video's crop boxes
EYES_AND_MOUTH = masked_groups(MEDIAPIPE_REGIONS)
# The portrait_videos crop scaled by the median ratio of the render's side to that crop's side on SynthHeads
# renders, and moved down by the median offset of the render's centre from that crop's centre
SYNTH_HEADS_SCALE = CROP_SCALE * 0.918
SYNTH_HEADS_VY_RATIO = -0.036


@dataclasses.dataclass(frozen=True)
class Framing:
    """How large a face's crop box is and where it sits: `face_crop.crop_box`'s scale and vy_ratio."""

    scale: float
    vy_ratio: float


PORTRAIT_VIDEOS = Framing(CROP_SCALE, CROP_VY_RATIO)
SYNTH_HEADS = Framing(SYNTH_HEADS_SCALE, SYNTH_HEADS_VY_RATIO)


def training_framing(data_config):
    """The Framing of the data a model's config trained on: SYNTH_HEADS for a synth_heads dataset, else
    PORTRAIT_VIDEOS."""
    return SYNTH_HEADS if "synth_heads" in Path(data_config.get("dataset_dir") or "").parts else PORTRAIT_VIDEOS


def face_box(points, framing=PORTRAIT_VIDEOS):
    """(cx, cy, size) of the crop around MediaPipe's (478, 2+) landmarks in frame pixels, framed as `framing`."""
    return crop_box(np.asarray(points)[:, :2], *EYES_AND_MOUTH, framing.scale, framing.vy_ratio)


def crop(frame, box, size=CROP_SIZE):
    """The (size, size, 3) crop of `box` from an (H, W, 3) frame (black where the box leaves the frame)."""
    return warp(frame, crop_matrix(box, size), size)


def crop_points(points, box, size=CROP_SIZE):
    """(N, 2) frame-pixel points in the pixels of the size x size crop of `box`."""
    return transform_points(np.asarray(points)[:, :2], crop_matrix(box, size))


def smooth_boxes(boxes, sigma=BOX_SMOOTHING):
    """(T, 3) boxes of consecutive frames smoothed over time by a Gaussian of `sigma` frames (edges held)."""
    boxes = np.asarray(boxes, np.float64)
    radius = int(np.ceil(3 * sigma))
    if sigma <= 0 or len(boxes) < 2:
        return boxes
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(boxes, ((radius, radius), (0, 0)), mode="edge")
    return np.stack([np.convolve(padded[:, k], kernel, mode="valid") for k in range(boxes.shape[1])], 1)


def box_region(box, height, width):
    """(x0, y0, x1, y1): the pixels of an (height, width) frame that `box` covers, clipped to the frame."""
    cx, cy, size = box
    x0, y0 = int(np.floor(cx - size / 2)), int(np.floor(cy - size / 2))
    x1, y1 = int(np.ceil(cx + size / 2)) + 1, int(np.ceil(cy + size / 2)) + 1
    return max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)


def paste_mask(box, region):
    """(h, w) float32 mask of the frame pixels of `region` (box_region's): 1 inside the crop square, a linear
    ramp to 0 at its border over FEATHER of its side, 0 outside."""
    cx, cy, size = box
    x0, y0, x1, y1 = region
    # a pixel's position in the crop, 0..1 from one border to the other (crop_matrix's pixel-centre convention)
    u = (np.arange(x0, x1) - cx) / size + 0.5
    v = (np.arange(y0, y1) - cy) / size + 0.5
    edge_u, edge_v = np.minimum(u, 1 - u), np.minimum(v, 1 - v)
    return np.clip(np.minimum(edge_v[:, None], edge_u[None]) / FEATHER, 0, 1).astype(np.float32)


def paste_back(frame, result, box):
    """`frame` (H, W, 3) uint8 with the (S, S, 3) uint8 `result` of the crop of `box` blended in by the crop mask;
    a new array, the frame is left as it is."""
    out = np.array(frame)
    x0, y0, x1, y1 = region = box_region(box, *frame.shape[:2])
    if x1 <= x0 or y1 <= y0:
        return out
    cx, cy, size = box
    scale = size / result.shape[0]
    half = (result.shape[0] - 1) / 2
    # result pixels -> the pixels of the region's bounding square, starting at (x0, y0)
    side = max(x1 - x0, y1 - y0)
    matrix = np.array([[scale, 0.0, cx - x0 - half * scale], [0.0, scale, cy - y0 - half * scale]])
    placed = np.ascontiguousarray(warp(result, matrix, side, border=cv2.BORDER_REPLICATE)[: y1 - y0, : x1 - x0])
    mask = paste_mask(box, region)
    # mask * placed + (1 - mask) * original, rounded, on the uint8 images: no float copy of the region is made
    out[y0:y1, x0:x1] = cv2.blendLinear(placed, np.ascontiguousarray(out[y0:y1, x0:x1]), mask, 1 - mask)
    return out

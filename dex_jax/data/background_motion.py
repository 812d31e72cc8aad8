"""How much a clip's background moves: the measure portrait_videos drops clips by.

The paper filters its Stage-3 data so (supplement B.2): "For temporal module training, each batch consists of
one source frame and 24 consecutive driving frames, with video sequences containing significant background
motion being dynamically filtered out through real-time computation." A temporal module trained on such clips
learns that a still source's background stays still. portrait_videos applies the filter once, at build time,
to whole clips (one video file or frame folder), so that every stage reads the same records.

The measure, for one pair of consecutive frames of a clip as the dataset samples them (every `frame_stride`-th
frame: the pairs a temporal window sees), both with a face:
  - each frame, in grey levels 0-255, is resized (area averaging when shrinking) so that its shorter side is
    ANALYSIS_SIDE pixels. The full frame, not the face crop: the crop follows the head, so a head moving over a
    still background would move the crop's background. A fixed analysis size makes the measure the same for a
    video at any resolution (a pan of 1% of the shorter side per frame moves 2.56 analysis pixels) and averages away
    sensor noise and compression artefacts;
  - the person mask (`person_mask`) covers the face oval's hull (MediaPipe's landmarks) grown by PERSON_SCALE
    about its centre (ears, the head's outline) and raised by HAIR_RAISE of the oval's height (hair above the
    forehead), swept down to the frame's bottom edge and widened there by SHOULDER_SCALE (neck and shoulders),
    so that the person's own motion around the face does not count;
  - pair motion = the mean |grey[t+1] - grey[t]| over the pixels outside both frames' person masks, in grey
    levels. It counts what the model sees change: a pan over a textured background scores high, one over a flat
    wall scores low (and looks still in the data too).
A clip's motion is the CLIP_PERCENTILE-th percentile of its pair motions: the level that one pair in ten
exceeds, so that a clip that pans or shakes for a tenth of its length or more is caught and one odd pair (a
compression keyframe) is not. An unreadable frame or one without a face ends a chain of pairs; a clip with no
pair has no measure (None) and is never dropped.

MAX_BACKGROUND_MOTION, the default threshold (grey levels), lies between still and moving cameras on the clips
of `python -m tools.background_motion_calibration` (written through mp4v and read back as a build reads them):
  still camera:   the three SynthHeads demo clips (data/demo, a head turning and talking with its hair and neck)
                  0.00-0.08; skimage's astronaut held still 0.12, with per-frame Gaussian noise of std 4 0.84;
                  heavy grain (std 8) 1.07 at 1080 px and 2.24 at 512 px, which is dropped;
  moving camera:  a pan of 1 analysis pixel (0.4% of the frame) per frame 1.14-2.93 over the demo clips'
                  backgrounds and 8.5 over the astronaut's; a shake of +-2 px 7.7-10.3 over textured
                  backgrounds; a roll of 0.5 degrees with a zoom of 0.5% per frame 7.1. Slower pans (0.5 px per
                  frame: 0.28-0.92) and any move over a flat background (the pose demo's grey wall shaken by
                  +-2 px: 0.54) pass, as they hardly change the frames.
"""

import cv2
import numpy as np

ANALYSIS_SIDE = 256
PERSON_SCALE = 1.6
HAIR_RAISE = 0.3
SHOULDER_SCALE = 2.0
CLIP_PERCENTILE = 90
MAX_BACKGROUND_MOTION = 1.0


def analysis_frame(frame):
    """(H, W, 3) uint8 RGB frame -> float32 grey image (0-255) whose shorter side is ANALYSIS_SIDE."""
    h, w = frame.shape[:2]
    scale = ANALYSIS_SIDE / min(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(grey, size, interpolation=interpolation).astype(np.float32)


def person_mask(oval, frame_shape, analysis_shape):
    """Bool (h, w) mask on an analysis image of shape `analysis_shape`, True on the person.

    `oval`: (N, 2) face-oval landmarks (x, y) in pixels of a frame of shape `frame_shape` (H, W, ...). The mask
    is the convex hull of: the oval scaled by PERSON_SCALE about its centre; the same points raised by HAIR_RAISE
    times the oval's height; the same points moved to the image's bottom row with their horizontal spread about
    the centre widened by SHOULDER_SCALE.
    """
    h, w = analysis_shape[:2]
    points = np.asarray(oval, np.float64)[:, :2] * np.array([w / frame_shape[1], h / frame_shape[0]])
    centre = points.mean(0)
    head = centre + PERSON_SCALE * (points - centre)
    hair = head - np.array([0.0, HAIR_RAISE * np.ptp(points[:, 1])])
    shoulders = np.stack([centre[0] + SHOULDER_SCALE * (head[:, 0] - centre[0]), np.full(len(head), h - 1.0)], 1)
    hull = cv2.convexHull(np.round(np.concatenate([head, hair, shoulders]) * 16).astype(np.int32))
    mask = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(mask, hull, 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def pair_motion(grey_a, grey_b, person_a, person_b):
    """Mean |grey_b - grey_a| (grey levels) over the pixels outside both person masks; 0.0 when none is."""
    background = ~(person_a | person_b)
    if not background.any():
        return 0.0
    return float(np.abs(grey_b - grey_a)[background].mean())


class BackgroundMotion:
    """A clip's background motion, fed frame by frame: `add` each sampled frame in order, then `clip_motion`.

    Holds one analysis frame (ANALYSIS_SIDE px) and one float per pair, whatever the clip's length.
    """

    def __init__(self):
        self.pairs = []
        self._previous = None

    def add(self, frame, oval):
        """`frame`: (H, W, 3) uint8 RGB, or None when unreadable; `oval`: its face-oval landmarks (N, 2) in frame
        pixels, or None when it has no face. Either None ends the current chain of pairs."""
        if frame is None or oval is None:
            self._previous = None
            return
        grey = analysis_frame(frame)
        person = person_mask(oval, frame.shape, grey.shape)
        if self._previous is not None and self._previous[0].shape == grey.shape:
            self.pairs.append(pair_motion(self._previous[0], grey, self._previous[1], person))
        self._previous = (grey, person)

    def clip_motion(self):
        """The CLIP_PERCENTILE-th percentile of the pair motions (grey levels), or None without a pair."""
        return float(np.percentile(self.pairs, CLIP_PERCENTILE)) if self.pairs else None

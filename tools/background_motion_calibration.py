"""The clips the default max_background_motion was chosen on: `python -m tools.background_motion_calibration`.

Prints each clip's background motion (`dex_jax.data.background_motion`, grey levels) and whether portrait_videos
keeps it at the default threshold. Every clip is written through mp4v and read back, as a build reads videos.
Still cameras: the three SynthHeads demo clips (data/demo: a head turning and talking over a still background)
and skimage's astronaut held still, bare and with per-frame Gaussian noise. Moving cameras: the demo clips and
the astronaut panned sideways or shaken, and the astronaut rolled and zoomed; moves are in analysis pixels
(ANALYSIS_SIDE px on the frame's shorter side) per frame, made at twice the size and shrunk (area averaging)
so that fractional moves do not blur the frames.
"""

import tempfile
from pathlib import Path

import cv2
import numpy as np
import skimage.data

from dex_jax.data.background_motion import ANALYSIS_SIDE, MAX_BACKGROUND_MOTION, BackgroundMotion
from dex_jax.data.video_io import VideoEntry, iter_frames
from dex_jax.face.landmarker import FaceLandmarker
from dex_jax.face.regions import MEDIAPIPE_REGIONS

DEMOS = ("driving", "pose", "expression")
NUM_FRAMES = 30


def demo_frames(name):
    return [frame for _, frame in iter_frames(VideoEntry(Path(f"data/demo/{name}.mp4"), "train", name, name, "0"))]


def moved(frames, shifts, angles=None, zooms=None):
    """Frames moved by per-frame (dx, dy) in analysis pixels, rolled by angles (degrees), zoomed by zooms."""
    out = []
    for t, frame in enumerate(frames):
        h, w = frame.shape[:2]
        big = cv2.resize(frame, (2 * w, 2 * h), interpolation=cv2.INTER_CUBIC)
        angle = 0.0 if angles is None else angles[t]
        zoom = 1.0 if zooms is None else zooms[t]
        matrix = cv2.getRotationMatrix2D((w, h), angle, zoom)
        matrix[:, 2] += 2 * np.asarray(shifts[t]) * min(h, w) / ANALYSIS_SIDE
        big = cv2.warpAffine(big, matrix, (2 * w, 2 * h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        out.append(cv2.resize(big, (w, h), interpolation=cv2.INTER_AREA))
    return out


def pan(frames, step):
    return moved(frames, [(step * t, 0.0) for t in range(len(frames))])


def shake(frames, amplitude, seed=0):
    return moved(frames, np.random.default_rng(seed).integers(-amplitude, amplitude + 1, (len(frames), 2)))


def noisy(image, sigma, seed=0):
    rng = np.random.default_rng(seed)
    return [np.clip(image + rng.normal(0, sigma, image.shape), 0, 255).astype(np.uint8) for _ in range(NUM_FRAMES)]


def clips():
    """(name, RGB frames) of every calibration clip, still cameras first."""
    astronaut = skimage.data.astronaut()
    large = cv2.resize(astronaut, (1080, 1080), interpolation=cv2.INTER_CUBIC)
    demos = {name: demo_frames(name) for name in DEMOS}
    t = np.arange(NUM_FRAMES)
    out = [(f"still: demo {name}", frames) for name, frames in demos.items()]
    out += [("still: astronaut 512", [astronaut] * NUM_FRAMES),
            ("still: astronaut 512, noise std 4", noisy(astronaut, 4)),
            ("still: astronaut 1080, noise std 8", noisy(large, 8)),
            ("still: astronaut 512, noise std 8", noisy(astronaut, 8))]
    for step in (0.5, 1.0):
        out += [(f"pan {step:g} px/frame: demo {name}", pan(frames, step)) for name, frames in demos.items()]
    out += [("pan 1 px/frame: astronaut 512", pan([astronaut] * NUM_FRAMES, 1.0))]
    out += [(f"shake +-2 px: demo {name}", shake(frames, 2)) for name, frames in demos.items()]
    out += [("roll 0.5 deg + zoom 0.5%/frame: astronaut", moved([astronaut] * NUM_FRAMES, [(0, 0)] * NUM_FRAMES,
                                                                0.5 * t, 1.005 ** t))]
    return out


def round_trip(frames, folder):
    """The frames as a build reads them after writing them to an mp4v file."""
    path = Path(folder) / "clip.mp4"
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (w, h))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return [frame for _, frame in iter_frames(VideoEntry(path, "train", "clip", "clip", "0"))]


def clip_motion(frames, landmarker):
    motion = BackgroundMotion()
    for frame in frames:
        face = landmarker.detect(frame)
        motion.add(frame, None if face is None else face.landmarks[MEDIAPIPE_REGIONS["face_oval"], :2])
    return motion.clip_motion()


def main():
    print(f"{'clip':44s} motion  at max_background_motion={MAX_BACKGROUND_MOTION:g}")
    with FaceLandmarker() as landmarker, tempfile.TemporaryDirectory() as folder:
        for name, frames in clips():
            value = clip_motion(round_trip(frames, folder), landmarker)
            verdict = "no pair" if value is None else "dropped" if value > MAX_BACKGROUND_MOTION else "kept"
            print(f"{name:44s} {'-' if value is None else f'{value:6.2f}'}  {verdict}", flush=True)


if __name__ == "__main__":
    main()

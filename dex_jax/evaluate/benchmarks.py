"""Evaluation benchmarks: clips of uint8 RGB frames, from held-out SynthHeads identities or a folder of videos.

`synth_heads`: identities numbered from HELD_OUT_FIRST_IDENTITY up (no SynthHeads build reaches them: builds
number identities from 0), each with a smooth pose and expression track drawn from fixed keys, rendered on the
fly at twice `size` and area-averaged to `size` pixels, as the training frames are. The benchmark keeps the
renderer, so protocols can draw the true frame of any identity, pose track and expression track (ground-truth
disentangled reenactment).

`folder:PATH`: every video file or frame folder under PATH in `dex_jax.data.video_io`'s layout (only the
`test` split when PATH has train / validation / test folders). With a `size`, frames are centre-cropped to a
square and resized to size x size; with size None they stay as stored. Clips that cannot be read and
unreadable frames are skipped and listed in `skipped`, never dropped silently. A clip is named by its path
under PATH without the suffix, folders joined with '+'.
"""

import dataclasses
from pathlib import Path
from typing import Callable

import cv2
import jax
import numpy as np

from dex_jax.data import synth_heads
from dex_jax.data.synth_batches import RENDER_FACTOR
from dex_jax.data.video_io import VideoReadError, find_videos, iter_frames
from dex_jax.image import resize

HELD_OUT_FIRST_IDENTITY = 1_000_000
RENDER_CHUNK = 8
SYNTH_DEFAULTS = {"num_clips": 8, "num_frames": 16}


@dataclasses.dataclass(frozen=True)
class Clip:
    """One benchmark video: frames (T, H, W, 3) uint8 and, for SynthHeads, what the renderer drew."""

    name: str
    frames: np.ndarray
    identity: int | None = None
    poses: np.ndarray | None = None
    expressions: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class Benchmark:
    """Named clips; `render(identity, poses, expressions)` -> frames where a renderer knows the truth."""

    name: str
    clips: tuple
    render: Callable | None = None
    skipped: tuple = ()


def render_synth(identity, poses, expressions, size):
    """(T, size, size, 3) uint8 SynthHeads frames of one identity, made as training frames are: rendered at
    RENDER_FACTOR x size and area-averaged down (`data.source = "synth"` does the same, and the builds are read at
    half their size), never drawn at the size itself, whose aliased edges no training frame has. Rendered in
    fixed-size chunks (one compile per size)."""
    poses, expressions = np.asarray(poses, np.float32), np.asarray(expressions, np.float32)
    n, side, parts = len(poses), RENDER_FACTOR * size, []
    for start in range(0, n, RENDER_CHUNK):
        take = np.minimum(np.arange(start, start + RENDER_CHUNK), n - 1)
        frames = synth_heads.render_frames(np.full(RENDER_CHUNK, identity), poses[take], expressions[take],
                                           side, side)
        parts += [resize(image, size, size) for image in np.asarray(frames["image"])[: min(RENDER_CHUNK, n - start)]]
    return np.stack(parts)


def synth_heads_benchmark(num_clips=SYNTH_DEFAULTS["num_clips"], num_frames=SYNTH_DEFAULTS["num_frames"],
                          size=256, seed=0):
    """`num_clips` held-out SynthHeads identities, one clip of `num_frames` each; `seed` picks the tracks."""
    if num_clips < 1 or num_frames < 2:
        raise ValueError(f"synth_heads needs at least 1 clip of 2 frames, got {num_clips} clips of {num_frames}")
    clips = []
    for i in range(num_clips):
        k_pose, k_expr = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed), i))
        poses = np.asarray(synth_heads.pose_trajectory(k_pose, num_frames))
        expressions = np.asarray(synth_heads.expression_trajectory(k_expr, num_frames))
        identity = HELD_OUT_FIRST_IDENTITY + i
        clips.append(Clip(f"synth{i:03d}", render_synth(identity, poses, expressions, size), identity, poses,
                          expressions))

    def render(identity, poses, expressions):
        return render_synth(identity, poses, expressions, size)

    return Benchmark(f"synth_heads (seed {seed}, {num_clips} clips x {num_frames} frames, {size} px)",
                     tuple(clips), render)


def square_resize(frame, size):
    """The centred square of an (H, W, 3) frame resized to size x size; size None returns the frame as it is."""
    if size is None:
        return frame
    h, w = frame.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = frame[top:top + side, left:left + side]
    if side == size:
        return np.ascontiguousarray(square)
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(square, (size, size), interpolation=interpolation)


def clip_name(root, path):
    """A clip's name: its path under `root` without the suffix, folders joined with '+'."""
    relative = Path(path).relative_to(root)
    parts = relative.parts[:-1] + ((relative.stem if Path(path).is_file() else relative.name),)
    return "+".join(parts)


def read_clip_frames(entry, num_frames=None, on_unreadable=None):
    """The readable frames (list of (H, W, 3) uint8) of a video entry; `on_unreadable(index)` for each bad one."""
    frames = []
    for index, frame in iter_frames(entry, max_frames=num_frames):
        if frame is None:
            if on_unreadable:
                on_unreadable(index)
            continue
        frames.append(frame)
    return frames


def folder_benchmark(path, num_clips=None, num_frames=None, size=None):
    """The clips under `path` (module docstring); ValueError when none can be read."""
    root = Path(path)
    skipped = []

    def skip(where, reason):
        skipped.append((str(where), reason))

    entries = find_videos(root, skip)
    if any(e.split == "test" for e in entries):
        entries = [e for e in entries if e.split == "test"]
    clips = []
    for entry in entries:
        if num_clips is not None and len(clips) >= num_clips:
            break
        try:
            frames = read_clip_frames(entry, num_frames, lambda i, p=entry.path: skip(f"{p} frame {i}", "unreadable"))
        except VideoReadError as err:
            skip(entry.path, str(err))
            continue
        if len(frames) < 2:
            skip(entry.path, "fewer than 2 readable frames")
            continue
        frames = [square_resize(f, size) for f in frames]
        if len({f.shape for f in frames}) > 1:
            skip(entry.path, "frames of different sizes")
            continue
        clips.append(Clip(clip_name(root, entry.path), np.stack(frames)))
    if not clips:
        raise ValueError(f"no readable video with at least 2 frames under {root}")
    return Benchmark(f"folder {root}", tuple(clips), None, tuple(skipped))


def parse_benchmark(spec):
    """`synth_heads` -> ('synth_heads', None); `folder:PATH` -> ('folder', PATH); anything else: ValueError."""
    if spec == "synth_heads":
        return "synth_heads", None
    if spec.startswith("folder:") and spec[len("folder:"):]:
        return "folder", spec[len("folder:"):]
    raise ValueError(f"unknown benchmark {spec!r}: use synth_heads or folder:PATH")


def make_benchmark(spec, num_clips=None, num_frames=None, size=None, seed=0):
    """`synth_heads` or `folder:PATH` -> a Benchmark; `size` None: 256 for SynthHeads, stored size for folders."""
    kind, path = parse_benchmark(spec)
    if kind == "synth_heads":
        return synth_heads_benchmark(num_clips or SYNTH_DEFAULTS["num_clips"],
                                     num_frames or SYNTH_DEFAULTS["num_frames"], size or 256, seed)
    return folder_benchmark(path, num_clips, num_frames, size)

"""Find and read portrait videos and frame folders with OpenCV's bundled FFmpeg; bad files are skipped and counted.

Folder layout under the root (file and folder names become subject / sequence / camera names):

    ROOT/CLIP.mp4                        subject = sequence = CLIP, camera 0
    ROOT/SUBJECT/CLIP.mp4                one camera per clip
    ROOT/SUBJECT/SEQUENCE/CAMERA.mp4     multi-view (NeRSemble-style): frame t of every camera is one instant
Any of these may be a frame folder instead of a video file (a folder holding the frames as images, read in
natural name order). Top-level folders named train, validation or test make splits; otherwise all is train.
"""

import dataclasses
import re
from pathlib import Path

import cv2
import numpy as np

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
SPLIT_NAMES = ("train", "validation", "test")
MAX_DEPTH = 3


class VideoReadError(Exception):
    """A video or frame folder that cannot be read at all; the message is a one-line reason."""


@dataclasses.dataclass(frozen=True)
class VideoEntry:
    """One video file or frame folder and where it sits in the layout."""

    path: Path
    split: str
    subject: str
    sequence: str
    camera: str

    @property
    def is_frame_folder(self):
        return self.path.is_dir()


def _natural_key(path):
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _image_files(folder):
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                  key=_natural_key)


def _entry(path, parts, split):
    if len(parts) == 1:
        return VideoEntry(path, split, parts[0], parts[0], "0")
    if len(parts) == 2:
        return VideoEntry(path, split, parts[0], parts[1], "0")
    return VideoEntry(path, split, *parts)


def _visit(folder, parts, split, entries, skip):
    for path in sorted(folder.iterdir(), key=_natural_key):
        name = path.stem if path.is_file() else path.name
        depth = len(parts) + 1
        if path.is_dir() and _image_files(path):
            if depth > MAX_DEPTH:
                skip(path, "nested deeper than subject/sequence/camera")
            else:
                entries.append(_entry(path, parts + (name,), split))
                for extra in path.iterdir():
                    if extra.is_dir() or extra.suffix.lower() not in IMAGE_SUFFIXES:
                        skip(extra, "not an image inside a frame folder")
        elif path.is_dir():
            if depth >= MAX_DEPTH:
                skip(path, "folder without frames at camera depth")
            else:
                _visit(path, parts + (name,), split, entries, skip)
        elif path.suffix.lower() in VIDEO_SUFFIXES:
            if depth > MAX_DEPTH:
                skip(path, "nested deeper than subject/sequence/camera")
            else:
                entries.append(_entry(path, parts + (name,), split))
        else:
            skip(path, "not a video file")


def find_videos(root, skip):
    """Every VideoEntry under `root` in a stable order; `skip(path, reason)` is called for each ignored path."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"video folder not found: {root}")
    split_dirs = [root / name for name in SPLIT_NAMES if (root / name).is_dir()]
    entries = []
    if split_dirs:
        for path in sorted(root.iterdir()):
            if path not in split_dirs:
                skip(path, "outside the train/validation/test folders")
        for folder in split_dirs:
            _visit(folder, (), folder.name, entries, skip)
    else:
        _visit(root, (), "train", entries, skip)
    return entries


def _read_image(path):
    data = np.fromfile(path, np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    return None if image is None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _video_frames(path):
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    if not capture.isOpened():
        raise VideoReadError("cannot be opened as a video")
    try:
        index = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            yield index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            index += 1
    finally:
        capture.release()


def _folder_frames(path):
    for index, file in enumerate(_image_files(path)):
        yield index, _read_image(file)


def iter_frames(entry, stride=1, max_frames=None):
    """(frame index, RGB uint8 frame or None when that one frame is unreadable) for every `stride`-th frame.

    Raises VideoReadError when the video cannot be opened or holds no readable frame.
    """
    frames = _folder_frames(entry.path) if entry.is_frame_folder else _video_frames(entry.path)
    readable = taken = 0
    for index, frame in frames:
        if index % stride:
            continue
        if max_frames is not None and taken >= max_frames:
            break
        taken += 1
        readable += frame is not None
        yield index, frame
    if not readable:
        raise VideoReadError("has no readable frame")


def read_image(path):
    """An image file as RGB uint8 (H, W, 3); ValueError when it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"image not found: {path}")
    image = _read_image(path)
    if image is None:
        raise ValueError(f"{path} is not a readable image")
    return image


def video_fps(path, default=25.0):
    """The frame rate of a video file (`default` for a frame folder or a file that does not say)."""
    if not Path(path).is_file():
        return default
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    fps = capture.get(cv2.CAP_PROP_FPS) or default
    capture.release()
    return float(fps)


def stream_clip(path, max_frames=None):
    """The RGB uint8 frames of a video file or frame folder, one at a time (up to max_frames), as players show
    them (OpenCV applies a video's rotation flag, its display matrix); ValueError, raised
    when reached, for a missing path, a file that is not a video, an unreadable frame, a change of frame size or a
    clip without any readable frame."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"video not found: {path}")
    shape = None
    try:
        for _, frame in iter_frames(VideoEntry(path, "test", path.stem, path.stem, "0"), max_frames=max_frames):
            if frame is None:
                raise ValueError(f"{path} has unreadable frames")
            if shape is not None and frame.shape != shape:
                raise ValueError(f"{path} has frames of different sizes")
            shape = frame.shape
            yield frame
    except VideoReadError as err:
        raise ValueError(f"{path} {err}") from None


def read_clip(path):
    """A video file or frame folder as ((T, H, W, 3) uint8, fps); ValueError when it cannot be read whole."""
    return np.stack(list(stream_clip(path))), video_fps(path)


def write_video(path, frames, fps=25.0):
    """Write (T, H, W, 3) uint8 RGB frames as an MPEG-4 .mp4 through a temporary name, renamed when complete."""
    path = Path(path)
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or not len(frames):
        raise ValueError(f"write_video needs a non-empty (T, H, W, 3) uint8 clip, got {frames.dtype} {frames.shape}")
    height, width = frames.shape[1:3]
    partial = path.with_name(f".{path.stem}.partial.mp4")
    writer = cv2.VideoWriter(str(partial), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (width, height))
    if not writer.isOpened():
        raise OSError(f"cannot open an MPEG-4 writer for {path}")
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    partial.rename(path)
    return path


def write_image(path, image):
    """Write an (H, W, 3) uint8 RGB image (format from the suffix) through a temporary name, renamed when complete."""
    path = Path(path)
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"write_image needs an (H, W, 3) uint8 image, got {image.dtype} {image.shape}")
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    if not cv2.imwrite(str(partial), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        partial.unlink(missing_ok=True)
        raise OSError(f"cannot write an image to {path}")
    partial.rename(path)
    return path

"""Streamed H.264 mp4 output (yuv420p, which browsers play) through the ffmpeg binary that the registry package
imageio-ffmpeg ships, with the audio of another file copied in.

`H264Writer(path, fps, audio_from=None)` is a context manager that takes one (H, W, 3) uint8 RGB frame at a time
(all of one size) and pipes it to ffmpeg, so nothing but the current frame is held. It writes under a temporary
name and renames on a clean exit; an exception removes the partial file. The audio of `audio_from` (when it has
an audio stream; a file without one gives a silent video) is encoded to AAC and cut to the video's length.
yuv420p needs even sides: a frame with an odd side gets its last row or column repeated, so such a video is one
pixel taller or wider than its frames.
"""

import contextlib
import subprocess
import warnings
from fractions import Fraction
from pathlib import Path

import imageio_ffmpeg
import numpy as np

CRF = 18  # libx264's constant rate factor: visually lossless for most content
PRESET = "veryfast"


@contextlib.contextmanager
def fork_then_exec():
    """Silences JAX's warning about os.fork in a multithreaded process: ffmpeg is started by fork + exec, which
    runs no Python code in the child."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="os.fork", category=RuntimeWarning)
        yield


def ffmpeg_exe():
    """The path of imageio-ffmpeg's bundled ffmpeg binary."""
    return imageio_ffmpeg.get_ffmpeg_exe()


def describe_streams(path):
    """ffmpeg's description lines of the streams of a media file ('Stream #0:0...: Video: h264 ...')."""
    with fork_then_exec():
        run = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True,
                             check=False)
    return [line.strip() for line in run.stderr.splitlines() if line.strip().startswith("Stream #")]


def has_audio(path):
    """Whether the file at `path` has an audio stream (False for a folder or a file ffmpeg cannot read)."""
    return Path(path).is_file() and any(": Audio: " in line for line in describe_streams(path))


def even(frame):
    """The frame with its last row and/or column repeated where its height and/or width is odd."""
    h, w = frame.shape[:2]
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge") if h % 2 or w % 2 else frame


class H264Writer:
    """with H264Writer(path, fps, audio_from) as video: video.write(frame) ... (module docstring)."""

    def __init__(self, path, fps, audio_from=None):
        self.path = Path(path)
        self.partial = self.path.with_name(f".{self.path.stem}.partial.mp4")
        self.fps = Fraction(float(fps)).limit_denominator(1001)
        self.audio_from = audio_from if audio_from is not None and has_audio(audio_from) else None
        self.frames = 0
        self._pipe = self._size = None

    def _open(self, height, width):
        self._size = (height, width)
        self._pipe = imageio_ffmpeg.write_frames(
            str(self.partial), (width + width % 2, height + height % 2), fps=self.fps, codec="libx264",
            pix_fmt_out="yuv420p", quality=None, macro_block_size=1, ffmpeg_log_level="error",
            output_params=["-crf", str(CRF), "-preset", PRESET, "-movflags", "+faststart", "-shortest"],
            audio_path=None if self.audio_from is None else str(self.audio_from), audio_codec="aac")
        with fork_then_exec():
            self._pipe.send(None)

    def write(self, frame):
        """Append one (H, W, 3) uint8 RGB frame, the same size as the first."""
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
            raise ValueError(f"H264Writer needs (H, W, 3) uint8 frames, got {frame.dtype} {frame.shape}")
        if self._pipe is None:
            self._open(*frame.shape[:2])
        elif frame.shape[:2] != self._size:
            raise ValueError(f"H264Writer: a {frame.shape[1]}x{frame.shape[0]} frame after "
                             f"{self._size[1]}x{self._size[0]} ones")
        self._pipe.send(np.ascontiguousarray(even(frame)))
        self.frames += 1

    def __enter__(self):
        return self

    def __exit__(self, kind, error, trace):
        if self._pipe is not None:
            self._pipe.close()
        if kind is None and self.frames:
            self.partial.rename(self.path)
            return False
        self.partial.unlink(missing_ok=True)
        if kind is None:
            raise ValueError(f"no frames were written to {self.path}")
        return False

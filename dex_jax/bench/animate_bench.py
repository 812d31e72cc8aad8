"""`dex-portrait bench animate`: peak host memory and frames/s of `dex-portrait animate` on a long clip.

The driving clip is the bundled one (data/demo/driving.mp4, 3 s) looped to each --seconds (default 10) at its
25 fps and written as H.264; the sources are the bundled portrait resized to each --sizes side (default 512 and
2048 pixels, square). Each run is `dex-portrait animate` in a child process with --checkpoint (default: the
bundled Stage-1 model), --batch, and for an animator --steps and --cfg when given; its peak resident memory is the child's
ru_maxrss (os.wait4), its frames/s what animate prints: the frame loop (driving, paste-back, both H.264 videos
written), the first batch's (or window's) compilation included. Rows: for each clip length every size at the
first of --batches, then the first length and size at each other batch.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dex_jax.animator.sampler import CFG_MODES
from dex_jax.arguments import ArgumentParser
from dex_jax.data.h264 import H264Writer
from dex_jax.data.video_io import read_clip, read_image, write_image
from dex_jax.image import resize
from dex_jax.infer.animate import DEFAULTS

FRAMES_PER_SECOND = re.compile(r"\d+ frames in [\d.]+ s \(([\d.]+) frames/s")


def _parse(argv):
    parser = ArgumentParser(prog="dex-portrait bench animate", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=DEFAULTS["checkpoint"], type=Path,
                        help="the model animate runs (default: the bundled Stage-1 model)")
    parser.add_argument("--seconds", default=(10.0,), type=float, nargs="+",
                        help="driving clip lengths (default: 10)")
    parser.add_argument("--sizes", default=(512, 2048), type=int, nargs="+",
                        help="source sides in pixels (default: 512 2048)")
    parser.add_argument("--batches", default=(8, 1), type=int, nargs="+",
                        help="--batch values of animate (default: 8 1)")
    parser.add_argument("--steps", default=None, type=int,
                        help="DDIM steps of an animator checkpoint (default: its config's)")
    parser.add_argument("--cfg", default=None, choices=CFG_MODES,
                        help="guidance of an animator checkpoint (default: its config's)")
    args = parser.parse_args(argv)
    if min(args.seconds) <= 0 or min(args.sizes) < 32 or min(args.batches) < 1:
        raise ValueError("--seconds must be positive, --sizes at least 32 and --batches at least 1")
    return args


def looped_clip(path, seconds):
    """The bundled driving clip looped to `seconds`, written as H.264 at `path`; its frame count."""
    frames, fps = read_clip(DEFAULTS["driving"])
    count = round(seconds * fps)
    with H264Writer(path, fps) as video:
        for i in range(count):
            video.write(frames[i % len(frames)])
    return count


def run_animate(source, driving, checkpoint, batch, out, steps=None, cfg=None):
    """(peak resident MiB, frames/s, wall seconds) of one `dex-portrait animate` child process."""
    command = [sys.executable, "-m", "dex_jax.cli", "animate", "--source", str(source), "--driving", str(driving),
               "--checkpoint", str(checkpoint), "--batch", str(batch), "--out", str(out)]
    command += [] if steps is None else ["--steps", str(steps)]
    command += [] if cfg is None else ["--cfg", cfg]
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as output:
        child = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        output.seek(0)
        text = output.read()
    found = FRAMES_PER_SECOND.search(text)
    if child.returncode or not found:
        raise ValueError(f"animate failed ({child.returncode}): {text.strip().splitlines()[-1:]}")
    return usage.ru_maxrss / 1024, float(found.group(1)), wall


def main(argv):
    args = _parse(argv)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        clips = {seconds: folder / f"driving_{seconds:g}.mp4" for seconds in args.seconds}
        counts = {seconds: looped_clip(path, seconds) for seconds, path in clips.items()}
        portrait = read_image(DEFAULTS["source"])
        sampling = "".join(f", --{name} {value}" for name, value in (("steps", args.steps), ("cfg", args.cfg))
                           if value is not None)
        print(f"animate {args.checkpoint}{sampling}; driving clips: the bundled clip looped")
        print(f"{'clip':>14} {'source':>11} {'batch':>5} {'peak host MiB':>13} {'frames/s':>8} {'wall s':>7}")
        runs = [(seconds, size, args.batches[0]) for seconds in args.seconds for size in args.sizes]
        runs += [(args.seconds[0], args.sizes[0], batch) for batch in args.batches[1:]]
        for i, (seconds, size, batch) in enumerate(runs):
            source = folder / f"source_{size}.png"
            if not source.exists():
                write_image(source, resize(portrait, size, size))
            peak, fps, wall = run_animate(source, clips[seconds], args.checkpoint, batch, folder / f"out_{i}",
                                          args.steps, args.cfg)
            clip = f"{seconds:g} s/{counts[seconds]} fr"
            print(f"{clip:>14} {size:>5}x{size:<5} {batch:>5} {peak:>13.0f} {fps:>8.2f} {wall:>7.1f}", flush=True)
    return 0

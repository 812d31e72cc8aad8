"""SynthHeads picture grid, rows identity x pose, columns expression: `python -m tools.synth_grid [PATH]`."""

import math
import sys

import cv2
import numpy as np

from dex_jax.data.synth_face import EXPRESSION, NUM_EXPRESSIONS
from dex_jax.data.synth_heads import render_frames

DEFAULT_PATH = "data/synth_heads_grid.png"
IDENTITIES = (0, 3, 4, 9)
EXPRESSIONS = {
    "neutral": {},
    "jaw open": {"jaw_open": 1.0},
    "smile": {"smile_left": 1.0, "smile_right": 1.0},
    "eyes closed": {"eye_close_left": 1.0, "eye_close_right": 1.0},
    "brow raise": {"brow_raise": 1.0},
    "frown + pucker": {"brow_furrow": 1.0, "lip_pucker": 1.0},
    "tongue + gaze": {"tongue_out": 1.0, "jaw_open": 0.4, "gaze_x": 1.0},
}
POSES = {  # (yaw, pitch, roll) in degrees
    "frontal": (0, 0, 0),
    "yaw +40": (40, 0, 0),
    "pitch -25": (0, -25, 0),
    "roll 20": (0, 0, 20),
}


def _expression(values):
    expr = np.zeros(NUM_EXPRESSIONS, np.float32)
    for name, value in values.items():
        expr[EXPRESSION[name]] = value
    return expr


def _label(image, text, origin, scale=0.45):
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (20, 20, 20), 1, cv2.LINE_AA)


def render_grid(identities=IDENTITIES, cell=128):
    """The grid as an RGB uint8 image: a header row of expression names, a left column of identity and pose."""
    ids, poses, exprs = [], [], []
    for identity in identities:
        for yaw, pitch, roll in POSES.values():
            for values in EXPRESSIONS.values():
                ids.append(identity)
                poses.append([math.radians(yaw), math.radians(pitch), math.radians(roll), 0.0, 0.0, 1.0])
                exprs.append(_expression(values))
    images = np.asarray(render_frames(np.array(ids), np.array(poses, np.float32), np.stack(exprs), cell, cell)["image"])
    rows, cols = len(identities) * len(POSES), len(EXPRESSIONS)
    header, margin = 24, 120
    grid = np.full((header + rows * cell, margin + cols * cell, 3), 245, np.uint8)
    for j, name in enumerate(EXPRESSIONS):
        _label(grid, name, (margin + j * cell + 4, header - 8))
    for i in range(rows):
        identity, pose = identities[i // len(POSES)], list(POSES)[i % len(POSES)]
        top = header + i * cell
        _label(grid, f"identity {identity}", (6, top + cell // 2 - 8))
        _label(grid, pose, (6, top + cell // 2 + 14))
        for j in range(cols):
            grid[top:top + cell, margin + j * cell:margin + (j + 1) * cell] = images[i * cols + j]
    return grid


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    path = argv[0] if argv else DEFAULT_PATH
    if not cv2.imwrite(path, cv2.cvtColor(render_grid(), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise OSError(f"could not write {path}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

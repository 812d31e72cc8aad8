"""Draw data/augmentations_grid.png: both Fig. 3 augmentations applied to SynthHeads multi-view frames.

Columns: the driving frame; the pose input (eyes and mouth covered); two rotated expression inputs; the same
instant seen by another camera; that view's expression input. One row per identity. Frames render at 256 px
and are shrunk to `--tile` px, which keeps the PNG small.
"""

import argparse
from pathlib import Path

import cv2
import jax
import numpy as np

from dex_jax.data import synth_heads
from dex_jax.data.augment import expression_crop, pose_input
from dex_jax.data.synth_face import REGIONS
from dex_jax.face.regions import masked_groups

COLUMNS = ("driving", "pose input", "expr. -25 deg", "expr. +25 deg", "other view", "expr. other view")
HEADER = 28
FONT = cv2.FONT_HERSHEY_SIMPLEX
MAX_FONT_SCALE = 0.6


def _tile(image, size):
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_LINEAR)


def _header(tile):
    """A white strip with the column names, their font shrunk to fit `tile`-wide columns."""
    widest = max(cv2.getTextSize(name, FONT, MAX_FONT_SCALE, 1)[0][0] for name in COLUMNS)
    scale = min(MAX_FONT_SCALE, MAX_FONT_SCALE * (tile - 12) / widest)
    header = np.full((HEADER, tile * len(COLUMNS), 3), 255, np.uint8)
    for i, name in enumerate(COLUMNS):
        cv2.putText(header, name, (i * tile + 6, HEADER - 9), FONT, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return header


def figure(num_rows=4, size=256, tile=144, expression_size=224, seed=0, dilation=0.04):
    """The grid as an (H, W, 3) uint8 RGB image: frames rendered at `size` px, shown as `tile` px squares."""
    groups = masked_groups(REGIONS)
    rows = []
    for row in range(num_rows):
        clip = synth_heads.sample_multiview_clip(jax.random.PRNGKey(seed + row), row, 2, 1, size, size, seed)
        clip = jax.tree_util.tree_map(np.asarray, clip)
        image, box = clip["image"][0, 0], clip["face_box"][0, 0]
        covered, _ = pose_input(image, clip["landmarks"][0, 0], groups, box, dilation, np.uint8(128))
        other, other_box = clip["image"][1, 0], clip["face_box"][1, 0]
        tiles = [image, covered, expression_crop(image, box, expression_size, -25.0),
                 expression_crop(image, box, expression_size, 25.0), other,
                 expression_crop(other, other_box, expression_size)]
        rows.append(np.concatenate([_tile(t, tile) for t in tiles], 1))
    return np.concatenate([_header(tile)] + rows, 0)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="augmentations_figure", description=__doc__)
    parser.add_argument("--out", default="data/augmentations_grid.png")
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tile", type=int, default=144, help="side of each tile in the figure, px")
    args = parser.parse_args(argv)
    grid = figure(args.rows, tile=args.tile, seed=args.seed)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(args.out, cv2.cvtColor(grid, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {args.out} ({grid.shape[1]}x{grid.shape[0]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

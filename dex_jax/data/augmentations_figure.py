"""Draw data/augmentations_grid.png: both Fig. 3 augmentations applied to SynthHeads multi-view frames.

Columns: the driving frame; the pose input (eyes and mouth covered); two rotated expression inputs; the same
instant seen by another camera; that view's expression input. One row per identity.
"""

import argparse
from pathlib import Path

import cv2
import jax
import numpy as np

from dex_jax.data import synth_heads
from dex_jax.data.augment import expression_crop, pose_input
from dex_jax.data.tfds_synth_heads import LANDMARK_GROUPS_MASKED

COLUMNS = ("driving", "pose input", "expr. -25 deg", "expr. +25 deg", "other view", "expr. other view")
HEADER = 28


def _tile(image, size):
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_LINEAR)


def figure(num_rows=4, size=256, expression_size=224, seed=0, dilation=0.04):
    """The grid as an (H, W, 3) uint8 RGB image."""
    groups = list(LANDMARK_GROUPS_MASKED.values())
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
        rows.append(np.concatenate([_tile(t, size) for t in tiles], 1))
    grid = np.concatenate(rows, 0)
    header = np.full((HEADER, grid.shape[1], 3), 255, np.uint8)
    for i, name in enumerate(COLUMNS):
        cv2.putText(header, name, (i * size + 8, HEADER - 9), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([header, grid], 0)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="augmentations_figure", description=__doc__)
    parser.add_argument("--out", default="data/augmentations_grid.png")
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    grid = figure(args.rows, seed=args.seed)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(args.out, cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    print(f"wrote {args.out} ({grid.shape[1]}x{grid.shape[0]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The bundled inputs of `dex-portrait animate`: a SynthHeads source photo and driving clips of unseen identities.

    python -m tools.demo_assets [--out data/demo]

writes source.png (identity A), driving.mp4 (identity B: head pose and expression move together),
pose.mp4 (identity C: head pose only, neutral face) and expression.mp4 (identity D: expression only, frontal),
all at SIZE px and FPS frames/s. Identities come from the held-out range of the synth_heads benchmark, so no
SynthHeads build ever trains on them. Head motion stays inside the multi-view training ranges (yaw up to 42
degrees through camera views, roll up to 12).
"""

import argparse
from pathlib import Path

import cv2
import jax
import numpy as np

from dex_jax.data import synth_heads
from dex_jax.data.video_io import write_video
from dex_jax.evaluate.benchmarks import HELD_OUT_FIRST_IDENTITY, render_synth

SIZE = 256
FPS = 25.0
NUM_FRAMES = 75
DEG = np.pi / 180
DEMO_POSE_RANGES = {"yaw": (-35 * DEG, 35 * DEG), "pitch": (-15 * DEG, 15 * DEG), "roll": (-12 * DEG, 12 * DEG),
                    "tx": (-0.06, 0.06), "ty": (-0.06, 0.06), "scale": (0.95, 1.05)}
SOURCE, DRIVING, POSE, EXPRESSION = (HELD_OUT_FIRST_IDENTITY + 500 + i for i in range(4))


def tracks(seed):
    """(poses (T, 6), expressions (T, E)) of one demo track."""
    k_pose, k_expr = jax.random.split(jax.random.PRNGKey(seed))
    poses = np.asarray(synth_heads.pose_trajectory(k_pose, NUM_FRAMES, DEMO_POSE_RANGES, FPS))
    return poses, np.asarray(synth_heads.expression_trajectory(k_expr, NUM_FRAMES, FPS))


def neutral(poses, expressions):
    """A frontal pose and a neutral face, shaped like one frame of the tracks, repeated over time."""
    pose = np.zeros_like(poses)
    pose[:, synth_heads.POSE_NAMES.index("scale")] = 1.0
    return pose, np.zeros_like(expressions)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tools.demo_assets", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="data/demo", help="folder to write the assets into")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    poses, expressions = tracks(0)
    still_pose, still_face = neutral(poses, expressions)
    source = render_synth(SOURCE, still_pose[:1], still_face[:1], SIZE)[0]
    partial = out / ".source.partial.png"
    cv2.imwrite(str(partial), cv2.cvtColor(source, cv2.COLOR_RGB2BGR))
    partial.rename(out / "source.png")
    write_video(out / "driving.mp4", render_synth(DRIVING, poses, expressions, SIZE), FPS)
    pose_track, expression_track = tracks(1)
    write_video(out / "pose.mp4", render_synth(POSE, pose_track, still_face, SIZE), FPS)
    write_video(out / "expression.mp4", render_synth(EXPRESSION, still_pose, expression_track, SIZE), FPS)
    print(f"wrote source.png, driving.mp4, pose.mp4 and expression.mp4 to {out}")


if __name__ == "__main__":
    main()

"""`dex-portrait animate`: animate a source portrait with a driving video (or separate pose and expression videos).

With no arguments it animates the bundled SynthHeads source (data/demo/source.png) with the bundled driving
clip (data/demo/driving.mp4) using the bundled Stage-1 model (data/motion_synth, trained on SynthHeads only),
and writes OUT/result.mp4, OUT/side_by_side.mp4 (source | driving | result) and OUT/side_by_side.png, a still
of 4 evenly spaced side-by-side frames, one under the other (OUT: out/animate unless --out; an existing OUT is
refused unless --overwrite, and OUT appears only once complete). With --pose-driving and
--expression-driving the head pose comes from one video and the expression from the other (side by side:
source | pose | expression | result); either may be left out, and --driving (the bundled clip by default)
drives the other. Clips of different lengths are cut to the shorter one.

Two engines: the Stage-1 motion generator and the diffusion animator (Stage 2). --checkpoint names a training
workdir or export of either, and its config picks the engine (stage 'animator': diffusion). Without
--checkpoint, --engine picks the bundled model: stage1 (the default) data/motion_synth, diffusion
data/animator_synth (the SynthHeads animator). The diffusion engine samples with DDIM and classifier-free
guidance as the checkpoint's config says (paper: 35 steps, progressive hybrid CFG at w = 2.5) unless --steps,
--guidance, --cfg or --seed say otherwise; these options are refused with a Stage-1 model.

Driving frames where MediaPipe finds no face borrow the nearest frame's landmarks and are counted. A source
without a face or with several faces, unreadable files and a checkpoint that does not read are one-line errors.
"""

import argparse
from pathlib import Path

import cv2
import numpy as np

from dex_jax.animator.sampler import CFG_MODES
from dex_jax.arguments import ArgumentParser
from dex_jax.data.video_io import read_clip, read_image, write_image, write_video
from dex_jax.face.landmarker import FaceLandmarker
from dex_jax.infer.pipeline import ANIMATOR_STAGE, checkpoint_stage, load_pipeline
from dex_jax.output_dir import add_overwrite_argument, check_output_dir, staged_output_dir

DEMO = Path(__file__).resolve().parents[2] / "data"
DEFAULTS = {"source": DEMO / "demo" / "source.png", "driving": DEMO / "demo" / "driving.mp4",
            "checkpoint": DEMO / "motion_synth", "animator": DEMO / "animator_synth", "out": Path("out") / "animate"}
ENGINES = {"stage1": "checkpoint", "diffusion": "animator"}  # engine -> its bundled model in DEFAULTS
RESULT, SIDE_BY_SIDE, STILL = "result.mp4", "side_by_side.mp4", "side_by_side.png"


def add_sampling_arguments(parser, seed_option="--seed"):
    """The diffusion engine's --steps, --guidance, --cfg and the noise seed, named `seed_option` (None: the
    checkpoint config's); a command passes them on with `sampling_options`."""
    sampling = parser.add_argument_group("diffusion engine (default: the checkpoint config's sampling)")
    sampling.add_argument("--steps", default=None, type=int, help="DDIM steps (paper: 35)")
    sampling.add_argument("--guidance", default=None, type=float, help="guidance scale w (paper: 2.5)")
    sampling.add_argument("--cfg", default=None, choices=CFG_MODES,
                          help="progressive: Eq. 5 (c without expression first, then c); plain: c against the "
                               "unconditional variant; none: c only, no guidance")
    sampling.add_argument(seed_option, dest="noise_seed", default=None, type=int,
                          help="seed of the starting noise (default 0)")


def sampling_options(args):
    """The keyword arguments of `load_pipeline` that add_sampling_arguments' options give."""
    return dict(seed=args.noise_seed, steps=args.steps, guidance=args.guidance, cfg=args.cfg)


def parse_args(argv):
    parser = ArgumentParser(prog="dex-portrait animate", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default=DEFAULTS["source"], type=Path, help="source portrait image")
    parser.add_argument("--driving", default=None, type=Path,
                        help="driving video or frame folder: pose and expression (default: the bundled clip)")
    parser.add_argument("--pose-driving", default=None, type=Path, help="video that drives the head pose only")
    parser.add_argument("--expression-driving", default=None, type=Path,
                        help="video that drives the expression only")
    parser.add_argument("--checkpoint", default=None, type=Path,
                        help="a training workdir or an exported model of either engine; its config picks the "
                             "engine (default: the bundled model of --engine)")
    parser.add_argument("--engine", default=None, choices=tuple(ENGINES),
                        help=f"the bundled model to use without --checkpoint: stage1 ({DEFAULTS['checkpoint']}, "
                             f"the default) or diffusion ({DEFAULTS['animator']})")
    add_sampling_arguments(parser)
    parser.add_argument("--out", default=DEFAULTS["out"], type=Path, help="output folder (default: %(default)s)")
    add_overwrite_argument(parser)
    parser.add_argument("--max-frames", default=None, type=int, help="animate at most this many frames")
    return parser.parse_args(argv)


def check_one_face(landmarker, image, what):
    """ValueError unless `image` shows exactly one face."""
    found = landmarker.count(image)
    if found == 0:
        raise ValueError(f"no face found in the {what}")
    if found > 1:
        raise ValueError(f"{found} faces found in the {what}; crop it to one face")


def panel(frames, height):
    """(T, h, w, 3) frames resized to `height` rows, keeping their aspect ratio."""
    t, h, w = frames.shape[:3]
    width = max(1, round(w * height / h))
    if (h, w) == (height, width):
        return frames
    return np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in frames])


def side_by_side(source, clips, result):
    """Source (repeated over time) | each driving clip | result, all at the result's height."""
    still = panel(source[None], result.shape[1])
    still = np.broadcast_to(still, (len(result),) + still.shape[1:])
    return np.concatenate([still] + [panel(c, result.shape[1]) for c in clips] + [result], axis=2)


def contact_sheet(frames, count=4):
    """`count` evenly spaced frames of a (T, H, W, 3) clip stacked top to bottom (fewer if the clip is shorter)."""
    picks = np.unique(np.linspace(0, len(frames) - 1, count).round().astype(int))
    return np.concatenate(list(frames[picks]), axis=0)


def driving_clips(args):
    """(pose clip, expression clip, fps, side-by-side clips) from the arguments, cut to a common length."""
    disentangled = args.pose_driving is not None or args.expression_driving is not None
    default = args.driving or DEFAULTS["driving"]
    pose, fps = read_clip(args.pose_driving or default)
    expression = read_clip(args.expression_driving)[0] if args.expression_driving else None
    if expression is None:
        expression = pose if not args.pose_driving else read_clip(default)[0]
    n = min(len(pose), len(expression), args.max_frames or len(pose))
    if n < 1:
        raise ValueError("--max-frames must be at least 1")
    pose = pose[:n]
    if not disentangled:
        return pose, pose, fps, [pose]
    return pose, expression[:n], fps, [pose, expression[:n]]


def checkpoint_of(args):
    """The checkpoint to animate with: --checkpoint, else the bundled model of --engine; ValueError when --engine
    contradicts --checkpoint's config or the bundled model is missing."""
    if args.checkpoint is None:
        path = DEFAULTS[ENGINES[args.engine or "stage1"]]
        if not path.is_dir():
            raise ValueError(f"the bundled {args.engine or 'stage1'} model {path} is missing; pass --checkpoint")
        return path
    if args.engine is not None:
        engine = "diffusion" if checkpoint_stage(args.checkpoint) == ANIMATOR_STAGE else "stage1"
        if engine != args.engine:
            raise ValueError(f"--engine {args.engine}, but {args.checkpoint} is a {engine} model (its config "
                             "picks the engine; leave --engine out)")
    return args.checkpoint


def animate(args):
    """Run the model and write the two videos and the still into the folder args.out; returns the animator."""
    check_output_dir(args.out, args.overwrite)
    checkpoint = checkpoint_of(args)
    source = read_image(args.source)
    pose, expression, fps, shown = driving_clips(args)
    with FaceLandmarker(num_faces=2) as landmarker:
        check_one_face(landmarker, source, f"source image {args.source}")
        check_one_face(landmarker, pose[0], "first driving frame")
        animator = load_pipeline(checkpoint, landmarker, **sampling_options(args))
        result = animator(source, pose, expression)
    comparison = side_by_side(source, shown, result)
    with staged_output_dir(args.out, args.overwrite) as staging:
        write_video(staging / RESULT, result, fps)
        write_video(staging / SIDE_BY_SIDE, comparison, fps)
        write_image(staging / STILL, contact_sheet(comparison))
    return animator


def main(argv):
    args = parse_args(argv)
    animator = animate(args)
    print(f"animated {args.source} with {animator.description}")
    missing = animator.frames_without_face
    if missing["pose"] or missing["expression"]:
        print(f"driving frames without a face (landmarks borrowed from the nearest frame): pose "
              f"{missing['pose']}, expression {missing['expression']}")
    print(f"result:       {args.out / RESULT}")
    print(f"side by side: {args.out / SIDE_BY_SIDE} (still: {args.out / STILL})")
    return 0

"""`dex-portrait animate`: animate a source portrait with a driving video (or separate pose and expression videos).

With no arguments it animates the bundled SynthHeads source (data/demo/source.png) with the bundled driving
clip (data/demo/driving.mp4) using the bundled Stage-1 model (data/motion_synth, trained on SynthHeads only),
and writes OUT/result.mp4, OUT/side_by_side.mp4 (source | driving | result, panels at most 512 pixels
tall, so its encoder's memory does not grow with the source) and OUT/side_by_side.png, a still
of 4 evenly spaced side-by-side frames, one under the other (OUT: out/animate unless --out; an existing OUT is
refused unless --overwrite, and OUT appears only once complete). With --pose-driving and
--expression-driving the head pose comes from one video and the expression from the other (side by side:
source | pose | expression | result); either may be left out, and --driving (the bundled clip by default)
drives the other. Clips of different lengths are cut to the shorter one.

The source photo may have any size (32 to 8192 pixels a side) and several faces: the largest is animated
unless --face N (1: the largest) or --all-faces (each, with the same driver). Each face and every driving frame
is cropped as the model's training data is (the `data build portrait_videos` crop, or for a model trained on
SynthHeads the same crop framed as the renders are; the driving crops smoothed over time), and the result is pasted back into the full-resolution source with a feathered mask: result.mp4 has the
source's size, and outside the mask the source's pixels. --no-paste-back writes the face crop at the model's
resolution instead. Motion is relative by default (the driving pose and expression relative to the driving
clip's first frame, applied to the source's own; the LivePortrait default for another person's face);
--motion absolute uses the driving frames' own. Videos are H.264 mp4 (yuv420p) with the driving clip's sound
(the expression clip's, with separate clips); frames are streamed from the driving files to the outputs,
--batch of them per call of the compiled model.

Two engines: the Stage-1 motion generator and the diffusion animator (Stage 2). --checkpoint names a training
workdir or export of either, and its config picks the engine (stage 'animator' or 'temporal': diffusion). Without
--checkpoint, --engine picks the bundled model: stage1 (the default) data/motion_synth, diffusion
data/animator_synth (the SynthHeads animator). The diffusion engine samples with DDIM and classifier-free
guidance as the checkpoint's config says (paper: 35 steps, progressive hybrid CFG at w = 2.5) unless --steps,
--guidance, --cfg or --seed say otherwise; these options are refused with a Stage-1 model. A Stage-3 checkpoint
(stage 'temporal': the animator with its temporal module) samples the clip in windows of --window frames (24),
each window one clip, consecutive windows sharing --overlap frames (4) handed over in latent space; only one
window of frames is held, so memory does not grow with the clip. A bundled model
shown a source that does not look like a SynthHeads render (`infer.render_check`) warns in one line.

A driving video with a rotation flag (a phone clip's display matrix) is read upright, as players show it, and
the outputs are written upright, without a flag. Driving frames where MediaPipe finds no face hold the nearest
frame's motion and are counted. A source without
a face, a driving clip without any, unreadable files and a checkpoint that does not read are one-line errors.
"""

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import tqdm

from dex_jax.animator.sampler import CFG_MODES
from dex_jax.animator.windowed import OVERLAP, WINDOW
from dex_jax.arguments import ArgumentParser
from dex_jax.data.h264 import H264Writer
from dex_jax.data.video_io import read_image, stream_clip, video_fps, write_image
from dex_jax.face.landmarker import FaceLandmarker
from dex_jax.infer.faces import MAX_FACES, check_photo_size, find_faces
from dex_jax.infer.pipeline import ANIMATOR_STAGES, DRIVE_CHUNK, checkpoint_stage, load_pipeline, track
from dex_jax.infer.relative_motion import MOTIONS
from dex_jax.infer.render_check import looks_rendered
from dex_jax.output_dir import add_overwrite_argument, check_output_dir, staged_output_dir

DEMO = Path(__file__).resolve().parents[2] / "data"
DEFAULTS = {"source": DEMO / "demo" / "source.png", "driving": DEMO / "demo" / "driving.mp4",
            "checkpoint": DEMO / "motion_synth", "animator": DEMO / "animator_synth", "out": Path("out") / "animate"}
ENGINES = {"stage1": "checkpoint", "diffusion": "animator"}  # engine -> its bundled model in DEFAULTS
RESULT, SIDE_BY_SIDE, STILL = "result.mp4", "side_by_side.mp4", "side_by_side.png"
COMPARISON_HEIGHT = 512  # the side-by-side video's and still's panels are at most this tall; result.mp4 is full size


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
    sampling.add_argument("--window", default=None, type=int,
                          help=f"Stage-3 models: frames per window, each window one clip for the temporal module "
                               f"(default {WINDOW}, the clip length Stage 3 trains on)")
    sampling.add_argument("--overlap", default=None, type=int,
                          help=f"Stage-3 models: frames each window shares with the previous one, handed over in "
                               f"latent space (default {OVERLAP})")


def add_model_arguments(parser):
    """--checkpoint, --engine and the diffusion engine's sampling options (`add_sampling_arguments`); a command
    reads the model they name with `checkpoint_of` and `sampling_options`."""
    parser.add_argument("--checkpoint", default=None, type=Path,
                        help="a training workdir or an exported model of either engine; its config picks the "
                             "engine (default: the bundled model of --engine)")
    parser.add_argument("--engine", default=None, choices=tuple(ENGINES),
                        help=f"the bundled model to use without --checkpoint: stage1 ({DEFAULTS['checkpoint']}, "
                             f"the default) or diffusion ({DEFAULTS['animator']})")
    add_sampling_arguments(parser)


def sampling_options(args):
    """The keyword arguments of `load_pipeline` that add_sampling_arguments' options give."""
    return dict(seed=args.noise_seed, steps=args.steps, guidance=args.guidance, cfg=args.cfg, window=args.window,
                overlap=args.overlap)


def parse_args(argv):
    parser = ArgumentParser(prog="dex-portrait animate", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default=DEFAULTS["source"], type=Path, help="source portrait image")
    parser.add_argument("--driving", default=None, type=Path,
                        help="driving video or frame folder: pose and expression (default: the bundled clip)")
    parser.add_argument("--pose-driving", default=None, type=Path, help="video that drives the head pose only")
    parser.add_argument("--expression-driving", default=None, type=Path,
                        help="video that drives the expression only")
    add_model_arguments(parser)
    parser.add_argument("--out", default=DEFAULTS["out"], type=Path, help="output folder (default: %(default)s)")
    add_overwrite_argument(parser)
    parser.add_argument("--max-frames", default=None, type=int, help="animate at most this many frames")
    parser.add_argument("--motion", default="relative", choices=MOTIONS,
                        help="relative: the driving pose and expression relative to the clip's first frame, applied "
                             "to the source's own (default); absolute: the driving frames' own")
    faces = parser.add_mutually_exclusive_group()
    faces.add_argument("--face", default=1, type=int,
                       help="animate the source's N-th largest face (default: 1, the largest)")
    faces.add_argument("--all-faces", action="store_true", help="animate every face of the source, same driver")
    parser.add_argument("--no-paste-back", dest="paste_back", action="store_false",
                        help="write the face crop at the model's resolution, not the full source")
    parser.add_argument("--batch", default=DRIVE_CHUNK, type=int,
                        help="frames per call of the compiled model, sharded over the local devices "
                             "(default: %(default)s)")
    return parser.parse_args(argv)


def source_faces(landmarker, image, args):
    """Landmarks of the source faces to animate (--face, --all-faces); ValueError when there are none or too few."""
    found = find_faces(landmarker, image)
    if not found:
        raise ValueError(f"no face found in the source image {args.source}")
    if args.all_faces:
        return found
    if not 1 <= args.face <= len(found):
        raise ValueError(f"--face {args.face}, but the source image {args.source} shows {len(found)} face"
                         f"{'s' if len(found) > 1 else ''}")
    return [found[args.face - 1]]


def panel(frame, height):
    """An (h, w, 3) frame resized to `height` rows, keeping its aspect ratio."""
    h, w = frame.shape[:2]
    width = max(1, round(w * height / h))
    if (h, w) == (height, width):
        return frame
    return cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA if h > height else cv2.INTER_LINEAR)


def contact_picks(count, frames=4):
    """The indices of `frames` evenly spaced frames of a clip of `count` (fewer if the clip is shorter)."""
    return np.unique(np.linspace(0, count - 1, frames).round().astype(int))


def driving_paths(args):
    """(pose clip, expression clip or None when the pose clip drives both) of the arguments."""
    default = args.driving or DEFAULTS["driving"]
    if args.pose_driving is None and args.expression_driving is None:
        return default, None
    return args.pose_driving or default, args.expression_driving or default


def checkpoint_of(args):
    """The checkpoint to animate with: --checkpoint, else the bundled model of --engine; ValueError when --engine
    contradicts --checkpoint's config or the bundled model is missing."""
    if args.checkpoint is None:
        path = DEFAULTS[ENGINES[args.engine or "stage1"]]
        if not path.is_dir():
            raise ValueError(f"the bundled {args.engine or 'stage1'} model {path} is missing; pass --checkpoint")
        return path
    if args.engine is not None:
        engine = "diffusion" if checkpoint_stage(args.checkpoint) in ANIMATOR_STAGES else "stage1"
        if engine != args.engine:
            raise ValueError(f"--engine {args.engine}, but {args.checkpoint} is a {engine} model (its config "
                             "picks the engine; leave --engine out)")
    return args.checkpoint


def warn_if_not_rendered(checkpoint, source, points, what):
    """The bundled models' one-line warning on stderr when a source face does not look like a SynthHeads render."""
    if not all(looks_rendered(source, p) for p in points):
        print(f"warning: the bundled model {checkpoint.name} was trained on synthetic heads (SynthHeads) only "
              f"and {what} does not look like one; pass --checkpoint with a model trained on real faces",
              file=sys.stderr)


def drive_clips(animator, landmarker, source, points, pose_path, expression_path=None, max_frames=None,
                motion="relative", paste=True):
    """(frames, count): `animator.animate`'s (pose frame, expression frame, result) per driving frame of the
    source faces with landmarks `points`, streamed from the clips after a first pass tracks them, and how many."""
    pose_track = track(landmarker, stream_clip(pose_path, max_frames), f"driving clip {pose_path}", animator.framing)
    expression_track = None if expression_path is None else track(
        landmarker, stream_clip(expression_path, max_frames), f"driving clip {expression_path}", animator.framing)
    faces = [animator.source_face(source, p) for p in points]
    count = min(len(pose_track), len(expression_track or pose_track))
    return animator.animate(source, faces, pose_track, stream_clip(pose_path, count), expression_track,
                            None if expression_path is None else stream_clip(expression_path, count),
                            motion, paste), count


def animate(args):
    """Run the model and write the two videos and the still into the folder args.out; returns (the pipeline, the
    frame count, the seconds of the frame loop: driving, paste-back and writing both videos)."""
    check_output_dir(args.out, args.overwrite)
    if args.max_frames is not None and args.max_frames < 1:
        raise ValueError("--max-frames must be at least 1")
    if args.all_faces and not args.paste_back:
        raise ValueError("--all-faces needs the paste-back; leave out --no-paste-back")
    checkpoint = checkpoint_of(args)
    source = read_image(args.source)
    check_photo_size(source, f"source image {args.source}")
    pose_path, expression_path = driving_paths(args)
    with FaceLandmarker(num_faces=MAX_FACES) as landmarker:
        points = source_faces(landmarker, source, args)
        animator = load_pipeline(checkpoint, landmarker, args.batch, **sampling_options(args))
        frames, count = drive_clips(animator, landmarker, source, points, pose_path, expression_path,
                                    args.max_frames, args.motion, args.paste_back)
        if args.checkpoint is None:
            warn_if_not_rendered(checkpoint, source, points, args.source)
        picks, still = set(contact_picks(count).tolist()), []
        audio, fps = expression_path or pose_path, video_fps(pose_path)
        source_panel = None
        with staged_output_dir(args.out, args.overwrite) as staging:
            start = time.perf_counter()
            with H264Writer(staging / RESULT, fps, audio) as result_video, \
                    H264Writer(staging / SIDE_BY_SIDE, fps, audio) as comparison_video:
                for i, (pose, expression, result) in enumerate(tqdm.tqdm(frames, total=count, unit="frame",
                                                                         disable=None, leave=False)):
                    shown = [pose] if expression_path is None else [pose, expression]
                    height = min(result.shape[0], COMPARISON_HEIGHT)
                    source_panel = panel(source, height) if source_panel is None else source_panel
                    comparison = np.concatenate([source_panel] + [panel(f, height) for f in shown + [result]], axis=1)
                    result_video.write(result)
                    comparison_video.write(comparison)
                    if i in picks:
                        still.append(comparison)
            seconds = time.perf_counter() - start
            write_image(staging / STILL, np.concatenate(still, axis=0))
    return animator, count, seconds


def main(argv):
    args = parse_args(argv)
    animator, count, seconds = animate(args)
    print(f"animated {args.source} with {animator.description}: {count} frames in {seconds:.1f} s "
          f"({count / seconds:.2f} frames/s, compilation included)")
    missing = animator.frames_without_face
    if missing["pose"] or missing["expression"]:
        print(f"driving frames without a face (the nearest frame's motion held): pose "
              f"{missing['pose']}, expression {missing['expression']}")
    print(f"result:       {args.out / RESULT}")
    print(f"side by side: {args.out / SIDE_BY_SIDE} (still: {args.out / STILL})")
    return 0

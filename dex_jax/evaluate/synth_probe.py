"""`dex-portrait probe`: a Stage-1 model's pose encoder and expression latent against SynthHeads ground truth.

    dex-portrait probe --checkpoint CKPT [--checkpoint CKPT2 ...] [--expression-from RUN] [--pose-from RUN]
                       [--out DIR] [--overwrite]

Frames are rendered on the fly with uniform random poses over the range the multi-view SynthHeads builds
cover (camera yaw up to 30 degrees plus head yaw up to 12, and so on) and random expressions; the render size,
the pose ranges and the identities of both sets are listed under "settings" at the end of --help. The fit set
uses training identities; the evaluation set uses the held-out identities of the synth_heads benchmark, never
in any build. Inputs are built as at inference: the whole frame resized for the pose encoder; for the
expression encoder the crop its training data used (data.expression_box_scale and data.expression_align of the
checkpoint, or of the --expression-from run), not rotated.

Reported per checkpoint, on the evaluation set:
  pose error      mean absolute error of yaw, pitch, roll (degrees), tx, ty (fractions of the half image) and
                  scale, raw, and after a per-axis affine map fitted on the fit set ("calibrated": the
                  encoder learns pose without labels, so its zero and units need not match the renderer's);
  leakage R^2     a ridge-regression probe from the expression latent to the six ground-truth pose values,
                  fitted on the fit set, its R^2 on the evaluation set (per value and the mean over yaw, pitch,
                  roll). High R^2 means head pose leaks into the expression latent (the paper's Fig. 10).
  expression R^2  the same probe from the expression latent to the ground-truth expression values (per value
                  and the mean): how much of the expression the latent carries for the decoder to draw.
With --expression-from, every checkpoint is probed with the expression encoder of RUN (a run of stage
`expression`, or any Stage-1 run or export) in place of its own; with --pose-from, with the pose encoder of RUN
(a run of stage `pose`, or any Stage-1 run or export). Writes the folder DIR holding probe.md and
probe.json; an existing DIR is refused unless --overwrite.
"""

import argparse
import json
import math
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from dex_jax.arguments import ArgumentParser
from dex_jax.data import synth_heads
from dex_jax.data.augment import expression_crop
from dex_jax.data.synth_face import REGIONS
from dex_jax.evaluate.benchmarks import HELD_OUT_FIRST_IDENTITY
from dex_jax.face.regions import masked_groups
from dex_jax.image import to_float, to_model
from dex_jax.infer.wrapper import inference_data_config, read_generator
from dex_jax.motion.generator import build_motion_generator
from dex_jax.output_dir import add_overwrite_argument, check_output_dir, staged_output_dir
from dex_jax.train.checkpoint import checkpoint_paths, read_train_config
from dex_jax.train.stages.warm_start import trained_model_config, trained_module

DEG = math.pi / 180
PROBE_POSE_RANGES = {"yaw": (-40 * DEG, 40 * DEG), "pitch": (-20 * DEG, 20 * DEG), "roll": (-12 * DEG, 12 * DEG),
                     "tx": (-0.06, 0.06), "ty": (-0.06, 0.06), "scale": (0.9, 1.1)}
RENDER_SIZE = 128
FIT_IDENTITIES = 180
EVAL_IDENTITIES = (HELD_OUT_FIRST_IDENTITY, HELD_OUT_FIRST_IDENTITY + 1000)
MIN_FIT, MIN_EVAL = 64, 16
CHUNK = 32
RIDGE = 1e-2
GROUPS = masked_groups(REGIONS)
UNITS = {"yaw": "deg", "pitch": "deg", "roll": "deg", "tx": "", "ty": "", "scale": ""}


def probe_frames(num_frames, identities, seed):
    """Rendered frames with their ground truth: (images (N, S, S, 3) uint8, face boxes (N, 4), poses (N, 6),
    expressions (N, NUM_EXPRESSIONS), landmarks (N, NUM_LANDMARKS, 2))."""
    key = jax.random.PRNGKey(seed)
    images, boxes, poses, expressions, landmarks = [], [], [], [], []
    for start in range(0, num_frames, CHUNK):
        k_id, k_pose, k_expr = jax.random.split(jax.random.fold_in(key, start), 3)
        ids = identities[0] + jax.random.randint(k_id, (CHUNK,), 0, identities[1] - identities[0])
        pose = synth_heads.sample_pose(k_pose, (CHUNK,), PROBE_POSE_RANGES)
        frames = synth_heads.render_frames(ids, pose, synth_heads.sample_expression(k_expr, (CHUNK,)),
                                           RENDER_SIZE, RENDER_SIZE)
        images.append(np.asarray(frames["image"]))
        boxes.append(np.asarray(frames["face_box"]))
        poses.append(np.asarray(frames["pose"]))
        expressions.append(np.asarray(frames["expression"]))
        landmarks.append(np.asarray(frames["landmarks"])[..., :2])
    return tuple(np.concatenate(a)[:num_frames] for a in (images, boxes, poses, expressions, landmarks))


def encode(model_config, params, data_config, images, boxes, landmarks):
    """(predicted poses (N, 6) in POSE_NAMES order, expression latents (N, D)) of rendered frames, their expression
    crops framed by data_config's expression_box_scale and expression_align."""
    model = build_motion_generator(model_config)
    size, crop_size = model_config.image_size, model_config.expression.image_size

    @jax.jit
    def run(pose_images, crops):
        def both(module):
            pose = module.encode_pose(pose_images)
            return jnp.stack([pose[name] for name in synth_heads.POSE_NAMES], -1), module.encode_expression(crops)
        return model.apply({"params": params}, method=both)

    poses, latents = [], []
    for start in range(0, len(images), CHUNK):
        batch = slice(start, start + CHUNK)
        pose_images = np.stack([to_model(image, size) for image in images[batch]])
        crops = to_float(np.stack([expression_crop(image, box, crop_size, 0.0, data_config.expression_box_scale,
                                                   data_config.expression_align, points, GROUPS)
                                   for image, box, points in zip(images[batch], boxes[batch], landmarks[batch])]))
        pose, latent = run(pose_images, crops)
        poses.append(np.asarray(pose, np.float64))
        latents.append(np.asarray(latent, np.float64))
    return np.concatenate(poses), np.concatenate(latents)


def pose_errors(predicted, truth):
    """{name: mean |error|}, rotations in degrees."""
    scale = np.array([1 / DEG if UNITS[n] == "deg" else 1.0 for n in synth_heads.POSE_NAMES])
    return dict(zip(synth_heads.POSE_NAMES, np.mean(np.abs(predicted - truth) * scale, 0).tolist()))


def affine_calibration(predicted, truth):
    """Per-axis least-squares a * predicted + b -> truth; returns a function applying it."""
    design = np.stack([predicted, np.ones_like(predicted)], -1)
    coefs = [np.linalg.lstsq(design[:, i], truth[:, i], rcond=None)[0] for i in range(predicted.shape[1])]
    a, b = np.array([c[0] for c in coefs]), np.array([c[1] for c in coefs])
    return lambda p: a * p + b


def ridge_probe_r2(fit_x, fit_y, eval_x, eval_y, ridge=RIDGE):
    """R^2 per target of a ridge regression (standardised inputs, penalty ridge * N) fitted on fit, scored on eval."""
    mean, std = fit_x.mean(0), fit_x.std(0) + 1e-8
    fx, ex = (fit_x - mean) / std, (eval_x - mean) / std
    y_mean = fit_y.mean(0)
    gram = fx.T @ fx + ridge * len(fx) * np.eye(fx.shape[1])
    weights = np.linalg.solve(gram, fx.T @ (fit_y - y_mean))
    residual = eval_y - (ex @ weights + y_mean)
    return 1.0 - (residual ** 2).sum(0) / ((eval_y - eval_y.mean(0)) ** 2).sum(0)


def with_trained_module(model_config, params, run, module, flag):
    """(model config, generator params) with the generator submodule `module` ("expression", "pose") of `run`, its
    config and params (EMA where kept); ValueError naming `flag` if it has none. Its config may differ from the
    checkpoint's (e.g. another norm) where the model's input sizes stay the same."""
    trained = trained_module(run, module, flag)
    model_config = model_config.copy_and_resolve_references()
    model_config[module] = trained_model_config(run, flag)[module]
    return model_config, {**params, module: trained}


def trained_data_config(run):
    """The inference data settings (expression crop framing) of the run or export at `run`."""
    return inference_data_config(read_train_config(checkpoint_paths(run)[1]))


def probe(checkpoint, fit, held_out, expression_from=None, pose_from=None):
    """The report dict of one checkpoint on the (images, boxes, poses, expressions, landmarks) fit and evaluation
    sets, with the expression encoder of the run `expression_from` (and its expression crops) and the pose encoder
    of `pose_from` if given."""
    model_config, params, data_config, description = read_generator(checkpoint)
    for module, run, flag in (("expression", expression_from, "--expression-from"), ("pose", pose_from, "--pose-from")):
        if run:
            model_config, params = with_trained_module(model_config, params, run, module, flag)
            description += f", {module} encoder from {Path(run).name}"
    if expression_from:
        data_config = trained_data_config(expression_from)
    poses, latents = encode(model_config, params, data_config, *(np.concatenate([fit[i], held_out[i]])
                                                                 for i in (0, 1, 4)))
    n = len(fit[0])
    fit_pose, eval_pose, fit_latent, eval_latent = poses[:n], poses[n:], latents[:n], latents[n:]
    calibrate = affine_calibration(fit_pose, fit[2])
    r2 = ridge_probe_r2(fit_latent, fit[2], eval_latent, held_out[2])
    expression_r2 = ridge_probe_r2(fit_latent, fit[3], eval_latent, held_out[3])
    return {"model": description, "checkpoint": str(checkpoint),
            "pose_error_raw": pose_errors(eval_pose, held_out[2]),
            "pose_error_calibrated": pose_errors(calibrate(eval_pose), held_out[2]),
            "leakage_r2": dict(zip(synth_heads.POSE_NAMES, r2.tolist())),
            "leakage_r2_rotation_mean": float(np.mean(r2[:3])),
            "expression_r2": dict(zip(synth_heads.EXPRESSION_NAMES, expression_r2.tolist())),
            "expression_r2_mean": float(np.mean(expression_r2))}


def markdown(reports, num_fit, num_eval):
    names = synth_heads.POSE_NAMES
    head = "| Model | " + " | ".join(f"{n} {'(deg)' if UNITS[n] else ''}".strip() for n in names)
    lines = [f"SynthHeads probe: fit on {num_fit} frames of training identities, scored on {num_eval} frames of "
             "held-out identities.", "", "Pose-encoder mean absolute error (raw / calibrated):", "",
             head + " |", "|---" * (len(names) + 1) + "|"]
    for r in reports:
        cells = [f"{r['pose_error_raw'][n]:.3g} / {r['pose_error_calibrated'][n]:.3g}" for n in names]
        lines.append(f"| {r['model']} | " + " | ".join(cells) + " |")
    lines += ["", "Pose leakage into the expression latent, R^2 of a linear probe (lower is better):", "",
              "| Model | " + " | ".join(names) + " | mean yaw/pitch/roll |", "|---" * (len(names) + 2) + "|"]
    for r in reports:
        cells = [f"{r['leakage_r2'][n]:.3f}" for n in names]
        lines.append(f"| {r['model']} | " + " | ".join(cells) + f" | {r['leakage_r2_rotation_mean']:.3f} |")
    expressions = synth_heads.EXPRESSION_NAMES
    lines += ["", "Expression carried by the expression latent, R^2 of a linear probe (higher is better):", "",
              "| Model | " + " | ".join(expressions) + " | mean |", "|---" * (len(expressions) + 2) + "|"]
    for r in reports:
        cells = [f"{r['expression_r2'][n]:.3f}" for n in expressions]
        lines.append(f"| {r['model']} | " + " | ".join(cells) + f" | {r['expression_r2_mean']:.3f} |")
    return "\n".join(lines) + "\n"


def settings():
    """The fixed settings of the probe as help text: render size, pose ranges, identities."""
    scale = {name: 1 / DEG if UNITS[name] == "deg" else 1.0 for name in PROBE_POSE_RANGES}
    ranges = ", ".join(f"{name} {lo * scale[name]:.3g}..{hi * scale[name]:.3g} {UNITS[name]}".rstrip()
                       for name, (lo, hi) in PROBE_POSE_RANGES.items())
    text = (f"settings: frames rendered at {RENDER_SIZE}x{RENDER_SIZE} px; uniform pose ranges {ranges}; fit set "
            f"identities 0..{FIT_IDENTITIES - 1}; evaluation set identities {EVAL_IDENTITIES[0]}.."
            f"{EVAL_IDENTITIES[1] - 1}")
    return textwrap.fill(text, width=110)


def main(argv):
    parser = ArgumentParser(prog="dex-portrait probe", description=__doc__, epilog=settings(),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", action="append", required=True,
                        help="a training workdir or export (repeat to probe several)")
    parser.add_argument("--expression-from", default=None, type=Path,
                        help="probe with this run's expression encoder (e.g. a run of stage expression)")
    parser.add_argument("--pose-from", default=None, type=Path,
                        help="probe with this run's pose encoder (e.g. a run of stage pose)")
    parser.add_argument("--out", default="out/probe", type=Path,
                        help="folder to write with probe.md and probe.json (default: %(default)s)")
    add_overwrite_argument(parser)
    parser.add_argument("--num-fit", default=1024, type=int,
                        help=f"fit-set frames, at least {MIN_FIT} (default: %(default)s)")
    parser.add_argument("--num-eval", default=512, type=int,
                        help=f"evaluation-set frames, at least {MIN_EVAL} (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.num_fit < MIN_FIT or args.num_eval < MIN_EVAL:
        raise ValueError(f"--num-fit must be at least {MIN_FIT} and --num-eval at least {MIN_EVAL}")
    check_output_dir(args.out, args.overwrite)
    fit = probe_frames(args.num_fit, (0, FIT_IDENTITIES), seed=0)
    held_out = probe_frames(args.num_eval, EVAL_IDENTITIES, seed=1)
    reports = [probe(c, fit, held_out, args.expression_from, args.pose_from) for c in args.checkpoint]
    table = markdown(reports, args.num_fit, args.num_eval)
    with staged_output_dir(args.out, args.overwrite) as staging:
        (staging / "probe.md").write_text(table)
        (staging / "probe.json").write_text(json.dumps(reports, indent=2))
    print(table)
    print(f"wrote {args.out / 'probe.md'} and {args.out / 'probe.json'}")
    return 0

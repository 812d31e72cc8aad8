"""`dex-portrait export --workdir RUN --out DIR [--overwrite]`: a run's EMA model as a small inference checkpoint.

The export keeps the layout every reader of trained models understands (`evaluate`, `animate`): DIR/config.json
(the run's config) and DIR/checkpoints/<step>/state holding only {step, ema: {generator}} (the raw generator
where the run kept no EMA) -- no optimizer states, no discriminator, no data iterator. An animator run (config
stage "animator", or Stage 3's "temporal") is exported self-contained instead: {step, ema: {animator},
frozen: {pose, expression[, vae]}} and its Stage-1 model config in config.json (`animator_checkpoint.write_animator_export`). The run's training
curve comes along: metrics.jsonl and its plot training_curve.png. An existing DIR is refused unless --overwrite;
DIR appears (or is replaced) only once complete (`output_dir.staged_output_dir`).
"""

import argparse
import json
import shutil
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the headless backend

from dex_jax.arguments import ArgumentParser
from dex_jax.output_dir import add_overwrite_argument, check_output_dir, staged_output_dir
from dex_jax.train.animator_checkpoint import STAGES as ANIMATOR_STAGES
from dex_jax.train.animator_checkpoint import animator_params, read_frozen, write_animator_export
from dex_jax.train.checkpoint import (Checkpointer, checkpoint_paths, generator_params, read_checkpoint,
                                      read_train_config)

CURVES = (("l1", "L1"), ("lpips", "LPIPS"), ("component_lpips", "face LPIPS"), ("adversarial", "G adversarial"),
          ("face_perceptual", "face features"), ("discriminator_loss", "D loss"),
          ("pose_supervision", "pose error (supervised)"), ("expression_supervision", "expression error (supervised)"),
          ("expression_region_l1", "eye and mouth L1"))
ANIMATOR_CURVES = (("loss", "epsilon MSE"), ("grad_norm", "gradient norm"), ("learning_rate", "learning rate"))


def generator_state(state):
    """{step, ema: {generator}} of a train state dict (EMA params where present, else the raw generator)."""
    return {"step": np.asarray(state["step"]), "ema": {"generator": generator_params(state)[0]}}


def plot_curve(metrics_path, png_path, curves=CURVES):
    """The `curves` ((metric, title) pairs) of a metrics.jsonl against step, one panel each, as a PNG."""
    rows = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line.strip()]
    fig, axes = plt.subplots(1, len(curves), figsize=(3.2 * len(curves), 2.6), constrained_layout=True)
    for ax, (key, title) in zip(axes, curves):
        points = [(r["step"], r[key]) for r in rows if key in r]
        if points:
            ax.plot(*zip(*points), linewidth=1.0)
        else:
            ax.text(0.5, 0.5, "not in this run", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(title)
        ax.set_xlabel("step")
    fig.savefig(png_path, dpi=90)
    plt.close(fig)


def copy_curve(run_dir, folder, curves=CURVES):
    """Copy the run's metrics.jsonl (where it has one) into `folder`, with its plot training_curve.png."""
    metrics = Path(run_dir) / "metrics.jsonl"
    if metrics.is_file():
        shutil.copyfile(metrics, folder / "metrics.jsonl")
        plot_curve(metrics, folder / "training_curve.png", curves)


def export(workdir, out, overwrite=False):
    """Write the newest intact checkpoint of `workdir` as an inference checkpoint, the folder `out` (an existing
    one is refused unless overwrite); returns its step."""
    folder, config_path = checkpoint_paths(workdir)
    check_output_dir(out, overwrite)
    config = read_train_config(config_path)
    if config.get("stage") in ANIMATOR_STAGES:
        _, frozen = read_frozen(config)
        state = read_checkpoint(folder)
        step = int(state["step"])
        write_animator_export(out, config, step, animator_params(state)[0], frozen, overwrite,
                              extras=lambda staging: copy_curve(config_path.parent, staging, ANIMATOR_CURVES))
        return step
    state = generator_state(read_checkpoint(folder))
    step = int(state["step"])
    with staged_output_dir(out, overwrite) as staging:
        shutil.copyfile(config_path, staging / "config.json")
        copy_curve(config_path.parent, staging)
        checkpointer = Checkpointer(staging / "checkpoints", keep=1, async_save=False)
        checkpointer.save(step, state, force=True)
        checkpointer.close()
    return step


def main(argv):
    parser = ArgumentParser(prog="dex-portrait export", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="a training workdir (or its checkpoints/ folder)")
    parser.add_argument("--out", required=True, help="folder to write with the inference checkpoint")
    add_overwrite_argument(parser)
    args = parser.parse_args(argv)
    step = export(args.workdir, args.out, args.overwrite)
    size = sum(f.stat().st_size for f in Path(args.out).rglob("*") if f.is_file())
    print(f"exported step {step} of {args.workdir} to {args.out} ({size / 2**20:.1f} MiB)")
    return 0

"""`dex-portrait export --workdir RUN --out DIR`: a training run's EMA generator as a small inference checkpoint.

The export keeps the layout every reader of trained models understands (`evaluate`, `animate`): DIR/config.json
(the run's config) and DIR/checkpoints/<step>/state holding only {step, ema: {generator}} (the raw generator
where the run kept no EMA) -- no optimizer states, no discriminator, no data iterator. It is written to a
temporary folder beside DIR and renamed into place when complete.
"""

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np

from dex_jax.evaluate.model_runner import checkpoint_paths
from dex_jax.train.checkpoint import Checkpointer, read_checkpoint


def generator_state(state):
    """{step, ema: {generator}} of a train state dict (EMA params where present, else the raw generator)."""
    ema = state.get("ema") or {}
    generator = ema["generator"] if "generator" in ema else state["params"]["generator"]
    return {"step": np.asarray(state["step"]), "ema": {"generator": generator}}


def export(workdir, out):
    """Write the newest intact checkpoint of `workdir` as an inference checkpoint at `out`; returns its step."""
    folder, config_path = checkpoint_paths(workdir)
    out = Path(out).absolute()
    if out.exists():
        raise ValueError(f"{out} exists; choose a new --out")
    state = generator_state(read_checkpoint(folder))
    step = int(state["step"])
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        shutil.copyfile(config_path, staging / "config.json")
        checkpointer = Checkpointer(staging / "checkpoints", keep=1, async_save=False)
        checkpointer.save(step, state, force=True)
        checkpointer.close()
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return step


def main(argv):
    parser = argparse.ArgumentParser(prog="dex-portrait export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="a training workdir (or its checkpoints/ folder)")
    parser.add_argument("--out", required=True, help="folder to create for the inference checkpoint")
    args = parser.parse_args(argv)
    step = export(args.workdir, args.out)
    size = sum(f.stat().st_size for f in Path(args.out).rglob("*") if f.is_file())
    print(f"exported step {step} of {args.workdir} to {args.out} ({size / 2**20:.1f} MiB)")
    return 0

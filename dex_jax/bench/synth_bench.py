"""`dex-portrait bench synth`: SynthHeads rendering speed (frames/s) per image size, whole frames with annotations."""

import argparse
import os

import jax

from dex_jax.arguments import ArgumentParser
from dex_jax.bench.timing import time_jitted
from dex_jax.data import synth_heads


def frames_per_second(size, batch, repeats):
    """(compile + first call seconds, frames/s) of `synth_heads.render_frames` on random poses and expressions."""
    k_pose, k_expr = jax.random.split(jax.random.PRNGKey(0))
    ids = jax.numpy.arange(batch)
    poses = synth_heads.sample_pose(k_pose, (batch,))
    exprs = synth_heads.sample_expression(k_expr, (batch,))
    first, per_call = time_jitted(synth_heads.render_frames, ids, poses, exprs, size, size, repeats=repeats)
    return first, batch / per_call


def main(argv):
    parser = ArgumentParser(prog="dex-portrait bench synth", description=__doc__,
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--sizes", default="256,512", help="comma-separated image sizes")
    parser.add_argument("--batch", type=int, default=32, help="frames per render call")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per size")
    args = parser.parse_args(argv)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}  batch {args.batch}  "
          f"cpus {os.cpu_count()}  load average {load}")
    print(f"{'size':<6} {'compile+first (s)':>18} {'frames/s':>9}")
    for size in (int(s) for s in args.sizes.split(",")):
        first, fps = frames_per_second(size, args.batch, args.repeats)
        print(f"{size:<6} {first:>18.2f} {fps:>9.1f}")

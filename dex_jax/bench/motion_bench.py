"""`dex-portrait bench motion`: per config, each Stage-1 network's parameter count and forward FLOPs per image (from
shapes alone: jax.eval_shape and XLA's cost analysis of the lowered program), and the generator's jitted forward
time per batch size."""

import argparse
import functools

import jax
import jax.numpy as jnp

from dex_jax.arguments import ArgumentParser
from dex_jax.bench.timing import time_jitted, xla_flops
from dex_jax.config_loading import load_config
from dex_jax.motion.generator import build_motion_generator
from dex_jax.motion.summary import example_inputs, parameter_counts


def forward_flops(config):
    """{part: FLOPs of its forward on one example}, from XLA's cost analysis of the lowered program (nothing
    allocated or compiled). The parts of `MotionGenerator.reenact`: appearance encoder, appearance latent, pose
    encoder (one pass; `reenact` runs it on the source and on the pose input), expression encoder, fusion (on the
    volume and its warp), decoder; "generator (total)" is the whole of `reenact`, its warp and both pose passes."""
    trainer = build_motion_generator(config)
    source, pose_input, expression_input = example_inputs(config)
    shapes = jax.eval_shape(lambda: trainer.init(jax.random.key(0), source, pose_input, expression_input))

    def out_shape(method, *args):
        return jax.eval_shape(lambda variables, *a: trainer.apply(variables, *a, method=method), shapes, *args)

    volume, appearance_latent = out_shape(lambda m, x: m.encode_appearance(x), source)
    expression_latent = out_shape(lambda m, x: m.encode_expression(x), expression_input)
    features = out_shape(lambda m, v: m.fusion(v, v), volume)
    style = jax.ShapeDtypeStruct((1, appearance_latent.shape[-1] + expression_latent.shape[-1]), jnp.float32)
    parts = {
        "appearance": (lambda m, x: m.appearance(x), source),
        "appearance_latent": (lambda m, v: m.appearance_latent(v), volume),
        "pose": (lambda m, x: m.encode_pose(x), pose_input),
        "expression": (lambda m, x: m.encode_expression(x), expression_input),
        "fusion": (lambda m, v: m.fusion(v, v), volume),
        "decoder": (lambda m, f, s: m.decoder(f, s), features, style),
        "generator (total)": (lambda m, *x: m.reenact(*x)[0], source, pose_input, expression_input),
    }
    flops = {}
    for name, (method, *args) in parts.items():
        apply = functools.partial(trainer.apply, method=method)
        flops[name] = xla_flops(jax.jit(apply).lower(shapes, *args))
    return flops


def bench_config(variant, batch, repeats):
    config = load_config(f"motion_model:{variant}")
    trainer = build_motion_generator(config)
    inputs = example_inputs(config, batch)
    variables = jax.jit(trainer.init)(jax.random.key(0), *inputs)
    forward = jax.jit(trainer.apply)
    first, per_call = time_jitted(forward, variables, *inputs, repeats=repeats)
    return first, per_call


def main(argv):
    parser = ArgumentParser(prog="dex-portrait bench motion", description=__doc__,
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--variants", default="tiny,paper", help="comma-separated configs/motion_model.py variants")
    parser.add_argument("--batch", type=int, default=1, help="images per forward")
    parser.add_argument("--repeats", type=int, default=5, help="timed forwards per variant")
    args = parser.parse_args(argv)
    variants = args.variants.split(",")
    counts = {v: parameter_counts(load_config(f"motion_model:{v}")) for v in variants}
    print("parameters (jax.eval_shape, nothing allocated):")
    print(f"{'network':<22}" + "".join(f"{v:>14}" for v in variants))
    for name in counts[variants[0]]:
        print(f"{name:<22}" + "".join(f"{counts[v][name]:>14,}" for v in variants))
    flops = {v: forward_flops(load_config(f"motion_model:{v}")) for v in variants}
    print("\nforward GFLOPs per image (XLA's cost analysis, nothing compiled; pose: one of reenact's two passes):")
    print(f"{'network':<22}" + "".join(f"{v:>14}" for v in variants))
    for name in flops[variants[0]]:
        print(f"{name:<22}" + "".join(f"{flops[v][name] / 1e9:>14.4g}" for v in variants))
    print(f"\ndevice: {jax.devices()[0].device_kind} x{jax.device_count()}  batch {args.batch}")
    print(f"{'config':<8} {'compile+first (s)':>18} {'forward (ms)':>13} {'images/s':>9}")
    for variant in variants:
        first, per_call = bench_config(variant, args.batch, args.repeats)
        print(f"{variant:<8} {first:>18.2f} {per_call * 1e3:>13.1f} {args.batch / per_call:>9.2f}")

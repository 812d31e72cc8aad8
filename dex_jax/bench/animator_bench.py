"""`dex-portrait bench animator`: the diffusion engine's sampling speed, and its FLOPs at the paper's size.

Timed (--config, default animator_synth: the tiny animator at 64x64): the engine's jitted `encode` (latent codec
and reference pass, once per source) and `drive` on a batch of --frames frames (frozen Stage-1 encoders, --steps
DDIM steps with --cfg guidance, each step one model call on the stacked condition variants, and decoding),
as `dex-portrait animate` runs them (infer.animator_wrapper). Params are random, drawn into the shapes
`jax.eval_shape` gives: the speed does not depend on their values. Prints frames/s and the time per step.

FLOPs (--flops-config, default animator_paper: two SD-1.5 UNets and the SD VAE at 512x512): XLA's cost analysis
of the lowered (not compiled) encode and of drive for one frame with 1 and with --steps steps, on abstract
params: nothing is allocated, compiled or run. The Stage-1 encoders are those of configs/motion_paper.py where
the config names no motion_from. --flops-only prints only these.
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from dex_jax.animator.conditioning import make_condition
from dex_jax.animator.sampler import CFG_MODES, VARIANTS_PER_FRAME, make_animator_sampler
from dex_jax.arguments import ArgumentParser
from dex_jax.bench.timing import time_jitted, xla_flops
from dex_jax.config_loading import load_config
from dex_jax.diffusion.schedule import SchedulerConfig
from dex_jax.infer.animator_wrapper import checkpoint_shapes, engine_functions, engine_parts
from dex_jax.train.stages.warm_start import trained_model_config

MOTION_CONFIG = "motion_paper"


def _parse(argv):
    parser = ArgumentParser(prog="dex-portrait bench animator", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="animator_synth", help="the animator train config to time "
                        "(default: %(default)s)")
    parser.add_argument("--flops-config", default="animator_paper",
                        help="the animator train config whose FLOPs are counted (default: %(default)s)")
    parser.add_argument("--frames", type=int, default=8, help="frames per drive call (default: %(default)s, "
                        "the batch `dex-portrait animate` uses)")
    parser.add_argument("--steps", type=int, default=35, help="DDIM steps (default: %(default)s)")
    parser.add_argument("--cfg", default="progressive", choices=CFG_MODES, help="guidance (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="timed drive calls after the first (default: %(default)s; the median is printed)")
    parser.add_argument("--flops-only", action="store_true", help="print the FLOP lines of --flops-config only")
    args = parser.parse_args(argv)
    if args.frames < 1 or args.steps < 1 or args.repeats < 1:
        raise ValueError("--frames, --steps and --repeats must be at least 1")
    return args


def engine_config(name):
    """An animator train config with `motion_model` (its motion_from's, else configs/motion_paper.py's)."""
    config = load_config(name)
    if config.get("stage") != "animator":
        raise ValueError(f"config {name} is not an animator config (its stage is {config.get('stage')!r})")
    config.motion_model = (trained_model_config(config.motion_from, "motion_from") if config.motion_from
                           else load_config(MOTION_CONFIG).model)
    return config


def _inputs(config, frames):
    """Abstract (source, pose inputs, expression inputs) of `frames` frames at the config's sizes."""
    s, e = int(config.data.image_size), int(config.data.expression_size)
    return (jax.ShapeDtypeStruct((1, s, s, 3), jnp.float32), jax.ShapeDtypeStruct((frames, s, s, 3), jnp.float32),
            jax.ShapeDtypeStruct((frames, e, e, 3), jnp.float32))


def lowered_flops(config, steps, cfg, frames=1):
    """XLA's cost analysis of the lowered engine on abstract params, in FLOPs: 'encode'; 'step', the sampler lowered
    with one step (one model call on the stacked variants and one DDIM update); 'drive_1' and 'drive', the drive
    call lowered with 1 and with `steps` steps."""
    params, frozen = checkpoint_shapes(config)
    model, codec, side, _ = engine_parts(config)
    source, poses, crops = _inputs(config, frames)
    eta = float(config.sampling.eta)
    key = jax.eval_shape(jax.random.key, 0)
    guidance = jax.ShapeDtypeStruct((), jnp.float32)
    flops = {}
    for name, count in (("drive_1", 1), ("drive", steps)):
        encode, _, drive, _ = engine_functions(config, count, cfg, eta)
        reference, source_pose = jax.eval_shape(encode, params, frozen, source)
        flops[name] = xla_flops(jax.jit(drive).lower(params, frozen, guidance, key, reference, source_pose, poses,
                                                     crops))
    flops["encode"] = xla_flops(jax.jit(encode).lower(params, frozen, source))
    latents = jax.ShapeDtypeStruct((frames, side, side, codec.channels), jnp.float32)
    identity = jnp.broadcast_to(jnp.eye(3, 4), (frames, 3, 4))
    condition = make_condition(identity, identity, jnp.zeros((frames, model.expression_latent_dim)))
    one_step = make_animator_sampler(model, SchedulerConfig.from_dict(config.diffusion), 1, cfg, eta)
    flops["step"] = xla_flops(one_step.lower(params, reference, latents, condition, guidance, key))
    return flops


def flops_lines(name, steps, cfg):
    """The printed FLOP lines of config `name`: per source, per step and per frame, for `steps` steps.

    XLA's cost analysis counts a loop's body once, whatever its trip count (the lowered drive has the same count
    for 1 step and for 35), so a frame's total is the drive lowered with one step plus steps - 1 more steps.
    """
    config = engine_config(name)
    flops = {key: value / 1e9 for key, value in lowered_flops(config, steps, cfg).items()}
    total = flops["drive_1"] + (steps - 1) * flops["step"]
    side = int(config.data.image_size)
    return [f"{name}: {side}x{side}, {cfg} CFG ({VARIANTS_PER_FRAME[cfg]} model rows per frame per step), XLA cost "
            f"analysis of the lowered engine (nothing compiled), one frame",
            f"  encode (codec + reference pass, once per source): {flops['encode']:.1f} GFLOP",
            f"  one DDIM step: {flops['step']:.1f} GFLOP per frame; drive with 1 step (encoders, one step, decode): "
            f"{flops['drive_1']:.1f} GFLOP (lowered with {steps} steps XLA counts {flops['drive']:.1f}: the loop "
            f"body once)",
            f"  {steps} steps: {total:.1f} GFLOP per frame, {total + flops['encode']:.1f} with its own reference pass"]


def _random(shapes, rng):
    return jax.tree.map(lambda s: jnp.asarray(rng.normal(0.0, 0.05, s.shape), s.dtype), shapes)


def time_engine(name, frames, steps, cfg, repeats):
    """(compile + first call seconds, seconds per drive call, encode seconds) of config `name`'s engine."""
    config = engine_config(name)
    rng = np.random.default_rng(0)
    params, frozen = (_random(tree, rng) for tree in checkpoint_shapes(config))
    source, poses, crops = (jnp.asarray(rng.uniform(-1, 1, x.shape), jnp.float32) for x in _inputs(config, frames))
    encode, _, drive, _ = engine_functions(config, steps, cfg, float(config.sampling.eta))
    encode = jax.jit(encode)
    _, encode_seconds = time_jitted(encode, params, frozen, source, repeats=repeats)
    reference, source_pose = encode(params, frozen, source)
    guidance, key = jnp.float32(config.sampling.guidance), jax.random.key(0)
    first, seconds = time_jitted(jax.jit(drive), params, frozen, guidance, key, reference, source_pose, poses, crops,
                                 repeats=repeats)
    return config, first, seconds, encode_seconds


def main(argv=None):
    args = _parse(argv)
    if not args.flops_only:
        config, first, seconds, encode_seconds = time_engine(args.config, args.frames, args.steps, args.cfg,
                                                             args.repeats)
        side = int(config.data.image_size)
        print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()})")
        print(f"{args.config}: {side}x{side}, {args.frames} frames per drive, {args.steps} DDIM steps, {args.cfg} CFG "
              f"({VARIANTS_PER_FRAME[args.cfg] * args.frames} model rows per step), UNets computing in "
              f"{config.model.unet.dtype}")
        print(f"compile + first drive {first:.1f} s | drive {seconds:.2f} s | {args.frames / seconds:.2f} frames/s | "
              f"{1e3 * seconds / args.steps:.1f} ms per step (drive / steps) | encode {1e3 * encode_seconds:.1f} ms "
              f"per source")
    for line in flops_lines(args.flops_config, args.steps, args.cfg):
        print(line)
    return 0

"""`dex-portrait bench NAME`: benchmarks that print figures; each lives in its own module."""

import importlib

from dex_jax.bench.timing import machine

BENCHMARKS = {
    "motion": ("dex_jax.bench.motion_bench", "Stage-1 parameter counts and generator forward time per config"),
    "conv": ("dex_jax.bench.conv_bench", "XLA's 3D and transposed convs against our CPU forms"),
    "stage1": ("dex_jax.bench.stage1_bench", "one Stage-1 update step: time, FLOPs, MFU, memory"),
    "unet": ("dex_jax.bench.unet_bench", "our UNet forward against diffusers', same config and device"),
    "synth": ("dex_jax.bench.synth_bench", "SynthHeads rendering frames/s per image size"),
    "data": ("dex_jax.bench.data_bench", "grain pipeline examples/s with 0 and 2 workers"),
    "animator": ("dex_jax.bench.animator_bench", "diffusion engine frames/s and time per DDIM step; paper-size FLOPs"),
    "animate": ("dex_jax.bench.animate_bench", "dex-portrait animate: peak host memory and frames/s, 10-s clip"),
}

USAGE = "usage: dex-portrait bench NAME [ARGS]   (NAME --help: its options)\n\nbenchmarks:\n" + "\n".join(
    f"  {name:<8} {text}" for name, (_, text) in BENCHMARKS.items())


def main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {argv[0]!r}; choose from {', '.join(BENCHMARKS)}")
    if argv[1:2] not in (["-h"], ["--help"]):
        print(f"machine: {machine()}", flush=True)
    return importlib.import_module(BENCHMARKS[argv[0]][0]).main(argv[1:])

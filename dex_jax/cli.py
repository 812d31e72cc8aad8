"""`dex-portrait`: the one command-line entry point; each subcommand lives in its own module."""

import importlib
import sys

from dex_jax.config_loading import ConfigError

COMMANDS = {
    "animate": ("dex_jax.infer.animate", "animate a portrait (no arguments: the embedded default)"),
    "bench": ("dex_jax.bench", "benchmarks that print figures: motion, unet, synth"),
    "convert": ("dex_jax.convert.cli", "import PyTorch weights: diffusers"),
    "evaluate": ("dex_jax.evaluate.cli", "score a checkpoint or generated videos: PSNR, SSIM, LPIPS, CSIM, AED, APD"),
    "probe": ("dex_jax.evaluate.synth_probe", "pose-encoder error and pose leakage into the expression latent "
                                              "on SynthHeads"),
    "data": ("dex_jax.data.build_cli", "build datasets: data build synth_heads|portrait_videos ..."),
    "export": ("dex_jax.train.export", "a training run's EMA generator as a small inference checkpoint"),
    "train": ("dex_jax.train.cli", "train a stage: --config configs/NAME.py[:ARG] --workdir DIR [--config.a.b=v]"),
}

USAGE = "usage: dex-portrait COMMAND [ARGS]\n\ncommands:\n" + "\n".join(
    f"  {name:<10} {text}" for name, (_, text) in COMMANDS.items())


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"dex-portrait: unknown command {name!r}\n{USAGE}", file=sys.stderr)
        return 2
    from dex_jax.compilation_cache import enable_compilation_cache
    enable_compilation_cache()
    module = importlib.import_module(COMMANDS[name][0])
    try:
        return module.main(rest) or 0
    except (ValueError, ConfigError, OSError) as err:
        print(f"dex-portrait {name}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""`dex-portrait [--verbose] COMMAND ...`: the one command-line entry point; each command lives in its own module.

Third-party logs (MediaPipe, TFLite, XLA, absl, orbax, tfds, grain) are silenced unless --verbose is given,
before the command or among its arguments (`dex_jax.quiet_logs`); the command module is imported only after that
is set up, as C++ libraries read their log settings when they load. A command's ValueError, ConfigError or OSError (usage errors included,
`dex_jax.arguments`) is printed as one line, `dex-portrait COMMAND: error: ...`, with exit status 2.
"""

import importlib
import sys

from dex_jax.config_loading import ConfigError
from dex_jax.quiet_logs import quiet_third_party_logs, verbose_logs

COMMANDS = {
    "animate": ("dex_jax.infer.animate", "animate a portrait (no arguments: the bundled source, driver and model)"),
    "bench": ("dex_jax.bench", "benchmarks that print figures: motion, conv, stage1, unet, synth, data, animator, "
                               "animate"),
    "convert": ("dex_jax.convert.cli", "import PyTorch weights: diffusers"),
    "data": ("dex_jax.data.build_cli", "build datasets: data build synth_heads|portrait_videos ..."),
    "evaluate": ("dex_jax.evaluate.cli", "score a checkpoint or generated videos: PSNR, SSIM, LPIPS, CSIM, AED, APD"),
    "export": ("dex_jax.train.export", "a training run's EMA generator as a small inference checkpoint"),
    "probe": ("dex_jax.evaluate.synth_probe", "pose-encoder error and pose leakage into the expression latent "
                                              "on SynthHeads"),
    "serve": ("dex_jax.infer.serve", "the browser app on localhost: pose sliders, driving image and video"),
    "train": ("dex_jax.train.cli", "train a stage: --config CONFIG[:VARIANT] --workdir DIR [--config.a.b=v]"),
}

USAGE = ("usage: dex-portrait [--verbose] COMMAND [ARGS]   (COMMAND --help: its options)\n\n"
         "  --verbose  show third-party logs (MediaPipe, TFLite, XLA, absl, orbax, tfds), silenced by default;\n"
         "             it may also come after the command\n\n"
         "commands:\n" + "\n".join(f"  {name:<10} {text}" for name, (_, text) in COMMANDS.items()))


def run_command(name, argv):
    """Import command `name` and run it on argv; its exit status (2 with a one-line error for bad input)."""
    from dex_jax.compilation_cache import enable_compilation_cache
    enable_compilation_cache()
    module = importlib.import_module(COMMANDS[name][0])
    try:
        return module.main(argv) or 0
    except (ValueError, ConfigError, OSError) as err:
        print(f"dex-portrait {name}: error: {err}", file=sys.stderr)
        return 2


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    verbose = "--verbose" in argv
    argv = [arg for arg in argv if arg != "--verbose"]
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"dex-portrait: unknown command {name!r}\n{USAGE}", file=sys.stderr)
        return 2
    if verbose:
        verbose_logs()
        return run_command(name, rest)
    with quiet_third_party_logs():
        return run_command(name, rest)


if __name__ == "__main__":
    sys.exit(main())

"""`dex-portrait convert SOURCE ...`: import PyTorch checkpoints the user holds into orbax."""

import importlib

SOURCES = {
    "diffusers": ("dex_jax.convert.diffusers",
                  "SD-1.x UNet and/or VAE in diffusers format: --unet PATH --vae PATH --out DIR [--overwrite]"),
}

USAGE = "usage: dex-portrait convert SOURCE [ARGS]   (SOURCE --help: its options)\n\nsources:\n" + "\n".join(
    f"  {name:<10} {text}" for name, (_, text) in SOURCES.items())


def main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] not in SOURCES:
        raise ValueError(f"unknown source {argv[0]!r}; choose from {', '.join(SOURCES)}")
    return importlib.import_module(SOURCES[argv[0]][0]).main(argv[1:])

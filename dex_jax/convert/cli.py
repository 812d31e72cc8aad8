"""`dex-portrait convert SOURCE ...`: import PyTorch checkpoints the user holds into orbax."""

import importlib

SOURCES = {"diffusers": "dex_jax.convert.diffusers"}


def main(argv):
    if not argv or argv[0] not in SOURCES:
        raise ValueError(f"convert needs one of {sorted(SOURCES)}, got {argv[:1]}")
    return importlib.import_module(SOURCES[argv[0]]).main(argv[1:])

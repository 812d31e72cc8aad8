"""Turn on JAX's persistent compilation cache for the command-line tools."""

import os
from pathlib import Path

import jax


def enable_compilation_cache(path=None):
    """Cache compiled XLA programs under `path`, $DEX_JAX_CACHE, or ~/.cache/dex_jax/xla."""
    path = path or os.environ.get("DEX_JAX_CACHE") or str(Path.home() / ".cache" / "dex_jax" / "xla")
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)

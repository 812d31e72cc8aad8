"""Test-wide settings: a persistent JAX compilation cache and shared fixtures."""

import os
from pathlib import Path

import jax

REPO = Path(__file__).resolve().parents[1]

jax.config.update("jax_compilation_cache_dir", os.environ.get("DEX_JAX_CACHE", str(REPO / ".jax_cache")))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

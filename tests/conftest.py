"""Test-wide settings: a persistent JAX compilation cache and a single torch thread."""

import os
from pathlib import Path

import jax
import torch

REPO = Path(__file__).resolve().parents[1]

jax.config.update("jax_compilation_cache_dir", os.environ.get("DEX_JAX_CACHE", str(REPO / ".jax_cache")))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

torch.set_num_threads(1)  # parity tests share two cores with XLA; more torch threads only contend

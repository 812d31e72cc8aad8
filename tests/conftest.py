"""Test-wide settings: XLA's backend optimisation level 0, a persistent JAX compilation cache, one torch thread."""

import os
from pathlib import Path

import jax
import torch

REPO = Path(__file__).resolve().parents[1]

# Level 0 skips LLVM's optimisation of XLA's CPU kernels, which dominates compiling random initialisers (about
# 5x faster) and small steps. The tests check behaviour, not speed; subprocesses inherit it through the environment.
os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=0"]).strip()

jax.config.update("jax_compilation_cache_dir", os.environ.get("DEX_JAX_CACHE", str(REPO / ".jax_cache")))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

torch.set_num_threads(1)  # parity tests share two cores with XLA; more torch threads only contend

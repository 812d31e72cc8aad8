"""Importing any dex_jax module leaves JAX's backend uninitialised, so a multi-process launch can still call
`jax.distributed.initialize` after its imports (a module-level jnp array would initialise the backend)."""

import subprocess
import sys

from conftest import REPO

_SCRIPT = """
import importlib, pkgutil, sys
import dex_jax
from jax._src import xla_bridge
for module in pkgutil.walk_packages(dex_jax.__path__, "dex_jax."):
    importlib.import_module(module.name)
    if xla_bridge.backends_are_initialized():
        sys.exit("initialises the backend: " + module.name)
"""


def test_no_module_initialises_the_backend_at_import():
    result = subprocess.run([sys.executable, "-c", _SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-2000:]

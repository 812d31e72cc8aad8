"""Multi-process start-up: `jax.distributed.initialize` from environment variables, before any JAX work.

Three ways in, checked in this order (the launch/ scripts set them):
  JAX_NUM_PROCESSES, JAX_PROCESS_ID and JAX_COORDINATOR_ADDRESS (host:port)   explicit, any machine
  DEX_DISTRIBUTED=auto   JAX detects the cluster itself (SLURM, Cloud TPU pods, Open MPI, Kubernetes)
  neither                one process
On CPU (JAX_PLATFORMS=cpu) processes talk through gloo collectives.
"""

import os

import jax


def initialize_from_environment(environ=None):
    """Join the process group the environment describes; returns (process index, process count)."""
    environ = os.environ if environ is None else environ
    if environ.get("JAX_PLATFORMS", "").startswith("cpu"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if "JAX_NUM_PROCESSES" in environ:
        missing = [k for k in ("JAX_PROCESS_ID", "JAX_COORDINATOR_ADDRESS") if k not in environ]
        if missing:
            raise ValueError(f"JAX_NUM_PROCESSES is set but {', '.join(missing)} is not")
        jax.distributed.initialize(coordinator_address=environ["JAX_COORDINATOR_ADDRESS"],
                                   num_processes=int(environ["JAX_NUM_PROCESSES"]),
                                   process_id=int(environ["JAX_PROCESS_ID"]))
    elif environ.get("DEX_DISTRIBUTED") == "auto":
        jax.distributed.initialize()
    return jax.process_index(), jax.process_count()

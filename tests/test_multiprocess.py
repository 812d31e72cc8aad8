"""Two JAX processes on localhost (gloo CPU collectives, launch/cpu_multiprocess.sh) train a few steps with the
params FSDP-sharded across the processes and each process feeding its half of the batch; the result matches
the single-process run."""

import json
import os
import subprocess
import sys

import jax
import numpy as np

from dex_jax.train.checkpoint import read_checkpoint
from dex_jax.train.input import make_iterator
from dex_jax.train.loop import train
from toy_stage import REPO, flat_params, make_toy_stage, toy_config


def test_two_processes_match_one(tmp_path):
    env = {**os.environ, "DEX_JAX_CACHE": jax.config.jax_compilation_cache_dir,
           "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    command = ["bash", "launch/cpu_multiprocess.sh", "2", sys.executable, "tests/toy_stage.py",
               str(tmp_path / "two"), "3", "--mesh", "1,2,1", "--out", str(tmp_path / "two.npz")]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "[0] step 3/3" in result.stdout and "[1] step" not in result.stdout  # process 0 reports

    config = toy_config(total_steps=3)
    state, _ = train(config, tmp_path / "one", make_toy_stage(config), make_iterator(config.data))
    one = flat_params(state)
    two = np.load(tmp_path / "two.npz")
    assert int(two["step"]) == 3
    for key, value in one.items():
        np.testing.assert_allclose(two[key], value, atol=1e-5, err_msg=key)

    def losses(run):
        return [json.loads(line)["loss"] for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]

    np.testing.assert_allclose(losses("two"), losses("one"), atol=1e-5)
    # Both processes wrote their iterator position into the shared checkpoint.
    data_files = sorted(p.name for p in (tmp_path / "two" / "checkpoints" / "3" / "data").glob("*.json"))
    assert data_files == ["process_0-of-2.json", "process_1-of-2.json"]
    assert int(read_checkpoint(tmp_path / "two" / "checkpoints")["step"]) == 3

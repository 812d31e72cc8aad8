"""Mesh and sharding: mesh shapes from the config, rule tables, FSDP placement, batch checks, and the same
3 steps on meshes (1 device), (8,1,1) and (2,4,1) giving the same losses and params (8 CPU devices, subprocess)."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec
from toy_stage import REPO, flat_params, make_toy_stage, toy_config

from dex_jax import parallel
from dex_jax.train.input import make_iterator
from dex_jax.train.loop import train

pytestmark = pytest.mark.xdist_group("parallel")  # one worker runs the 8-device subprocess once

EIGHT_DEVICES = r"""
import json, os, sys
import jax, flax.linen as nn, numpy as np
sys.path.insert(0, "tests")
from toy_stage import flat_params, make_toy_stage, toy_config
from dex_jax import parallel
from dex_jax.cli import main as cli_main
from dex_jax.config_loading import load_config
from dex_jax.train.stages import stage1
from dex_jax.train.input import make_iterator
from dex_jax.train.loop import train

out = sys.argv[1]
report = {"devices": jax.device_count()}
for shape in ((8, 1, 1), (2, 4, 1)):
    config = toy_config(total_steps=3)
    config.mesh.update(data=shape[0], fsdp=shape[1], tensor=shape[2])
    state, _ = train(config, f"{out}/run_{shape[0]}{shape[1]}", make_toy_stage(config), make_iterator(config.data))
    np.savez(f"{out}/params_{shape[0]}{shape[1]}.npz", **flat_params(state))
    report[f"specs_{shape[0]}{shape[1]}"] = {
        name: str(state.params["model"][name]["kernel"].sharding.spec) for name in ("hidden", "out")}

# Paper-size Stage-1 state on an FSDP mesh of 8: shapes only, nothing allocated.
config = load_config("configs/motion_paper.py")
config.mesh.update(data=1, fsdp=8)
mesh = parallel.make_mesh(config.mesh)
stage = stage1.make_stage(config, lpips={})
abstract = jax.eval_shape(stage.init, jax.random.PRNGKey(0))
shardings = parallel.state_shardings(abstract, mesh, parallel.logical_rules(config.sharding_rules))
sizes = [(np.prod(x.shape) * x.dtype.itemsize, np.prod([mesh.shape[a] for a in s.spec if a is not None] or [1]))
         for x, s in zip(jax.tree.leaves(nn.unbox(abstract.params)), jax.tree.leaves(shardings.params))]
report["paper_bytes_per_device"] = float(sum(b / split for b, split in sizes))
report["paper_param_bytes"] = float(sum(b for b, _ in sizes))

# A batch that does not divide over data x fsdp is a one-line CLI error.
report["cli_rc"] = cli_main(["train", "--config", "configs/motion_test.py", "--workdir", f"{out}/bad_batch",
                             "--config.data.batch_size=6", "--config.mesh.fsdp=4"])
report["bad_batch_left_a_workdir"] = os.path.exists(f"{out}/bad_batch")
json.dump(report, open(f"{out}/report.json", "w"))
"""


@pytest.fixture(scope="session")  # once per worker, whatever order the worker runs modules in
def eight_device_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("meshes")
    env = {**os.environ, "XLA_FLAGS": os.environ["XLA_FLAGS"] + " --xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu",
           "DEX_JAX_CACHE": jax.config.jax_compilation_cache_dir}
    result = subprocess.run([sys.executable, "-c", EIGHT_DEVICES, str(out)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, json.loads((out / "report.json").read_text()), result.stderr


def test_mesh_shape_fills_the_minus_one_axis():
    assert parallel.mesh_shape({"data": -1, "fsdp": 2, "tensor": 1}, 8) == (4, 2, 1)
    assert parallel.mesh_shape({"data": 2, "fsdp": -1}, 8) == (2, 4, 1)
    assert parallel.mesh_shape({"data": 8, "fsdp": 1, "tensor": 1}, 8) == (8, 1, 1)


@pytest.mark.parametrize("mesh, message", [
    ({"data": -1, "fsdp": -1}, "at most one"),
    ({"data": 3, "fsdp": -1}, "does not divide 8 devices"),
    ({"data": 2, "fsdp": 2, "tensor": 1}, "needs 4 devices, there are 8"),
    ({"data": 8, "model": 1}, "unknown"),
])
def test_bad_meshes_name_the_problem(mesh, message):
    with pytest.raises(ValueError, match=message):
        parallel.mesh_shape(mesh, 8)


def test_rules_are_checked_and_non_dividing_dimensions_stay_replicated():
    with pytest.raises(ValueError, match="unknown mesh axes"):
        parallel.logical_rules((("conv_out", "model"),))
    rules = parallel.logical_rules((("conv_out", "fsdp"), ("batch", ["data", "fsdp"])))
    assert rules == (("conv_out", "fsdp"), ("batch", ("data", "fsdp")))
    mesh = parallel.make_mesh({"data": 1, "fsdp": 1, "tensor": 1})
    assert parallel.divisible_spec(mesh, PartitionSpec(None, "fsdp"), (3, 8)) == PartitionSpec(None, "fsdp")


def test_state_shardings_follow_the_logical_names():
    config = toy_config()
    mesh = parallel.make_mesh(config.mesh)
    stage = make_toy_stage(config)
    abstract = jax.eval_shape(stage.init, jax.random.PRNGKey(0))
    shardings = parallel.state_shardings(abstract, mesh, parallel.logical_rules(config.sharding_rules))
    kernel = shardings.params["model"]["hidden"]["kernel"]
    assert kernel.spec == PartitionSpec(None, None, "tensor", "fsdp")
    assert shardings.opt_state["model"][0].mu["hidden"]["kernel"].spec == kernel.spec  # Adam moments follow
    assert shardings.step.spec == PartitionSpec()


def test_same_three_steps_on_three_meshes(eight_device_run, tmp_path):
    out, report, _ = eight_device_run
    assert report["devices"] == 8
    config = toy_config(total_steps=3)
    state, _ = train(config, tmp_path / "one", make_toy_stage(config), make_iterator(config.data))
    reference = flat_params(state)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 3
    for name in ("81", "24"):
        params = np.load(out / f"params_{name}.npz")
        assert set(params.files) == set(reference)
        for key, value in reference.items():
            np.testing.assert_allclose(params[key], value, atol=1e-5, err_msg=f"{name}: {key}")
        other = [json.loads(line)["loss"] for line in (out / f"run_{name}" / "metrics.jsonl").read_text().splitlines()]
        np.testing.assert_allclose(other, losses, atol=1e-5)
    # (2,4,1): the 8-channel kernel is split over fsdp; the 3-channel one does not divide by 4 and stays whole.
    assert report["specs_24"]["hidden"] == str(PartitionSpec(None, None, "tensor", "fsdp"))
    assert report["specs_24"]["out"] == str(PartitionSpec(None, None, "tensor", None))


def test_paper_stage1_params_are_fsdp_sharded(eight_device_run):
    _, report, _ = eight_device_run
    assert report["paper_param_bytes"] > 400e6
    assert report["paper_bytes_per_device"] < 1.02 * report["paper_param_bytes"] / 8


def test_batch_that_does_not_divide_the_mesh_is_a_one_line_error(eight_device_run):
    _, report, stderr = eight_device_run
    assert report["cli_rc"] == 2
    lines = [line for line in stderr.splitlines() if line.startswith("dex-portrait train: error:")]
    assert len(lines) == 1 and "batch size 6 does not divide over the mesh's data x fsdp = 2 x 4" in lines[0]
    assert not report["bad_batch_left_a_workdir"]


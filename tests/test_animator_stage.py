"""Stage-2 training (dex_jax.train.stages.animator) on the `test` animator: the latent codec, gradients into every
new layer after one step, overfitting 4 SynthHeads pairs, the same 3 steps on meshes (1), (8,1,1) and (2,4,1),
the export round trip, and the refusals of a Stage-1 model or converted UNet that does not fit."""

import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
from animator_checkpoint import untrained_params, write_untrained_export
from flax.traverse_util import flatten_dict
from motion_checkpoint import write_untrained_run
from toy_stage import REPO, flat_params

from dex_jax.animator.latent import build_codec
from dex_jax.animator.reference import transformer_blocks
from dex_jax.cli import main as cli_main
from dex_jax.config_loading import load_config
from dex_jax.convert.diffusers import module_config
from dex_jax.data.synth_heads import render_frames, sample_expression, sample_pose
from dex_jax.diffusion.unet import init_inputs as unet_init_inputs
from dex_jax.diffusion.unet import unet_from_config
from dex_jax.train.animator_checkpoint import read_animator, read_frozen, write_animator_export
from dex_jax.train.export import export
from dex_jax.train.input import make_iterator
from dex_jax.train.stages.animator import make_stage

pytestmark = pytest.mark.xdist_group("parallel")  # the 8-device subprocess shares the cores with one worker

EIGHT_DEVICES = r"""
import json, sys
from pathlib import Path
import jax, numpy as np
sys.path.insert(0, "tests")
from toy_stage import flat_params
from dex_jax.config_loading import load_config
from dex_jax.train.cli import check_workdir
from dex_jax.train.input import make_iterator
from dex_jax.train.loop import train
from dex_jax.train.stages.animator import make_stage

out, stage1 = sys.argv[1], sys.argv[2]
report = {"devices": jax.device_count()}
for shape in ((8, 1, 1), (2, 4, 1)):
    name = "".join(map(str, shape[:2]))
    config = load_config("configs/animator_test.py")
    config.motion_from = stage1
    config.mesh.update(data=shape[0], fsdp=shape[1], tensor=shape[2])
    check_workdir(config, Path(out) / f"run_{name}")
    state, _ = train(config, f"{out}/run_{name}", make_stage(config), make_iterator(config.data))
    np.savez(f"{out}/params_{name}.npz", **flat_params(state))
    params, moments = state.params["animator"], state.opt_state["animator"][1][0].mu
    conv1 = ("down_blocks_0", "resnets_0", "conv1", "kernel")
    to_q = ("down_blocks_0", "attentions_0", "transformer_blocks_0", "attn1", "to_q", "kernel")
    leaves = {"denoising conv1": ("denoising_unet",) + conv1, "reference to_q": ("reference_unet",) + to_q}
    for label, path in leaves.items():
        for kind, tree in (("params", params), ("adam mu", moments)):
            for key in path:
                tree = tree[key]
            report[f"{name} {kind} {label}"] = [tree.shape, tree.addressable_shards[0].data.shape]
json.dump(report, open(f"{out}/report.json", "w"))
"""


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    """An untrained `test` Stage-1 run: the frozen encoders of every config here (16-d expression latents)."""
    return str(write_untrained_run(tmp_path_factory.mktemp("stage1") / "run"))


@pytest.fixture(scope="module", autouse=True)
def eight_device_run(tmp_path_factory, stage1):
    """The animator_test config's 3 steps on meshes (8,1,1) and (2,4,1) of 8 fake CPU devices, in a subprocess
    started before this module's first test (it compiles on the other core while they run)."""
    out = tmp_path_factory.mktemp("animator_meshes")
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "DEX_JAX_CACHE": jax.config.jax_compilation_cache_dir,
           "XLA_FLAGS": os.environ["XLA_FLAGS"] + " --xla_force_host_platform_device_count=8"}
    process = subprocess.Popen([sys.executable, "-c", EIGHT_DEVICES, str(out), stage1], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def result():
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-3000:]
        return out, json.loads((out / "report.json").read_text())

    yield result
    if process.poll() is None:
        process.kill()
        process.wait()


def test_space_to_depth_codec_is_exact_and_ordered():
    codec = build_codec(ml_collections.ConfigDict(dict(kind="space_to_depth", factor=2)))
    images = np.random.default_rng(0).uniform(-1, 1, (2, 8, 6, 3)).astype(np.float32)
    latents = np.asarray(codec.encode(None, images))
    assert latents.shape == (2, 4, 3, 12) and codec.channels == 12
    # latent pixel (i, j), channel (row * 2 + col) * 3 + rgb is image pixel (2i + row, 2j + col)
    assert latents[1, 2, 1, (1 * 2 + 0) * 3 + 2] == images[1, 5, 2, 2]
    np.testing.assert_array_equal(np.asarray(codec.decode(None, latents)), images)
    with pytest.raises(ValueError, match="latent.kind"):
        build_codec(ml_collections.ConfigDict(dict(kind="pixels")))


def synth_pairs(n=4, size=16, crop=32, seed=0):
    """n SynthHeads pairs, each twice, as a batch of 2n rows of 1 source and 1 driving frame (animator_test's
    batch of 8 when n = 4: one compiled step serves every test here). A pair is one identity under two random
    poses and expressions at size x size; the driving frame, unmasked, is the pose input, and the whole driving
    frame at crop x crop the expression input (the tests fit a denoiser; they do not check the pipeline's
    augmentations)."""
    keys = jax.random.split(jax.random.key(seed), 2)
    poses, expressions = sample_pose(keys[0], (2 * n,)), sample_expression(keys[1], (2 * n,))
    ids = np.tile(np.arange(n), 2)

    def frames(side):
        images = np.asarray(render_frames(ids, poses, expressions, side, side)["image"], np.float32) / 127.5 - 1
        return images[:n], images[n:, None]

    source, driving = frames(size)
    _, crops = frames(crop)
    batch = {"source": source, "driving": driving, "pose_input": driving, "expression_input": crops}
    return {key: np.concatenate([value, value]) for key, value in batch.items()}


def compiled_stage(stage1, lr=None):
    """(stage, its initial state, its jitted step) for animator_test (at learning rate `lr`, if given); the state
    as the loop's init draws it."""
    config = load_config("configs/animator_test.py")
    config.motion_from = stage1
    if lr:
        config.optimizer.lr = lr
    stage = make_stage(config)
    with jax.threefry_partitionable(False):
        init = jax.jit(lambda rng: nn.unbox(stage.init(rng)))(jax.random.PRNGKey(config.seed))
    return stage, init, jax.jit(stage.step)


@pytest.fixture(scope="module")
def stage_and_step(stage1):
    return compiled_stage(stage1)


def changed(before, after):
    """Param paths whose values differ; the denoiser's conv_in ray-map input channels count as ('ray_map_input',)."""
    a, b = flatten_dict(before), flatten_dict(after)
    paths = {path for path in a if not np.array_equal(np.asarray(a[path]), np.asarray(b[path]))}
    conv_in = ("denoising_unet", "conv_in", "kernel")
    if not np.array_equal(np.asarray(a[conv_in])[:, :, 12:], np.asarray(b[conv_in])[:, :, 12:]):
        paths.add(("ray_map_input",))
    return paths


def test_one_step_reaches_every_new_layer(stage_and_step):
    """One Adam step changes a param exactly where its gradient is non-zero (a zero gradient gives a zero update).

    Step 1 from init: the zero-initialised projections (warp 1x1 convs, expression out-projections, conv_in's
    ray-map channels) change, so their gradients were non-zero; what only feeds a zero projection (expression
    norm, queries, keys, values, the null latents) does not. The next steps change every param of both UNets and
    every new layer, except the reference UNet's tail that nothing reads (tests/test_animator_model.py); each null
    latent needs a frame of its dropout variant, so they run until both variants have been drawn (the step's
    dropped_all and dropped_expression metrics say when).
    """
    stage, state, step = stage_and_step
    batch = synth_pairs()
    first, metrics, preview = step(state, batch, stage.frozen)
    assert np.isfinite(float(metrics["loss"])) and [p.shape for p in preview] == [(2, 16, 16, 3)] * 3
    later, seen = first, {"dropped_all": 0.0, "dropped_expression": 0.0}
    for _ in range(8):
        later, metrics, _ = step(later, batch, stage.frozen)
        seen = {key: max(value, float(metrics[key])) for key, value in seen.items()}
        if min(seen.values()) > 0:
            break
    assert min(seen.values()) > 0, seen

    params = state.params["animator"]
    paths = set(flatten_dict(params)) | {("ray_map_input",)}
    blocks = transformer_blocks(unet_from_config(load_config("configs/animator_test.py").model.unet))
    last = ("reference_unet",) + blocks[-1].path
    unread = [("reference_unet", "conv_norm_out"), ("reference_unet", "conv_out"), last[:3] + ("proj_out",)]
    unread += [last + (name,) for name in ("attn1", "norm2", "attn2", "norm3", "ff")]
    tail = {path for path in paths if any(path[:len(prefix)] == prefix for prefix in unread)}
    behind_zero = {path for path in paths if "norm_expr" in path or path[0] in ("null_no_expression", "null_nothing")
                   or ("attn_expr" in path and path[-2] in ("to_q", "to_k", "to_v"))}
    zero_projections = {path for path in paths if path[0] == "warp_projection" or path == ("ray_map_input",)
                        or ("attn_expr" in path and path[-2] == "to_out_0")}
    assert len(zero_projections) == 4 * len(blocks) + 1  # warp conv and out-projection: kernel and bias each

    assert zero_projections <= changed(params, first.params["animator"])
    assert changed(params, first.params["animator"]) == paths - tail - behind_zero
    assert changed(first.params["animator"], later.params["animator"]) == paths - tail


def test_overfits_four_synth_heads_pairs(stage1):
    """The `test` animator fits 4 SynthHeads pairs: epsilon MSE at most 0.3x its first value within 300 steps.

    The step draws its noise, timesteps and condition dropout from fold_in(rng, state.step); holding state.step at
    0 fixes all three for every row, so the target is learnable (with fresh noise and timesteps each step the
    loss would stay near its noise floor); the constant learning rate does not read the step. Each pair is in the
    batch twice, with its own noise and timestep in each row. Learning rate 1e-3, 10x the config's.
    """
    stage, state, step = compiled_stage(stage1, lr=1e-3)
    batch = synth_pairs()
    losses = []
    for _ in range(300):
        state, metrics, _ = step(state, batch, stage.frozen)
        state = state.replace(step=jnp.zeros_like(state.step))
        losses.append(float(metrics["loss"]))
        if losses[-1] <= 0.3 * losses[0]:
            break
    print(f"epsilon MSE {losses[0]:.4f} -> {losses[-1]:.4f} in {len(losses)} steps")
    assert losses[-1] <= 0.3 * losses[0]


def test_same_three_steps_on_three_meshes(eight_device_run, stage_and_step):
    """The shared loop's 3 steps on (8,1,1) and (2,4,1) equal the stage's step run 3 times on one device (the
    loop's guard and metric sums change nothing while every loss is finite), on the same random batches."""
    stage, state, step = stage_and_step
    config = load_config("configs/animator_test.py")
    batches = make_iterator(config.data)
    losses = []
    for _ in range(3):
        state, metrics, _ = step(state, next(batches), stage.frozen)
        losses.append(float(metrics["loss"]))
    reference = flat_params(state)
    out, report = eight_device_run()
    assert report["devices"] == 8
    for name in ("81", "24"):
        params = np.load(out / f"params_{name}.npz")
        assert set(params.files) == set(reference)
        for key, value in reference.items():
            np.testing.assert_allclose(params[key], value, atol=1e-5, err_msg=f"{name}: {key}")
        other = [json.loads(line)["loss"] for line in (out / f"run_{name}" / "metrics.jsonl").read_text().splitlines()]
        np.testing.assert_allclose(other, losses, atol=1e-5)
    # Both UNets' kernels and their Adam moments: whole on each device on (8,1,1), one axis split in 4 over fsdp
    # on (2,4,1) (the axis its logical-axis rule names)
    for label in ("denoising conv1", "reference to_q"):
        for kind in ("params", "adam mu"):
            shape, shard = report[f"81 {kind} {label}"]
            assert shard == shape, (kind, label)
            shape, shard = report[f"24 {kind} {label}"]
            split = [axis for axis, (whole, part) in enumerate(zip(shape, shard)) if whole != part]
            assert len(split) == 1 and shard[split[0]] * 4 == shape[split[0]], (kind, label, shape, shard)


def test_export_round_trip(stage1, tmp_path):
    out, config = write_untrained_export(tmp_path / "export", "test", step=7)
    restored = read_animator(out)
    assert restored.description == "export step 7 (EMA animator)"
    assert restored.config.motion_model.expression.latent_dim == 16
    expected_params = untrained_params(config.model)
    flat = flatten_dict(restored.params)
    assert set(flat) == set(flatten_dict(expected_params))
    for path, value in flatten_dict(expected_params).items():
        np.testing.assert_array_equal(np.asarray(flat[path]), value, err_msg=str(path))
    stage1_run = read_frozen(config)[1]
    assert set(restored.frozen) == {"pose", "expression"}
    for (path, value), (other_path, other) in zip(sorted(flatten_dict(restored.frozen).items()),
                                                  sorted(flatten_dict(stage1_run).items())):
        assert path == other_path
        np.testing.assert_array_equal(np.asarray(value), other)
    # self-contained: the Stage-1 run it came from may go
    (tmp_path / "export.stage1" / "config.json").unlink()
    assert read_animator(out).description == restored.description


def test_export_of_a_trained_run_on_the_command_line(eight_device_run, tmp_path):
    """`dex-portrait export` of the (8,1,1) run: the run's EMA animator and frozen encoders, and its curve."""
    runs, _ = eight_device_run()
    workdir, out = runs / "run_81", tmp_path / "export"
    assert cli_main(["export", "--workdir", str(workdir), "--out", str(out)]) == 0
    restored, run = read_animator(out), read_animator(workdir)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "config.json", "metrics.jsonl",
                                                      "training_curve.png"]
    assert restored.description == "export step 3 (EMA animator)" and run.description == "run_81 step 3 (EMA animator)"
    assert set(restored.frozen) == set(run.frozen) == {"pose", "expression"}
    for a, b in zip(jax.tree.leaves(restored.params), jax.tree.leaves(run.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def refusal(capsys, argv):
    """(exit status, stderr lines) of `dex-portrait train` with the argv."""
    code = cli_main(["train", "--config", "animator_test"] + argv)
    return code, capsys.readouterr().err.strip().splitlines()


def write_converted_unet(folder, unet_config, edit=None):
    """A `dex-portrait convert diffusers` folder holding a UNet of `unet_config` (zeros), params edited by `edit`."""
    module = unet_from_config(unet_config)
    args, kwargs = unet_init_inputs(unet_config)
    shapes = nn.unbox(jax.eval_shape(module.init, jax.random.key(0), *args, **kwargs))
    params = jax.tree.map(lambda s: np.zeros(s.shape, np.float32), shapes["params"])
    if edit:
        edit(params)
    folder.mkdir()
    ocp.PyTreeCheckpointer().save(folder / "params", {"unet": params})
    (folder / "config.json").write_text(json.dumps({"unet": module_config(module)}))
    return folder


def test_misfits_are_one_line_errors_and_write_nothing(stage1, tmp_path, capsys):
    workdir = tmp_path / "run"
    # a Stage-1 model whose expression latent is not the animator's (the `test` animator wants 16-d)
    code, err = refusal(capsys, ["--workdir", str(workdir), "--config.motion_from=data/motion_synth"])
    assert code == 2 and len(err) == 1 and "gives 128-d latents" in err[0] and "expression_latent_dim is 16" in err[0]
    # a Stage-1 run whose encoder params do not fit its own config: the first mismatched keys are named
    broken = write_untrained_run(tmp_path / "broken_stage1")
    config_path = broken / "config.json"
    stage1_config = json.loads(config_path.read_text())
    stage1_config["model"]["pose"]["dims"][-1] *= 2
    config_path.write_text(json.dumps(stage1_config))
    code, err = refusal(capsys, ["--workdir", str(workdir), f"--config.motion_from={broken}"])
    assert code == 2 and len(err) == 1 and f"motion_from {broken}: its pose encoder does not fit" in err[0]
    assert "backbone/" in err[0] and "there," in err[0]
    # converted UNets that do not fit: another architecture, then the same one with a param missing and another
    unet = load_config("configs/animator_test.py").model.unet
    other = ml_collections.ConfigDict(unet.to_dict())
    other.in_channels = other.out_channels = 4
    sd_like = write_converted_unet(tmp_path / "sd_like", other)
    code, err = refusal(capsys, ["--workdir", str(workdir), f"--config.motion_from={stage1}",
                                 f"--config.init_unet_from={sd_like}"])
    assert code == 2 and len(err) == 1 and "its UNet is built differently (in_channels=4 there, 12 here" in err[0]

    def drop_and_reshape(params):
        del params["mid_block"]["resnets_0"]["conv1"]["bias"]
        params["conv_out"]["bias"] = np.zeros(5, np.float32)

    damaged = write_converted_unet(tmp_path / "damaged", unet, drop_and_reshape)
    code, err = refusal(capsys, ["--workdir", str(workdir), f"--config.motion_from={stage1}",
                                 f"--config.init_unet_from={damaged}"])
    assert code == 2 and len(err) == 1 and f"init_unet_from {damaged}:" in err[0]
    assert "missing mid_block.resnets_0.conv1.bias" in err[0] and "conv_out.bias (5,) vs model (12,)" in err[0]
    assert not workdir.exists()


def test_export_refuses_encoders_that_do_not_fit(stage1, tmp_path):
    config = load_config("configs/animator_test.py")
    config.motion_from = stage1
    frozen = read_frozen(config)[1]
    frozen["expression"]["head_dense"]["kernel"] = np.zeros((3, 3), np.float32)
    with pytest.raises(ValueError, match="its expression encoder does not fit this config .*head_dense/kernel"):
        write_animator_export(tmp_path / "export", config, 0, untrained_params(config.model), frozen)
    assert not any(tmp_path.iterdir())


def test_export_of_a_stage1_run_is_unchanged(tmp_path):
    run = write_untrained_run(tmp_path / "stage1_run", step=3)
    assert export(run, tmp_path / "exported") == 3
    with pytest.raises(ValueError, match="not an animator run"):
        read_animator(tmp_path / "exported")

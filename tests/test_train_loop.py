"""The shared loop: Stage 1 end to end through `dex-portrait train` (metrics, TensorBoard, image grid, resume),
the non-finite guard, the progress line and image grid, and the command line's one-line errors."""

import json
import os
import subprocess
import sys

import cv2
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from toy_stage import REPO, flat_params, make_toy_stage, toy_config

from dex_jax.cli import main as cli_main
from dex_jax.config_loading import load_config
from dex_jax.motion.lpips import lpips_param_shapes
from dex_jax.train.checkpoint import read_checkpoint
from dex_jax.train.export import export
from dex_jax.train.input import make_iterator
from dex_jax.train.loop import train
from dex_jax.train.metrics import Progress, image_grid
from dex_jax.train.nonfinite import NonFiniteError
from dex_jax.train.optim import learning_rate_schedule
from dex_jax.train.stages import expression, pose, stage1
from dex_jax.train.stages.warm_start import warm_start, warm_start_module
from dex_jax.train.state import create_state

pytestmark = pytest.mark.xdist_group("train_loop")  # one worker runs the shared Stage-1 run once

STAGE1 = ["train", "--config", "configs/motion_test.py", "--config.data.batch_size=2",
          "--config.log.image_every_steps=1", "--config.loss.pose_supervision=1.0",
          "--config.loss.expression_supervision=1.0"]


@pytest.fixture(autouse=True)
def same_compilation_cache(monkeypatch):
    monkeypatch.setenv("DEX_JAX_CACHE", jax.config.jax_compilation_cache_dir)


def cli(capsys, *args):
    code = cli_main(list(args))
    return code, capsys.readouterr()


def error_lines(err):
    return [line for line in err.splitlines() if line.startswith("dex-portrait train")]


def run_cli(*args):
    """`dex-portrait train ...` in a subprocess (with conftest's XLA flags and this process's compilation cache)."""
    env = {**os.environ, "DEX_JAX_CACHE": jax.config.jax_compilation_cache_dir}
    command = [sys.executable, "-c", "import sys; from dex_jax.cli import main; sys.exit(main(sys.argv[1:]))"]
    return subprocess.run(command + list(args), cwd=REPO, env=env, capture_output=True, text=True, timeout=400)


@pytest.fixture(scope="session")  # once per worker, whatever order the worker runs modules in
def stage1_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("stage1")
    result = run_cli(*STAGE1, "--workdir", str(workdir), "--config.total_steps=1")
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def test_stage1_trains_logs_and_draws(stage1_run):
    (record,) = [json.loads(line) for line in (stage1_run / "metrics.jsonl").read_text().splitlines()]
    assert record["step"] == 1 and set(stage1.METRIC_NAMES) <= set(record)
    assert all(np.isfinite(record[name]) for name in stage1.METRIC_NAMES)
    # Step 1's metrics come from the initial params, whose zero-initialised pose head gives the identity pose.
    data = load_config("configs/motion_test.py").data
    data.batch_size = 2
    batch = next(make_iterator(data))
    identity = np.array([0, 0, 0, 0, 0, 1], np.float32)
    want = 0.5 * (np.abs(batch["source_pose"] - identity).mean() + np.abs(batch["driving_pose"] - identity).mean())
    assert record["pose_supervision"] == pytest.approx(want, rel=1e-5)
    assert np.isfinite(record["expression_supervision"]) and record["expression_supervision"] > 0
    grid = cv2.imread(str(stage1_run / "images" / "step_0000001.png"))
    assert grid.shape == (2 * 32, 4 * 32, 3)  # 2 pairs x (source | driving | prediction | ground truth)
    events = b"".join(p.read_bytes() for p in (stage1_run / "tensorboard").glob("events.out.tfevents.*"))
    assert b"generator_loss" in events and b"preview/" in events
    assert json.loads((stage1_run / "config.json").read_text())["model"]["image_size"] == 32
    assert sorted(p.name for p in (stage1_run / "checkpoints").iterdir()) == ["1"]


def test_stage1_resumes_with_more_steps(stage1_run):
    result = run_cli(*STAGE1, "--workdir", str(stage1_run), "--config.total_steps=2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed from" in result.stderr and "at step 1" in result.stderr
    assert "step 2/2" in result.stdout and "step 1/2" not in result.stdout
    records = [json.loads(line) for line in (stage1_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    assert records[0]["r1_term"] > 0 and records[1]["r1_term"] == 0  # lazy R1 on every 2nd step (r1_every=2)
    assert sorted(p.name for p in (stage1_run / "checkpoints").iterdir()) == ["1", "2"]


def test_workdir_of_another_config_is_refused(stage1_run, capsys):
    code, out = cli(capsys, *STAGE1, "--workdir", str(stage1_run), "--config.seed=1")
    assert code == 2
    assert error_lines(out.err) == [f"dex-portrait train: error: {stage1_run} holds a run of another config "
                                    "(seed: 0 there, 1 now); use a new --workdir"]


def test_unknown_config_key_is_a_one_line_error(tmp_path, capsys):
    code, out = cli(capsys, *STAGE1, "--workdir", str(tmp_path), "--config.optimizer.lrr=3e-5")
    assert code == 2
    assert error_lines(out.err) == ["dex-portrait train: error: unknown config key: optimizer.lrr"]


def test_corrupt_checkpoints_are_a_one_line_error(tmp_path, capsys):
    step_dir = tmp_path / "checkpoints" / "5"
    (step_dir / "state").mkdir(parents=True)
    (step_dir / "state" / "_METADATA").write_text("garbage")
    code, out = cli(capsys, *STAGE1, "--workdir", str(tmp_path))
    assert code == 2
    (line,) = error_lines(out.err)
    assert line.startswith(f"dex-portrait train: error: no intact checkpoint in {tmp_path}/checkpoints (step 5: ")


def test_missing_dataset_is_a_one_line_error_and_leaves_no_run(tmp_path, capsys):
    code, out = cli(capsys, *STAGE1, "--workdir", str(tmp_path), "--config.data.source=tfds")
    assert code == 2
    assert "data.dataset_dir is empty" in error_lines(out.err)[0]
    code, out = cli(capsys, *STAGE1, "--workdir", str(tmp_path), "--config.data.source=tfds",
                    f"--config.data.dataset_dir={tmp_path / 'nowhere'}")
    assert code == 2
    (line,) = error_lines(out.err)
    assert line.startswith(f"dex-portrait train: error: no dataset at data.dataset_dir={tmp_path / 'nowhere'}")
    assert not (tmp_path / "config.json").exists()


def test_missing_face_landmarker_is_a_one_line_error_and_leaves_no_run(tmp_path, capsys):
    workdir, task = tmp_path / "run", tmp_path / "missing.task"
    code, out = cli(capsys, *STAGE1, "--workdir", str(workdir), "--config.loss.face_perceptual=1",
                    f"--config.face_net.task={task}")
    assert code == 2
    assert error_lines(out.err) == [f"dex-portrait train: error: face landmarker task {task} does not exist"]
    assert not workdir.exists()


def test_init_discriminator_without_init_from_is_a_one_line_error_and_leaves_no_run(tmp_path, capsys):
    code, out = cli(capsys, *STAGE1, "--workdir", str(tmp_path / "run"), "--config.init_discriminator=True")
    assert code == 2
    assert error_lines(out.err) == ["dex-portrait train: error: init_discriminator needs init_from: the training "
                                    "workdir whose discriminator to take"]
    assert not (tmp_path / "run").exists()


def test_init_from_an_export_for_its_discriminator_is_a_one_line_error_and_leaves_no_run(stage1_run, tmp_path,
                                                                                          capsys):
    export(stage1_run, tmp_path / "export")
    workdir = tmp_path / "run"
    code, out = cli(capsys, *STAGE1, "--workdir", str(workdir), f"--config.init_from={tmp_path / 'export'}",
                    "--config.init_discriminator=True")
    assert code == 2
    assert error_lines(out.err) == [f"dex-portrait train: error: init_from {tmp_path / 'export'}: holds no "
                                    f"discriminator (an export keeps only the generator; name the training workdir)"]
    assert not workdir.exists()


def run_toy(workdir, steps, nan_steps=()):
    config = toy_config(total_steps=steps)
    state, _ = train(config, workdir, make_toy_stage(config, nan_steps), make_iterator(config.data))
    return flat_params(state), state


def test_nonfinite_step_is_skipped_and_counted(tmp_path):
    one, _ = run_toy(tmp_path / "one", 1)
    skipped, state = run_toy(tmp_path / "skipped", 2, nan_steps=(1,))
    assert int(state.step) == 2 and int(state.nonfinite_total) == 1 and int(state.nonfinite_streak) == 1
    for key in one:
        np.testing.assert_array_equal(skipped[key], one[key], err_msg=key)
    last = json.loads((tmp_path / "skipped" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last == {"step": 2, "nonfinite_total": 1.0}


def test_nonfinite_streak_stops_training(tmp_path):
    with pytest.raises(NonFiniteError, match="stopped at step 4: 3 steps in a row gave non-finite"):
        run_toy(tmp_path / "run", 10, nan_steps=(1, 2, 3, 4, 5))


def test_progress_line_and_image_grid():
    progress = Progress(total_steps=100, batch_size=8)
    assert progress.rates(10) is None
    line = progress.line(20, {"loss": 0.5}, (2.0, 16.0, 40.0))
    assert line == "step 20/100 | loss 0.5 | 2 steps/s | 16 examples/s | ETA 0:00:40"
    columns = [np.full((3, 4, 4, 3), v, np.float32) for v in (-1.0, 0.0, 1.0)]
    grid = image_grid(columns)
    assert grid.shape == (12, 12, 3) and grid.dtype == np.uint8
    assert grid[0, 0, 0] == 0 and grid[0, 4, 0] == 128 and grid[0, 8, 0] == 255


def test_learning_rate_schedules():
    config = toy_config()
    config.optimizer.update(schedule="constant", warmup_steps=10)
    schedule = learning_rate_schedule(config.optimizer, 1e-3, 100)
    assert float(schedule(0)) == 0.0
    assert float(schedule(5)) == pytest.approx(5e-4, rel=1e-6) and float(schedule(50)) == pytest.approx(1e-3, rel=1e-6)
    config.optimizer.update(schedule="cosine", final_lr_fraction=0.1)
    schedule = learning_rate_schedule(config.optimizer, 1e-3, 100)
    assert float(schedule(10)) == pytest.approx(1e-3, rel=1e-6)
    assert float(schedule(100)) == pytest.approx(1e-4, rel=1e-6)
    config.optimizer.schedule = "linear"
    with pytest.raises(ValueError, match="unknown optimizer.schedule 'linear'"):
        learning_rate_schedule(config.optimizer, 1e-3, 100)


def test_random_lpips_params_have_the_lpips_shapes():
    params = stage1.random_lpips_params()
    shapes = jax.tree.map(lambda x: x.shape, lpips_param_shapes())
    assert jax.tree.map(lambda x: x.shape, params) == shapes
    assert float(np.std(params["vgg"]["conv1_1"]["kernel"])) > 0


def test_warm_start_takes_the_generator_and_nothing_else(stage1_run, tmp_path):
    trained = read_checkpoint(stage1_run / "checkpoints")
    zeros = jax.tree.map(jnp.zeros_like, trained["ema"]["generator"])
    discriminator = jax.tree.map(jnp.ones_like, trained["params"]["discriminator"])
    fresh = create_state({"generator": zeros, "discriminator": discriminator},
                         {"generator": optax.sgd(1.0)}, jax.random.PRNGKey(0), ema_names=("generator",))
    model = load_config("configs/motion_test.py").model
    state = warm_start(fresh, stage1_run, model)
    for got, want in zip(jax.tree.leaves(state.params["generator"]), jax.tree.leaves(trained["ema"]["generator"])):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(jax.tree.leaves(state.ema["generator"]), jax.tree.leaves(trained["ema"]["generator"])):
        np.testing.assert_array_equal(got, want)
    assert all(np.all(x == 1) for x in jax.tree.leaves(state.params["discriminator"]))
    assert int(state.step) == 0
    smaller = jax.tree.map(lambda x: x, fresh.params)
    smaller["generator"]["decoder"] = {}
    with pytest.raises(ValueError, match=r"init_from .*: its generator does not fit this config \(decoder/"):
        warm_start(fresh.replace(params=smaller), stage1_run, model)
    with pytest.raises(ValueError, match="checkpoint not found"):
        warm_start(fresh, tmp_path / "nowhere", model)
    model.expression.norm = "affine"
    with pytest.raises(ValueError, match=r"init_from .*: its expression is built differently \(norm='group' there"):
        warm_start(fresh, stage1_run, model)
    taken = warm_start(fresh, stage1_run, model, replaced=("expression",))  # to be taken from another run next
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(taken.params["generator"]["expression"]),
                                                    jax.tree.leaves(fresh.params["generator"]["expression"])))
    rest = [(k, v) for k, v in taken.params["generator"].items() if k != "expression"]
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(rest), jax.tree.leaves(
        [(k, v) for k, v in state.params["generator"].items() if k != "expression"]), strict=True))
    other_head = jax.tree.map(lambda x: x, fresh.params)  # e.g. a grid-pooled head: another shape
    other_head["generator"]["expression"] = {"head_dense": {"kernel": jnp.zeros((7, 3))}}
    taken = warm_start(fresh.replace(params=other_head), stage1_run, model, replaced=("expression",))
    assert taken.params["generator"]["expression"]["head_dense"]["kernel"].shape == (7, 3)


def test_warm_start_can_take_the_discriminator_from_a_workdir(stage1_run, tmp_path):
    trained = read_checkpoint(stage1_run / "checkpoints")
    fresh = create_state(jax.tree.map(jnp.zeros_like, trained["params"]),
                         {"generator": optax.sgd(1.0)}, jax.random.PRNGKey(0), ema_names=("generator",))
    model = load_config("configs/motion_test.py").model
    state = warm_start(fresh, stage1_run, model, discriminator=True)
    for name in ("generator", "discriminator"):
        want = trained["ema"]["generator"] if name == "generator" else trained["params"][name]
        for got, value in zip(jax.tree.leaves(state.params[name]), jax.tree.leaves(want)):
            np.testing.assert_array_equal(got, value)
    export(stage1_run, tmp_path / "export")
    with pytest.raises(ValueError, match=r"init_from .*export: holds no discriminator \(an export keeps"):
        warm_start(fresh, tmp_path / "export", model, discriminator=True)
    narrower = jax.tree.map(lambda x: x, fresh.params)
    narrower["discriminator"] = {"only": jnp.zeros(3)}
    with pytest.raises(ValueError, match=r"its discriminator does not fit this config"):
        warm_start(fresh.replace(params=narrower), stage1_run, model, discriminator=True)


@pytest.fixture(scope="session")
def expression_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("expression")
    result = run_cli("train", "--config", "configs/motion_test.py", "--config.stage=expression", "--workdir",
                     str(workdir))
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def test_expression_pretraining_learns_the_expression_encoder_alone(expression_run):
    records = [json.loads(line) for line in (expression_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(r["expression_supervision"] > 0 for r in records)
    assert all(0.04 < r["constant_guess"] < 0.13 for r in records)  # the variance of uniform [0, 1] labels is 1/12
    trained = read_checkpoint(expression_run / "checkpoints")
    assert list(trained["params"]) == ["generator"] and list(trained["params"]["generator"]) == ["expression"]
    assert int(trained["step"]) == 3


def test_warm_start_module_takes_the_expression_encoder_and_nothing_else(stage1_run, expression_run, tmp_path):
    trained = read_checkpoint(stage1_run / "checkpoints")
    zeros = jax.tree.map(jnp.zeros_like, trained["ema"]["generator"])
    fresh = create_state({"generator": zeros}, {"generator": optax.sgd(1.0)}, jax.random.PRNGKey(0),
                         ema_names=("generator",))
    model = load_config("configs/motion_test.py").model
    state = warm_start_module(fresh, expression_run, "expression", "init_expression_from", model)
    want = read_checkpoint(expression_run / "checkpoints")["ema"]["generator"]["expression"]
    for tree in (state.params["generator"]["expression"], state.ema["generator"]["expression"]):
        for got, value in zip(jax.tree.leaves(tree), jax.tree.leaves(want)):
            np.testing.assert_array_equal(got, value)
    rest = {k: v for k, v in state.params["generator"].items() if k != "expression"}
    assert rest and all(np.all(x == 0) for x in jax.tree.leaves(rest))
    with pytest.raises(ValueError,
                       match=r"init_expression_from .*: its generator has no 'mouth' \(it has expression\)"):
        warm_start_module(fresh, expression_run, "mouth", "init_expression_from", model)
    narrower = jax.tree.map(lambda x: x, fresh.params)
    narrower["generator"]["expression"] = {"head_dense": narrower["generator"]["expression"]["head_dense"]}
    with pytest.raises(ValueError, match=r"init_expression_from .*: its expression does not fit this config"):
        warm_start_module(fresh.replace(params=narrower), expression_run, "expression", "init_expression_from", model)
    model.expression.norm = "affine"
    with pytest.raises(ValueError, match=r"init_expression_from .*: its expression is built differently "
                                         r"\(norm='group' there, 'affine' here\)"):
        warm_start_module(fresh, expression_run, "expression", "init_expression_from", model)


@pytest.mark.parametrize("network, change", [("expression", ("norm", "affine")),
                                             ("pose", ("dims", (32, 32, 64, 64)))])
def test_single_network_stage_warm_start_takes_the_encoder_of_its_run(network, change, request):
    run = request.getfixturevalue(f"{network}_run")
    stage_module = {"expression": expression, "pose": pose}[network]
    config = load_config("configs/motion_test.py")
    config.stage = network
    fresh = jax.jit(lambda rng: nn.unbox(stage_module.make_stage(config).init(rng)))(jax.random.PRNGKey(1))
    assert stage_module.make_stage(config).warm_start(fresh) is fresh
    config[f"init_{network}_from"] = str(run)
    state = stage_module.make_stage(config).warm_start(fresh)
    want = read_checkpoint(run / "checkpoints")["ema"]["generator"][network]
    for tree in (state.params["generator"][network], state.ema["generator"][network]):
        for got, value in zip(jax.tree.leaves(tree), jax.tree.leaves(want), strict=True):
            np.testing.assert_array_equal(got, value)
    assert int(state.step) == 0
    config.model[network][change[0]] = change[1]
    with pytest.raises(ValueError, match=fr"init_{network}_from .*: its {network} is built differently"):
        stage_module.make_stage(config).warm_start(fresh)


@pytest.fixture(scope="session")
def pose_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("pose")
    result = run_cli("train", "--config", "configs/motion_test.py", "--config.stage=pose", "--workdir", str(workdir))
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def test_stage1_takes_the_pose_and_expression_encoders_of_their_runs_over_init_from(stage1_run, pose_run,
                                                                                      expression_run):
    config = load_config("configs/motion_test.py")
    stage = stage1.make_stage(config, lpips=stage1.random_lpips_params())
    fresh = jax.jit(lambda rng: nn.unbox(stage.init(rng)))(jax.random.PRNGKey(1))
    config.update(init_from=str(stage1_run), init_pose_from=str(pose_run), init_expression_from=str(expression_run))
    state = stage1.take_trained_params(fresh, config)
    origins = {"pose": pose_run, "expression": expression_run}
    whole = read_checkpoint(stage1_run / "checkpoints")["ema"]["generator"]
    for module, tree in state.params["generator"].items():
        want = (read_checkpoint(origins[module] / "checkpoints")["ema"]["generator"][module] if module in origins
                else whole[module])
        for got in (tree, state.ema["generator"][module]):
            for value, expected in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
                np.testing.assert_array_equal(value, expected)
    assert not np.array_equal(jax.tree.leaves(whole["pose"])[0],
                              jax.tree.leaves(state.params["generator"]["pose"])[0])  # the pose run's, not init_from's


def test_init_expression_from_nowhere_is_a_one_line_error_and_leaves_no_run(tmp_path, capsys):
    code, out = cli(capsys, *STAGE1, "--workdir", str(tmp_path / "run"),
                    f"--config.init_expression_from={tmp_path / 'nowhere'}")
    assert code == 2 and not (tmp_path / "run").exists()
    assert len(error_lines(out.err)) == 1
    assert error_lines(out.err)[0].startswith(
        f"dex-portrait train: error: init_expression_from {tmp_path / 'nowhere'}:")


def test_module_runs_on_one_xdist_worker(request):
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("only under pytest-xdist --dist loadgroup")
    assert request.node.nodeid.endswith("@train_loop"), "xdist_group is ignored: stage1_run would run per worker"

"""Stage-3 training (dex_jax.train.stages.temporal) on the `test` animator: three steps of the shared loop from a
Stage-2 export leave every non-temporal param bitwise as the export holds it and move every temporal one; Adam's
state holds the temporal params only; the run exports as an animator that inference reads; clips come as
consecutive-frame batches; bad settings are one-line errors; a Stage-2 run (export or workdir) trained on other
encoders than motion_from's is refused."""

import flax.linen as nn
import jax
import numpy as np
import pytest
from animator_checkpoint import untrained_params, write_untrained_export
from flax.traverse_util import flatten_dict
from motion_checkpoint import write_untrained_run

from dex_jax.animator.model import build_animator
from dex_jax.animator.temporal import is_temporal
from dex_jax.cli import main as cli_main
from dex_jax.config_loading import load_config
from dex_jax.train.animator_checkpoint import STAGE, read_animator, read_motion_encoders
from dex_jax.train.checkpoint import Checkpointer
from dex_jax.train.cli import STAGES, check_workdir
from dex_jax.train.export import export as export_run
from dex_jax.train.input import make_iterator
from dex_jax.train.loop import train
from dex_jax.train.stages import temporal


@pytest.fixture(scope="module")
def stage2(tmp_path_factory):
    """An untrained Stage-2 `test` export (every param random, zero-initialised layers too) and its train config."""
    return write_untrained_export(tmp_path_factory.mktemp("stage2") / "export")


def temporal_config(stage2):
    export, stage2_config = stage2
    config = load_config("configs/animator_temporal_test.py")
    config.init_from = str(export)
    config.motion_from = stage2_config.motion_from
    return config


def flat(tree):
    return {path: np.asarray(leaf) for path, leaf in flatten_dict(jax.device_get(tree)).items()}


def test_random_clips_batch_layout(stage2):
    config = temporal_config(stage2)
    with make_iterator(config.data) as batches:
        batch = next(batches)
    assert batch["source"].shape == (2, 16, 16, 3)
    assert batch["driving"].shape == batch["pose_input"].shape == (2, 3, 16, 16, 3)
    assert batch["expression_input"].shape == (2, 3, 32, 32, 3)


def test_three_steps_train_the_temporal_params_alone(stage2, tmp_path):
    """Through the loop (warm start, donation, checkpoints): after 3 steps every non-temporal param and its EMA
    equal the Stage-2 export's bit for bit, every temporal param and its EMA moved, and Adam's moments hold exactly
    the temporal params."""
    config = temporal_config(stage2)
    assert "temporal" in STAGES
    check_workdir(config, tmp_path / "run")
    state, step = train(config, tmp_path / "run", temporal.make_stage(config), make_iterator(config.data))
    assert step == 3

    exported = flat(untrained_params(stage2[1].model))  # what write_untrained_export wrote (seed 0)
    params, ema = flat(state.params["animator"]), flat(state.ema["animator"])
    fixed = [path for path in params if not is_temporal(path)]
    moved = [path for path in params if is_temporal(path)]
    assert set(fixed) == set(exported) and len(moved) > 50
    for path in fixed:
        np.testing.assert_array_equal(params[path], exported[path], err_msg="/".join(path))
        np.testing.assert_array_equal(ema[path], exported[path], err_msg="/".join(path))

    stage = temporal.make_stage(config)
    with jax.threefry_partitionable(False):  # as the loop draws the init
        init = flat(jax.jit(lambda rng: nn.unbox(stage.init(rng)).params["animator"])(jax.random.PRNGKey(config.seed)))
    unchanged = [path for path in moved if np.array_equal(params[path], init[path])
                 or np.array_equal(ema[path], init[path])]
    assert not unchanged, unchanged[:3]
    module = moved[0][:moved[0].index("temporal") + 1]
    assert not np.any(init[module + ("proj_out", "kernel")])  # a fresh module's output is zero

    moments = flatten_dict(jax.device_get(state.opt_state["animator"][1][0].mu))
    assert set(moments) == set(moved)

    out = tmp_path / "export"  # the run exports as an animator: its EMA, temporal modules included, is what reads
    assert export_run(tmp_path / "run", out) == 3
    checkpoint = read_animator(out)
    assert checkpoint.config.stage == "temporal" and checkpoint.config.model.temporal.enabled
    read = flat(checkpoint.params)
    assert set(read) == set(ema)
    for path in moved[:5] + fixed[:5]:
        np.testing.assert_array_equal(read[path], ema[path], err_msg="/".join(path))


def test_motion_from_may_name_an_animator_export_whose_frozen_encoders_it_takes(stage2):
    export, stage2_config = stage2
    model, encoders = read_motion_encoders(str(export))
    want_model, want = read_motion_encoders(stage2_config.motion_from)
    assert model.to_dict() == want_model.to_dict() and set(encoders) == set(want) == {"pose", "expression"}
    for name in want:
        assert jax.tree.all(jax.tree.map(np.array_equal, encoders[name], want[name]))
    config = temporal_config(stage2)
    config.motion_from = str(export)
    assert temporal.make_stage(config).frozen["expression"] is not None  # its encoders are its init_from's


def test_a_stage2_workdir_is_held_to_the_encoders_of_its_own_motion_from(stage2, tmp_path):
    """A Stage-2 workdir keeps no frozen encoders: the guard reads those of the motion_from in its config.json."""
    _, stage2_config = stage2
    workdir = tmp_path / "stage2_run"
    (workdir / "checkpoints").mkdir(parents=True)
    (workdir / "config.json").write_text(stage2_config.to_json(indent=2))
    params = untrained_params(stage2_config.model)
    checkpoints = Checkpointer(workdir / "checkpoints", keep=1, async_save=False)
    checkpoints.save(3, {"step": np.int32(3), "params": {STAGE: params}, "ema": {STAGE: params}}, force=True)
    checkpoints.close()
    model = build_animator(load_config("configs/animator_temporal_test.py").model)
    side = stage2_config.model.unet.sample_size
    own = stage2_config.motion_from
    given = temporal.read_stage2(str(workdir), model, side, read_motion_encoders(own)[1], own)
    assert flatten_dict(given).keys() == flatten_dict(params).keys()
    other = str(write_untrained_run(tmp_path / "other_stage1", seed=1))
    with pytest.raises(ValueError, match=f"init_from {workdir}: its animator was trained with another pose encoder"):
        temporal.read_stage2(str(workdir), model, side, read_motion_encoders(other)[1], other)


def test_bad_settings_are_one_line_errors(stage2, tmp_path, capsys):
    export, stage2_config = stage2
    tiny_export, _ = write_untrained_export(tmp_path / "tiny", "tiny")
    other_stage1 = write_untrained_run(tmp_path / "other_stage1", seed=1)  # the same model, other weights
    other_encoders = f"its animator was trained with another pose encoder than motion_from {other_stage1}'s"
    base = ["train", "--config", "animator_temporal_test", "--workdir", str(tmp_path / "run"),
            f"--config.motion_from={stage2_config.motion_from}"]
    cases = {"--config.model.temporal.enabled=False": "set model.temporal.enabled=True",
             "--config.data.kind=pairs": "trains on clips: set data.kind='clips'",
             "--config.init_from=": "init_from is empty",
             f"--config.init_from={stage2_config.motion_from}": "not an animator run (its config's stage is 'stage1')",
             f"--config.init_from={tiny_export}": f"init_from {tiny_export}: its animator does not fit this config",
             f"--config.motion_from={other_stage1}": other_encoders}
    for override, message in cases.items():
        extra = [] if "init_from" in override else [f"--config.init_from={export}"]
        code = cli_main(base + extra + [override])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and message in err[0], (override, err)
    assert not (tmp_path / "run").exists()


def test_paper_and_synth_configs():
    """animator_temporal_paper holds the paper's Stage-3 numbers (Sec. 4.1: "Only the temporal module is trained using
    24-frame video sequences, with a batch size of 8 and a learning rate of 1e-5 for 80k iterations"); it and the
    SynthHeads config pass the stage's checks once init_from is given."""
    paper = load_config("configs/animator_temporal_paper.py")
    assert (paper.stage, paper.data.kind, paper.data.clip_length, paper.data.batch_size, paper.optimizer.lr,
            paper.total_steps) == ("temporal", "clips", 24, 8, 1e-5, 80_000)
    assert paper.data.image_size == 512 and paper.model.temporal.enabled
    synth = load_config("configs/animator_temporal_synth.py")
    assert synth.data.clip_length == 24 and synth.init_from.endswith("data/animator_synth")
    for config in (paper, synth):
        config.init_from = "STAGE2"
        temporal.check_config(config)

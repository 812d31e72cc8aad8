"""Config files by name or path from any working directory, their one-line load errors, typed overrides through
ml_collections' config_flags, the motion_synth phase table, the data folder shared with `data build`, and the
check of the label fields a config reads against its dataset."""

import os
from pathlib import Path

import pytest

from dex_jax.cli import main as cli_main
from dex_jax.config_loading import CONFIG_DIR, ConfigError, apply_overrides, load_config, load_module, resolve_config
from dex_jax.data import tfds_common
from dex_jax.data.tfds_portrait_videos import PortraitVideos
from dex_jax.data.tfds_synth_heads import SynthHeads
from dex_jax.train.input import check_fields

PHASES = [str(p) for p in range(1, 14)] + ["expression", "expression_normalised"]


def train(capsys, *args):
    code = cli_main(["train", *args])
    return code, capsys.readouterr().err


def error_lines(err):
    return [line for line in err.splitlines() if line.startswith("dex-portrait train")]


def test_bare_names_are_configs_of_the_checkout_and_paths_are_relative_to_the_working_directory(tmp_path,
                                                                                                monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_config("motion_synth:3") == (CONFIG_DIR / "motion_synth.py", "3")
    assert resolve_config("motion_synth.py") == (CONFIG_DIR / "motion_synth.py", None)
    assert resolve_config("configs/motion_synth.py:3") == (Path("configs/motion_synth.py"), "3")
    assert load_config("motion_synth:3").to_dict() == load_config(f"{CONFIG_DIR}/motion_synth.py:3").to_dict()
    with pytest.raises(ConfigError, match=f"^config file not found: configs/motion_test.py \\(relative to the working "
                                          f"directory\\); the bare name motion_test names {CONFIG_DIR}/motion_test.py$"):
        load_config("configs/motion_test.py")  # nothing of that name under tmp_path
    with pytest.raises(ConfigError, match=f"^config file not found: {CONFIG_DIR}/mine.py$"):
        load_config("mine")
    # A config loads its neighbour relative to its own file, whatever the working directory.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "base.py").write_text(
        "import ml_collections\n\ndef get_config():\n    return ml_collections.ConfigDict({'size': 3})\n")
    (tmp_path / "mine" / "child.py").write_text(
        "from pathlib import Path\nfrom dex_jax.config_loading import load_config_file\n\n"
        "def get_config(arg):\n    config = load_config_file(Path(__file__).parent / 'base.py')\n"
        "    config.size *= int(arg)\n    return config\n")
    assert load_config("mine/child.py:2").size == 6
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert load_config(f"{tmp_path}/mine/child.py:5").size == 15
    assert load_config("./../mine/child.py:1").size == 3


def test_train_help_lists_every_config_with_its_variants_and_documents_overrides_and_the_data_folder(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["train", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for path in sorted(CONFIG_DIR.glob("*.py")):
        summary = load_module(path).__doc__.strip().splitlines()[0]
        assert f"  {path.name}" in out and summary in out
    assert "  motion_synth.py:1..13,expression,expression_normalised\n" in out
    assert "  motion_model.py:paper,tiny,test\n" in out and "  motion_paper.py\n" in out
    assert "--config.a.b=value or --config.a.b value" in out and "--noconfig.a.b" in out
    assert "$DEX_DATA_DIR" in out and "--config.data.dataset_dir=DIR" in out


def test_overrides_are_typed_by_their_field():
    config = apply_overrides(load_config("motion_synth:7"), [
        "--config.total_steps", "7", "--config.optimizer.lr=1e-3", "--config.loss.face_perceptual=2",
        "--config.loss.detach_warp_pose=false", "--config.init_discriminator", "--noconfig.data.mask_pose_input",
        "--config.init_from=runs/x", "--config.optimizer.generator_lr_multipliers={'decoder': 20.0}",
        "--config.sharding_rules=(('batch', 'data'),)", "--config.optimizer.warmup_steps", "-1"])
    assert config.total_steps == 7 and config.optimizer.lr == 1e-3 and config.optimizer.warmup_steps == -1
    assert config.loss.face_perceptual == 2.0 and isinstance(config.loss.face_perceptual, float)
    assert config.loss.detach_warp_pose is False and config.init_discriminator is True
    assert config.data.mask_pose_input is False and config.init_from == "runs/x"
    assert config.optimizer.generator_lr_multipliers.to_dict() == {"decoder": 20.0}
    assert config.sharding_rules == (("batch", "data"),)


@pytest.mark.parametrize("overrides,message", [
    (["--config.total_steps=abc"], "config.total_steps expects int: --config.total_steps=abc: invalid literal"),
    (["--config.optimizer.lr", "fast"], "config.optimizer.lr expects float: --config.optimizer.lr=fast"),
    (["--config.loss.detach_warp_pose=maybe"], "config.loss.detach_warp_pose expects bool"),
    (["--config.optimizer.generator_lr_multipliers=3"], "config.optimizer.generator_lr_multipliers expects ConfigDict"),
    (["--config.los.l1=1"], "^unknown config key: los.l1$"),
    (["--noconfig.loss.nope"], "^unknown config key: loss.nope$"),
    (["--config.loss.detach_warp_pose", "true"], "^unexpected argument 'true'"),
    (["stray"], "^unexpected argument 'stray'"),
    (["--seed=1"], "^unexpected argument --seed: overrides look like --config.a.b=value$"),
    (["--config.total_steps"], "^Missing value for flag --config.total_steps$"),
])
def test_bad_overrides_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError, match=message) as err:
        apply_overrides(load_config("motion_synth:7"), overrides)
    assert "\n" not in str(err.value)


GOOD = "import ml_collections\n\ndef get_config():\n    return ml_collections.ConfigDict({'stage': 'stage1'})\n"


@pytest.mark.parametrize("source,variant,message", [
    ("def get_config(:\n", "", "does not load: SyntaxError: "),
    ("import no_such_module_for_dex_jax\n" + GOOD, "", "does not load: ModuleNotFoundError: No module named"),
    ("def get_config():\n    raise RuntimeError('boom\\nsecond line')\n", "",
     ": get_config() failed: RuntimeError: boom second line"),
    ("def get_config():\n    return {'stage': 'stage1'}\n", "", ": get_config returned a dict, not a ConfigDict"),
    ("VARIANTS = {'a': 1, 'b': 2}\n\ndef get_config(arg='a'):\n    return arg\n", ":c",
     " has no variant 'c'; it has a, b"),
    (GOOD, ":a", " takes no variant, got 'a'"),
    ("X = 1\n", "", " defines no get_config(arg)"),
])
def test_config_files_that_do_not_load_are_one_line_errors_naming_the_file(tmp_path, capsys, source, variant,
                                                                           message):
    path = tmp_path / "broken.py"
    path.write_text(source)
    code, err = train(capsys, "--config", f"{path}{variant}", "--workdir", str(tmp_path / "run"))
    assert code == 2 and "Traceback" not in err
    (line,) = error_lines(err)
    assert line.startswith(f"dex-portrait train: error: config file {path}") and message in line
    assert not (tmp_path / "run").exists()


def test_a_config_that_loads_a_missing_neighbour_names_the_neighbour(tmp_path, capsys):
    (tmp_path / "child.py").write_text(
        "from pathlib import Path\nfrom dex_jax.config_loading import load_config_file\n\n"
        "def get_config():\n    return load_config_file(Path(__file__).parent / 'gone.py')\n")
    code, err = train(capsys, "--config", str(tmp_path / "child.py"), "--workdir", str(tmp_path / "run"))
    assert code == 2
    assert error_lines(err) == [f"dex-portrait train: error: config file not found: {tmp_path / 'gone.py'}"]


def _flat(tree, prefix=""):
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _changes(before, after):
    before, after = _flat(before.to_dict()), _flat(after.to_dict())
    assert set(before) <= set(after)
    return {key: value for key, value in after.items() if before.get(key, "<absent>") != value}


# What each phase changed over the phase it continues, as the phases were run (the old chain of functions gave
# exactly these configs); D: the data folder.
HISTORY = {
    "2": ("1", {"total_steps": 2_700, "optimizer.generator_lr_multipliers.decoder": 10.0,
                "loss.detach_warp_pose": True}),
    "3": ("2", {"total_steps": 2_000, "optimizer.lr": 1e-4, "optimizer.warmup_steps": 300,
                "data.driving_cross_view_probability": 0.25}),
    "4": ("3", {"total_steps": 4_000, "optimizer.warmup_steps": 100, "loss.lpips": 0.0, "loss.component_lpips": 0.0}),
    "5": ("4", {"total_steps": 2_800, "loss.face_perceptual": 1.0}),
    "6": ("5", {"total_steps": 3_200, "loss.face_perceptual": 3.0}),
    "7": ("6", {"total_steps": 2_400, "loss.face_perceptual": 6.0}),
    "8": ("7", {"loss.adversarial": 1.0, "init_discriminator": True}),
    "9": ("8", {"total_steps": 1_500, "model.expression.norm": "group", "loss.expression_supervision": 1.0}),
    "10": ("9", {"total_steps": 2_000, "loss.expression_region_l1": 10.0}),
    "11": ("10", {"total_steps": 1_200, "data.dataset_dir": "D/synth_heads/cpu128_spaced/1.0.0"}),
    "12": ("7", {"total_steps": 2_000, "model.expression.norm": "group", "loss.expression_supervision": 1.0,
                 "loss.expression_region_l1": 10.0, "data.dataset_dir": "D/synth_heads/cpu128_still/1.0.0"}),
    "13": ("12", {"total_steps": 1_000, "data.expression_align": "landmarks", "data.rotation_degrees": 0.0,
                  "model.expression.pool_grid": 4}),
    "expression": ("1", {"stage": "expression", "model.expression.norm": "group", "total_steps": 8_000,
                         "data.dataset_dir": "D/synth_heads/cpu128_expressions/1.0.0", "data.batch_size": 16,
                         "optimizer.lr": 1e-3, "optimizer.warmup_steps": 100, "ema.decay": 0.99,
                         "log.every_steps": 100, "log.image_every_steps": 0}),
    "expression_normalised": ("expression", {"loss.expression_normalised": True}),
}


def test_each_motion_synth_phase_changes_what_its_history_says(tmp_path, monkeypatch):
    monkeypatch.setenv("DEX_DATA_DIR", str(tmp_path))
    configs = {phase: load_config(f"motion_synth:{phase}") for phase in PHASES}
    for phase, (before, changes) in HISTORY.items():
        want = {key: value.replace("D/", f"{tmp_path}/") if key == "data.dataset_dir" else value
                for key, value in changes.items()}
        assert _changes(configs[before], configs[phase]) == want, phase
    first = configs["1"]
    tiny = load_config("motion_model:tiny")
    tiny.expression.norm = "affine"
    assert first.model.to_dict() == tiny.to_dict() and first.total_steps == 2_500 and first.stage == "stage1"
    assert first.data.dataset_dir == f"{tmp_path}/synth_heads/cpu128/1.0.0"
    assert (first.data.batch_size, first.data.num_driving, first.data.image_size) == (4, 2, 64)
    assert first.optimizer.generator_lr_multipliers.to_dict() == {"pose": 5.0}
    assert (first.loss.adversarial, first.loss.pose_supervision, first.loss.lpips) == (0.1, 1.0, 1.0)
    assert load_config("motion_synth").to_dict() == configs["13"].to_dict()  # the bundled model's last phase


def test_motion_synth_rows_name_existing_fields_and_the_runs_they_continue():
    module = load_module(CONFIG_DIR / "motion_synth.py")
    gates = load_module(CONFIG_DIR / "learnability.py")
    assert set(module.VARIANTS) == set(PHASES)
    paper = load_config("motion_paper")
    for phase, row in module.VARIANTS.items():
        assert row.base is None or row.base in module.VARIANTS
        for key in row.changes:
            if not key.startswith("optimizer.generator_lr_multipliers."):
                assert key in _flat(paper.to_dict()), (phase, key)
        config = load_config(f"motion_synth:{phase}")
        for field, run in row.warm_start.items():
            if run.startswith("learnability:"):
                assert field in config and run.split(":")[1] in gates.VARIANTS
            else:
                assert field in config and run.split()[0] in module.VARIANTS and run.split()[1:] in ([], ["export"])
        if config.init_discriminator:  # an export keeps no discriminator: init_from must be a workdir
            assert "export" not in row.warm_start["init_from"]
        for network in ("expression", "pose"):  # the encoder it takes must have this phase's architecture
            if f"init_{network}_from" in row.warm_start:
                run = row.warm_start[f"init_{network}_from"]
                source = load_config(run if run.startswith("learnability:") else f"motion_synth:{run}")
                assert source.stage == network and source.model[network] == config.model[network], (phase, network)
                inputs = {"expression": ("expression_align", "expression_box_scale", "expression_size"),
                          "pose": ("mask_pose_input", "image_size")}[network]  # and reads the same crops
                assert [source.data[k] for k in inputs] == [config.data[k] for k in inputs], (phase, network)


def test_data_folder_is_dex_data_dir_else_tfds_own(tmp_path, monkeypatch):
    monkeypatch.setenv("DEX_DATA_DIR", str(tmp_path / "dex"))
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    assert tfds_common.data_dir() == str(tmp_path / "dex")
    monkeypatch.delenv("DEX_DATA_DIR")
    assert tfds_common.data_dir() == str(tmp_path / "tfds")
    monkeypatch.delenv("TFDS_DATA_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert tfds_common.data_dir() == str(tmp_path / "tensorflow_datasets")


def test_data_build_and_the_configs_use_one_data_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DEX_DATA_DIR", str(tmp_path))
    config = load_config("motion_synth:12")
    assert config.data.dataset_dir == str(tmp_path / "synth_heads" / "cpu128_still" / "1.0.0")
    # its dataset info, without the records
    builder = SynthHeads(config="cpu128_still", data_dir=str(tmp_path), file_format="array_record")
    os.makedirs(builder.data_dir)
    builder.info.write_to_directory(builder.data_dir)
    cli_main(["data", "build", "synth_heads", "--config", "cpu128_still"])  # finds that dataset there
    assert config.data.dataset_dir in "".join(capsys.readouterr())
    check_fields(config)  # SynthHeads records poses and expressions


@pytest.fixture(scope="module")
def portrait_videos_info(tmp_path_factory):
    """A folder with portrait_videos' dataset info (its real features) and no records: enough for the check."""
    builder = PortraitVideos(data_dir=str(tmp_path_factory.mktemp("tfds")))
    os.makedirs(builder.data_dir)
    builder.info.write_to_directory(builder.data_dir)
    return builder.data_dir


def test_a_phase_on_a_dataset_without_labels_names_every_missing_field_before_training(portrait_videos_info,
                                                                                      tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the command works from any working directory
    code, err = train(capsys, "--config", "motion_synth:12", "--workdir", "run",
                      f"--config.data.dataset_dir={portrait_videos_info}")
    assert code == 2
    assert error_lines(err) == [(
        f"dex-portrait train: error: the dataset at data.dataset_dir={portrait_videos_info} lacks batch fields the "
        "config reads: source_pose, driving_pose (read by loss.pose_supervision); driving_expression (read by "
        "loss.expression_supervision). Use a dataset that records poses and expressions (synth_heads) or turn "
        "those settings off")]
    assert not (tmp_path / "run").exists()


def test_the_check_lists_only_what_the_config_reads(portrait_videos_info):
    config = load_config("motion_synth:expression")
    config.data.dataset_dir = portrait_videos_info
    with pytest.raises(ValueError, match=r"config reads: driving_expression \(read by stage expression\)\. Use"):
        check_fields(config)
    config = load_config("motion_synth:1")
    config.data.dataset_dir = portrait_videos_info
    with pytest.raises(ValueError, match=r"config reads: source_pose, driving_pose \(read by loss.pose_supervision\)"
                                         r"\. Use"):
        check_fields(config)
    config.loss.pose_supervision = 0.0
    check_fields(config)
    config.data.source = "random"
    config.loss.expression_supervision = 1.0
    check_fields(config)  # random batches have every field

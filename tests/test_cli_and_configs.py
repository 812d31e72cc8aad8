"""Config files, dotted overrides and the command line's one-line errors."""

import os
import re
import subprocess
import sys

import jax
import pytest

from dex_jax.config_loading import ConfigError, apply_overrides, load_config
from dex_jax.motion.summary import parameter_counts
from dex_jax.train.stages import expression, stage1


def test_variants_and_overrides():
    config = load_config("configs/motion_model.py:tiny")
    apply_overrides(config, ["--config.decoder.channels=96", "--config.dtype", "bfloat16"])
    assert config.decoder.channels == 96 and config.dtype == "bfloat16"


@pytest.mark.parametrize("spec,overrides,message", [
    ("configs/nope.py", [], "config file not found: configs/nope.py"),
    ("configs/motion_model.py:huge", [], "has no variant 'huge'; it has paper, tiny, test"),
    ("configs/motion_model.py:tiny", ["--config.decoder.chanels=3"], "^unknown config key: decoder.chanels$"),
    ("configs/motion_model.py:tiny", ["--config.decodr.channels=3"], "^unknown config key: decodr.channels$"),
])
def test_config_errors(spec, overrides, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(load_config(spec), overrides)


@pytest.mark.parametrize("spec", ["configs/motion_paper.py", *(f"configs/motion_synth.py:{p}" for p in range(1, 13)),
                                  "configs/motion_test.py"])
def test_shipped_train_configs_are_consistent(spec):
    config = load_config(spec)
    config.init_from = config.init_from or "RUN"  # the phases that continue a run take it on the command line
    config.lpips.vgg_weights = config.lpips.vgg_weights or __file__  # motion_paper's files: test_pretrained_init.py
    stage1.check_config(config)
    weights = config.loss
    assert not weights.detach_warp_pose or weights.pose_supervision > 0
    shapes = jax.eval_shape(stage1.make_stage(config, lpips={}).init, jax.random.key(0))
    assert set(config.optimizer.generator_lr_multipliers) <= set(shapes.params["generator"])


@pytest.mark.parametrize("phase", ["expression", "expression_normalised"])
def test_expression_phase_config_is_an_expression_stage_on_expression_tracks(phase):
    config = load_config(f"configs/motion_synth.py:{phase}")
    assert config.stage == "expression" and config.data.dataset_dir.endswith("cpu128_expressions/1.0.0")
    expression.check_config(config)
    shapes = jax.eval_shape(expression.make_stage(config).init, jax.random.key(0))
    assert set(shapes.params["generator"]) == {"expression"}


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "dex_jax.cli", *args], capture_output=True, text=True)


def test_unknown_command_and_bad_bench_give_one_line_errors():
    result = run_cli("frobnicate")
    assert result.returncode == 2 and "unknown command 'frobnicate'" in result.stderr
    result = run_cli("bench", "nope")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "unknown benchmark" in result.stderr
    assert "Traceback" not in result.stderr


def test_bench_motion_prints_parameter_counts_flops_and_forward_time():
    env = {**os.environ, "DEX_JAX_CACHE": jax.config.jax_compilation_cache_dir}
    result = subprocess.run([sys.executable, "-m", "dex_jax.cli", "bench", "motion", "--variants", "test",
                             "--repeats", "1"], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    counts_table, rest = result.stdout.split("forward GFLOPs per image")
    rows = {line.rsplit(None, 1)[0].strip(): line.split() for line in counts_table.splitlines() if line.strip()}
    counts = parameter_counts(load_config("configs/motion_model.py:test"))
    assert all(rows[name][-1] == f"{value:,}" for name, value in counts.items())
    flops_table = rest.split("device:")[0]
    flops = {line.rsplit(None, 1)[0].strip(): float(line.split()[-1]) for line in flops_table.splitlines()[2:]
             if line.strip()}
    assert set(flops) == {"appearance", "appearance_latent", "pose", "expression", "fusion", "decoder",
                          "generator (total)"}
    assert flops["generator (total)"] > max(value for name, value in flops.items() if name != "generator (total)")
    timing = next(line.split() for line in result.stdout.splitlines() if line.startswith("test "))
    assert len(timing) == 4 and float(timing[2]) > 0


def test_bench_stage1_prints_step_time_flops_and_memory():
    env = {**os.environ, "DEX_JAX_CACHE": jax.config.jax_compilation_cache_dir}
    result = subprocess.run([sys.executable, "-m", "dex_jax.cli", "bench", "stage1", "--config", "configs/motion_test.py",
                             "--batch", "2", "--num-driving", "2", "--steps", "1"], capture_output=True, text=True,
                            env=env, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    machine, *lines = result.stdout.splitlines()
    assert machine.startswith("machine: ")
    assert lines[1] == "configs/motion_test.py: 32px, float32, batch 2 x 2 driving = 4 pairs"
    step_ms, examples, gflop = re.fullmatch(
        r"compile [\d.]+ s \| step ([\d.]+) ms \| ([\d.]+) examples/s \| [\d.]+ pairs/s \| ([\d.]+) GFLOP/step \| "
        r"MFU [\d.]+%", lines[2]).groups()
    assert float(step_ms) > 0 and float(examples) == pytest.approx(2 / (float(step_ms) / 1e3), rel=0.02)
    assert float(gflop) > 0
    arguments, temporaries = re.fullmatch(r"memory: arguments ([\d.]+) MiB \| temporaries ([\d.]+) MiB", lines[3]).groups()
    assert float(arguments) > 0 and float(temporaries) > 0


def test_bench_stage1_flops_only_counts_the_lowered_step():
    result = subprocess.run([sys.executable, "-m", "dex_jax.cli", "bench", "stage1", "--config", "configs/motion_test.py",
                             "--batch", "2", "--num-driving", "2", "--flops-only"], capture_output=True, text=True,
                            timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    machine, *lines = result.stdout.splitlines()
    assert machine.startswith("machine: ")
    assert lines[0] == "configs/motion_test.py: 32px, float32, batch 2 x 2 driving = 4 pairs"
    gflop = re.fullmatch(r"([\d.]+) GFLOP/step \(XLA cost analysis of the lowered step\)", lines[1]).group(1)
    assert float(gflop) > 0 and len(lines) == 2


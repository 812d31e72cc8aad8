"""Config files, dotted overrides and the command line's one-line errors."""

import os
import subprocess
import sys

import jax
import pytest

from dex_jax.config_loading import ConfigError, apply_overrides, load_config
from dex_jax.motion.summary import parameter_counts


def test_variants_and_overrides():
    config = load_config("configs/motion_model.py:tiny")
    apply_overrides(config, {"decoder.channels": "96", "dtype": "bfloat16"})
    assert config.decoder.channels == 96 and config.dtype == "bfloat16"


@pytest.mark.parametrize("spec,overrides,message", [
    ("configs/nope.py", {}, "not found"),
    ("configs/motion_model.py:huge", {}, "no variant 'huge'"),
    ("configs/motion_model.py:tiny", {"decoder.chanels": "3"}, "unknown config key: decoder.chanels"),
    ("configs/motion_model.py:tiny", {"decodr.channels": "3"}, "unknown config key: decodr"),
])
def test_config_errors(spec, overrides, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(load_config(spec), overrides)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "dex_jax.cli", *args], capture_output=True, text=True)


def test_unknown_command_and_bad_bench_give_one_line_errors():
    result = run_cli("frobnicate")
    assert result.returncode == 2 and "unknown command 'frobnicate'" in result.stderr
    result = run_cli("bench", "nope")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "unknown benchmark" in result.stderr
    assert "Traceback" not in result.stderr


def test_bench_motion_prints_parameter_counts_and_forward_time():
    env = {**os.environ, "DEX_JAX_CACHE": jax.config.jax_compilation_cache_dir}
    result = subprocess.run([sys.executable, "-m", "dex_jax.cli", "bench", "motion", "--variants", "test",
                             "--repeats", "1"], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    rows = {line.rsplit(None, 1)[0].strip(): line.split() for line in result.stdout.splitlines() if line.strip()}
    counts = parameter_counts(load_config("configs/motion_model.py:test"))
    assert all(rows[name][-1] == f"{value:,}" for name, value in counts.items())
    timing = next(line.split() for line in result.stdout.splitlines() if line.startswith("test "))
    assert len(timing) == 4 and float(timing[2]) > 0

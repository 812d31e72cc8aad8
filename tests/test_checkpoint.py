"""Checkpoints: 10 steps straight == 5 steps, SIGTERM, resume to 10; keep-last-N; a corrupt newest checkpoint
falls back to the previous one with a warning; missing or unreadable checkpoints are one-line errors."""

import logging
import os
import re
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from dex_jax.train.checkpoint import read_checkpoint
from dex_jax.train.input import make_iterator
from dex_jax.train.loop import train
from toy_stage import REPO, flat_params, make_toy_stage, toy_config


def run_toy(workdir, steps):
    config = toy_config(total_steps=steps)
    state, step = train(config, workdir, make_toy_stage(config), make_iterator(config.data))
    return flat_params(state), step


def corrupt(step_dir):
    for path in (step_dir / "state").rglob("*"):
        if path.is_file():
            path.write_bytes(b"not a checkpoint")


def assert_same(a, b):
    assert set(a) == set(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_sigterm_saves_and_resume_matches_a_straight_run(tmp_path):
    straight, _ = run_toy(tmp_path / "straight", 10)
    assert sorted(p.name for p in (tmp_path / "straight" / "checkpoints").iterdir()) == ["10", "6", "8"]

    env = {**os.environ, "DEX_JAX_CACHE": jax.config.jax_compilation_cache_dir}
    command = [sys.executable, "tests/toy_stage.py", str(tmp_path / "resumed"), "10"]
    child = subprocess.Popen(command + ["--delay", "0.3"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in child.stdout:
        lines.append(line)
        if line.startswith("step 5/10"):
            child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=120) == 0, "".join(lines)[-3000:]
    saved = [int(m.group(1)) for m in map(re.compile(r"SIGTERM: saved a checkpoint at step (\d+)").search, lines) if m]
    assert len(saved) == 1 and 5 <= saved[0] < 10, "".join(lines)[-3000:]

    resumed, step = run_toy(tmp_path / "resumed", 10)
    assert step == 10
    assert_same(resumed, straight)


def test_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
    straight, _ = run_toy(tmp_path / "straight", 6)
    run_toy(tmp_path / "run", 4)
    checkpoints = tmp_path / "run" / "checkpoints"
    corrupt(checkpoints / "4")
    with caplog.at_level(logging.WARNING, logger="dex_jax"):
        resumed, step = run_toy(tmp_path / "run", 6)
    assert any("checkpoints/4 is corrupt" in r.getMessage() and "falling back" in r.getMessage()
               for r in caplog.records)
    assert (checkpoints / "4.corrupt").is_dir()
    assert step == 6
    assert_same(resumed, straight)


def test_no_intact_checkpoint_is_an_error(tmp_path):
    run_toy(tmp_path / "run", 2)
    corrupt(tmp_path / "run" / "checkpoints" / "2")
    with pytest.raises(ValueError, match=r"no intact checkpoint in .*checkpoints \(step 2: "):
        run_toy(tmp_path / "run", 4)
    assert (tmp_path / "run" / "checkpoints" / "2").is_dir()  # nothing is renamed when nothing restores


def test_read_checkpoint_returns_the_newest_state_and_names_missing_ones(tmp_path):
    params, _ = run_toy(tmp_path / "run", 2)
    state = read_checkpoint(tmp_path / "run" / "checkpoints")
    assert int(state["step"]) == 2
    np.testing.assert_array_equal(state["params"]["model"]["hidden"]["kernel"],
                                  params["['params']['model']['hidden']['kernel']"])
    with pytest.raises(ValueError, match="no checkpoint folder at"):
        read_checkpoint(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no checkpoint"):
        read_checkpoint(tmp_path / "empty")
    corrupt(tmp_path / "run" / "checkpoints" / "2")
    with pytest.raises(ValueError, match="no intact checkpoint"):
        read_checkpoint(tmp_path / "run" / "checkpoints")

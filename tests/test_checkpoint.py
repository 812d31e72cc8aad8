"""Checkpoints: 10 steps straight == some steps, SIGTERM or SIGINT, resume to 10; Ctrl-C while compiling; SIGINT
ignored where the run was started with it ignored; a resumed run with grain workers ends without noise;
keep-last-N; a corrupt newest checkpoint falls back to the previous one with a warning; missing or unreadable
checkpoints are one-line errors."""

import logging
import os
import re
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dex_jax.train.checkpoint import read_checkpoint
from dex_jax.train.input import make_iterator
from dex_jax.train.loop import own_buffers, train
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


def run_script(workdir, steps, *options, signal_after=None, signum=signal.SIGINT, sigint_ignored=False):
    """Run tests/toy_stage.py to `steps` under workdir; send `signum` once a line starts with `signal_after`.
    The child starts with SIGINT ignored if `sigint_ignored` (as a job started in the background by a shell
    script, or under nohup), else with SIGINT's default (as at a terminal), whatever this process has.
    Returns (exit status, output lines)."""
    env = {**os.environ, "DEX_JAX_CACHE": jax.config.jax_compilation_cache_dir}
    command = [sys.executable, "tests/toy_stage.py", str(workdir), str(steps), *options]
    # An exec keeps an ignored signal ignored and resets a handled one to its default
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN if sigint_ignored else signal.default_int_handler)
    try:
        child = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    lines = []
    for line in child.stdout:
        lines.append(line)
        if signal_after and line.startswith(signal_after):
            child.send_signal(signum)
            signal_after = None
    return child.wait(timeout=300), lines


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_saves_and_resume_matches_a_straight_run(tmp_path, signum):
    straight, _ = run_toy(tmp_path / "straight", 10)
    assert sorted(p.name for p in (tmp_path / "straight" / "checkpoints").iterdir()) == ["10", "6", "8"]

    status, lines = run_script(tmp_path / "resumed", 10, "--delay", "0.3", signal_after="step 5/10", signum=signum)
    output = "".join(lines)
    assert status == 0 and "Traceback" not in output, output[-3000:]
    name = signal.Signals(signum).name
    saved = [int(m.group(1)) for m in map(re.compile(name + r": saved a checkpoint at step (\d+)").search, lines) if m]
    assert len(saved) == 1 and 5 <= saved[0] < 10, output[-3000:]
    assert str(saved[0]) in [p.name for p in (tmp_path / "resumed" / "checkpoints").iterdir()]

    resumed, step = run_toy(tmp_path / "resumed", 10)
    assert step == 10
    assert_same(resumed, straight)


def test_sigint_before_the_first_step_saves_it(tmp_path):
    # The signal lands while the state is made and the step compiles (the script logs both); the run takes one
    # step, saves it and exits cleanly.
    status, lines = run_script(tmp_path / "run", 10, "--log", signal_after="INFO initialised the state")
    output = "".join(lines)
    assert status == 0 and "Traceback" not in output, output[-3000:]
    assert "SIGINT: saved a checkpoint at step 1 in" in output, output[-3000:]
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["1"]


def test_sigint_stays_ignored_where_the_run_started_with_it_ignored(tmp_path):
    # A run started in the background by a shell script ignores a Ctrl-C meant for the terminal's foreground job
    status, lines = run_script(tmp_path / "run", 6, "--delay", "0.3", signal_after="step 2/6", sigint_ignored=True)
    output = "".join(lines)
    assert status == 0 and "Traceback" not in output, output[-3000:]
    assert "SIGINT" not in output and "step 6/6" in output, output[-3000:]
    assert sorted(int(p.name) for p in (tmp_path / "run" / "checkpoints").iterdir()) == [2, 4, 6]


@pytest.fixture(scope="module")
def synth_dataset(tmp_path_factory):
    from dex_jax.data.tfds_synth_heads import SynthHeads, SynthHeadsConfig
    config = SynthHeadsConfig(name="checkpoint_test", image_size=32, num_identities=4, num_test_identities=1,
                              num_sequences=1, num_views=1, num_frames=4)
    builder = SynthHeads(config=config, data_dir=str(tmp_path_factory.mktemp("tfds")), file_format="array_record")
    builder.download_and_prepare()
    return builder.data_dir


def test_a_resumed_run_with_grain_workers_ends_cleanly(tmp_path, synth_dataset):
    options = ("--dataset", str(synth_dataset), "--workers", "2")
    for steps in (2, 4):
        status, lines = run_script(tmp_path / "run", steps, *options)
        output = "".join(lines)
        assert status == 0, output[-3000:]
        for noise in ("Traceback", "handle is closed", "leaked shared_memory"):
            assert noise not in output, output[-3000:]
    assert sorted(int(p.name) for p in (tmp_path / "run" / "checkpoints").iterdir()) == [2, 4]


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


def test_own_buffers_copies_a_leaf_that_shares_a_buffer_so_the_state_can_be_donated():
    shared = jnp.zeros((4,))
    tree = {"params": {"w": shared}, "ema": {"w": shared}, "other": jnp.ones((2,))}

    def pointer(leaf):
        return leaf.addressable_shards[0].data.unsafe_buffer_pointer()

    owned = own_buffers(tree)
    assert sorted([pointer(owned["params"]["w"]) == pointer(shared), pointer(owned["ema"]["w"]) == pointer(shared)]) \
        == [False, True]
    assert owned["other"] is tree["other"]
    np.testing.assert_array_equal(owned["ema"]["w"], shared)
    np.testing.assert_array_equal(owned["params"]["w"], shared)
    step = jax.jit(lambda t: jax.tree.map(lambda x: x + 1, t), donate_argnums=0)
    with pytest.raises(Exception, match="donate the same buffer twice"):
        step(tree)
    assert float(step(owned)["ema"]["w"][0]) == 1.0

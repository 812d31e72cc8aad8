"""Third-party log noise: off a command's stderr by default, back with `dex-portrait --verbose`; errors always pass."""

import logging
import os
import subprocess
import sys
import threading

import cv2
import jax
import numpy as np
import pytest

from dex_jax.quiet_logs import copy_without_noise, is_noise, quiet_third_party_logs, stdout_to_log

# Lines seen on stderr from MediaPipe 1.2, TFLite, XLA and absl.
NOISE = [
    b"WARNING: Logging before InitGoogle() is written to STDERR\n",
    b"W0000 00:00:1796538635.372329    7906 face_landmarker_graph.cc:181] Sets FaceBlendshapesGraph acceleration to "
    b"xnnpack by default.\n",
    b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n",
    b"W0000 00:00:1796538635.394768    7910 inference_feedback_manager.cc:121] Feedback manager requires a model "
    b"with a single signature inference. Disabling support for feedback tensors.\n",
    b"I0000 00:00:1700000000.000000   12345 gl_context.cc:357] GL version: 3.2\n",
    b"2025-01-01 12:00:00.123456: W external/xla/xla/service/gpu/nvptx_compiler.cc:930] The NVIDIA driver's CUDA "
    b"version is older\n",
]
KEPT = [
    b"E0000 00:00:1796538635.394768    7910 face_landmarker.cc:12] Could not open the model\n",
    b"F0000 00:00:1796538635.394768    7910 graph.cc:1] Check failed: ok\n",
    b"dex-portrait animate: error: no face found in the source image x.png\n",
    b"WARNING:absl:a Python warning line is not C++ noise\n",
]


@pytest.fixture(autouse=True)
def same_compilation_cache(monkeypatch):
    monkeypatch.setenv("DEX_JAX_CACHE", jax.config.jax_compilation_cache_dir)


def test_noise_lines_are_recognised_and_errors_are_not():
    assert all(is_noise(line) for line in NOISE)
    assert not any(is_noise(line) for line in KEPT)


def test_descriptor_2_drops_noise_and_passes_the_rest(capfd):
    with quiet_third_party_logs():
        for line in NOISE + KEPT:
            os.write(2, line)
    assert sorted(capfd.readouterr().err.encode().splitlines(keepends=True)) == sorted(KEPT)
    os.write(2, NOISE[0])
    assert capfd.readouterr().err.encode() == NOISE[0]  # descriptor 2 is itself again after the block


PYTHON_BESIDE_CPP = """
import os, sys, time
from dex_jax.quiet_logs import quiet_third_party_logs
with quiet_third_party_logs():
    print("python's stderr is not filtered: INFO: kept", file=sys.stderr)
    sys.stderr.write("a line Python writes in parts ")
    os.write(2, {line!r})
    time.sleep(0.3)  # the filter thread has passed the C++ line on: a part already written would stand before it
    print("reaches stderr whole", file=sys.stderr)
"""


def test_python_stderr_bypasses_the_filter_a_line_at_a_time():
    """Run where sys.stderr is descriptor 2, as in a command (under capfd, pytest points sys.stderr elsewhere)."""
    result = subprocess.run([sys.executable, "-c", PYTHON_BESIDE_CPP.format(line=KEPT[0])], capture_output=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    python_lines = [b"python's stderr is not filtered: INFO: kept\n",
                    b"a line Python writes in parts reaches stderr whole\n"]
    assert sorted(result.stderr.splitlines(keepends=True)) == sorted([KEPT[0]] + python_lines)


def test_the_filter_keeps_reading_when_stderr_is_gone():
    class Gone:
        def write(self, data):
            raise BrokenPipeError("stderr's reader exited")

    read_fd, write_fd = os.pipe()
    pump = threading.Thread(target=copy_without_noise, args=(read_fd, Gone()), daemon=True)
    pump.start()

    def write_more_than_a_pipe_holds():
        for _ in range(4096):
            os.write(write_fd, b"E" * 99 + b"\n")  # 400 KB: blocks for good if nobody reads
        os.close(write_fd)

    writer = threading.Thread(target=write_more_than_a_pipe_holds, daemon=True)
    writer.start()
    writer.join(30)
    pump.join(30)
    assert not writer.is_alive() and not pump.is_alive()


def test_third_party_loggers_pass_errors_only_inside_the_block(caplog):
    absl = logging.getLogger("absl")
    level = absl.level
    with quiet_third_party_logs():
        absl.warning("an absl warning")
        absl.error("an absl error")
    assert absl.level == level
    assert [r.getMessage() for r in caplog.records if r.name == "absl"] == ["an absl error"]


def test_prints_become_log_records(caplog, capsys):
    with caplog.at_level(logging.INFO, logger="tensorflow_datasets"):
        with stdout_to_log("tensorflow_datasets"):
            print("Downloading and preparing dataset ...")
            print("no newline", end="")
    assert capsys.readouterr().out == ""
    assert [r.getMessage() for r in caplog.records] == ["Downloading and preparing dataset ...", "no newline"]


def dex(*args):
    return subprocess.run([sys.executable, "-m", "dex_jax.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def test_animate_writes_nothing_to_stderr_and_verbose_brings_the_logs_back(tmp_path):
    result = dex("animate", "--max-frames", 1, "--out", tmp_path / "out")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert (tmp_path / "out" / "result.mp4").is_file()
    flat = tmp_path / "flat.png"  # MediaPipe starts, finds no face: a cheap run with a one-line error
    cv2.imwrite(str(flat), np.full((128, 128, 3), 90, np.uint8))
    quiet = dex("animate", "--source", flat, "--out", tmp_path / "flat")
    assert quiet.returncode == 2
    assert quiet.stderr == f"dex-portrait animate: error: no face found in the source image {flat}\n"
    verbose = dex("--verbose", "animate", "--source", flat, "--out", tmp_path / "flat")
    assert verbose.returncode == 2 and quiet.stderr in verbose.stderr and "Traceback" not in verbose.stderr
    lines = verbose.stderr.encode().splitlines(keepends=True)
    assert any(is_noise(line) for line in lines), verbose.stderr

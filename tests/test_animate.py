"""`dex-portrait animate` and `dex-portrait export`: videos written, disentangled drive, one-line errors, output
folders refused unless --overwrite and never half-written."""

import cv2
import jax
import numpy as np
import pytest
from motion_checkpoint import write_untrained_run

from dex_jax import cli
from dex_jax.data.video_io import read_clip, read_image, write_image, write_video
from dex_jax.infer import animate
from dex_jax.infer.animate import DEFAULTS
from dex_jax.infer.pipeline import load_motion_model
from dex_jax.train import export
from dex_jax.train.checkpoint import read_checkpoint

DEMO = DEFAULTS["source"].parent


@pytest.fixture(autouse=True)
def same_compilation_cache(monkeypatch):
    monkeypatch.setenv("DEX_JAX_CACHE", jax.config.jax_compilation_cache_dir)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return write_untrained_run(tmp_path_factory.mktemp("run"), step=7)


def dex(capsys, *args):
    code = cli.main([*map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err, command):
    lines = err.rstrip("\n").split("\n")
    assert lines[-1].startswith(f"dex-portrait {command}: error: "), err
    assert "Traceback" not in err
    return lines[-1]


def snapshot(folder):
    """{relative path: bytes} of every file under `folder`."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def refused(err, command, folder):
    """The error is the one line that names `folder` and --overwrite, and nothing else was printed."""
    assert err.count("\n") == 1, err
    line = one_line_error(err, command)
    assert str(folder.absolute()) in line and "--overwrite" in line
    return line


def test_driving_clip_gives_result_and_side_by_side(run, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = dex(capsys, "animate", "--checkpoint", run, "--out", out, "--max-frames", 3)
    assert code == 0, err
    assert f"{run.name} step 7 (EMA generator)" in stdout
    assert str(out / "result.mp4") in stdout and str(out / "side_by_side.mp4") in stdout
    result, fps = read_clip(out / "result.mp4")
    comparison, _ = read_clip(out / "side_by_side.mp4")
    source = read_image(DEFAULTS["source"])
    driving, driving_fps = read_clip(DEFAULTS["driving"])
    assert result.shape == (3,) + source.shape and fps == driving_fps
    assert comparison.shape == (3, 256, 3 * 256, 3)
    # the panels are what they say: the source still, then the driving frames, then the result (MPEG-4 is lossy)
    assert np.abs(comparison[1, :, :256].astype(float) - source).mean() < 8
    assert np.abs(comparison[1, :, 256:512].astype(float) - driving[1]).mean() < 8
    assert np.abs(comparison[1, :, 512:].astype(float) - result[1]).mean() < 8
    assert sorted(p.name for p in out.iterdir()) == ["result.mp4", "side_by_side.mp4", "side_by_side.png"]
    still = cv2.cvtColor(cv2.imread(str(out / "side_by_side.png")), cv2.COLOR_BGR2RGB)
    assert still.shape == (3 * 256, 3 * 256, 3)  # frames 0, 1 and 2 of the 3 (4 evenly spaced picks, rounded)
    for i in range(3):
        assert np.abs(still[256 * i:256 * (i + 1)].astype(float) - comparison[i]).mean() < 8

    before = snapshot(out)
    code, _, err = dex(capsys, "animate", "--checkpoint", run, "--out", out, "--max-frames", 1)
    assert code == 2 and "already exists" in refused(err, "animate", out)
    assert snapshot(out) == before
    code, _, err = dex(capsys, "animate", "--checkpoint", run, "--out", out, "--max-frames", 1, "--overwrite")
    assert code == 0, err
    assert read_clip(out / "result.mp4")[0].shape[0] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # neither the staging nor the old folder is left


def test_pose_and_expression_from_different_clips(run, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = dex(capsys, "animate", "--checkpoint", run, "--out", out, "--max-frames", 2,
                       "--pose-driving", DEMO / "pose.mp4", "--expression-driving", DEMO / "expression.mp4")
    assert code == 0, err
    comparison, _ = read_clip(out / "side_by_side.mp4")
    expression, _ = read_clip(DEMO / "expression.mp4")
    assert comparison.shape == (2, 256, 4 * 256, 3)
    assert np.abs(comparison[0, :, 512:768].astype(float) - expression[0]).mean() < 8


def _flat(path):
    cv2.imwrite(str(path), np.full((128, 128, 3), 90, np.uint8))


def _one_pixel(path):
    cv2.imwrite(str(path), np.full((1, 1, 3), 90, np.uint8))


def _text(path):
    path.write_text("not a video")


@pytest.mark.parametrize("flag,make,message", [
    ("--source", None, "image not found"),
    ("--source", _flat, "no face found in the source image"),
    ("--source", _one_pixel, "is 1x1 pixels; each side must be 32 to 8192 pixels"),
    ("--driving", _text, "cannot be opened as a video"),
    ("--checkpoint", None, "checkpoint not found"),
])
def test_bad_input_is_a_one_line_error_and_writes_nothing(run, tmp_path, capsys, flag, make, message):
    path = tmp_path / ("input.mp4" if flag == "--driving" else "input.png")
    if flag == "--checkpoint":
        path = tmp_path / "missing"
    elif make is not None:
        make(path)
    out = tmp_path / "out"
    checkpoint = [] if flag == "--checkpoint" else ["--checkpoint", run]
    code, _, err = dex(capsys, "animate", *checkpoint, flag, path, "--out", out, "--max-frames", 2)
    assert code == 2
    assert message in one_line_error(err, "animate")
    assert not out.exists()


def test_a_failed_write_leaves_no_output_folder(run, tmp_path, capsys, monkeypatch):
    def full_disk(path, image):
        raise OSError(f"No space left on device: {path}")

    monkeypatch.setattr(animate, "write_image", full_disk)
    code, _, err = dex(capsys, "animate", "--checkpoint", run, "--out", tmp_path / "out", "--max-frames", 1)
    assert code == 2 and "No space left on device" in one_line_error(err, "animate")
    assert list(tmp_path.iterdir()) == []  # the two videos written before the failure went with the staging folder


def test_corrupt_checkpoint_is_a_one_line_error(tmp_path, capsys):
    broken = write_untrained_run(tmp_path / "broken")
    for file in (broken / "checkpoints").rglob("*"):
        if file.is_file() and file.suffix != ".json":
            file.write_bytes(b"\0" * 16)
    code, _, err = dex(capsys, "animate", "--checkpoint", broken, "--out", tmp_path / "out", "--max-frames", 1)
    assert code == 2 and "no intact checkpoint" in one_line_error(err, "animate")


def test_export_keeps_only_the_ema_generator_and_the_curve(run, tmp_path, capsys):
    (run / "metrics.jsonl").write_text("".join(f'{{"step": {s}, "l1": {1 / s}, "lpips": 0.1}}\n' for s in (1, 2, 3)))
    out = tmp_path / "model"
    code, stdout, err = dex(capsys, "export", "--workdir", run, "--out", out)
    assert code == 0, err
    assert "exported step 7" in stdout
    state = read_checkpoint(out / "checkpoints")
    assert set(state) == {"step", "ema"} and set(state["ema"]) == {"generator"}
    original = read_checkpoint(run / "checkpoints")["ema"]["generator"]
    jax.tree.map(np.testing.assert_array_equal, state["ema"]["generator"], original)
    assert load_motion_model(out).description == "model step 7 (EMA generator)"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no staging folder left behind
    assert (out / "metrics.jsonl").read_text() == (run / "metrics.jsonl").read_text()
    assert read_image(out / "training_curve.png").shape[2] == 3
    (out / "stale.txt").write_text("from an earlier export")
    before = snapshot(out)
    code, _, err = dex(capsys, "export", "--workdir", run, "--out", out)
    assert code == 2 and "already exists" in refused(err, "export", out)
    assert snapshot(out) == before
    code, _, err = dex(capsys, "export", "--workdir", run, "--out", out, "--overwrite")
    assert code == 0, err
    assert not (out / "stale.txt").exists() and read_checkpoint(out / "checkpoints")["step"] == 7
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_export_over_an_existing_folder_keeps_it_when_the_new_one_fails(run, tmp_path, capsys, monkeypatch):
    out = tmp_path / "model"
    out.mkdir()
    (out / "keep.txt").write_text("the previous export")

    def failing_plot(metrics_path, png_path, curves):
        raise OSError("plotting failed")

    (run / "metrics.jsonl").write_text('{"step": 1, "l1": 0.5}\n')
    monkeypatch.setattr(export, "plot_curve", failing_plot)
    code, _, err = dex(capsys, "export", "--workdir", run, "--out", out, "--overwrite")
    assert code == 2 and "plotting failed" in one_line_error(err, "export")
    assert snapshot(out) == {"keep.txt": b"the previous export"}
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_write_image_refuses_bad_images_and_leaves_no_partial_file(tmp_path):
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        write_image(tmp_path / "x.png", np.zeros((8, 8), np.uint8))
    image = np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)
    path = write_image(tmp_path / "x.png", image)
    np.testing.assert_array_equal(read_image(path), image)
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]


def test_write_video_refuses_bad_frames_and_leaves_no_partial_file(tmp_path):
    with pytest.raises(ValueError, match="non-empty"):
        write_video(tmp_path / "x.mp4", np.zeros((0, 8, 8, 3), np.uint8))
    path = write_video(tmp_path / "x.mp4", np.full((4, 16, 16, 3), 200, np.uint8), fps=10)
    frames, fps = read_clip(path)
    assert frames.shape == (4, 16, 16, 3) and fps == 10 and abs(float(frames.mean()) - 200) < 3
    assert [p.name for p in tmp_path.iterdir()] == ["x.mp4"]


def test_main_job_runs_the_bundled_model(tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = dex(capsys, "animate", "--out", out, "--max-frames", 2)
    assert code == 0, err
    assert "with motion_synth step" in stdout
    assert read_clip(out / "result.mp4")[0].shape == (2, 256, 256, 3)

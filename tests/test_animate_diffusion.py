"""`dex-portrait animate` with the diffusion engine (an untrained `test` animator export): the outputs, the engine
picked from the checkpoint's config or by --engine, the sampling options, the wrapper's batching, and one-line
errors that leave nothing written."""

import json
import shutil

import jax
import numpy as np
import pytest
from animator_checkpoint import write_untrained_export
from motion_checkpoint import write_untrained_run

from dex_jax import cli
from dex_jax.data.video_io import read_clip, read_image, write_video
from dex_jax.image import to_model
from dex_jax.infer.animate import DEFAULTS
from dex_jax.infer.animator_wrapper import AnimatorWrapper
from dex_jax.train.animator_checkpoint import read_animator

DEMO = DEFAULTS["source"].parent
SIDE = 256  # the demo clips' frame size: outputs are resized back to the source's


@pytest.fixture(autouse=True)
def same_compilation_cache(monkeypatch):
    monkeypatch.setenv("DEX_JAX_CACHE", jax.config.jax_compilation_cache_dir)


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return write_untrained_export(tmp_path_factory.mktemp("animator") / "export", step=4)[0]


def dex(capsys, *args):
    code = cli.main([*map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err):
    lines = err.rstrip("\n").split("\n")
    assert "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith("dex-portrait animate: error: "), err
    return lines[0]


def test_animator_checkpoint_gives_result_and_side_by_side(export, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = dex(capsys, "animate", "--checkpoint", export, "--source", DEMO / "source.png",
                            "--driving", DEMO / "driving.mp4", "--max-frames", 2, "--steps", 2, "--out", out)
    assert code == 0, err
    assert "export step 4 (EMA animator); DDIM 2 steps, progressive CFG at w = 2.5, seed 0" in stdout
    result, fps = read_clip(out / "result.mp4")
    comparison, _ = read_clip(out / "side_by_side.mp4")
    driving, driving_fps = read_clip(DEMO / "driving.mp4")
    assert result.shape == (2, SIDE, SIDE, 3) and fps == driving_fps
    assert comparison.shape == (2, SIDE, 3 * SIDE, 3)
    assert np.abs(comparison[1, :, SIDE:2 * SIDE].astype(float) - driving[1]).mean() < 8
    assert np.abs(comparison[1, :, 2 * SIDE:].astype(float) - result[1]).mean() < 8
    assert read_image(out / "side_by_side.png").shape == (2 * SIDE, 3 * SIDE, 3)  # frames 0 and 1, one under the other
    assert sorted(p.name for p in out.iterdir()) == ["result.mp4", "side_by_side.mp4", "side_by_side.png"]


def test_pose_and_expression_clips_and_sampling_options(export, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = dex(capsys, "animate", "--checkpoint", export, "--pose-driving", DEMO / "pose.mp4",
                            "--expression-driving", DEMO / "expression.mp4", "--max-frames", 1, "--steps", 3,
                            "--cfg", "plain", "--guidance", 1.5, "--seed", 7, "--out", out)
    assert code == 0, err
    assert "DDIM 3 steps, plain CFG at w = 1.5, seed 7" in stdout
    assert read_clip(out / "side_by_side.mp4")[0].shape == (1, SIDE, 4 * SIDE, 3)  # source | pose | expression | result


def test_the_engine_comes_from_the_checkpoint_config_or_engine(export, tmp_path, capsys, monkeypatch):
    stage1 = write_untrained_run(tmp_path / "stage1", step=3)
    code, stdout, err = dex(capsys, "animate", "--checkpoint", stage1, "--max-frames", 1, "--out", tmp_path / "a")
    assert code == 0 and "stage1 step 3 (EMA generator)" in stdout, err

    for args, message in [
        (["--checkpoint", stage1, "--steps", 2], "is a Stage-1 model: steps apply to an animator checkpoint only"),
        (["--checkpoint", export, "--engine", "stage1"], f"--engine stage1, but {export} is a diffusion model"),
        (["--checkpoint", stage1, "--engine", "diffusion"], f"--engine diffusion, but {stage1} is a stage1 model"),
    ]:
        code, _, err = dex(capsys, "animate", *args, "--max-frames", 1, "--out", tmp_path / "b")
        assert code == 2 and message in one_line_error(err)
    assert not (tmp_path / "b").exists()

    missing = tmp_path / "animator_synth"
    monkeypatch.setitem(DEFAULTS, "animator", missing)
    code, _, err = dex(capsys, "animate", "--engine", "diffusion", "--out", tmp_path / "b")
    assert code == 2 and f"the bundled diffusion model {missing} is missing" in one_line_error(err)
    monkeypatch.setitem(DEFAULTS, "animator", export)
    code, stdout, err = dex(capsys, "animate", "--engine", "diffusion", "--max-frames", 1, "--steps", 1,
                            "--cfg", "none", "--out", tmp_path / "b")
    assert code == 0 and "export step 4 (EMA animator); DDIM 1 steps, no guidance" in stdout, err


def test_a_frame_does_not_depend_on_its_batch_and_the_seed_sets_the_noise(export):
    """With eta 0, frame i driven alone equals frame i of a batch of 3 (each row starts from the seed's one noise
    draw), and another seed gives other images."""
    checkpoint = read_animator(export)
    wrapper = AnimatorWrapper(checkpoint, export, steps=2, seed=0)
    source = read_image(DEMO / "source.png")
    frames = read_clip(DEMO / "driving.mp4")[0][:3]
    poses = np.stack([to_model(f, wrapper.image_size) for f in frames])
    crops = np.stack([to_model(f, wrapper.expression_size) for f in frames])
    encoded = wrapper.encode(to_model(source, wrapper.image_size)[None])
    together = np.asarray(wrapper.drive(*encoded, poses, crops))
    assert together.shape == (3, wrapper.image_size, wrapper.image_size, 3)
    for i in range(3):
        alone = np.asarray(wrapper.drive(*encoded, poses[i:i + 1], crops[i:i + 1]))
        np.testing.assert_allclose(alone[0], together[i], rtol=0, atol=1e-5)
    other_seed = AnimatorWrapper(checkpoint, export, steps=2, seed=1)
    assert np.abs(np.asarray(other_seed.drive(*encoded, poses, crops)) - together).max() > 1e-2


def _misfit_export(export, folder, change):
    copy = folder / "misfit"
    shutil.copytree(export, copy)
    config = json.loads((copy / "config.json").read_text())
    change(config)
    (copy / "config.json").write_text(json.dumps(config))
    return copy


def _context_length(config):
    config["model"]["context_length"] += 1


def _latent_factor(config):
    config["latent"]["factor"] = 4


def _expression_latent(config):
    config["motion_model"]["expression"]["latent_dim"] *= 2


@pytest.mark.parametrize("change,message", ids=["params", "codec", "encoders"], argvalues=[
    (_context_length, "its animator does not fit this config (context_tokens: (4, 8) there, (5, 8) here)"),
    (_latent_factor, "its latent codec gives 48 channels, its UNets take 12"),
    (_expression_latent, "its expression encoder does not fit this config"),
])
def test_an_export_that_does_not_fit_its_config_is_a_one_line_error(export, tmp_path, capsys, change, message):
    misfit = _misfit_export(export, tmp_path, change)
    out = tmp_path / "out"
    code, _, err = dex(capsys, "animate", "--checkpoint", misfit, "--max-frames", 1, "--steps", 1, "--out", out)
    assert code == 2
    line = one_line_error(err)
    assert f"checkpoint {misfit}: {message}" in line, line
    assert not out.exists()


def _faceless_clip(path):
    write_video(path, np.full((3, 128, 128, 3), 90, np.uint8), fps=10)


@pytest.mark.parametrize("flag,make,message", [
    ("--driving", _faceless_clip, "no face found in any frame of the driving clip"),
])
def test_bad_faces_are_one_line_errors_and_write_nothing(export, tmp_path, capsys, flag, make, message):
    path = tmp_path / ("input.mp4" if flag == "--driving" else "input.png")
    make(path)
    out = tmp_path / "out"
    code, _, err = dex(capsys, "animate", "--checkpoint", export, flag, path, "--max-frames", 2, "--steps", 1,
                       "--out", out)
    assert code == 2 and message in one_line_error(err)
    assert not out.exists()


def test_bad_sampling_options_are_one_line_errors(export, tmp_path, capsys):
    code, _, err = dex(capsys, "animate", "--checkpoint", export, "--steps", 0, "--out", tmp_path / "out")
    assert code == 2 and "steps must be in [1, 1000], got 0" in one_line_error(err)
    assert not (tmp_path / "out").exists()


def test_evaluate_scores_an_animator_checkpoint_with_its_sampling_options(export, tmp_path, capsys):
    out = tmp_path / "report"
    code, stdout, err = dex(capsys, "evaluate", "--checkpoint", export, "--protocol", "self", "--num-clips", 1,
                            "--num-frames", 2, "--steps", 2, "--cfg", "none", "--noise-seed", 3, "--out", out)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert "DDIM 2 steps, no guidance, seed 3" in report["method"], report["method"]
    assert report["protocol"] == "self-reenactment" and np.isfinite(report["metrics"]["psnr"]["mean"]), report
    code, _, err = dex(capsys, "evaluate", "--checkpoint", write_untrained_run(tmp_path / "stage1", step=1),
                       "--steps", 2, "--num-clips", 1, "--num-frames", 2, "--out", tmp_path / "stage1_report")
    assert code == 2 and "steps apply to an animator checkpoint only" in err and not (tmp_path / "stage1_report").exists()

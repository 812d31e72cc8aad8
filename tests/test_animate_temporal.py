"""`dex-portrait animate` and the pipeline with a Stage-3 checkpoint (an untrained `test` animator export with a
temporal module, every param random so the module acts): clips in windows through the command, a clip of at most
one window gives the frames of one `drive` call, a longer clip gives every frame once with the first window's own
frames final before the next window and its overlap handed over, and window options are one-line errors where
they do not apply."""

import jax
import numpy as np
import pytest
from animator_checkpoint import write_untrained_export

from dex_jax import cli
from dex_jax.data.video_io import read_clip, read_image
from dex_jax.face.landmarker import FaceLandmarker
from dex_jax.image import to_model
from dex_jax.infer.animate import DEFAULTS
from dex_jax.infer import pipeline as pipeline_module
from dex_jax.infer.pipeline import load_pipeline

DEMO = DEFAULTS["source"].parent
SIDE = 256  # the demo clips' frame size


@pytest.fixture(autouse=True)
def same_compilation_cache(monkeypatch):
    monkeypatch.setenv("DEX_JAX_CACHE", jax.config.jax_compilation_cache_dir)


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return write_untrained_export(tmp_path_factory.mktemp("temporal") / "export", "temporal", step=5)[0]


@pytest.fixture(scope="module")
def inputs(export):
    """A windows-of-4 pipeline of the export (2 DDIM steps), the encoded demo source and the model inputs of the
    driving clip's first 10 frames (whole frames, as evaluation gives them)."""
    with FaceLandmarker() as landmarker:
        pipeline = load_pipeline(export, landmarker, steps=2, window=4, overlap=1)
        wrapper = pipeline.wrapper
        frames = read_clip(DEMO / "driving.mp4")[0][:10]
        poses = np.stack([to_model(f, wrapper.image_size) for f in frames])
        crops = np.stack([to_model(f, wrapper.expression_size) for f in frames])
        encoded = wrapper.encode(to_model(read_image(DEMO / "source.png"), wrapper.image_size)[None])
        yield pipeline, encoded, poses, crops


def dex(capsys, *args):
    code = cli.main([*map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_stage3_checkpoint_animates_a_clip_in_windows(export, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = dex(capsys, "animate", "--checkpoint", export, "--max-frames", 7, "--steps", 2,
                            "--window", 4, "--overlap", 2, "--out", out)
    assert code == 0, err
    assert "export step 5 (EMA animator); DDIM 2 steps" in stdout
    result, _ = read_clip(out / "result.mp4")
    assert result.shape == (7, SIDE, SIDE, 3)
    assert read_image(out / "side_by_side.png").shape[0] == 4 * SIDE  # frames 0, 2, 4, 6


@pytest.fixture
def float_results(monkeypatch):
    """The pipeline's results as the model's floats, not rounded to uint8 (the untrained model saturates most
    pixels, which would hide differences)."""
    monkeypatch.setattr(pipeline_module, "to_uint8", np.asarray)


def test_one_window_gives_the_frames_of_one_clip(inputs, float_results):
    """A clip of at most one window (4 frames, window 4) through the pipeline equals one `drive` call of the 4
    frames as one clip, and differs from the frames driven one at a time (the temporal module acts)."""
    pipeline, encoded, poses, crops = inputs
    windowed = pipeline._drive(encoded, poses[:4], crops[:4], None)
    clip = np.asarray(pipeline.wrapper.drive(*encoded, poses[:4], crops[:4]))
    assert windowed.shape == (4, pipeline.image_size, pipeline.image_size, 3)
    np.testing.assert_allclose(windowed, clip, rtol=0, atol=1e-5)
    alone = np.concatenate([pipeline.wrapper.drive(*encoded, poses[i:i + 1], crops[i:i + 1]) for i in range(4)])
    assert np.abs(alone - clip).max() > 1e-2


def test_a_long_clip_gives_every_frame_once_handing_over_each_overlap(inputs, float_results):
    """10 frames in windows of 4 overlapping by 1 (windows at 0, 3, 6): 10 results; frames 0-2 are the first
    window's as one clip (final before the second window), frame 3 (the overlap) is handed over to the second."""
    pipeline, encoded, poses, crops = inputs
    results = pipeline._drive(encoded, poses, crops, None)
    assert results.shape == (10, pipeline.image_size, pipeline.image_size, 3)
    first = np.asarray(pipeline.wrapper.drive(*encoded, poses[:4], crops[:4]))
    np.testing.assert_allclose(results[:3], first[:3], rtol=0, atol=1e-5)
    assert np.abs(results[3] - first[3]).max() > 1e-4  # ten times the tolerance of the equalities
    assert len({frame.tobytes() for frame in results}) == 10


@pytest.mark.parametrize("args,message", ids=["zero", "overlap", "stage2"], argvalues=[
    (["--window", 0], "window must be at least 1 and overlap in [0, window), got window 0"),
    (["--window", 4, "--overlap", 4], "overlap in [0, window), got window 4, overlap 4"),
    (["--stage2", "--window", 8], "is a Stage-2 animator: window apply to a Stage-3 (temporal) checkpoint only"),
])
def test_window_options_are_one_line_errors(export, tmp_path, capsys, args, message):
    checkpoint = export
    if args[0] == "--stage2":
        checkpoint, args = write_untrained_export(tmp_path / "stage2")[0], args[1:]
    code, _, err = dex(capsys, "animate", "--checkpoint", checkpoint, *args, "--max-frames", 1, "--steps", 1,
                       "--out", tmp_path / "out")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0], err
    assert not (tmp_path / "out").exists()

"""`dex-portrait animate` on real-photo sizes and real video files: H.264 yuv420p output with the driving clip's
sound, streamed frames, paste-back at the source's size, faces lost for a stretch, several faces, the warning of
the bundled SynthHeads model."""

import subprocess

import cv2
import jax
import numpy as np
import pytest
from motion_checkpoint import write_untrained_run
from skimage import data

from dex_jax import cli
from dex_jax.data.h264 import H264Writer, describe_streams, ffmpeg_exe
from dex_jax.data.video_io import read_clip, read_image, stream_clip, write_image
from dex_jax.face.landmarker import FaceLandmarker
from dex_jax.infer.animate import COMPARISON_HEIGHT, DEFAULTS
from dex_jax.infer.faces import MAX_FACES, find_faces
from dex_jax.infer.paste_back import paste_mask
from dex_jax.infer.pipeline import load_motion_model, track

DRIVING = DEFAULTS["driving"]


@pytest.fixture(autouse=True)
def same_compilation_cache(monkeypatch):
    monkeypatch.setenv("DEX_JAX_CACHE", jax.config.jax_compilation_cache_dir)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return write_untrained_run(tmp_path_factory.mktemp("run"), step=7)


@pytest.fixture(scope="module")
def toned(tmp_path_factory):
    """The first second of the bundled driving clip with a 440 Hz tone."""
    path = tmp_path_factory.mktemp("clips") / "toned.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(DRIVING), "-f", "lavfi", "-i", "sine=frequency=440",
                    "-t", "1", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path)],
                   check=True)
    return path


def framed_astronaut(height=600, width=900):
    frame = np.full((height, width, 3), 110, np.uint8)
    frame[40:552, 300:812] = data.astronaut()
    return frame


def dex(capsys, *args):
    code = cli.main([*map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def video_stream(path):
    return [line for line in describe_streams(path) if ": Video: " in line]


def audio_stream(path):
    return [line for line in describe_streams(path) if ": Audio: " in line]


def test_h264_writer_streams_yuv420p_with_or_without_audio(tmp_path, toned):
    with H264Writer(tmp_path / "a.mp4", 25, audio_from=toned) as video:
        for i in range(7):
            video.write(np.full((33, 47, 3), 30 * i, np.uint8))
    (line,) = video_stream(tmp_path / "a.mp4")
    assert "h264" in line and "yuv420p" in line and "48x34" in line  # odd sides padded by one pixel
    assert len(audio_stream(tmp_path / "a.mp4")) == 1
    frames, fps = read_clip(tmp_path / "a.mp4")
    assert frames.shape == (7, 34, 48, 3) and fps == 25
    with H264Writer(tmp_path / "b.mp4", 10, audio_from=DRIVING) as video:  # the bundled clip has no sound
        video.write(np.zeros((16, 16, 3), np.uint8))
    assert video_stream(tmp_path / "b.mp4") and not audio_stream(tmp_path / "b.mp4")
    with pytest.raises(RuntimeError), H264Writer(tmp_path / "c.mp4", 10) as video:
        video.write(np.zeros((16, 16, 3), np.uint8))
        raise RuntimeError("stopped")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "b.mp4"]


def test_animate_writes_h264_with_the_driving_sound_at_the_source_size(run, tmp_path, capsys, toned):
    source = tmp_path / "astronaut.png"
    write_image(source, framed_astronaut())
    out = tmp_path / "out"
    code, stdout, err = dex(capsys, "animate", "--checkpoint", run, "--source", source, "--driving", toned,
                            "--max-frames", 5, "--batch", 2, "--out", out)
    assert code == 0, err
    for name in ("result.mp4", "side_by_side.mp4"):
        (line,) = video_stream(out / name)
        assert "h264" in line and "yuv420p" in line
        assert len(audio_stream(out / name)) == 1
    result, _ = read_clip(out / "result.mp4")
    assert result.shape == (5, 600, 900, 3)
    assert read_clip(out / "side_by_side.mp4")[0].shape[1] == COMPARISON_HEIGHT  # panels capped, not 600 rows
    # far from the face the source is kept (up to H.264's loss)
    assert np.abs(result[:, :, :150].astype(float) - framed_astronaut()[:, :150]).mean() < 2
    code, _, err = dex(capsys, "animate", "--checkpoint", run, "--source", source, "--driving", toned,
                       "--max-frames", 2, "--no-paste-back", "--motion", "absolute", "--out", tmp_path / "crop")
    assert code == 0, err
    assert read_clip(tmp_path / "crop" / "result.mp4")[0].shape == (2, 32, 32, 3)  # the test model's 32 x 32


def test_pasted_frames_equal_the_source_outside_the_mask(run):
    source = framed_astronaut()
    with FaceLandmarker(num_faces=MAX_FACES) as landmarker:
        pipeline = load_motion_model(run, landmarker, batch=3)
        points = find_faces(landmarker, source)[0]
        face = pipeline.source_face(source, points)
        driving = track(landmarker, stream_clip(DRIVING, 4), "driving clip")
        outputs = list(pipeline.animate(source, [face], driving, stream_clip(DRIVING, 4)))
    assert len(outputs) == 4
    mask = paste_mask(face.box, (0, 0, source.shape[1], source.shape[0]))
    for _, _, frame in outputs:
        assert frame.shape == source.shape
        np.testing.assert_array_equal(frame[mask == 0], source[mask == 0])
        assert not np.array_equal(frame[mask == 1], source[mask == 1])


def test_faces_lost_for_a_stretch_hold_the_nearest_motion_and_are_counted(run, tmp_path, capsys):
    frames, _ = read_clip(DRIVING)
    frames = frames[:6].copy()
    frames[2:4] = 90
    clip = tmp_path / "lost"
    clip.mkdir()
    for i, frame in enumerate(frames):
        write_image(clip / f"{i:03d}.png", frame)
    code, stdout, err = dex(capsys, "animate", "--checkpoint", run, "--driving", clip, "--out", tmp_path / "out")
    assert code == 0, err
    assert "driving frames without a face (the nearest frame's motion held): pose 2, expression 2" in stdout
    assert read_clip(tmp_path / "out" / "result.mp4")[0].shape[0] == 6


def test_several_faces_pick_one_or_all(run, tmp_path, capsys):
    source = read_image(DEFAULTS["source"])
    pair = tmp_path / "pair.png"
    smaller = cv2.resize(source, (200, 200), interpolation=cv2.INTER_AREA)
    write_image(pair, np.concatenate([source, np.pad(smaller, ((28, 28), (0, 0), (0, 0)), mode="edge")], 1))
    base = ["animate", "--checkpoint", run, "--source", pair, "--max-frames", 1]
    code, _, err = dex(capsys, *base, "--face", 3, "--out", tmp_path / "a")
    assert code == 2 and "--face 3, but the source image" in err and "shows 2 faces" in err
    assert not (tmp_path / "a").exists()
    results = {}
    for name, option in [("first", []), ("second", ["--face", 2]), ("all", ["--all-faces"])]:
        code, _, err = dex(capsys, *base, *option, "--out", tmp_path / name)
        assert code == 0, err
        results[name] = read_clip(tmp_path / name / "result.mp4")[0][0].astype(float)
    left, right = (slice(None), slice(0, 256)), (slice(None), slice(256, None))
    assert np.abs(results["first"][right] - results["all"][right]).mean() > 3  # --all-faces also animates the right
    assert np.abs(results["first"][left] - results["all"][left]).mean() < 3
    assert np.abs(results["second"][right] - results["all"][right]).mean() < 3


def test_the_bundled_model_warns_on_a_real_photo(tmp_path, capsys):
    source = tmp_path / "astronaut.png"
    write_image(source, framed_astronaut())
    code, _, err = dex(capsys, "animate", "--source", source, "--max-frames", 1, "--out", tmp_path / "out")
    assert code == 0, err
    warning = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "synthetic heads (SynthHeads) only" in warning[0] and "--checkpoint" in warning[0]
    code, _, err = dex(capsys, "animate", "--max-frames", 1, "--out", tmp_path / "demo")
    assert code == 0 and "warning:" not in err


def test_a_driving_video_with_a_rotation_flag_is_read_upright(run, tmp_path, capsys):
    """A phone clip: pixels stored turned 90 degrees clockwise with a display matrix that turns them back; frames
    are read as players show them (OpenCV applies the matrix), so every frame's face is found."""
    turned, flagged = tmp_path / "turned.mp4", tmp_path / "flagged.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(DRIVING), "-frames:v", "6", "-vf", "transpose=1",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "12", str(turned)], check=True)
    subprocess.run([ffmpeg_exe(), "-v", "error", "-display_rotation", "90", "-i", str(turned), "-c", "copy",
                    str(flagged)], check=True)
    probe = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(flagged)], capture_output=True, text=True,
                           check=False)
    assert "rotation of 90.00 degrees" in probe.stderr
    upright, stored = read_clip(DRIVING)[0][:6].astype(int), read_clip(turned)[0]
    assert np.abs(np.rot90(stored, 1, axes=(1, 2)) - upright).mean() < 3  # transpose=1 turned them clockwise
    frames = read_clip(flagged)[0]
    assert frames.shape == upright.shape and np.abs(frames - upright).mean() < 3
    code, stdout, err = dex(capsys, "animate", "--checkpoint", run, "--driving", flagged, "--out", tmp_path / "out")
    assert code == 0, err
    assert "without a face" not in stdout
    assert read_clip(tmp_path / "out" / "result.mp4")[0].shape == (6, 256, 256, 3)

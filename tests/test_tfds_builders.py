"""tfds builders: build and read back without TensorFlow, identity splits, bad input counted, no half-built dataset,
SynthHeads configs that differ as documented; `dex-portrait data build`: an existing dataset refused unless
--overwrite, portrait_videos naming the videos folder a dataset was built from, every builder config in --help."""

import json
import sys

import cv2
import jax
import numpy as np
import pytest
import skimage.data
import tensorflow_datasets as tfds

from dex_jax import cli
from dex_jax.data import tfds_synth_heads
from dex_jax.data.build_cli import build
from dex_jax.data.synth_face import EXPRESSION_NAMES
from dex_jax.data.tfds_portrait_videos import PortraitVideos
from dex_jax.data.tfds_synth_heads import SynthHeads, SynthHeadsConfig
from dex_jax.data.video_io import find_videos

CONFIG = SynthHeadsConfig(name="test", image_size=64, num_identities=5, num_test_identities=2, num_sequences=1,
                          num_views=2, num_frames=3)


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    builder = SynthHeads(config=CONFIG, data_dir=str(tmp_path_factory.mktemp("tfds")), file_format="array_record")
    builder.download_and_prepare()
    return builder.data_dir


def test_synth_heads_reads_back_without_tensorflow(synth_dir):
    builder = tfds.builder_from_directory(synth_dir)
    train = builder.as_data_source("train")
    assert len(train) == 3 * 2 * 3 and len(builder.as_data_source("test")) == 2 * 2 * 3
    record = train[4]
    assert record["image"].shape == (64, 64, 3) and record["image"].dtype == np.uint8
    assert record["face_mask"].shape == (64, 64, 1) and set(np.unique(record["face_mask"])) <= {0, 255}
    assert record["pose"].shape == (6,) and record["expression"].shape == (11,)
    assert record["landmarks"].shape == (49, 2) and record["face_box"].shape == (4,)
    assert "tensorflow" not in sys.modules
    index = builder.info.metadata["index"]["train"]
    for i in range(len(train)):
        assert [int(train[i][k]) for k in ("subject", "sequence", "camera", "frame")] == [
            index[k][i] for k in ("subject", "sequence", "camera", "frame")]
    assert index["camera"][:6] == [0, 0, 0, 1, 1, 1] and index["frame"][:6] == [0, 1, 2, 0, 1, 2]
    assert set(builder.info.metadata["landmark_groups"]) >= {"left_eye", "right_eye", "mouth"}


def test_synth_heads_splits_by_identity(synth_dir):
    builder = tfds.builder_from_directory(synth_dir)
    ids = {split: {int(r["identity"]) for r in builder.as_data_source(split)} for split in ("train", "test")}
    assert ids == {"train": {0, 1, 2}, "test": {3, 4}}


def test_synth_heads_views_share_the_instant(synth_dir):
    train = tfds.builder_from_directory(synth_dir).as_data_source("train")
    a, b = train[1], train[4]
    assert (a["camera"], a["frame"], b["camera"], b["frame"]) == (0, 1, 1, 1)
    assert np.allclose(a["expression"], b["expression"]) and not np.allclose(a["pose"], b["pose"])


def test_interrupted_build_leaves_no_complete_looking_dataset(tmp_path, monkeypatch):
    calls = []
    render = tfds_synth_heads.render_clip

    def failing(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("interrupted half-way")
        return render(*args)

    monkeypatch.setattr(tfds_synth_heads, "render_clip", failing)
    builder = SynthHeads(config=CONFIG, data_dir=str(tmp_path), file_format="array_record")
    with pytest.raises(KeyboardInterrupt):
        builder.download_and_prepare()
    assert not list(tmp_path.rglob("dataset_info.json")) and not list(tmp_path.rglob("*.array_record*"))
    with pytest.raises(Exception):
        tfds.builder_from_directory(builder.data_dir)


def _write_video(path, frames, fps=10):
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def test_portrait_videos_skips_and_counts_bad_input(tmp_path):
    face = skimage.data.astronaut()
    videos = tmp_path / "videos"
    (videos / "anna").mkdir(parents=True)
    _write_video(videos / "anna" / "talk.mp4", [face] * 3)
    _write_video(videos / "small.mp4", [cv2.resize(face, (320, 320))] * 2)
    _write_video(videos / "noise.mp4", [np.random.default_rng(i).integers(0, 256, (128, 160, 3), np.uint8)
                                        for i in range(2)])
    (videos / "empty.mp4").write_bytes(b"")
    (videos / "garbage.mov").write_bytes(np.random.default_rng(0).bytes(4000))
    (videos / "notes.txt").write_text("not a video")
    folder = videos / "bob"
    folder.mkdir()
    cv2.imwrite(str(folder / "frame_1.png"), cv2.cvtColor(face, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(folder / "frame_2.jpg"), cv2.cvtColor(cv2.resize(face, (384, 300)), cv2.COLOR_RGB2BGR))
    (folder / "frame_3.png").write_bytes(b"\x89PNG broken")
    (folder / "info.json").write_text("{}")

    path, summary = build("portrait_videos", str(tmp_path / "tfds"), videos=str(videos), progress=False,
                          overrides={"crop_size": 128}, config_name="test")
    assert (summary.videos_read, summary.frames_read, summary.frames_kept) == (4, 3 + 2 + 2 + 3, 3 + 2 + 2)
    assert (summary.frames_without_face, summary.frames_unreadable) == (2, 1)
    reasons = {p.split("/")[-1]: r for p, r in summary.skipped}
    assert reasons == {"empty.mp4": "cannot be opened as a video", "garbage.mov": "cannot be opened as a video",
                       "notes.txt": "not a video file", "info.json": "not an image inside a frame folder"}
    builder = tfds.builder_from_directory(path)
    train = builder.as_data_source("train")
    names = builder.info.metadata["subject_names"]
    assert len(train) == 7 and {names[int(r["subject"])] for r in train} == {"anna", "bob", "small"}
    record = train[0]
    assert record["image"].shape == (128, 128, 3) and record["landmarks"].shape == (478, 2)
    assert record["blendshapes"].shape == (52,) and record["head_pose"].shape == (3,)
    x0, y0, x1, y1 = record["face_box"]
    assert 0 < x0 < x1 < 128 and 0 < y0 < y1 < 128 and record["face_mask"].mean() > 10
    assert "tensorflow" not in sys.modules


def test_video_layout_subject_sequence_camera(tmp_path):
    for rel in ["s1/seq_a/cam_0.mp4", "s1/seq_a/cam_1.mp4", "s1/seq_a/cam_2/f_0.png", "s2/clip.mp4", "solo.mp4",
                "s3/seq/cam/deeper.mp4", "test/s9/clip.mp4"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    skipped = []
    entries = find_videos(tmp_path, lambda p, r: skipped.append((p.name, r)))
    got = {(e.split, e.subject, e.sequence, e.camera) for e in entries}
    assert got == {("test", "s9", "clip", "0")}
    assert ("s1", "outside the train/validation/test folders") in skipped
    (tmp_path / "test").rename(tmp_path / "other")
    skipped.clear()
    entries = find_videos(tmp_path, lambda p, r: skipped.append((p.name, r)))
    got = {(e.split, e.subject, e.sequence, e.camera, e.is_frame_folder) for e in entries}
    assert got == {("train", "s1", "seq_a", "cam_0", False), ("train", "s1", "seq_a", "cam_1", False),
                   ("train", "s1", "seq_a", "cam_2", True), ("train", "s2", "clip", "0", False),
                   ("train", "solo", "solo", "0", False), ("train", "other", "s9", "clip", False)}
    assert skipped == [("cam", "folder without frames at camera depth")]


def _fields_but(config, field):
    """A builder config's settings, without its name, description and `field`."""
    return {k: v for k, v in vars(config).items() if k not in ("name", "description", field)}


def test_spaced_clips_change_expression_more_than_cpu128_s():
    configs = {c.name: c for c in SynthHeads.BUILDER_CONFIGS}

    def pairwise_change(config):
        """Mean |difference| of each expression value between two frames of one clip, over 40 clips."""
        changes = []
        for identity in range(40):
            key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(config.seed), identity), 0)
            clip = tfds_synth_heads.clip_poses(key, config.num_views, config.num_frames, config.fps)[2]
            exprs = np.asarray(clip)[:config.num_frames]
            changes.append(np.abs(exprs[:, None] - exprs[None]).mean((0, 1)))
        return np.mean(changes, axis=0)

    spaced, dense = configs["cpu128_spaced"], configs["cpu128"]
    assert _fields_but(spaced, "fps") == _fields_but(dense, "fps")
    more, less = pairwise_change(spaced), pairwise_change(dense)
    assert more[EXPRESSION_NAMES.index("jaw_open")] > 1.5 * less[EXPRESSION_NAMES.index("jaw_open")]
    assert more.mean() > 1.3 * less.mean()


def test_still_heads_keep_one_pose_per_camera_while_the_expression_moves():
    configs = {c.name: c for c in SynthHeads.BUILDER_CONFIGS}
    still, spaced = configs["cpu128_still"], configs["cpu128_spaced"]
    assert _fields_but(still, "still_head") == _fields_but(spaced, "still_head")
    for views in (1, still.num_views):
        key = jax.random.PRNGKey(3)
        poses, bodies, exprs = (np.asarray(a).reshape(views, still.num_frames, -1)
                                for a in tfds_synth_heads.clip_poses(key, views, still.num_frames, still.fps, True))
        moving = [np.asarray(a).reshape(views, still.num_frames, -1)
                  for a in tfds_synth_heads.clip_poses(key, views, still.num_frames, still.fps)]
        np.testing.assert_array_equal(poses, np.broadcast_to(poses[:, :1], poses.shape))
        np.testing.assert_array_equal(bodies, np.broadcast_to(bodies[:, :1], bodies.shape))
        np.testing.assert_allclose(poses[:, 0], moving[0][:, 0], atol=1e-6)
        np.testing.assert_array_equal(exprs, moving[2])
        assert np.abs(np.diff(exprs, axis=1)).max() > 0.1
        assert np.abs(np.diff(moving[0], axis=1)).max() > 1e-3


def data_build(capsys, *args):
    code = cli.main(["data", "build", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err):
    assert err.count("\n") == 1 and err.startswith("dex-portrait data: error: "), err
    return err


def files(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


TINY = ["--set", "image_size=64", "--set", "num_identities=3", "--set", "num_test_identities=1", "--set",
        "num_views=1", "--set", "num_frames=2", "--config_name", "t"]


def test_data_build_refuses_an_existing_dataset_unless_overwrite(tmp_path, capsys):
    code, out, err = data_build(capsys, "synth_heads", "--data_dir", tmp_path, "--config", "tiny", *TINY)
    assert code == 0, err
    path = tmp_path / "synth_heads" / "t" / "1.0.0"
    assert f"synth_heads built at {path}" in out and len(tfds.builder_from_directory(path).as_data_source("test")) == 2
    assert "Downloading and preparing" not in out and "prepared to" not in out  # tfds' prints, silenced
    (path / "stale.txt").write_text("left by an earlier build")
    before = files(path)
    code, _, err = data_build(capsys, "synth_heads", "--data_dir", tmp_path, "--config", "tiny", *TINY)
    assert code == 2 and f"{path} already exists; pass --overwrite to replace it" in one_line_error(err)
    assert files(path) == before
    code, _, err = data_build(capsys, "synth_heads", "--data_dir", tmp_path, "--config", "tiny", *TINY, "--overwrite")
    assert code == 0, err
    assert not (path / "stale.txt").exists() and len(tfds.builder_from_directory(path).as_data_source("train")) == 4
    assert [p.name for p in path.parent.iterdir()] == ["1.0.0"]  # no staging or set-aside folder left


def _one_face_video(folder):
    folder.mkdir(parents=True)
    _write_video(folder / "clip.mp4", [cv2.resize(skimage.data.astronaut(), (320, 320))])
    return folder.resolve()


def test_portrait_videos_names_the_videos_folder_a_dataset_was_built_from(tmp_path, capsys):
    first, second = _one_face_video(tmp_path / "first"), _one_face_video(tmp_path / "second")
    args = ["portrait_videos", "--data_dir", tmp_path / "tfds", "--set", "crop_size=64", "--config_name", "small"]
    code, _, err = data_build(capsys, *args, "--videos", first)
    assert code == 0, err
    path = tmp_path / "tfds" / "portrait_videos" / "small" / "1.0.0"
    assert tfds.builder_from_directory(path).info.metadata["videos"] == str(first)
    before = files(path)

    code, _, err = data_build(capsys, *args, "--videos", second)
    line = one_line_error(err)
    assert code == 2 and f"{path} already exists (built from {first}, not from --videos {second})" in line
    assert "--overwrite" in line
    code, _, err = data_build(capsys, *args, "--videos", tmp_path / "nowhere")
    assert code == 2
    assert f"--videos {tmp_path / 'nowhere'} is not a folder; the dataset at {path} was built from {first}" in (
        one_line_error(err))
    code, _, err = data_build(capsys, *args, "--videos", first)
    assert code == 2 and f"{path} already exists (built from {first}); pass --overwrite" in one_line_error(err)
    assert files(path) == before

    metadata = path / "metadata.json"  # as a dataset built before the folder was recorded
    metadata.write_text(json.dumps({k: v for k, v in json.loads(metadata.read_text()).items() if k != "videos"}))
    code, _, err = data_build(capsys, *args, "--videos", second)
    assert code == 2 and "(it does not record the videos folder it was built from)" in one_line_error(err)
    code, _, err = data_build(capsys, *args, "--videos", second, "--overwrite")
    assert code == 0, err
    assert tfds.builder_from_directory(path).info.metadata["videos"] == str(second)


def test_data_build_help_lists_every_builder_config(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["data", "build", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for cls in (SynthHeads, PortraitVideos):
        assert cls.BUILDER_CONFIGS
        for config in cls.BUILDER_CONFIGS:
            assert f"{config.name} {' '.join(config.description.split())}" in text
    assert "portrait_videos: default" in text and "--overwrite" in text

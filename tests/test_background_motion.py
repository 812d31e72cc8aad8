"""Background motion: zero for a person moving over a still background, high for a moving background, the same at
any resolution, no measure across a frame without a face; portrait_videos keeps a real face over a still
background, drops the same face over a panning background, counts both per split, records every clip's measure,
and keeps everything with max_background_motion=None."""

import cv2
import numpy as np
import pytest
import skimage.data
import tensorflow_datasets as tfds

from dex_jax import cli
from dex_jax.data.background_motion import (MAX_BACKGROUND_MOTION, BackgroundMotion, analysis_frame, pair_motion,
                                            person_mask)
from dex_jax.data.build_cli import build

SIDE = 256
CENTRE, RADII = (128.0, 100.0), (30.0, 40.0)  # the synthetic face oval, in frame pixels


def oval(scale=1.0):
    angles = np.linspace(0, 2 * np.pi, 36, endpoint=False)
    return scale * np.stack([CENTRE[0] + RADII[0] * np.cos(angles), CENTRE[1] + RADII[1] * np.sin(angles)], 1)


def brick_rgb():
    return np.stack([skimage.data.brick()] * 3, -1)


def person_frames(pan_step, n=5):
    """n frames: a brick wall shifted left by pan_step px a frame, with a person drawn over it whose face (inside
    the oval), hair (above it), neck and shoulders (below it, wider than the head) move every frame."""
    wall = brick_rgb()
    frames = []
    for t in range(n):
        frame = np.ascontiguousarray(wall[100:100 + SIDE, pan_step * t:pan_step * t + SIDE])
        dx = 3 * (t % 2)
        cv2.ellipse(frame, (126 + dx, 100 - dx), (27, 37), 5.0 * t, 0, 360, (200, 160 - 20 * t, 140), -1)
        cv2.circle(frame, (124 + dx, 48), 14, (90, 60, 30), -1)  # hair above the forehead
        cv2.rectangle(frame, (112 + dx, 142), (144 + dx, SIDE - 1), (180, 140, 120), -1)  # neck to the frame's edge
        cv2.rectangle(frame, (70 + dx, 225 - dx), (186 + dx, SIDE - 1), (40, 60, 150), -1)  # shoulders
        frames.append(frame)
    return frames


def clip_motion(frames, ovals):
    motion = BackgroundMotion()
    for frame, points in zip(frames, ovals):
        motion.add(frame, points)
    return motion


def test_a_person_moving_over_a_still_background_scores_zero():
    frames = person_frames(pan_step=0)
    greys, nobody = [analysis_frame(f) for f in frames], np.zeros((SIDE, SIDE), bool)
    assert min(pair_motion(a, b, nobody, nobody) for a, b in zip(greys, greys[1:])) > MAX_BACKGROUND_MOTION  # unmasked
    motion = clip_motion(frames, [oval()] * len(frames))
    assert len(motion.pairs) == len(frames) - 1 and motion.clip_motion() == 0.0
    mask = person_mask(oval(), frames[0].shape, (SIDE, SIDE))
    assert 0.4 < (~mask).mean() < 0.8  # most of the frame is background: the zero is not a mask over everything
    assert not mask[0, 0] and not mask[0, -1] and mask[-1, int(CENTRE[0])]


def test_a_moving_background_scores_high():
    frames = person_frames(pan_step=2)
    motion = clip_motion(frames, [oval()] * len(frames))
    assert min(motion.pairs) > 5 * MAX_BACKGROUND_MOTION and motion.clip_motion() > 5 * MAX_BACKGROUND_MOTION


def test_the_measure_is_the_same_at_three_times_the_resolution():
    frames = person_frames(pan_step=2)
    large = [cv2.resize(f, (3 * SIDE, 3 * SIDE), interpolation=cv2.INTER_CUBIC) for f in frames]
    assert analysis_frame(large[0]).shape == (SIDE, SIDE)
    small = clip_motion(frames, [oval()] * len(frames)).clip_motion()
    assert clip_motion(large, [oval(3.0)] * len(frames)).clip_motion() == pytest.approx(small, rel=0.1)


def test_a_frame_without_a_face_ends_the_chain_of_pairs():
    still, moved = person_frames(pan_step=0, n=1)[0], person_frames(pan_step=40, n=2)[1]
    assert pair_motion(analysis_frame(still), analysis_frame(moved), *[person_mask(oval(), still.shape, (SIDE,) * 2)]
                       * 2) > 5 * MAX_BACKGROUND_MOTION
    assert clip_motion([still, still, moved], [oval(), None, oval()]).clip_motion() is None
    assert clip_motion([still, None, moved], [oval(), oval(), oval()]).clip_motion() is None
    assert clip_motion([still, still, None, moved], [oval()] * 4).pairs == [0.0]


def _write_video(path, frames, fps=10):
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (SIDE, SIDE))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def face_over_wall(pan_step, n=5):
    """n frames of skimage's astronaut (head, hair and collar, cut out with a soft ellipse), moving a pixel a frame,
    over a brick wall shifted left by pan_step px a frame."""
    head = skimage.data.astronaut()[0:260, 110:340]
    alpha = np.zeros(head.shape[:2], np.float32)
    cv2.ellipse(alpha, (115, 115), (70, 100), 0, 0, 360, 1.0, -1)
    head = cv2.resize(head, None, fx=0.8, fy=0.8).astype(np.float32)
    alpha = cv2.resize(cv2.GaussianBlur(alpha, (0, 0), 4), None, fx=0.8, fy=0.8)[..., None]
    wall = brick_rgb()
    frames = []
    for t in range(n):
        frame = wall[100:100 + SIDE, pan_step * t:pan_step * t + SIDE].astype(np.float32)
        y, x = 40 + t % 2, 55 + t
        window = frame[y:y + head.shape[0], x:x + head.shape[1]]
        window[:] = window * (1 - alpha) + head * alpha
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    return frames


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    _write_video(root / "train" / "still.mp4", face_over_wall(pan_step=0))
    _write_video(root / "train" / "panned.mp4", face_over_wall(pan_step=4))
    _write_video(root / "test" / "still_too.mp4", face_over_wall(pan_step=0))
    return root


def test_portrait_videos_drops_the_clip_whose_background_moves(videos, tmp_path, capsys):
    code = cli.main(["data", "build", "portrait_videos", "--videos", str(videos), "--data_dir", str(tmp_path),
                     "--set", "crop_size=64", "--config_name", "small"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "clips by background motion (over 1 grey levels): test 1 kept / 0 dropped, train 1 kept / 1 dropped" in out
    assert "frames in clips dropped for background motion: 5" in out
    builder = tfds.builder_from_directory(tmp_path / "portrait_videos" / "small" / "1.0.0")
    names = builder.info.metadata["subject_names"]
    train = builder.as_data_source("train")
    assert len(train) == 5 and {names[int(r["subject"])] for r in train} == {"still"}
    assert len(builder.as_data_source("test")) == 5
    recorded = builder.info.metadata["background_motion"]
    assert recorded["max"] == MAX_BACKGROUND_MOTION
    clips = recorded["clips"]
    assert set(clips) == {"train/still.mp4", "train/panned.mp4", "test/still_too.mp4"}
    assert clips["train/still.mp4"] < MAX_BACKGROUND_MOTION < 5 * MAX_BACKGROUND_MOTION < clips["train/panned.mp4"]
    summary = builder.info.metadata["summary"]
    assert (summary["clips_kept"], summary["clips_dropped"]) == ({"train": 1, "test": 1}, {"train": 1, "test": 0})
    assert summary["frames_read"] == 15 and summary["frames_kept"] == 10


def test_max_background_motion_none_keeps_every_clip(videos, tmp_path):
    path, summary = build("portrait_videos", str(tmp_path), videos=str(videos), progress=False,
                          overrides={"crop_size": 64, "max_background_motion": None}, config_name="all")
    assert (summary.clips_kept, summary.clips_dropped) == ({"train": 2, "test": 1}, {"train": 0, "test": 0})
    builder = tfds.builder_from_directory(path)
    assert len(builder.as_data_source("train")) == 10
    clips = builder.info.metadata["background_motion"]["clips"]
    assert builder.info.metadata["background_motion"]["max"] is None and clips["train/panned.mp4"] > 5


@pytest.mark.parametrize("value", ["-1", "'fast'", "True"])
def test_a_bad_max_background_motion_is_a_one_line_error(videos, tmp_path, capsys, value):
    code = cli.main(["data", "build", "portrait_videos", "--videos", str(videos), "--data_dir", str(tmp_path),
                     "--set", f"max_background_motion={value}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "max_background_motion must be a number >= 0" in err, err
    assert not (tmp_path / "portrait_videos").exists()

"""A real-face check: skimage's astronaut moved by known similarity transforms, run through portrait_videos.

Frame t of the 30-frame clip (512x512, mp4v) is the portrait rotated by roll_t (counter-clockwise on screen)
and scaled by scale_t about a point near the face, then shifted by (tx_t, ty_t); frame 0 is the untouched
portrait. Tolerances, against frame 0:
  MediaPipe's roll:        |(roll_t - roll_0) - roll_t(known)| <= 2 degrees
  crop centre:             |centre_t - A_t(centre_0)| <= 2% of the crop size (A_t: frame t's transform)
  crop size:               |size_t / size_0 / scale_t - 1| <= 5%
"""

import cv2
import numpy as np
import pytest
import skimage.data
import tensorflow_datasets as tfds

from dex_jax.data.build_cli import build
from dex_jax.data.pipeline import default_config, make_loader

NUM_FRAMES = 30
PIVOT = (256.0, 180.0)


def clip_transforms():
    """(roll degrees, scale, 2x3 matrices) of the clip's frames."""
    t = np.arange(NUM_FRAMES) / NUM_FRAMES
    roll = 20.0 * np.sin(2 * np.pi * t)
    scale = 1.0 + 0.15 * np.sin(4 * np.pi * t + 1.0)
    shift = np.stack([40.0 * np.sin(2 * np.pi * t + 0.5), 30.0 * np.cos(2 * np.pi * t)], 1)
    scale[0], shift[0] = 1.0, 0.0
    matrices = []
    for r, s, d in zip(roll, scale, shift):
        m = cv2.getRotationMatrix2D(PIVOT, float(r), float(s))
        m[:, 2] += d
        matrices.append(m)
    return roll, scale, np.array(matrices)


@pytest.fixture(scope="module")
def astronaut_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("astronaut")
    (root / "videos").mkdir()
    portrait = skimage.data.astronaut()
    _, _, matrices = clip_transforms()
    writer = cv2.VideoWriter(str(root / "videos" / "astronaut.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 25, (512, 512))
    for m in matrices:
        frame = cv2.warpAffine(portrait, m, (512, 512), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    # the whole frame moves, as under a moving camera: kept by switching the background-motion filter off
    path, summary = build("portrait_videos", str(root / "tfds"), videos=str(root / "videos"), progress=False,
                          overrides={"max_background_motion": None})
    return path, summary


def test_every_frame_has_a_face(astronaut_dataset):
    _, summary = astronaut_dataset
    assert (summary.videos_read, summary.frames_kept, summary.frames_without_face) == (1, NUM_FRAMES, 0)


def test_head_pose_recovers_the_roll(astronaut_dataset):
    source = tfds.builder_from_directory(astronaut_dataset[0]).as_data_source("train")
    roll, _, _ = clip_transforms()
    measured = np.array([source[i]["head_pose"][2] for i in range(NUM_FRAMES)])
    error = np.abs((measured - measured[0]) - roll)
    print(f"roll error: max {error.max():.2f} deg, mean {error.mean():.2f} deg")
    assert error.max() <= 2.0


def test_crops_undo_translation_and_scale(astronaut_dataset):
    source = tfds.builder_from_directory(astronaut_dataset[0]).as_data_source("train")
    _, scale, matrices = clip_transforms()
    crops = np.array([source[i]["crop"] for i in range(NUM_FRAMES)], np.float64)
    expected = matrices[:, :, :2] @ crops[0, :2] + matrices[:, :, 2]
    centre_error = np.linalg.norm(crops[:, :2] - expected, axis=1) / crops[:, 2]
    scale_error = np.abs(crops[:, 2] / crops[0, 2] / scale - 1)
    print(f"crop centre error: max {100 * centre_error.max():.2f}% of the crop size; "
          f"scale error: max {100 * scale_error.max():.2f}%")
    assert centre_error.max() <= 0.02
    assert scale_error.max() <= 0.05


def test_pipeline_reads_the_video_dataset(astronaut_dataset):
    config = default_config()
    config.update({"dataset_dir": str(astronaut_dataset[0]), "image_size": 64, "expression_size": 32,
                   "num_driving": 2, "batch_size": 2})
    batch = next(iter(make_loader(config, "pairs")))
    assert batch["driving"].shape == (2, 2, 64, 64, 3) and batch["expression_input"].shape == (2, 2, 32, 32, 3)
    assert "driving_pose" not in batch and (batch["identity"] == 0).all()
    covered = (batch["pose_input"] != batch["driving"]).any(-1).mean()
    assert 0.01 < covered < 0.2

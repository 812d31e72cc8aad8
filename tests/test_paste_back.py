"""Inference crop and paste-back: the data builder's crop, output at the source's size with its pixels outside the
mask, the SynthHeads framing, relative motion, small and several faces, the SynthHeads render rule."""

import types

import cv2
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from skimage import data

from dex_jax import geometry
from dex_jax.data.augment import expression_crop
from dex_jax.data.synth_heads import render_frames, sample_expression, sample_pose
from dex_jax.data.tfds_portrait_videos import PortraitVideosConfig, face_record
from dex_jax.data.video_io import read_image
from dex_jax.face.landmarker import FaceLandmarker
from dex_jax.image import to_float
from dex_jax.infer.animate import DEFAULTS
from dex_jax.infer.faces import MAX_FACES, check_photo_size, find_faces
from dex_jax.infer.paste_back import (EYES_AND_MOUTH, PORTRAIT_VIDEOS, SYNTH_HEADS, crop, face_box, paste_back,
                                      paste_mask, smooth_boxes, training_framing)
from dex_jax.infer.pipeline import MotionPipeline
from dex_jax.infer.relative_motion import apply_motion, relative_pose
from dex_jax.infer.render_check import looks_rendered
from dex_jax.infer.wrapper import inference_data_config


@pytest.fixture(scope="module")
def landmarker():
    with FaceLandmarker(num_faces=MAX_FACES) as found:
        yield found


def framed_astronaut(height=700, width=1100, scale=1.0, at=(90, 300)):
    """skimage's astronaut (a real photo), scaled, in a larger grey non-square frame."""
    photo = data.astronaut()
    if scale != 1.0:
        photo = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    frame = np.full((height, width, 3), 110, np.uint8)
    frame[at[0]:at[0] + photo.shape[0], at[1]:at[1] + photo.shape[1]] = photo
    return frame


def test_the_crop_is_the_data_builders(landmarker):
    frame = framed_astronaut(560, 700, at=(20, 100))
    face = landmarker.detect(frame)
    record = face_record(face, frame, PortraitVideosConfig(name="test"))
    box = face_box(face.landmarks)
    np.testing.assert_allclose(box, record["crop"], rtol=1e-5)
    built = cv2.cvtColor(cv2.imdecode(np.frombuffer(record["image"], np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    ours = crop(frame, box)
    assert ours.shape == built.shape == (512, 512, 3)
    assert np.abs(ours.astype(float) - built).mean() < 2  # the builder stores a JPEG (quality 95)


def test_paste_back_keeps_the_source_outside_the_mask_at_any_aspect_ratio(landmarker):
    frame = framed_astronaut()
    box = face_box(find_faces(landmarker, frame)[0])
    result = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    out = paste_back(frame, result, box)
    assert out.shape == frame.shape == (700, 1100, 3)
    mask = paste_mask(box, (0, 0, 1100, 700))
    assert 0 < (mask > 0).mean() < 0.7 and (mask == 1).any()
    np.testing.assert_array_equal(out[mask == 0], frame[mask == 0])
    inside = mask == 1
    assert np.abs(out[inside].astype(float) - frame[inside]).mean() > 20  # the result is there, not the source
    # a box half outside the frame: still the frame's size, its pixels outside the box untouched
    corner = paste_back(frame, result, np.array([10.0, 680.0, 300.0]))
    assert corner.shape == frame.shape and np.array_equal(corner[:, 200:], frame[:, 200:])


def test_paste_back_blends_by_the_feathered_mask():
    """A flat result (200) pasted into a flat frame (40): every pixel is mask x 200 + (1 - mask) x 40, rounded."""
    frame = np.full((300, 500, 3), 40, np.uint8)
    box = np.array([260.0, 140.0, 180.0])
    out = paste_back(frame, np.full((64, 64, 3), 200, np.uint8), box)
    mask = paste_mask(box, (0, 0, 500, 300))[..., None]
    assert ((mask > 0) & (mask < 1)).mean() > 0.05  # the feathered border is there
    np.testing.assert_allclose(out, np.broadcast_to(mask * 200 + (1 - mask) * 40, out.shape), rtol=0, atol=0.51)


def test_smoothing_keeps_a_still_box_and_damps_jitter():
    still = np.tile([100.0, 80.0, 200.0], (20, 1))
    np.testing.assert_allclose(smooth_boxes(still), still)
    jitter = still + np.random.default_rng(0).normal(0, 3, still.shape)
    assert np.abs(smooth_boxes(jitter) - still).std() < 0.6 * np.abs(jitter - still).std()


def test_relative_motion_moves_the_source_by_the_change_since_the_first_frame():
    source = geometry.pose_from_params(0.3, -0.1, 0.05, 0.1, -0.2, 0.9)[None]
    first = geometry.pose_from_params(-0.4, 0.2, 0.0, 0.3, 0.1, 1.2)[None]
    turned = geometry.pose_from_params(-0.4 + 0.25, 0.2, 0.0, 0.3 + 0.05, 0.1, 1.2 * 1.1)[None]
    np.testing.assert_allclose(relative_pose(source, first, first), source, atol=1e-5)
    moved = relative_pose(source, turned, first)
    # yaw turns about the vertical axis after pitch: with R = Rz Ry Rx the change Ry(0.25) lands on the source's
    expected = geometry.pose_matrix(
        geometry.rotation_from_euler(-0.4 + 0.25, 0.2, 0.0) @ geometry.rotation_from_euler(-0.4, 0.2, 0.0).T
        @ geometry.rotation_from_euler(0.3, -0.1, 0.05), jnp.array([0.15, -0.2]), 0.9 * 1.1)
    np.testing.assert_allclose(moved[0], expected, atol=1e-5)
    expressions = jnp.array([[1.0, 2.0], [3.0, 5.0]])
    poses, out = apply_motion(jnp.concatenate([first, turned]), expressions,
                              (source, jnp.array([[10.0, 20.0]]), first, expressions[:1]))
    np.testing.assert_allclose(out, [[10.0, 20.0], [12.0, 23.0]])
    assert apply_motion(poses, expressions, None)[1] is expressions


def test_a_64_pixel_face_in_a_1024_photo_is_found(landmarker):
    photo = data.astronaut()
    side = np.ptp(landmarker.detect(photo).landmarks[:, :2], axis=0).max()
    frame = framed_astronaut(1024, 1024, scale=64 / side, at=(600, 300))
    assert landmarker.count(frame) == 0  # MediaPipe alone, on the whole photo, misses it
    faces = find_faces(landmarker, frame)
    assert len(faces) == 1
    extent = np.ptp(faces[0], axis=0).max()
    assert 50 < extent < 80 and 300 < faces[0][:, 0].mean() < 300 + photo.shape[1] * 64 / side


def test_several_faces_come_largest_first(landmarker):
    frame = np.full((600, 1400, 3), 100, np.uint8)
    frame[40:552, 20:532] = data.astronaut()
    frame[100:500, 800:1200] = cv2.resize(data.astronaut(), (400, 400), interpolation=cv2.INTER_AREA)
    faces = find_faces(landmarker, frame)
    assert len(faces) == 2
    assert faces[0][:, 0].mean() < 532 and faces[1][:, 0].mean() > 800
    assert face_box(faces[0])[2] > face_box(faces[1])[2]


def test_photo_size_limits():
    for shape in [(1, 1, 3), (10000, 40, 3), (20, 500, 3)]:
        with pytest.raises(ValueError, match="each side must be 32 to 8192 pixels"):
            check_photo_size(np.zeros(shape, np.uint8), "source image")
    check_photo_size(np.zeros((32, 8192, 3), np.uint8), "source image")


def test_synth_heads_renders_are_told_from_real_photos(landmarker):
    render = read_image(DEFAULTS["source"])
    assert looks_rendered(render, landmarker.detect(render).landmarks)
    jpeg = cv2.imdecode(cv2.imencode(".jpg", render, [cv2.IMWRITE_JPEG_QUALITY, 75])[1], cv2.IMREAD_UNCHANGED)
    assert looks_rendered(jpeg, landmarker.detect(jpeg).landmarks)
    for frame in [framed_astronaut(560, 700, at=(20, 100)), cv2.resize(data.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)]:
        assert not looks_rendered(frame, landmarker.detect(frame).landmarks)


def test_synth_heads_framing_matches_the_renders_own_frame(landmarker):
    # Renders of other identities and poses than the calibration's: the SYNTH_HEADS box is the render's frame
    # (median side ratio 1 within 5%, centre within 2% of the side); the portrait_videos box is wider by 8%.
    side, n = 256, 24
    keys = jax.random.split(jax.random.PRNGKey(7), 2)
    images = np.asarray(render_frames(np.arange(n) + 500, sample_pose(keys[0], (n,)), sample_expression(keys[1], (n,)),
                                      side, side)["image"])
    points = [face.landmarks for face in map(landmarker.detect, images) if face is not None]
    assert len(points) >= n - 2

    def framing_of(framing):
        boxes = np.array([face_box(p, framing) for p in points])
        centre = (side - 1) / 2
        return (np.median(side / boxes[:, 2]), np.median(np.abs(boxes[:, 0] - centre) / boxes[:, 2]),
                np.median((boxes[:, 1] - centre) / boxes[:, 2]))

    ratio, dx, dy = framing_of(SYNTH_HEADS)
    assert 0.95 <= ratio <= 1.05 and dx < 0.04 and abs(dy) < 0.02, (ratio, dx, dy)
    assert framing_of(PORTRAIT_VIDEOS)[0] < 0.95


def test_the_framing_follows_the_training_dataset():
    def config(path):
        return ml_collections.ConfigDict({"dataset_dir": path})

    assert training_framing(config("/data/synth_heads/cpu128/1.0.0")) == SYNTH_HEADS
    assert training_framing(config("/data/portrait_videos/default/1.0.0")) == PORTRAIT_VIDEOS
    assert training_framing(config("")) == PORTRAIT_VIDEOS


def test_the_expression_input_is_the_crop_the_training_data_used(landmarker):
    """A train config's data.expression_align reaches the inference pipeline, which builds MediaPipe-landmark
    crops as `augment` does; a clip without a face falls back to the box square."""
    frame = framed_astronaut(560, 700, at=(20, 100))
    photo = crop(frame, face_box(landmarker.detect(frame).landmarks))
    points = landmarker.detect(photo).landmarks[:, :2]
    box = np.concatenate([points.min(0), points.max(0)])
    train = ml_collections.ConfigDict({"data": {"expression_align": "landmarks", "expression_box_scale": 1.2}})
    wrapper = types.SimpleNamespace(temporal=False, image_size=64, expression_size=48, description="")
    aligned = MotionPipeline(wrapper, inference_data_config(train), landmarker)
    boxed = MotionPipeline(wrapper, inference_data_config(ml_collections.ConfigDict()), landmarker)
    want = to_float(expression_crop(photo, box, 48, 0.0, 1.2, "landmarks", points, EYES_AND_MOUTH))
    np.testing.assert_array_equal(aligned.inputs(photo, points)[1], want)
    np.testing.assert_array_equal(boxed.inputs(photo, points)[1], to_float(expression_crop(photo, box, 48)))
    assert np.abs(want - boxed.inputs(photo, points)[1]).mean() > 0.01
    np.testing.assert_array_equal(aligned.expression_input(photo, None, box),
                                  to_float(expression_crop(photo, box, 48, 0.0, 1.2)))

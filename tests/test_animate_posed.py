"""MotionPipeline.posed, the serve app's slider path: one frame rendered at the source's own pose turned and scaled,
with the source's own expression or a driving image's, checked against the generator's render at that pose; the
diffusion engine on the same path."""

import jax
import numpy as np
import pytest

from dex_jax import geometry
from dex_jax.data.video_io import read_clip, read_image
from dex_jax.face.landmarker import FaceLandmarker
from dex_jax.image import to_uint8
from dex_jax.infer.animate import DEFAULTS
from dex_jax.infer.faces import MAX_FACES, find_faces
from dex_jax.infer.paste_back import face_box, paste_mask
from dex_jax.infer.pipeline import largest_face, load_motion_model, load_pipeline
from dex_jax.motion.generator import build_motion_generator


@pytest.fixture(autouse=True)
def same_compilation_cache(monkeypatch):
    monkeypatch.setenv("DEX_JAX_CACHE", jax.config.jax_compilation_cache_dir)


@pytest.fixture(scope="module")
def posing():
    """(pipeline of the bundled Stage-1 model, source photo, its face, a driving frame), the landmarker open."""
    source = read_image(DEFAULTS["source"])
    driving = read_clip(DEFAULTS["driving"])[0][30]
    with FaceLandmarker(num_faces=MAX_FACES) as landmarker:
        pipeline = load_motion_model(DEFAULTS["checkpoint"], landmarker, batch=2)
        face = pipeline.source_face(source, find_faces(landmarker, source)[0])
        yield pipeline, source, face, driving


def rendered(pipeline, face, rotation, scale, expression):
    """The generator's own render of the face's volume at its pose turned by `rotation` (degrees) and scaled."""
    volume, latent, pose = face.encoded
    turn = geometry.rotation_from_euler(*np.radians(rotation))
    target = pose.at[..., :3].set(scale * turn @ pose[..., :3])
    model = build_motion_generator(pipeline.wrapper.model_config)
    image = model.apply({"params": pipeline.wrapper.params}, volume, latent, pose, target, expression,
                        method="render")
    return to_uint8(image)[0]


def test_the_sliders_pose_is_rendered_with_the_sources_expression(posing):
    pipeline, source, face, _ = posing
    for rotation, scale in (((0.0, 0.0, 0.0), 1.0), ((25.0, -10.0, 8.0), 1.15)):
        result = pipeline.posed(source, face, rotation, scale, paste=False)
        expected = rendered(pipeline, face, rotation, scale, face.motion[1])
        assert np.abs(result.astype(int) - expected).max() <= 1
    turned = pipeline.posed(source, face, (25.0, -10.0, 8.0), 1.15, paste=False)
    assert np.abs(turned.astype(int) - pipeline.posed(source, face, paste=False)).mean() > 1


def test_the_expression_comes_from_the_driving_image_and_the_result_is_pasted_back(posing):
    pipeline, source, face, driving = posing
    result = pipeline.posed(source, face, (0.0, 15.0, 0.0), 0.9, expression=driving, paste=False)
    pose_in, expression_in = pipeline.driving_inputs(driving, *driving_face(pipeline, driving))
    expression = pipeline.wrapper.motion(pose_in[None], expression_in[None])[1]
    assert np.abs(result.astype(int) - rendered(pipeline, face, (0.0, 15.0, 0.0), 0.9, expression)).max() <= 1
    pasted = pipeline.posed(source, face, (0.0, 15.0, 0.0), 0.9, expression=driving)
    mask = paste_mask(face.box, (0, 0, source.shape[1], source.shape[0]))
    assert pasted.shape == source.shape
    np.testing.assert_array_equal(pasted[mask == 0], source[mask == 0])
    assert not np.array_equal(pasted[mask == 1], source[mask == 1])


def driving_face(pipeline, frame):
    """(landmarks, crop box) of the largest face of a frame, framed as the pipeline frames it."""
    points = largest_face(pipeline.landmarker, frame)
    return points, face_box(points, pipeline.framing)


def test_an_expression_image_without_a_face_or_a_bad_scale_is_refused(posing):
    pipeline, source, face, _ = posing
    with pytest.raises(ValueError, match="no face found in the expression image"):
        pipeline.posed(source, face, expression=np.full((64, 64, 3), 90, np.uint8))
    with pytest.raises(ValueError, match="scale must be positive"):
        pipeline.posed(source, face, scale=0.0)


def test_the_diffusion_engine_renders_the_sliders_pose(posing):
    # The bundled animator (trained, so the pose reaches its frames through ray maps and warped features), 2 DDIM
    # steps without guidance: a turn changes the frame, the same pose gives the same frame (seeded noise), and the
    # pasted result has the source's size.
    _, source, _, _ = posing
    with FaceLandmarker(num_faces=MAX_FACES) as landmarker:
        pipeline = load_pipeline(DEFAULTS["animator"], landmarker, batch=2, steps=2, cfg="none")
        face = pipeline.source_face(source, find_faces(landmarker, source)[0])
        straight = pipeline.posed(source, face, paste=False)
        assert straight.shape == (pipeline.image_size, pipeline.image_size, 3)
        np.testing.assert_array_equal(pipeline.posed(source, face, paste=False), straight)
        turned = pipeline.posed(source, face, (30.0, 0.0, 0.0), 1.0, paste=False)
        assert np.abs(turned.astype(int) - straight).mean() > 1
        assert pipeline.posed(source, face, (30.0, 0.0, 0.0), 1.0).shape == source.shape

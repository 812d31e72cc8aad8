"""data.source 'synth': SynthHeads batches rendered on the fly, in the pipeline's layout, with their truth."""

import numpy as np
import pytest

from dex_jax.config_loading import load_config
from dex_jax.data import synth_heads
from dex_jax.data.augment import expression_crop
from dex_jax.data.synth_batches import RENDER_FACTOR, SynthBatches
from dex_jax.data.synth_face import REGIONS
from dex_jax.face.regions import masked_groups
from dex_jax.image import to_float, to_model
from dex_jax.train.input import RandomBatches, make_iterator


@pytest.fixture(scope="module")
def data_config():
    config = load_config("configs/motion_test.py").data
    config.update(source="synth", batch_size=2, num_driving=2)
    return config


def test_batches_have_the_pipeline_layout_and_are_fixed_by_seed_and_index(data_config):
    batches = SynthBatches(data_config, 0, 1)
    batch, again, other = batches[3], batches[3], batches[4]
    like = RandomBatches(data_config, 0, 1)[0]
    assert {k: (v.shape, v.dtype) for k, v in batch.items() if k != "identity"} == {
        k: (v.shape, v.dtype) for k, v in like.items()}
    assert batch["identity"].shape == (2,)
    for key in batch:
        np.testing.assert_array_equal(batch[key], again[key])
    assert not np.array_equal(batch["source"], other["source"])
    assert not np.array_equal(batch["driving_pose"][:, 0], batch["driving_pose"][:, 1])  # every frame its own pose
    covered = np.any(batch["pose_input"] != batch["driving"], axis=-1, keepdims=True)
    assert covered.any() and not np.any(covered & ~batch["expression_mask"])  # only the eyes and mouth are covered
    assert set(np.unique(batch["face_mask"])) == {0.0, 1.0}
    with pytest.raises(ValueError, match="data.source 'synth' renders pairs"):
        make_iterator(data_config, kind="clips")


def test_the_labels_are_what_the_frames_show(data_config):
    batch = SynthBatches(data_config, 0, 1)[0]
    side = RENDER_FACTOR * data_config.image_size
    frames = synth_heads.render_frames(batch["identity"], batch["source_pose"], batch["source_expression"], side,
                                       side)
    want = np.stack([to_model(np.asarray(image), data_config.image_size) for image in frames["image"]])
    np.testing.assert_allclose(batch["source"], want, atol=1e-6)
    assert np.all(np.abs(batch["driving_pose"][..., :3]) <= np.pi / 4 + 1e-6)  # synth_heads.POSE_RANGES


def test_landmark_aligned_expression_inputs_are_the_augment_crops_of_the_driving_frames(data_config):
    aligned = data_config.copy_and_resolve_references()
    aligned.update(expression_align="landmarks", rotation_degrees=0.0)
    batch = SynthBatches(aligned, 0, 1)[1]
    boxed = SynthBatches(data_config, 0, 1)[1]
    np.testing.assert_array_equal(batch["driving"], boxed["driving"])
    side = RENDER_FACTOR * aligned.image_size
    for i in range(2):
        frames = synth_heads.render_frames(np.repeat(batch["identity"][i], 2), batch["driving_pose"][i],
                                           batch["driving_expression"][i], side, side)
        for j in range(2):
            want = to_float(expression_crop(np.asarray(frames["image"][j]), None, aligned.expression_size,
                                            align="landmarks", landmarks=np.asarray(frames["landmarks"][j]),
                                            groups=masked_groups(REGIONS)))
            np.testing.assert_allclose(batch["expression_input"][i, j], want, atol=1e-6)
            assert np.abs(batch["expression_input"][i, j] - boxed["expression_input"][i, j]).mean() > 0.01
    aligned.expression_align = "eyes"
    with pytest.raises(ValueError, match="data.expression_align must be one of"):
        SynthBatches(aligned, 0, 1)

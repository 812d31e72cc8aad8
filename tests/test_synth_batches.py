"""data.source 'synth': SynthHeads batches rendered on the fly, in the pipeline's layout, with their truth."""

import numpy as np
import pytest

from dex_jax.config_loading import load_config
from dex_jax.data import synth_heads
from dex_jax.data.synth_batches import RENDER_FACTOR, SynthBatches
from dex_jax.image import to_model
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

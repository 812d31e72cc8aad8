"""grain pipelines: the batch contract, seeded order, iterator state round trip, disjoint per-process shards."""

import hashlib

import grain
import numpy as np
import orbax.checkpoint as ocp
import pytest

from dex_jax.data.pipeline import RecordIndex, default_config, make_loader
from dex_jax.data.tfds_synth_heads import SynthHeads, SynthHeadsConfig

CONFIG = SynthHeadsConfig(name="pipeline_test", image_size=64, num_identities=5, num_test_identities=2,
                          num_sequences=1, num_views=2, num_frames=6)


@pytest.fixture(scope="module")
def data_config(tmp_path_factory):
    builder = SynthHeads(config=CONFIG, data_dir=str(tmp_path_factory.mktemp("tfds")), file_format="array_record")
    builder.download_and_prepare()
    config = default_config()
    config.update({"dataset_dir": str(builder.data_dir), "image_size": 32, "expression_size": 24, "batch_size": 4,
                   "clip_length": 5})
    return config


def _batches(loader, n):
    iterator = iter(loader)
    return [next(iterator) for _ in range(n)]


def _same(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_pairs_batch_contract(data_config):
    batch = _batches(make_loader(data_config, "pairs"), 1)[0]
    shapes = {k: v.shape for k, v in batch.items()}
    assert shapes == {"source": (4, 32, 32, 3), "driving": (4, 4, 32, 32, 3), "pose_input": (4, 4, 32, 32, 3),
                      "expression_input": (4, 4, 24, 24, 3), "face_mask": (4, 4, 32, 32, 1),
                      "expression_mask": (4, 4, 32, 32, 1), "identity": (4,),
                      "driving_pose": (4, 4, 6), "driving_expression": (4, 4, 11), "source_pose": (4, 6),
                      "source_expression": (4, 11)}
    for key in ("source", "driving", "pose_input", "expression_input"):
        assert batch[key].dtype == np.float32 and -1.0 <= batch[key].min() and batch[key].max() <= 1.0
    assert set(np.unique(batch["face_mask"])) == {0.0, 1.0}
    covered = (batch["pose_input"] != batch["driving"]).any(-1)
    assert covered.any() and (batch["pose_input"][covered] == 0.0).all()
    region = batch["expression_mask"][..., 0] == 1.0
    assert set(np.unique(batch["expression_mask"])) == {0.0, 1.0}
    assert (covered <= region).all() and (batch["pose_input"][region] == 0.0).all()
    assert set(batch["identity"]) <= {0, 1, 2}


def test_expression_mask_stays_when_the_pose_input_is_not_covered(data_config):
    plain = data_config.copy_and_resolve_references()
    plain.mask_pose_input = False
    covered, uncovered = (_batches(make_loader(c, "pairs"), 1)[0] for c in (data_config, plain))
    np.testing.assert_array_equal(uncovered["pose_input"], uncovered["driving"])
    np.testing.assert_array_equal(uncovered["expression_mask"], covered["expression_mask"])


def test_landmark_aligned_expression_inputs_change_only_the_expression_input(data_config):
    aligned = data_config.copy_and_resolve_references()
    aligned.expression_align = "landmarks"
    boxed, landmarks = (_batches(make_loader(c, "pairs"), 1)[0] for c in (data_config, aligned))
    for key in boxed:
        if key != "expression_input":
            np.testing.assert_array_equal(landmarks[key], boxed[key])
    assert np.abs(landmarks["expression_input"] - boxed["expression_input"]).mean() > 0.01
    aligned.expression_align = "eyes"
    with pytest.raises(ValueError, match="data.expression_align must be one of"):
        make_loader(aligned, "pairs")


def test_clips_are_consecutive_frames_of_one_camera(data_config):
    batch = _batches(make_loader(data_config, "clips"), 1)[0]
    assert batch["driving"].shape == (4, 5, 32, 32, 3) and batch["expression_input"].shape == (4, 5, 24, 24, 3)
    # A SynthHeads track is smooth: consecutive frames have close poses, unlike frames of other cameras.
    step = np.abs(np.diff(batch["driving_pose"][..., :3], axis=1)).max()
    assert step < np.radians(5)


def test_record_index_groups():
    rows = {"subject": [0] * 7 + [1] * 3, "sequence": [0] * 10, "camera": [0, 0, 0, 0, 1, 1, 1, 0, 0, 0],
            "frame": [0, 1, 2, 4, 0, 1, 2, 0, 1, 2]}
    index = RecordIndex(rows)
    starts = index.windows(3)
    windows = [sorted(index.clip_order[p:p + 3].tolist()) for p in starts]
    assert windows == [[0, 1, 2], [4, 5, 6], [7, 8, 9]]
    rng = np.random.default_rng(0)
    for _ in range(20):
        drivers = index.drivers(1, 4, rng)
        assert set(drivers) <= {4, 5, 6}
        assert set(index.drivers(8, 4, rng)) <= {7, 9}
        assert set(index.drivers(1, 4, rng, cross_view_probability=0.0)) <= {0, 2, 3}
    mixed = np.concatenate([index.drivers(1, 4, rng, cross_view_probability=0.25) for _ in range(100)])
    assert set(mixed) == {0, 2, 3, 4, 5, 6} and 0.15 < np.isin(mixed, [4, 5, 6]).mean() < 0.35
    assert index.other_views(1) == [5] and index.other_views(3) == []
    assert index.clip_source(np.array([4, 5, 6]), rng) in {0, 1, 2, 3}


def test_seeded_order_is_deterministic(data_config):
    a = _batches(make_loader(data_config, "pairs"), 3)
    b = _batches(make_loader(data_config, "pairs"), 3)
    assert all(_same(x, y) for x, y in zip(a, b))
    data_config.seed = 1
    c = _batches(make_loader(data_config, "pairs"), 3)
    data_config.seed = 0
    assert not all(_same(x, y) for x, y in zip(a, c))


def test_iterator_state_round_trips(data_config):
    iterator = iter(make_loader(data_config, "pairs"))
    for _ in range(2):
        next(iterator)
    state = iterator.get_state()
    expected = [next(iterator) for _ in range(3)]
    restored = iter(make_loader(data_config, "pairs"))
    restored.set_state(state)
    assert all(_same(x, next(restored)) for x in expected)


def test_iterator_state_restores_through_an_orbax_checkpoint(data_config, tmp_path):
    handlers = {"data": grain.checkpoint.CheckpointHandler()}
    iterator = iter(make_loader(data_config, "pairs"))
    next(iterator)
    with ocp.CheckpointManager(tmp_path, item_names=("data",), item_handlers=handlers) as manager:
        manager.save(1, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(iterator)))
        manager.wait_until_finished()
        expected = next(iterator)
        restored = iter(make_loader(data_config, "pairs"))
        manager.restore(1, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(restored)))
    assert _same(expected, next(restored))


def test_process_shards_are_disjoint(data_config):
    data_config.num_epochs = 1
    seen = []
    for shard in range(2):
        options = grain.sharding.ShardOptions(shard_index=shard, shard_count=2, drop_remainder=True)
        batches = list(make_loader(data_config, "pairs", shard_options=options))
        assert batches and all(b["source"].shape[0] == 2 for b in batches)
        seen.append({hashlib.sha1(s.tobytes()).hexdigest() for b in batches for s in b["source"]})
    data_config.num_epochs = None
    assert not seen[0] & seen[1]
    assert len(seen[0]) + len(seen[1]) == 3 * 2 * 6


def _examples(batches):
    return sorted(hashlib.sha1(b"".join(b[k][i].tobytes() for k in sorted(b))).hexdigest()
                  for b in batches for i in range(len(b["source"])))


def test_two_workers_give_the_same_examples(data_config):
    # Each worker batches its own share of the order, so batches regroup; the examples are the same.
    expected = _examples(_batches(make_loader(data_config, "pairs"), 2))
    data_config.worker_count = 2
    got = _examples(_batches(make_loader(data_config, "pairs"), 2))
    data_config.worker_count = 0
    assert got == expected

"""grain pipelines over our tfds datasets: Stage-1/2 examples (a source and K driving frames) and Stage-3 clips.

Batches are dicts of numpy arrays, images float32 in [-1, 1], NHWC:
  source (B, S, S, 3); driving (B, K, S, S, 3), the ground truth; pose_input (B, K, S, S, 3), driving with eyes
  and mouth covered; expression_input (B, K, E, E, 3); face_mask (B, K, S, S, 1) float {0, 1} of the driving
  frames; expression_mask (B, K, S, S, 1) bool, their eye and mouth hulls, dilated by mask_dilation
  (the pixels pose_input covers); identity (B,) int32; where the dataset knows them (SynthHeads)
  driving_pose (B, K, 6) = (yaw, pitch, roll, tx, ty, scale), driving_expression (B, K, n_expr), source_pose
  (B, 6) and source_expression (B, n_expr).
kind='pairs' (Stage 1/2): K = num_driving frames of the source's subject and sequence, each from another
camera with probability driving_cross_view_probability (cross-view training) where the sequence has several,
else from the source's camera; kind='clips' (Stage 3): K = clip_length consecutive frames of one
camera, and a source from the same sequence outside the clip where there is one.

Order: a grain IndexSampler shuffles the examples with `seed` (every epoch anew), the DataLoader shards them
across JAX processes (ShardByJaxProcess by default), and each example's random choices (driving frames,
rotation, cross view) come from grain's per-example generator, so a seed fixes every example whatever the
worker count, and every batch for a given worker count (each worker batches its own share of the order).
`iterator.get_state()` / `set_state()` (bytes) or grain's orbax handler save and restore the position.

The `data` config (`default_config()`):
  dataset_dir             a built dataset version folder, e.g. ~/tensorflow_datasets/synth_heads/default/1.0.0
  split                   'train', 'test', ...
  image_size (S)          model image size: 256 for Stage 1, 512 for the diffusion stages
  expression_size (E)     expression crop size, 224 in the paper
  num_driving (K)         driving frames per Stage-1/2 example, 4 in the paper
  clip_length             consecutive frames per Stage-3 example, 24 in the paper
  batch_size              global batch; each process gets batch_size / process count
  seed                    order and augmentation seed
  num_epochs              None repeats forever
  worker_count            grain worker processes (0: in the calling process)
  worker_buffer_size      batches each worker prepares ahead
  rotation_degrees        expression input rotation, uniform in +-rotation_degrees
  driving_cross_view_probability  chance a driving frame comes from another camera than the source's (if any)
  cross_view_probability  chance the expression input is another camera's view of the same instant (if any)
  expression_box_scale    expression crop side = the face box's longer side times this
  expression_align        'box': the expression crop is the face-box square (the paper's); 'landmarks' (ours):
                          the crop that levels the eyes and puts eyes and mouth corners in place (`augment`)
  mask_pose_input         cover the eyes and mouth of the pose input (False only for ablations)
  mask_dilation           pose-input hull dilation, a fraction of the face box's longer side
  mask_fill               value of the covered pose-input pixels, in [-1, 1]
"""

import cv2
import grain
import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from absl import flags

from dex_jax.data.augment import EXPRESSION_ALIGNMENTS, expression_crop, pose_input
from dex_jax.data.tfds_common import INDEX_FIELDS
from dex_jax.face.regions import masked_groups
from dex_jax.image import to_float, to_model

KINDS = ("pairs", "clips")


def default_config():
    """The `data` ConfigDict with the paper's sizes (fields in the module docstring)."""
    return ml_collections.ConfigDict({
        "dataset_dir": "",
        "split": "train",
        "image_size": 256,
        "expression_size": 224,
        "num_driving": 4,
        "clip_length": 24,
        "batch_size": 112,
        "seed": 0,
        "num_epochs": ml_collections.config_dict.placeholder(int),
        "worker_count": 0,
        "worker_buffer_size": 2,
        "rotation_degrees": 30.0,
        "driving_cross_view_probability": 1.0,
        "cross_view_probability": 0.5,
        "expression_box_scale": 1.0,
        "expression_align": "box",
        "mask_pose_input": True,
        "mask_dilation": 0.04,
        "mask_fill": 0.0,
    })


def _pick(pool, count, rng):
    """`count` entries of `pool`, without repeats where it has enough (an empty pool allows count 0)."""
    return rng.choice(pool, count, replace=len(pool) < count)


class RecordIndex:
    """Groups of a split's records from the builder's index (subject, sequence, camera, frame per record)."""

    def __init__(self, rows):
        for name in INDEX_FIELDS:
            setattr(self, name, np.asarray(rows[name], np.int64))
        pairs = np.stack([self.subject, self.sequence], 1)
        _, self.sequence_id = np.unique(pairs, axis=0, return_inverse=True)
        self.sequence_id = self.sequence_id.reshape(-1)
        order = np.argsort(self.sequence_id, kind="stable")
        bounds = np.searchsorted(self.sequence_id[order], np.arange(self.sequence_id.max(initial=-1) + 2))
        self.members = [order[bounds[g]:bounds[g + 1]] for g in range(len(bounds) - 1)]
        self.instants = {}
        for record, (g, frame) in enumerate(zip(self.sequence_id, self.frame)):
            self.instants.setdefault((int(g), int(frame)), []).append(record)
        self.clip_order = np.lexsort((self.frame, self.camera, self.sequence_id))

    def __len__(self):
        return len(self.frame)

    def windows(self, length):
        """Start positions p into `clip_order` whose `length` records are consecutive frames of one camera."""
        o = self.clip_order
        if len(o) < length:
            return np.zeros(0, np.int64)
        same = (self.sequence_id[o[length - 1:]] == self.sequence_id[o[:len(o) - length + 1]]) & (
            self.camera[o[length - 1:]] == self.camera[o[:len(o) - length + 1]])
        span = self.frame[o[length - 1:]] - self.frame[o[:len(o) - length + 1]] == length - 1
        return np.flatnonzero(same & span)

    def drivers(self, source, count, rng, cross_view_probability=1.0):
        """`count` records of the source's sequence, never the source (unless it has no other).

        Each comes from another camera with probability `cross_view_probability`, else from the source's own
        camera; where the sequence has frames of only one of the two kinds, all come from that kind.
        """
        members = self.members[self.sequence_id[source]]
        candidates = members[members != source]
        if not len(candidates):
            return np.full(count, source)
        other_view = self.camera[candidates] != self.camera[source]
        cross, same = candidates[other_view], candidates[~other_view]
        if len(cross) and len(same):
            num_cross = rng.binomial(count, cross_view_probability)
        else:
            num_cross = count if len(cross) else 0
        return np.concatenate([_pick(cross, num_cross, rng), _pick(same, count - num_cross, rng)])

    def clip_source(self, window, rng):
        """A record of the window's sequence outside the window (inside it when the sequence has no other)."""
        members = self.members[self.sequence_id[window[0]]]
        outside = np.setdiff1d(members, window)
        return int(rng.choice(outside if len(outside) else window))

    def other_views(self, record):
        """The records of the same sequence and frame seen by other cameras."""
        same = self.instants[(int(self.sequence_id[record]), int(self.frame[record]))]
        return [r for r in same if r != record]


class _Anchors:
    """grain's data source: example i is anchor i, a record (pairs) or a clip_order start (clips)."""

    def __init__(self, anchors, name):
        self._anchors = np.asarray(anchors, np.int64)
        self._name = name

    def __len__(self):
        return len(self._anchors)

    def __getitem__(self, i):
        return int(self._anchors[i])

    def __repr__(self):
        return f"Anchors({self._name}, {len(self._anchors)})"


def check_expression_align(config):
    """ValueError unless the `data` config's expression_align is one of EXPRESSION_ALIGNMENTS."""
    if config.expression_align not in EXPRESSION_ALIGNMENTS:
        raise ValueError(f"data.expression_align must be one of {EXPRESSION_ALIGNMENTS}, "
                         f"got {config.expression_align!r}")


def rescale_points(points, factor):
    """Pixel coordinates (centres at integers) of an image resized by `factor`."""
    return (np.asarray(points, np.float64) + 0.5) * factor - 0.5


class MakeExample(grain.transforms.RandomMap):
    """Reads the records of one example and applies the Fig. 3 augmentations (see module docstring)."""

    def __init__(self, dataset_dir, config, index, groups, kind):
        self._dataset_dir = str(dataset_dir)
        self._config = {k: config[k] for k in ("split", "image_size", "expression_size", "num_driving",
                                               "clip_length", "rotation_degrees", "cross_view_probability",
                                               "driving_cross_view_probability",
                                               "expression_box_scale", "expression_align", "mask_pose_input",
                                               "mask_dilation", "mask_fill")}
        self._index = index
        self._groups = groups
        self._kind = kind
        self._source = None

    def __getstate__(self):
        return {**self.__dict__, "_source": None}

    def _read(self, records):
        if self._source is None:
            self._source = tfds.builder_from_directory(self._dataset_dir).as_data_source(self._config["split"])
        return [self._source[int(r)] for r in records]

    def _expression_input(self, record, driving, rng):
        c = self._config
        others = self._index.other_views(record)
        if others and rng.random() < c["cross_view_probability"]:
            view = self._read([rng.choice(others)])[0]
            frame, degrees = view, 0.0
        else:
            frame, degrees = driving, rng.uniform(-c["rotation_degrees"], c["rotation_degrees"])
        crop = expression_crop(frame["image"], frame["face_box"], c["expression_size"], degrees,
                               c["expression_box_scale"], c["expression_align"], frame["landmarks"], self._groups)
        return to_float(crop)

    def _driving(self, record, rec, rng):
        c = self._config
        size = c["image_size"]
        factor = size / rec["image"].shape[0]
        image = to_model(rec["image"], size)
        covered, region = pose_input(image, rescale_points(rec["landmarks"], factor), self._groups,
                                     rescale_points(rec["face_box"], factor), c["mask_dilation"], c["mask_fill"])
        mask = cv2.resize(rec["face_mask"], (size, size), interpolation=cv2.INTER_AREA).reshape(size, size, 1)
        return {"driving": image, "pose_input": covered if c["mask_pose_input"] else image,
                "face_mask": (mask > 127).astype(np.float32), "expression_mask": region[..., None],
                "expression_input": self._expression_input(record, rec, rng)}

    def random_map(self, anchor, rng):
        c = self._config
        if self._kind == "pairs":
            source = anchor
            drivers = self._index.drivers(source, c["num_driving"], rng, c["driving_cross_view_probability"])
        else:
            drivers = self._index.clip_order[anchor:anchor + c["clip_length"]]
            source = self._index.clip_source(drivers, rng)
        source_rec, *driver_recs = self._read([source, *drivers])
        frames = [self._driving(r, rec, rng) for r, rec in zip(drivers, driver_recs)]
        example = {key: np.stack([f[key] for f in frames]) for key in frames[0]}
        example["source"] = to_model(source_rec["image"], c["image_size"])
        example["identity"] = np.int32(source_rec["identity"])
        if "pose" in source_rec:
            example["driving_pose"] = np.stack([r["pose"] for r in driver_recs]).astype(np.float32)
            example["driving_expression"] = np.stack([r["expression"] for r in driver_recs]).astype(np.float32)
            example["source_pose"] = np.asarray(source_rec["pose"], np.float32)
            example["source_expression"] = np.asarray(source_rec["expression"], np.float32)
        return example


def make_loader(config, kind="pairs", shard_options=None):
    """A grain DataLoader of batches (module docstring) for `config` (the `data` ConfigDict).

    shard_options: grain ShardOptions; default ShardByJaxProcess, one shard per JAX process.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    check_expression_align(config)
    builder = tfds.builder_from_directory(config.dataset_dir)
    metadata = builder.info.metadata
    if config.split not in metadata["index"]:
        raise ValueError(f"{config.dataset_dir} has no split {config.split!r}; it has {sorted(metadata['index'])}")
    index = RecordIndex(metadata["index"][config.split])
    groups = masked_groups(metadata["landmark_groups"])
    shard_options = shard_options or grain.sharding.ShardByJaxProcess(drop_remainder=True)
    if config.batch_size % shard_options.shard_count:
        raise ValueError(f"batch_size {config.batch_size} does not divide over {shard_options.shard_count} processes")
    anchors = np.arange(len(index)) if kind == "pairs" else index.windows(config.clip_length)
    if not len(anchors):
        raise ValueError(f"{config.dataset_dir} split {config.split!r} has no run of {config.clip_length} "
                         "consecutive frames" if kind == "clips" else f"{config.dataset_dir} is empty")
    if config.worker_count and not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    sampler = grain.samplers.IndexSampler(num_records=len(anchors), shuffle=True, seed=config.seed,
                                          num_epochs=config.num_epochs)
    operations = [MakeExample(config.dataset_dir, config, index, groups, kind),
                  grain.transforms.Batch(config.batch_size // shard_options.shard_count, drop_remainder=True)]
    return grain.DataLoader(data_source=_Anchors(anchors, f"{builder.name}:{config.split}:{kind}"), sampler=sampler,
                            operations=operations, worker_count=config.worker_count,
                            worker_buffer_size=config.worker_buffer_size, shard_options=shard_options)

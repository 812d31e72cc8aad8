"""The input seam: the config's `data.source` picks the batch iterator a stage trains on.

  'tfds'    the grain pipeline over a built dataset (`dex_jax.data.pipeline.make_loader`, data.dataset_dir)
  'random'  deterministic random batches of the same layout, for tests and throughput figures
  'synth'   SynthHeads frames rendered on the fly, every frame a random pose and expression
            (`dex_jax.data.synth_batches`)

Both come as `Batches`: a grain DataLoader iterator with get_state/set_state, so checkpoints record the position,
and close(), which ends its worker processes. Each process gets its slice of the global batch (data.batch_size /
process count). `check_fields` compares, before training,
the batch fields a config reads with those its dataset records.
"""

from pathlib import Path

import grain
import jax
import numpy as np
import tensorflow_datasets as tfds

from dex_jax.data import pipeline
from dex_jax.data.synth_batches import SynthBatches
from dex_jax.data.synth_face import NUM_EXPRESSIONS

# Batch fields the pipeline takes from a dataset's ground-truth labels -> the dataset feature each comes from;
# only datasets that record them (synth_heads) have them. Every other field comes from every dataset.
LABEL_FIELDS = {"source_pose": "pose", "driving_pose": "pose", "source_expression": "expression",
                "driving_expression": "expression"}


class RandomBatches:
    """grain data source: record i is this process's slice of global batch i, drawn from seed (seed, i).

    Layout as the grain pipeline's (K = num_driving, or clip_length for kind 'clips'): source (b,S,S,3); driving,
    pose_input (b,K,S,S,3); expression_input (b,K,E,E,3) in [-1, 1]; face_mask (b,K,S,S,1), a centred box of ones;
    expression_mask (b,K,S,S,1) bool, a band across that box's middle; source_pose (b,6) and driving_pose (b,K,6),
    random (yaw, pitch, roll, tx, ty, scale), and source_expression (b,n) and driving_expression (b,K,n), random in
    [0, 1], as SynthHeads records them.
    """

    def __init__(self, data_config, process_index, process_count, length=2 ** 31 - 1, kind="pairs"):
        self._config = {k: int(data_config[k]) for k in ("batch_size", "image_size", "expression_size", "seed")}
        self._config["num_driving"] = int(data_config["clip_length" if kind == "clips" else "num_driving"])
        self._rows = slice(process_index * self._config["batch_size"] // process_count,
                           (process_index + 1) * self._config["batch_size"] // process_count)
        self._length = length

    def __len__(self):
        return self._length

    def __getitem__(self, index):
        c = self._config
        b, k, s, e = c["batch_size"], c["num_driving"], c["image_size"], c["expression_size"]
        rng = np.random.default_rng((c["seed"], int(index)))

        def uniform(*shape):
            return rng.uniform(-1.0, 1.0, shape).astype(np.float32)[self._rows]

        def poses(*shape):
            angles = rng.uniform(-0.5, 0.5, shape + (3,))
            shifts = rng.uniform(-0.1, 0.1, shape + (2,))
            scales = rng.uniform(0.85, 1.15, shape + (1,))
            return np.concatenate([angles, shifts, scales], -1).astype(np.float32)[self._rows]

        def expressions(*shape):
            return rng.uniform(0.0, 1.0, shape + (NUM_EXPRESSIONS,)).astype(np.float32)[self._rows]

        mask = np.zeros((s, s, 1), np.float32)
        mask[s // 4: 3 * s // 4, s // 4: 3 * s // 4] = 1.0
        band = np.zeros((s, s, 1), bool)
        band[3 * s // 8: 5 * s // 8, s // 4: 3 * s // 4] = True
        return {"source": uniform(b, s, s, 3), "driving": uniform(b, k, s, s, 3),
                "pose_input": uniform(b, k, s, s, 3), "expression_input": uniform(b, k, e, e, 3),
                "face_mask": np.broadcast_to(mask, (b, k, s, s, 1))[self._rows].copy(),
                "expression_mask": np.broadcast_to(band, (b, k, s, s, 1))[self._rows].copy(),
                "source_pose": poses(b), "driving_pose": poses(b, k),
                "source_expression": expressions(b), "driving_expression": expressions(b, k)}

    def __repr__(self):
        return f"RandomBatches({self._config})"


def _check_dataset_dir(data_config):
    if not data_config.dataset_dir:
        raise ValueError("data.dataset_dir is empty: build a dataset with `dex-portrait data build NAME` "
                         "and pass --config.data.dataset_dir=DIR (or --config.data.source=random)")
    if not Path(data_config.dataset_dir).is_dir():
        raise ValueError(f"no dataset at data.dataset_dir={data_config.dataset_dir}: build it with "
                         "`dex-portrait data build NAME` or point --config.data.dataset_dir at one")


def label_fields_read(config):
    """Label batch field (LABEL_FIELDS) -> the setting of a train config that reads it."""
    if config.stage == "expression":
        return {"driving_expression": "stage expression"}
    if config.stage == "pose":
        return {"source_pose": "stage pose", "driving_pose": "stage pose"}
    if config.stage in ("reconstruction", "animator", "temporal"):
        return {}
    reads = {}
    if config.loss.pose_supervision:
        reads.update(source_pose="loss.pose_supervision", driving_pose="loss.pose_supervision")
    if config.loss.expression_supervision:
        reads["driving_expression"] = "loss.expression_supervision"
    return reads


def check_fields(config):
    """ValueError naming every batch field the train config reads that its tfds dataset does not record, with
    the setting that reads it; nothing for random or rendered batches, which have every field."""
    data = config.data
    if data.get("source", "tfds") != "tfds":
        return
    _check_dataset_dir(data)
    features = tfds.builder_from_directory(data.dataset_dir).info.features
    missing = {field: setting for field, setting in label_fields_read(config).items()
               if LABEL_FIELDS[field] not in features}
    if missing:
        by_setting = {}
        for field, setting in missing.items():
            by_setting.setdefault(setting, []).append(field)
        listed = "; ".join(f"{', '.join(fields)} (read by {setting})" for setting, fields in by_setting.items())
        raise ValueError(f"the dataset at data.dataset_dir={data.dataset_dir} lacks batch fields the config reads: "
                         f"{listed}. Use a dataset that records poses and expressions (synth_heads) or turn those "
                         "settings off")


class Batches:
    """A grain DataLoader's iterator with close(): get_state(), set_state() and start_prefetch() are grain's;
    next() gives the batch dict as plain numpy arrays; close() stops the worker processes and frees the shared-memory blocks they filled ahead, which
    otherwise outlive the run (Python warns at exit of leaked shared_memory objects). A context manager that
    closes it."""

    def __init__(self, loader):
        self._iterator = iter(loader)

    def __iter__(self):
        return self

    def __next__(self):
        # Copied out of the workers' shared memory, so that the block is freed now and not held by the device
        # arrays placed from it (which may alias host memory on CPU) until after the iterator is closed.
        return {key: np.array(value) for key, value in next(self._iterator).items()}

    def get_state(self):
        return self._iterator.get_state()

    def set_state(self, state):
        self._iterator.set_state(state)

    def start_prefetch(self):
        self._iterator.start_prefetch()

    def close(self):
        # grain 0.2's DataLoaderIterator has no close() of its own; its dataset iterator's closes the pipeline.
        pipeline_iterator = getattr(self._iterator, "_iterator", None)
        if pipeline_iterator is not None:
            pipeline_iterator.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def make_iterator(data_config, kind=None):
    """The `Batches` that `data_config.source` names (see module docstring), of examples of `kind` ('pairs':
    num_driving frames each, 'clips': clip_length consecutive frames; None: data_config.kind, 'pairs' where the
    config has none)."""
    kind = kind or data_config.get("kind", "pairs")
    if kind not in pipeline.KINDS:
        raise ValueError(f"data.kind must be one of {pipeline.KINDS}, got {kind!r}")
    source = data_config.get("source", "tfds")
    if source == "tfds":
        _check_dataset_dir(data_config)
        return Batches(pipeline.make_loader(data_config, kind))
    if source in ("random", "synth"):
        if source == "synth" and kind != "pairs":
            raise ValueError(f"data.source 'synth' renders pairs (a source and num_driving frames), not {kind!r}")
        batches = (RandomBatches(data_config, jax.process_index(), jax.process_count(), kind=kind)
                   if source == "random" else SynthBatches(data_config, jax.process_index(), jax.process_count()))
        loader = grain.DataLoader(
            data_source=batches,
            sampler=grain.samplers.IndexSampler(num_records=2 ** 31 - 1, shuffle=False, seed=0,
                                                shard_options=grain.sharding.NoSharding(), num_epochs=1),
            worker_count=0)
        return Batches(loader)
    raise ValueError(f"unknown data.source {source!r}: use 'tfds', 'random' or 'synth'")

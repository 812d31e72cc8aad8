"""Stage-1 batches rendered on the fly by SynthHeads' renderer: each example one identity seen in 1 + K frames, each
frame in its own uniformly random pose (synth_heads.POSE_RANGES) and random expression (`sample_expression`).

The layout and the model inputs are the grain pipeline's (`pipeline` module docstring): frames are rendered at
RENDER_FACTOR times the model size and area-resized, as the 128-px builds are read at 64; the pose input covers
the eyes and mouth hulls; the expression input is the crop of data.expression_align rotated by up to
data.rotation_degrees (there is no other view to take). Unlike a build's clips, whose poses and expressions
follow smooth tracks (frames of one clip nearly alike, poses crowded near the centre of their range) and whose
cameras turn the torso with the view, every frame here is an independent draw, its torso facing the camera as in
the `synth_heads` benchmark.
Identities are drawn from 0..NUM_IDENTITIES-1, below the benchmark's held-out identities (1,000,000 up).
"""

import jax
import numpy as np

from dex_jax.data import synth_heads
from dex_jax.data.augment import expression_crop, pose_input
from dex_jax.data.pipeline import check_expression_align, rescale_points
from dex_jax.data.synth_face import REGIONS
from dex_jax.face.regions import masked_groups
from dex_jax.image import resize, to_float, to_model

RENDER_FACTOR = 2
NUM_IDENTITIES = 100_000


class SynthBatches:
    """grain data source: record i is this process's slice of global batch i, drawn from seed (data.seed, i).

    data_config fields read: batch_size, num_driving, image_size, expression_size, seed, rotation_degrees,
    expression_box_scale, expression_align, mask_pose_input, mask_dilation, mask_fill.
    """

    def __init__(self, data_config, process_index, process_count, length=2 ** 31 - 1):
        check_expression_align(data_config)
        self._config = {k: data_config[k] for k in ("batch_size", "num_driving", "image_size", "expression_size",
                                                    "seed", "rotation_degrees", "expression_box_scale",
                                                    "expression_align", "mask_pose_input", "mask_dilation",
                                                    "mask_fill")}
        b = int(self._config["batch_size"])
        self._rows = slice(process_index * b // process_count, (process_index + 1) * b // process_count)
        self._length = length
        self._groups = masked_groups(REGIONS)

    def __len__(self):
        return self._length

    def _frame(self, frame, rng):
        c = self._config
        size, side = c["image_size"], frame["image"].shape[0]
        factor = size / side
        image = to_model(frame["image"], size)
        covered, region = pose_input(image, rescale_points(frame["landmarks"], factor), self._groups,
                                     rescale_points(frame["face_box"], factor), c["mask_dilation"], c["mask_fill"])
        face = resize(frame["face_mask"].astype(np.uint8) * 255, size, size)
        degrees = rng.uniform(-c["rotation_degrees"], c["rotation_degrees"])
        crop = expression_crop(frame["image"], frame["face_box"], c["expression_size"], degrees,
                               c["expression_box_scale"], c["expression_align"], frame["landmarks"], self._groups)
        return {"driving": image, "pose_input": covered if c["mask_pose_input"] else image,
                "face_mask": (face > 127).astype(np.float32), "expression_mask": region[..., None],
                "expression_input": to_float(crop)}

    def __getitem__(self, index):
        c = self._config
        b, k = int(c["batch_size"]), int(c["num_driving"])
        key = jax.random.fold_in(jax.random.PRNGKey(int(c["seed"])), int(index))
        k_id, k_pose, k_expr = jax.random.split(key, 3)
        ids = np.repeat(np.asarray(jax.random.randint(k_id, (b,), 0, NUM_IDENTITIES)), 1 + k)
        poses = synth_heads.sample_pose(k_pose, (b * (1 + k),))
        expressions = synth_heads.sample_expression(k_expr, (b * (1 + k),))
        side = RENDER_FACTOR * int(c["image_size"])
        frames = jax.device_get(synth_heads.render_frames(ids, poses, expressions, side, side))
        frames = {key: np.asarray(value).reshape((b, 1 + k) + value.shape[1:])[self._rows]
                  for key, value in frames.items() if key in ("image", "landmarks", "face_box", "face_mask",
                                                              "pose", "expression", "identity")}
        rng = np.random.default_rng((int(c["seed"]), int(index)))
        drivers = [[self._frame({key: value[i, 1 + j] for key, value in frames.items()}, rng) for j in range(k)]
                   for i in range(len(frames["image"]))]
        example = {key: np.stack([np.stack([d[key] for d in row]) for row in drivers]) for key in drivers[0][0]}
        example.update(
            source=np.stack([to_model(image, int(c["image_size"])) for image in frames["image"][:, 0]]),
            identity=frames["identity"][:, 0].astype(np.int32),
            source_pose=frames["pose"][:, 0].astype(np.float32),
            driving_pose=frames["pose"][:, 1:].astype(np.float32),
            source_expression=frames["expression"][:, 0].astype(np.float32),
            driving_expression=frames["expression"][:, 1:].astype(np.float32))
        return example

    def __repr__(self):
        return f"SynthBatches({self._config})"

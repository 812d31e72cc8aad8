"""tfds builder `synth_heads`: rendered SynthHeads clips as array_record, split by identity, subject/camera/frame.

Every (identity, sequence) is one synchronised clip seen from `num_views` cameras (one camera: a single-view
clip with the full pose range). Records hold one frame each, written identity by identity, then sequence,
camera, frame, with the ground truth the renderer knows (pose, expression, identity, landmarks, face box and
mask). The last `num_test_identities` identities form the `test` split, the rest `train`, so no test identity
is ever seen in training. Reading needs no TensorFlow: `tfds.builder_from_directory(dir).as_data_source(split)`.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow_datasets as tfds
import tqdm

from dex_jax.data import synth_heads
from dex_jax.data.synth_face import NUM_EXPRESSIONS, NUM_LANDMARKS, REGIONS
from dex_jax.data.tfds_common import BuildSummary, add_to_index, encode_jpeg, encode_png, frame_features, start_index


@dataclasses.dataclass
class SynthHeadsConfig(tfds.core.BuilderConfig):
    """Dataset size and rendering settings; `render_chunk` frames are rendered per call (bounds memory)."""

    image_size: int = 512
    num_identities: int = 100
    num_test_identities: int = 10
    num_sequences: int = 2
    num_views: int = 4
    num_frames: int = 32
    seed: int = 0
    fps: float = 25.0
    jpeg_quality: int = 95
    render_chunk: int = 16
    still_head: bool = False


def _held(track, still):
    """The track, or with `still` its first row repeated: a head that keeps its first pose through the clip."""
    return jnp.broadcast_to(track[:1], track.shape) if still else track


def clip_poses(key, num_views, num_frames, fps, still_head=False):
    """Poses, body poses (V*T, 6) and expressions (V*T, NUM_EXPRESSIONS) of one clip, view-major.

    The same draws as `synth_heads.sample_multiview_clip` (one view: its head track alone), kept separate so the
    frames can be rendered in memory-bounded chunks. still_head: the head keeps its first pose while the
    expression moves, so two frames of one camera differ in expression alone.
    """
    if num_views == 1:
        k_pose, k_expr = jax.random.split(key)
        poses = _held(synth_heads.pose_trajectory(k_pose, num_frames, fps=fps), still_head)
        return poses, synth_heads.body_from_head(poses), synth_heads.expression_trajectory(k_expr, num_frames, fps)
    k_pose, k_expr, k_view = jax.random.split(key, 3)
    head = _held(synth_heads.pose_trajectory(k_pose, num_frames, synth_heads.MULTIVIEW_HEAD_RANGES, fps), still_head)
    exprs = synth_heads.expression_trajectory(k_expr, num_frames, fps)
    views = synth_heads.sample_views(k_view, num_views)
    poses = synth_heads.compose_view(views[:, None], head[None]).reshape(-1, 6)
    bodies = synth_heads.compose_view(views[:, None], synth_heads.body_from_head(head)[None]).reshape(-1, 6)
    return poses, bodies, np.tile(np.asarray(exprs), (num_views, 1))


def render_clip(config, identity, sequence):
    """Numpy frame dicts (synth_heads' keys) of one clip, view-major: V*T frames, padded chunks dropped."""
    key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(config.seed), identity), sequence)
    poses, bodies, exprs = (np.asarray(a) for a in clip_poses(key, config.num_views, config.num_frames, config.fps,
                                                              config.still_head))
    n, chunk, size = len(poses), config.render_chunk, config.image_size
    parts = []
    for start in range(0, n, chunk):
        take = np.minimum(np.arange(start, start + chunk), n - 1)
        frames = synth_heads.render_frames(np.full(chunk, identity), poses[take], exprs[take], size, size,
                                           config.seed, bodies[take])
        parts.append(jax.tree_util.tree_map(lambda a: np.asarray(a)[: min(chunk, n - start)], frames))
    return jax.tree_util.tree_map(lambda *a: np.concatenate(a), *parts)


class SynthHeads(tfds.core.GeneratorBasedBuilder):
    """SynthHeads: procedural heads with ground-truth pose, expression and identity."""

    VERSION = tfds.core.Version("1.0.0")
    # tfds finds a builder's source file through `importlib_resources` (not a dependency of tensorflow-datasets)
    # to look for download checksums beside it; this builder downloads nothing.
    code_path = None
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [
        SynthHeadsConfig(name="default", description="512 px, 100 identities (10 test), 2 sequences x 4 views "
                                                     "x 32 frames each"),
        SynthHeadsConfig(name="cpu128", description="128 px, 200 identities (20 test), 1 sequence x 4 views x 32 "
                                                    "frames each: the embedded default model's training set",
                         image_size=128, num_identities=200, num_test_identities=20, num_sequences=1),
        SynthHeadsConfig(name="cpu128_expressions", description="128 px, 200 identities (20 test), 8 sequences x 1 "
                                                                "view x 16 frames each: 8 expression tracks per "
                                                                "identity, for the expression stage",
                         image_size=128, num_identities=200, num_test_identities=20, num_sequences=8, num_views=1,
                         num_frames=16),
        SynthHeadsConfig(name="cpu128_spaced", description="cpu128's identities and layout with frames 0.4 s "
                                                           "apart (fps 2.5): expressions change within a clip as "
                                                           "much as across clips, for Stage-1 pairs",
                         image_size=128, num_identities=200, num_test_identities=20, num_sequences=1, fps=2.5),
        SynthHeadsConfig(name="cpu128_still", description="cpu128_spaced with heads that keep one pose through "
                                                          "each clip: two frames of one camera differ in "
                                                          "expression alone, for Stage-1 pairs that teach it",
                         image_size=128, num_identities=200, num_test_identities=20, num_sequences=1, fps=2.5,
                         still_head=True),
        SynthHeadsConfig(name="tiny", description="64 px, 8 identities (2 test), 1 sequence x 2 views x 26 frames",
                         image_size=64, num_identities=8, num_test_identities=2, num_sequences=1, num_views=2,
                         num_frames=26),
    ]

    def __init__(self, *, progress=False, **kwargs):
        super().__init__(**kwargs)
        self.progress = progress
        self.summary = BuildSummary()

    def _info(self):
        config = self.builder_config
        features = frame_features(config.image_size, NUM_LANDMARKS)
        features.update({
            "landmarks_visible": tfds.features.Tensor(shape=(NUM_LANDMARKS,), dtype=np.bool_),
            "pose": tfds.features.Tensor(shape=(6,), dtype=np.float32),
            "expression": tfds.features.Tensor(shape=(NUM_EXPRESSIONS,), dtype=np.float32),
            "identity": np.int32,
        })
        return tfds.core.DatasetInfo(builder=self, description=__doc__, features=tfds.features.FeaturesDict(features),
                                     disable_shuffling=True, metadata=tfds.core.MetadataDict())

    def _split_generators(self, dl_manager):
        config = self.builder_config
        if not 0 < config.num_test_identities < config.num_identities:
            raise ValueError(f"num_test_identities must be in [1, num_identities - 1], got "
                             f"{config.num_test_identities} of {config.num_identities}")
        if config.num_frames < 1 or config.num_views < 1 or config.num_sequences < 1:
            raise ValueError("num_frames, num_views and num_sequences must be at least 1")
        self.info.metadata["landmark_groups"] = REGIONS
        self.info.metadata["pose_names"] = list(synth_heads.POSE_NAMES)
        self.info.metadata["expression_names"] = list(synth_heads.EXPRESSION_NAMES)
        n_train = config.num_identities - config.num_test_identities
        return {"train": self._generate_examples(range(n_train), "train"),
                "test": self._generate_examples(range(n_train, config.num_identities), "test")}

    def _generate_examples(self, identities, split):
        config = self.builder_config
        index = start_index(self.info.metadata, split)
        key = 0
        clips = [(i, s) for i in identities for s in range(config.num_sequences)]
        for identity, sequence in tqdm.tqdm(clips, desc=f"synth_heads {split}", unit="clip",
                                            disable=not self.progress):
            frames = render_clip(config, identity, sequence)
            self.summary.videos_read += 1
            for i in range(len(frames["image"])):
                camera, frame = divmod(i, config.num_frames)
                self.summary.frames_read += 1
                if not frames["face_mask"][i].any():
                    self.summary.frames_without_face += 1
                    continue
                fields = {"subject": identity, "sequence": sequence, "camera": camera, "frame": frame}
                add_to_index(index, **fields)
                self.summary.frames_kept += 1
                yield key, {
                    **fields,
                    "image": encode_jpeg(frames["image"][i], config.jpeg_quality),
                    "face_mask": encode_png(frames["face_mask"][i]),
                    "face_box": frames["face_box"][i],
                    "landmarks": frames["landmarks"][i],
                    "landmarks_visible": frames["landmarks_visible"][i],
                    "pose": frames["pose"][i],
                    "expression": frames["expression"][i],
                    "identity": identity,
                }
                key += 1
        self.info.metadata["summary"] = self.summary.as_dict()

"""tfds builder `portrait_videos`: local videos or frame folders -> MediaPipe-annotated 512x512 face crops.

The videos sit in the manual dir (`download_config.manual_dir`) in the layout of `dex_jax.data.video_io`
(subject / sequence / camera; train / validation / test folders make splits). For every frame the MediaPipe
face landmarker runs on the full frame; frames without a face are counted and dropped. Kept frames get a
LivePortrait-style square crop (`face_crop`), resized to `crop_size`, and record in crop pixels the 478
landmarks, the face box (the landmarks' bounding box) and the face mask (the face oval's hull), plus the 52
blendshapes, the head pose (yaw, pitch, roll in degrees, `evaluate.pose_expression_metrics`), the facial
transformation matrix and the crop (cx, cy, size) in frame pixels. Unreadable or empty videos, unreadable
frames and files that are not videos are skipped and counted in `summary`, never fatal. The dataset's metadata
records the manual dir it was built from, resolved, as `videos`.
"""

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import tensorflow_datasets as tfds
import tqdm

from dex_jax.data.face_crop import CROP_SCALE, CROP_SIZE, CROP_VY_RATIO, crop_box, crop_matrix, transform_points, warp
from dex_jax.data.tfds_common import BuildSummary, add_to_index, encode_jpeg, encode_png, frame_features, start_index
from dex_jax.data.video_io import VideoReadError, find_videos, iter_frames
from dex_jax.face.head_pose import head_pose_degrees
from dex_jax.face.landmarker import NUM_BLENDSHAPES, NUM_LANDMARKS, FaceLandmarker
from dex_jax.face.regions import MEDIAPIPE_REGIONS, masked_groups


@dataclasses.dataclass
class PortraitVideosConfig(tfds.core.BuilderConfig):
    """Crop framing (see face_crop), frame sampling per video, JPEG quality and the detector's threshold."""

    crop_size: int = CROP_SIZE
    crop_scale: float = CROP_SCALE
    crop_vy_ratio: float = CROP_VY_RATIO
    frame_stride: int = 1
    max_frames: int | None = None
    jpeg_quality: int = 95
    min_detection_confidence: float = 0.5


def face_record(face, frame, config):
    """The record fields of one detected face (a FaceObservation on `frame`)."""
    box = crop_box(face.landmarks[:, :2], *masked_groups(MEDIAPIPE_REGIONS), config.crop_scale, config.crop_vy_ratio)
    matrix = crop_matrix(box, config.crop_size)
    points = transform_points(face.landmarks[:, :2], matrix)
    mask = np.zeros((config.crop_size, config.crop_size), np.uint8)
    hull = cv2.convexHull(np.round(points[MEDIAPIPE_REGIONS["face_oval"]] * 16).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 1, lineType=cv2.LINE_8, shift=4)
    return {
        "image": encode_jpeg(warp(frame, matrix, config.crop_size), config.jpeg_quality),
        "face_mask": encode_png(mask),
        "face_box": np.concatenate([points.min(0), points.max(0)]).astype(np.float32),
        "landmarks": points.astype(np.float32),
        "landmark_depth": (face.landmarks[:, 2] * matrix[0, 0]).astype(np.float32),
        "blendshapes": face.blendshapes.astype(np.float32),
        "head_pose": np.asarray(head_pose_degrees(face.transform), np.float32),
        "transform": face.transform.astype(np.float32),
        "crop": box.astype(np.float32),
    }


def _ids(names):
    return {name: i for i, name in enumerate(sorted(set(names)))}


class PortraitVideos(tfds.core.GeneratorBasedBuilder):
    """Face crops of local portrait videos with MediaPipe landmarks, blendshapes and head pose."""

    VERSION = tfds.core.Version("1.0.0")
    # tfds finds a builder's source file through `importlib_resources` (not a dependency of tensorflow-datasets)
    # to look for download checksums beside it; this builder downloads nothing.
    code_path = None
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [PortraitVideosConfig(name="default", description="512 px LivePortrait-style crops")]
    MANUAL_DOWNLOAD_INSTRUCTIONS = ("Pass the folder of videos or frame folders as the manual dir "
                                    "(`dex-portrait data build portrait_videos --videos DIR`); layout in "
                                    "dex_jax/data/video_io.py.")

    def __init__(self, *, model_path=None, progress=False, **kwargs):
        super().__init__(**kwargs)
        self.model_path = model_path
        self.progress = progress
        self.summary = BuildSummary()

    def _info(self):
        features = frame_features(self.builder_config.crop_size, NUM_LANDMARKS)
        features.update({
            "landmark_depth": tfds.features.Tensor(shape=(NUM_LANDMARKS,), dtype=np.float32),
            "blendshapes": tfds.features.Tensor(shape=(NUM_BLENDSHAPES,), dtype=np.float32),
            "head_pose": tfds.features.Tensor(shape=(3,), dtype=np.float32),
            "transform": tfds.features.Tensor(shape=(4, 4), dtype=np.float32),
            "crop": tfds.features.Tensor(shape=(3,), dtype=np.float32),
            "identity": np.int32,
        })
        return tfds.core.DatasetInfo(builder=self, description=__doc__, features=tfds.features.FeaturesDict(features),
                                     disable_shuffling=True, metadata=tfds.core.MetadataDict())

    def _split_generators(self, dl_manager):
        root = dl_manager.manual_dir
        entries = find_videos(root, self.summary.skip)
        if not entries:
            raise ValueError(f"no video files or frame folders in {root}")
        subjects = _ids(e.subject for e in entries)
        sequences = _ids((e.subject, e.sequence) for e in entries)
        cameras = {}
        for e in entries:
            cameras.setdefault((e.subject, e.sequence), set()).add(e.camera)
        cameras = {key: _ids(names) for key, names in cameras.items()}
        self.info.metadata["videos"] = str(Path(root).resolve())
        self.info.metadata["landmark_groups"] = MEDIAPIPE_REGIONS
        self.info.metadata["subject_names"] = sorted(subjects)
        ids = {e.path: {"subject": subjects[e.subject], "sequence": sequences[(e.subject, e.sequence)],
                        "camera": cameras[(e.subject, e.sequence)][e.camera]} for e in entries}
        splits = sorted({e.split for e in entries})
        return {split: self._generate_examples([e for e in entries if e.split == split], ids, split)
                for split in splits}

    def _generate_examples(self, entries, ids, split):
        config = self.builder_config
        index = start_index(self.info.metadata, split)
        key = 0
        with FaceLandmarker(self.model_path, min_detection_confidence=config.min_detection_confidence) as landmarker:
            for entry in tqdm.tqdm(entries, desc=f"portrait_videos {split}", unit="video", disable=not self.progress):
                try:
                    for frame_index, frame in iter_frames(entry, config.frame_stride, config.max_frames):
                        self.summary.frames_read += 1
                        if frame is None:
                            self.summary.frames_unreadable += 1
                            continue
                        face = landmarker.detect(frame)
                        if face is None:
                            self.summary.frames_without_face += 1
                            continue
                        fields = {**ids[entry.path], "frame": frame_index}
                        add_to_index(index, **fields)
                        self.summary.frames_kept += 1
                        yield key, {**fields, **face_record(face, frame, config), "identity": fields["subject"]}
                        key += 1
                except (VideoReadError, cv2.error) as err:
                    self.summary.skip(entry.path, str(err).strip().splitlines()[0])
                    continue
                self.summary.videos_read += 1
        self.info.metadata["summary"] = self.summary.as_dict()

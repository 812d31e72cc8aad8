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

Clips whose background moves more than `max_background_motion` (`dex_jax.data.background_motion`: grey levels,
default MAX_BACKGROUND_MOTION; None keeps every clip) are dropped whole, as the paper filters its Stage-3 data:
each clip is read twice, once to detect faces and measure its background (holding each face's landmarks,
blendshapes and pose matrix, not its frame) and, when kept, once more to write its records. The summary counts
the clips kept and dropped per split and the frames with a face that dropped clips held; the metadata's
`background_motion` records the threshold and every clip's measure (None: no pair of consecutive frames with a
face), by path under the manual dir, so that a threshold can be chosen from a build with
`max_background_motion=None`.
"""

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import tensorflow_datasets as tfds
import tqdm

from dex_jax.data.background_motion import MAX_BACKGROUND_MOTION, BackgroundMotion
from dex_jax.data.face_crop import CROP_SCALE, CROP_SIZE, CROP_VY_RATIO, crop_box, crop_matrix, transform_points, warp
from dex_jax.data.tfds_common import BuildSummary, add_to_index, encode_jpeg, encode_png, frame_features, start_index
from dex_jax.data.video_io import VideoReadError, find_videos, iter_frames
from dex_jax.face.head_pose import head_pose_degrees
from dex_jax.face.landmarker import NUM_BLENDSHAPES, NUM_LANDMARKS, FaceLandmarker
from dex_jax.face.regions import MEDIAPIPE_REGIONS, masked_groups


@dataclasses.dataclass
class PortraitVideosConfig(tfds.core.BuilderConfig):
    """Crop framing (see face_crop), frame sampling per video, JPEG quality, the detector's threshold and the
    background motion above which a clip is dropped (grey levels, see background_motion; None keeps all)."""

    crop_size: int = CROP_SIZE
    crop_scale: float = CROP_SCALE
    crop_vy_ratio: float = CROP_VY_RATIO
    frame_stride: int = 1
    max_frames: int | None = None
    jpeg_quality: int = 95
    min_detection_confidence: float = 0.5
    max_background_motion: float | None = MAX_BACKGROUND_MOTION

    def __post_init__(self):
        limit = self.max_background_motion
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit < 0):
            raise ValueError(f"max_background_motion must be a number >= 0 (grey levels) or None, got {limit!r}")


@dataclasses.dataclass
class PortraitVideosSummary(BuildSummary):
    """BuildSummary plus the clips kept and dropped for background motion per split, and the frames with a face
    the dropped clips held (so frames read = kept + without a face + unreadable + in dropped clips)."""

    max_background_motion: float | None = None
    clips_kept: dict = dataclasses.field(default_factory=dict)
    clips_dropped: dict = dataclasses.field(default_factory=dict)
    frames_in_dropped_clips: int = 0

    def lines(self):
        limit = self.max_background_motion
        rule = "off" if limit is None else f"over {limit:g} grey levels"
        per_split = ", ".join(f"{split} {self.clips_kept[split]} kept / {self.clips_dropped[split]} dropped"
                              for split in sorted(self.clips_kept))
        out = super().lines()
        at = out.index(f"files skipped: {len(self.skipped)}")
        out[at:at] = [f"frames in clips dropped for background motion: {self.frames_in_dropped_clips}",
                      f"clips by background motion ({rule}): {per_split or 'none'}"]
        return out


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
        self.summary = PortraitVideosSummary(max_background_motion=self.builder_config.max_background_motion)

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
        self.info.metadata["background_motion"] = {"max": self.builder_config.max_background_motion, "clips": {}}
        ids = {e.path: {"subject": subjects[e.subject], "sequence": sequences[(e.subject, e.sequence)],
                        "camera": cameras[(e.subject, e.sequence)][e.camera]} for e in entries}
        splits = sorted({e.split for e in entries})
        return {split: self._generate_examples([e for e in entries if e.split == split], ids, split, Path(root))
                for split in splits}

    def _detect(self, entry, landmarker):
        """{frame index: FaceObservation} of the clip's sampled frames with a face, and its background motion."""
        config = self.builder_config
        faces, motion = {}, BackgroundMotion()
        for frame_index, frame in iter_frames(entry, config.frame_stride, config.max_frames):
            self.summary.frames_read += 1
            face = None if frame is None else landmarker.detect(frame)
            if frame is None:
                self.summary.frames_unreadable += 1
            elif face is None:
                self.summary.frames_without_face += 1
            else:
                faces[frame_index] = face
            motion.add(frame, None if face is None else face.landmarks[MEDIAPIPE_REGIONS["face_oval"], :2])
        return faces, motion.clip_motion()

    def _generate_examples(self, entries, ids, split, root):
        config = self.builder_config
        limit = config.max_background_motion
        index = start_index(self.info.metadata, split)
        measures = self.info.metadata["background_motion"]["clips"]
        self.summary.clips_kept[split] = self.summary.clips_dropped[split] = 0
        key = 0
        with FaceLandmarker(self.model_path, min_detection_confidence=config.min_detection_confidence) as landmarker:
            for entry in tqdm.tqdm(entries, desc=f"portrait_videos {split}", unit="video", disable=not self.progress):
                try:
                    faces, motion = self._detect(entry, landmarker)
                    measures[str(entry.path.relative_to(root))] = motion
                    if limit is not None and motion is not None and motion > limit:
                        self.summary.clips_dropped[split] += 1
                        self.summary.frames_in_dropped_clips += len(faces)
                        self.summary.videos_read += 1
                        continue
                    for frame_index, frame in iter_frames(entry, config.frame_stride, config.max_frames):
                        if frame_index not in faces:
                            continue
                        fields = {**ids[entry.path], "frame": frame_index}
                        add_to_index(index, **fields)
                        self.summary.frames_kept += 1
                        record = face_record(faces[frame_index], frame, config)
                        yield key, {**fields, **record, "identity": fields["subject"]}
                        key += 1
                except (VideoReadError, cv2.error) as err:
                    self.summary.skip(entry.path, str(err).strip().splitlines()[0])
                    continue
                self.summary.clips_kept[split] += 1
                self.summary.videos_read += 1
        self.info.metadata["summary"] = self.summary.as_dict()

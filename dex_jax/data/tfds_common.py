"""Pieces shared by our tfds builders: the data folder, images encoded without TensorFlow, the record index, the
build summary.

Records are written in generation order (`disable_shuffling=True`, integer keys 0, 1, 2, ...), so record i of
a split is the i-th example generated. Every builder lists the (subject, sequence, camera, frame) of each
record in `info.metadata['index'][split]` and its landmark groups in `info.metadata['landmark_groups']`
(`left_eye`, `right_eye`, `mouth`: indices into the record's `landmarks`), so the pipelines can group records
without reading them.
"""

import collections
import dataclasses
import os

import cv2
import numpy as np
import tensorflow_datasets as tfds

INDEX_FIELDS = ("subject", "sequence", "camera", "frame")


def data_dir():
    """The tfds data folder that datasets are built into and named under: $DEX_DATA_DIR, else tfds' own default
    ($TFDS_DATA_DIR, else ~/tensorflow_datasets)."""
    return os.path.expanduser(os.environ.get("DEX_DATA_DIR") or tfds.core.constants.get_default_data_dir())


def encode_jpeg(image, quality):
    """(H, W, 3) uint8 RGB -> JPEG bytes (tfds' own encoder needs TensorFlow; OpenCV does not)."""
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"JPEG encoding failed for an image of shape {image.shape}")
    return data.tobytes()


def encode_png(mask):
    """(H, W) or (H, W, 1) bool/uint8 mask -> PNG bytes of a {0, 255} single-channel image."""
    mask = np.asarray(mask).reshape(mask.shape[0], mask.shape[1])
    ok, data = cv2.imencode(".png", np.where(mask > 0, 255, 0).astype(np.uint8))
    if not ok:
        raise ValueError(f"PNG encoding failed for a mask of shape {mask.shape}")
    return data.tobytes()


def frame_features(size, num_landmarks):
    """Features every record carries: JPEG image, PNG face mask, face box, landmarks and its index fields."""
    return {
        "image": tfds.features.Image(shape=(size, size, 3), encoding_format="jpeg"),
        "face_mask": tfds.features.Image(shape=(size, size, 1), encoding_format="png"),
        "face_box": tfds.features.Tensor(shape=(4,), dtype=np.float32),
        "landmarks": tfds.features.Tensor(shape=(num_landmarks, 2), dtype=np.float32),
        **{name: np.int32 for name in INDEX_FIELDS},
    }


def start_index(metadata, split):
    """The per-split index lists in `metadata`, emptied; append one value per field for every record written."""
    index = {name: [] for name in INDEX_FIELDS}
    metadata.setdefault("index", {})[split] = index
    return index


def add_to_index(index, **fields):
    for name in INDEX_FIELDS:
        index[name].append(int(fields[name]))


@dataclasses.dataclass
class BuildSummary:
    """What a build read, kept and skipped (and why)."""

    videos_read: int = 0
    frames_read: int = 0
    frames_kept: int = 0
    frames_without_face: int = 0
    frames_unreadable: int = 0
    skipped: list = dataclasses.field(default_factory=list)

    def skip(self, path, reason):
        self.skipped.append((str(path), reason))

    def lines(self):
        """The summary as printable lines: counts, then skipped files grouped by reason."""
        out = [f"videos read: {self.videos_read}", f"frames read: {self.frames_read}",
               f"frames kept: {self.frames_kept}", f"frames without a face: {self.frames_without_face}",
               f"frames unreadable: {self.frames_unreadable}", f"files skipped: {len(self.skipped)}"]
        by_reason = collections.defaultdict(list)
        for path, reason in self.skipped:
            by_reason[reason].append(path)
        for reason, paths in sorted(by_reason.items()):
            out.append(f"  {len(paths)} {reason}: " + ", ".join(paths[:5]) + (" ..." if len(paths) > 5 else ""))
        return out

    def as_dict(self):
        return dataclasses.asdict(self)

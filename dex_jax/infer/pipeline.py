"""The inference pipeline of either engine: `animate(source, pose_frames, expression_frames) -> frames`.

It does the I/O-side work around a jitted model wrapper, `infer.wrapper.MotionWrapper` (Stage 1) or
`infer.animator_wrapper.AnimatorWrapper` (the diffusion animator): finds faces, builds the model's inputs at the
wrapper's `image_size` and `expression_size`, batches the driving frames in chunks of DRIVE_CHUNK and resizes
the result to the source. `load_pipeline` picks the engine from the checkpoint's config (stage 'animator': the
diffusion engine).

The model's inputs are built as the training pipeline builds them (`dex_jax.data.pipeline`, `augment`), from
MediaPipe landmarks of each driving frame (the landmarks `portrait_videos` records):
  source            the frame resized to image_size;
  pose input        the driving frame resized to image_size, the hulls of MediaPipe's eye + iris and lip points,
                    dilated by data.mask_dilation of the face size, filled with data.mask_fill;
  expression input  the square around the landmarks' bounding box (times data.expression_box_scale), not
                    rotated, resized to expression_size.
A driving frame without a face borrows the landmarks of the clip's nearest frame with one; in a clip without
any face the whole frame is the face box and nothing is covered. Such frames are counted in
`frames_without_face`. Generated frames are resized back to the source frame's size.
"""

import jax
import numpy as np

from dex_jax.data.augment import expression_crop, pose_input
from dex_jax.data.pipeline import rescale_points
from dex_jax.face.landmarker import FaceLandmarker, check_rgb_uint8, observe_frames
from dex_jax.face.regions import MEDIAPIPE_REGIONS, masked_groups
from dex_jax.image import resize, to_float, to_model, to_uint8
from dex_jax.infer.animator_wrapper import AnimatorWrapper
from dex_jax.infer.wrapper import MotionWrapper, read_generator
from dex_jax.parallel import make_mesh
from dex_jax.train.animator_checkpoint import STAGE as ANIMATOR_STAGE
from dex_jax.train.animator_checkpoint import read_animator
from dex_jax.train.checkpoint import checkpoint_paths, read_train_config

DRIVE_CHUNK = 8
MASKED_GROUPS = masked_groups(MEDIAPIPE_REGIONS)


def nearest_faces(found):
    """For each frame, the index of the nearest frame with a face (itself when it has one); None without any."""
    with_face = np.flatnonzero(found)
    if not len(with_face):
        return None
    frames = np.arange(len(found))
    return with_face[np.argmin(np.abs(frames[:, None] - with_face[None]), axis=1)]


def resize_frames(frames, height, width):
    """(T, h, w, 3) uint8 frames resized to height x width (area averaging when shrinking)."""
    if frames.shape[1:3] == (height, width):
        return frames
    return np.stack([resize(f, height, width) for f in frames])


def check_clip(frames, what):
    """A (T, H, W, 3) uint8 clip with T >= 1, else ValueError naming `what`."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or not len(frames):
        raise ValueError(f"{what} must be a non-empty (T, H, W, 3) uint8 clip, got {frames.dtype} {frames.shape}")
    return frames


class MotionPipeline:
    """animate(source (H, W, 3) uint8, pose_frames, expression_frames (T, h, w, 3) uint8) -> (T, H, W, 3) uint8."""

    def __init__(self, wrapper, data_config, landmarker):
        self.wrapper = wrapper
        self.image_size, self.expression_size = wrapper.image_size, wrapper.expression_size
        self.description = wrapper.description
        self.data_config = data_config
        self.landmarker = landmarker
        self.frames_without_face = {"pose": 0, "expression": 0}

    def faces(self, frames):
        """Per frame (landmarks (478, 2) or None, face box (x0, y0, x1, y1)) in frame pixels; frames without a face."""
        observed = observe_frames(self.landmarker, frames)
        missing = int(np.sum(~observed["found"]))
        nearest = nearest_faces(observed["found"])
        if nearest is None:
            h, w = frames.shape[1:3]
            return [(None, np.array([-0.5, -0.5, w - 0.5, h - 0.5]))] * len(frames), missing
        points = observed["landmarks"][nearest, :, :2]
        return [(p, np.concatenate([p.min(0), p.max(0)])) for p in points], missing

    def pose_inputs(self, frames, faces):
        """(T, S, S, 3) pose inputs in [-1, 1]: resized frames with eyes and mouth covered."""
        size, data = self.image_size, self.data_config
        inputs = []
        for frame, (points, box) in zip(frames, faces):
            image = to_model(frame, size)
            if points is not None and data.mask_pose_input:
                factor = np.array([size / frame.shape[1], size / frame.shape[0]])
                image, _ = pose_input(image, rescale_points(points, factor), MASKED_GROUPS,
                                      rescale_points(box.reshape(2, 2), factor).reshape(4), data.mask_dilation,
                                      data.mask_fill)
            inputs.append(image)
        return np.stack(inputs)

    def expression_inputs(self, frames, faces):
        """(T, E, E, 3) expression inputs in [-1, 1]: the face squares, resized."""
        size, scale = self.expression_size, self.data_config.expression_box_scale
        crops = [expression_crop(frame, box, size, 0.0, scale) for frame, (_, box) in zip(frames, faces)]
        return to_float(np.stack(crops))

    def __call__(self, source, pose_frames, expression_frames):
        source = np.asarray(source)
        check_rgb_uint8(source)
        pose_frames = check_clip(pose_frames, "pose_frames")
        expression_frames = check_clip(expression_frames, "expression_frames")
        if len(pose_frames) != len(expression_frames):
            raise ValueError(f"pose and expression clips differ in length: {len(pose_frames)} vs "
                             f"{len(expression_frames)}")
        pose_faces, missing = self.faces(pose_frames)
        self.frames_without_face["pose"] += missing
        if expression_frames is not pose_frames:
            expression_faces, missing = self.faces(expression_frames)
        else:
            expression_faces = pose_faces
        self.frames_without_face["expression"] += missing
        encoded = self.wrapper.encode(to_model(source, self.image_size)[None])
        poses = self.pose_inputs(pose_frames, pose_faces)
        expressions = self.expression_inputs(expression_frames, expression_faces)
        n, outputs = len(poses), []
        for start in range(0, n, DRIVE_CHUNK):
            take = np.minimum(np.arange(start, start + DRIVE_CHUNK), n - 1)
            images = self.wrapper.drive(*encoded, poses[take], expressions[take])
            outputs.append(to_uint8(images)[: min(DRIVE_CHUNK, n - start)])
        return resize_frames(np.concatenate(outputs), *source.shape[:2])


def load_motion_model(checkpoint_dir, landmarker=None):
    """A MotionPipeline of the newest intact step under `checkpoint_dir` (module docstring); EMA params if any.

    landmarker: the MediaPipe FaceLandmarker that finds the driving faces (default: a new one).
    """
    model, params, data, description = read_generator(checkpoint_dir)
    return MotionPipeline(MotionWrapper(model, params, description), data, landmarker or FaceLandmarker())


def checkpoint_stage(checkpoint_dir):
    """The `stage` its config names of the training workdir or export at `checkpoint_dir` (None: not said)."""
    return read_train_config(checkpoint_paths(checkpoint_dir)[1]).get("stage")


def load_pipeline(checkpoint_dir, landmarker=None, **sampling):
    """The pipeline of the checkpoint at `checkpoint_dir`, with the engine its config names.

    An animator run or export (config.stage 'animator'): the diffusion engine, sampled with the config's
    `sampling` where `sampling` (steps, guidance, cfg, eta; seed, default 0) leaves a value None; on several
    devices that divide DRIVE_CHUNK, each batch of frames is sharded over them (a 'data' mesh).
    Anything else: the Stage-1 engine (`load_motion_model`), which takes no sampling options (a ValueError if
    any is not None).
    """
    given = {key: value for key, value in sampling.items() if value is not None}
    if checkpoint_stage(checkpoint_dir) != ANIMATOR_STAGE:
        if given:
            raise ValueError(f"{checkpoint_dir} is a Stage-1 model: {', '.join(sorted(given))} apply to an "
                             "animator checkpoint only")
        return load_motion_model(checkpoint_dir, landmarker)
    devices = jax.device_count()
    mesh = make_mesh({"data": -1}) if devices > 1 and DRIVE_CHUNK % devices == 0 else None
    wrapper = AnimatorWrapper(read_animator(checkpoint_dir), checkpoint_dir, mesh=mesh, **given)
    return MotionPipeline(wrapper, wrapper.data_config, landmarker or FaceLandmarker())

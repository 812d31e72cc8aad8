"""The inference pipeline of either engine: face crops, the model's inputs, batches, paste-back.

It does the I/O-side work around a jitted model wrapper, `infer.wrapper.MotionWrapper` (Stage 1) or
`infer.animator_wrapper.AnimatorWrapper` (the diffusion animator), which both take
drive(*encode(source), pose inputs, expression inputs, motion reference) at the wrapper's `image_size` (S) and
`expression_size` (E). `load_pipeline` picks the engine from the checkpoint's config (stage 'animator':
diffusion).

The model's inputs are built from a crop framed as the training data is and its MediaPipe landmarks, as the
training pipeline builds them (`dex_jax.data.pipeline`, `augment`):
  source            the crop resized to S;
  pose input        the crop resized to S, the hulls of MediaPipe's eye + iris and lip points, dilated by
                    data.mask_dilation of the face size, filled with data.mask_fill;
  expression input  the square around the landmarks' bounding box (times data.expression_box_scale), or the
                    crop aligned by the eyes and mouth where data.expression_align is 'landmarks', not
                    rotated, resized to E.
`animate` (the animate command's path) takes photos and videos at any size: the source faces and every driving
frame are cropped as the model's training data was (`infer.paste_back`: the data builder's crop, framed as the
renders are for a SynthHeads-trained model; CROP_SIZE pixels, the driving boxes smoothed over time), the motion is
relative (default) or absolute (`infer.relative_motion`), frames are driven as they arrive (`drive_stream`), and
each result is pasted back into the full-resolution source, or returned as the crop at S. Stage 1 and Stage 2
drive the frames in batches of `batch` (the last one padded, so one compiled shape); a Stage-3 model (the
wrapper's `temporal`) drives them in overlapping windows of `window` frames, each window one clip, the overlap
handed over in latent space (`animator.windowed`: only one window of frames is held). Videos are read twice,
frames one at a time: a first pass (`track`) keeps each frame's landmarks only, a second crops and drives, so
memory does not grow with the clip.
A driving frame without a face borrows the landmarks of the clip's nearest frame with one (its motion is held);
such frames are counted in `frames_without_face`.
`__call__(source, pose_frames, expression_frames)` takes frames that already are such crops (evaluation's
benchmarks): whole frames, absolute motion, results resized to the source's size.
"""

import collections
import dataclasses

import jax
import numpy as np

from dex_jax import geometry
from dex_jax.animator.windowed import OVERLAP, WINDOW, WindowStream, check_window
from dex_jax.data.augment import expression_crop, pose_input
from dex_jax.data.pipeline import rescale_points
from dex_jax.face.landmarker import FaceLandmarker, check_rgb_uint8, observe_frames
from dex_jax.image import resize, to_float, to_model, to_uint8
from dex_jax.infer.animator_wrapper import AnimatorWrapper
from dex_jax.infer.faces import MAX_FACES
from dex_jax.infer.paste_back import (EYES_AND_MOUTH, PORTRAIT_VIDEOS, crop, crop_points, face_box, paste_back,
                                      smooth_boxes, training_framing)
from dex_jax.infer.relative_motion import MOTIONS
from dex_jax.infer.wrapper import MotionWrapper, read_generator
from dex_jax.parallel import make_mesh
from dex_jax.train.animator_checkpoint import STAGES as ANIMATOR_STAGES
from dex_jax.train.animator_checkpoint import TEMPORAL_STAGE, read_animator
from dex_jax.train.checkpoint import checkpoint_paths, read_train_config

DRIVE_CHUNK = 8


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


def largest_face(landmarker, frame):
    """Landmarks (478, 2) of the largest face MediaPipe finds in the whole frame, or None."""
    faces = [face.landmarks[:, :2] for face in landmarker.detect_all(frame)]
    return max(faces, key=lambda points: face_box(points)[2]) if faces else None


@dataclasses.dataclass
class Track:
    """A driving clip's first pass: per frame the landmarks (T, 478, 2) in frame pixels (the nearest frame's where
    a frame has no face) and the crop boxes (T, 3), smoothed over time; frames without a face."""

    points: np.ndarray
    boxes: np.ndarray
    missing: int

    def __len__(self):
        return len(self.points)


def track(landmarker, frames, what, framing=PORTRAIT_VIDEOS):
    """The Track of an iterable of frames (one at a time), its boxes framed as `framing`; ValueError when no frame
    shows a face."""
    found = [largest_face(landmarker, frame) for frame in frames]
    nearest = nearest_faces([points is not None for points in found])
    if nearest is None:
        raise ValueError(f"no face found in any frame of the {what}")
    points = np.stack([found[i] for i in nearest]).astype(np.float32)
    boxes = smooth_boxes(np.stack([face_box(p, framing) for p in points]))
    return Track(points, boxes, int(sum(p is None for p in found)))


@dataclasses.dataclass
class SourceFace:
    """One face of the source photo: its crop box, its encoding, its own motion (pose, expression latent) and the
    model's inputs of its crop (pose input, expression input)."""

    box: np.ndarray
    encoded: tuple
    motion: tuple
    inputs: tuple


class BatchDrive:
    """One face's frames driven in batches of `batch` as they are pushed (Stage 1, Stage 2): `push(pose input,
    expression input)` returns the uint8 results that became ready, in order; after the clip's `frames`-th push,
    all of them (the last batch padded with its last frame, so every call has one compiled shape)."""

    def __init__(self, wrapper, encoded, reference, frames, batch):
        self.wrapper, self.encoded, self.reference, self.frames, self.batch = wrapper, encoded, reference, frames, batch
        self.pending, self.pushed = [], 0

    def push(self, pose, expression):
        self.pending.append((pose, expression))
        self.pushed += 1
        if len(self.pending) < self.batch and self.pushed < self.frames:
            return []
        count, take = len(self.pending), np.minimum(np.arange(self.batch), len(self.pending) - 1)
        poses, expressions = (np.stack(inputs)[take] for inputs in zip(*self.pending))
        self.pending = []
        return list(to_uint8(self.wrapper.drive(*self.encoded, poses, expressions, self.reference))[:count])


class WindowDrive:
    """One face's frames driven by a Stage-3 wrapper in overlapping windows (`animator.windowed.WindowStream`),
    with `BatchDrive`'s `push`."""

    def __init__(self, wrapper, encoded, reference, frames, window, overlap):
        self.wrapper, self.encoded, self.reference, self.windows = wrapper, encoded, reference, 0
        self.stream = WindowStream(frames, self.run, window, overlap)

    def run(self, items, previous, weights):
        poses, expressions = (np.stack(inputs) for inputs in zip(*items))
        images, trajectory = self.wrapper.window(*self.encoded, poses, expressions, self.reference, previous,
                                                 weights, self.windows)
        self.windows += 1
        return to_uint8(images), trajectory

    def push(self, pose, expression):
        return self.stream.push((pose, expression))


class MotionPipeline:
    """The pipeline of one engine's wrapper (module docstring)."""

    def __init__(self, wrapper, data_config, landmarker, batch=DRIVE_CHUNK, window=WINDOW, overlap=OVERLAP):
        if batch < 1:
            raise ValueError(f"--batch must be at least 1, got {batch}")
        check_window(window, overlap)
        self.wrapper, self.batch, self.window, self.overlap = wrapper, batch, window, overlap
        self.temporal = wrapper.temporal
        self.image_size, self.expression_size = wrapper.image_size, wrapper.expression_size
        self.description = wrapper.description
        self.data_config = data_config
        self.framing = training_framing(data_config)  # crops framed as the model's training data
        self.landmarker = landmarker
        self.frames_without_face = {"pose": 0, "expression": 0}

    # ---- the model's inputs, from a training-framed crop and its landmarks
    def pose_input(self, image, points, box):
        """(S, S, 3) pose input in [-1, 1] of a crop with landmarks `points` and face `box` (x0, y0, x1, y1) in its
        pixels (points None: nothing covered)."""
        size, data = self.image_size, self.data_config
        model_image = to_model(image, size)
        if points is None or not data.mask_pose_input:
            return model_image
        factor = np.array([size / image.shape[1], size / image.shape[0]])
        return pose_input(model_image, rescale_points(points, factor), EYES_AND_MOUTH,
                          rescale_points(box.reshape(2, 2), factor).reshape(4), data.mask_dilation, data.mask_fill)[0]

    def expression_input(self, image, points, box):
        """(E, E, 3) expression input in [-1, 1] of a crop with landmarks `points` and face `box` in its pixels:
        the crop data.expression_align names (the box square where points is None: no face in the clip), resized."""
        data = self.data_config
        align = "box" if points is None else data.expression_align
        return to_float(expression_crop(image, box, self.expression_size, 0.0, data.expression_box_scale, align,
                                        points, EYES_AND_MOUTH))

    def inputs(self, image, points):
        """(pose input, expression input) of a crop and its landmarks in crop pixels."""
        box = np.concatenate([points.min(0), points.max(0)])
        return self.pose_input(image, points, box), self.expression_input(image, points, box)

    def drive_stream(self, encoded, reference, frames):
        """The `BatchDrive` (or for a Stage-3 wrapper `WindowDrive`) of a clip of `frames` frames of the source
        `encoded`, with the motion reference `reference` (None: absolute motion)."""
        if self.temporal:
            return WindowDrive(self.wrapper, encoded, reference, frames, self.window, self.overlap)
        return BatchDrive(self.wrapper, encoded, reference, frames, self.batch)

    def _drive(self, encoded, poses, expressions, reference):
        """(n, S, S, 3) uint8 results of the rows of `poses`, `expressions` (one clip)."""
        stream = self.drive_stream(encoded, reference, len(poses))
        return np.stack([result for pose, expression in zip(poses, expressions)
                         for result in stream.push(pose, expression)])

    # ---- evaluation: frames that already are crops, absolute motion
    def frame_faces(self, frames):
        """Per frame (landmarks (478, 2) or None, face box (x0, y0, x1, y1)) in frame pixels; frames without a face."""
        observed = observe_frames(self.landmarker, frames)
        missing = int(np.sum(~observed["found"]))
        nearest = nearest_faces(observed["found"])
        if nearest is None:
            h, w = frames.shape[1:3]
            return [(None, np.array([-0.5, -0.5, w - 0.5, h - 0.5]))] * len(frames), missing
        points = observed["landmarks"][nearest, :, :2]
        return [(p, np.concatenate([p.min(0), p.max(0)])) for p in points], missing

    def __call__(self, source, pose_frames, expression_frames):
        """(T, H, W, 3) uint8 results of a source crop (H, W, 3) driven by crops (T, h, w, 3) (module docstring)."""
        source = np.asarray(source)
        check_rgb_uint8(source)
        pose_frames = check_clip(pose_frames, "pose_frames")
        expression_frames = check_clip(expression_frames, "expression_frames")
        if len(pose_frames) != len(expression_frames):
            raise ValueError(f"pose and expression clips differ in length: {len(pose_frames)} vs "
                             f"{len(expression_frames)}")
        pose_faces, missing = self.frame_faces(pose_frames)
        self.frames_without_face["pose"] += missing
        if expression_frames is not pose_frames:
            expression_faces, missing = self.frame_faces(expression_frames)
        else:
            expression_faces = pose_faces
        self.frames_without_face["expression"] += missing
        encoded = self.wrapper.encode(to_model(source, self.image_size)[None])
        poses = np.stack([self.pose_input(f, *face) for f, face in zip(pose_frames, pose_faces)])
        expressions = np.stack([self.expression_input(f, *face) for f, face in zip(expression_frames,
                                                                                 expression_faces)])
        return resize_frames(self._drive(encoded, poses, expressions, None), *source.shape[:2])

    # ---- animate: photos and videos at any size
    def source_face(self, image, points):
        """The SourceFace of the face with landmarks `points` (478, 2) in the photo `image`."""
        box = face_box(points, self.framing)
        face_crop = crop(image, box)
        pose, expression = self.inputs(face_crop, crop_points(points, box))
        encoded = self.wrapper.encode(to_model(face_crop, self.image_size)[None])
        return SourceFace(box, encoded, (encoded[-1], self.wrapper.motion(pose[None], expression[None])[1]),
                          (pose, expression))

    def driving_inputs(self, frame, points, box):
        """(pose input, expression input) of one driving frame, cropped by `box`."""
        driving_crop = crop(frame, box)
        return self.inputs(driving_crop, crop_points(points, box))

    def animate(self, source, faces, pose_track, pose_frames, expression_track=None, expression_frames=None,
                motion="relative", paste=True):
        """Yield (pose frame, expression frame, result) for each driving frame (module docstring).

        source: the (H, W, 3) uint8 photo; faces: its SourceFaces, each animated and pasted back (paste=False: one
        face, the result is its crop at S); pose_frames and expression_frames: iterables of the frames that
        pose_track and expression_track tracked (expression None: the pose clip drives both).
        """
        if motion not in MOTIONS:
            raise ValueError(f"motion must be one of {MOTIONS}, got {motion!r}")
        if not paste and len(faces) != 1:
            raise ValueError("without paste-back only one face can be animated")
        same = expression_track is None
        expression_track = pose_track if same else expression_track
        self.frames_without_face["pose"] += pose_track.missing
        self.frames_without_face["expression"] += expression_track.missing
        frames = iter(((f, f) for f in pose_frames) if same else zip(pose_frames, expression_frames))
        n, streams, waiting = min(len(pose_track), len(expression_track)), None, collections.deque()
        for i in range(n):
            pose_frame, expression_frame = next(frames)
            pose = self.driving_inputs(pose_frame, pose_track.points[i], pose_track.boxes[i])[0]
            expression = self.driving_inputs(expression_frame, expression_track.points[i],
                                             expression_track.boxes[i])[1]
            if streams is None:  # the clips' first frame: the motion reference of relative motion
                first = self.wrapper.motion(pose[None], expression[None]) if motion == "relative" else None
                streams = [self.drive_stream(face.encoded, None if first is None else (*face.motion, *first), n)
                           for face in faces]
            waiting.append((pose_frame, expression_frame))
            results = [stream.push(pose, expression) for stream in streams]
            for ready in zip(*results):
                pose_frame, expression_frame = waiting.popleft()
                if not paste:
                    yield pose_frame, expression_frame, ready[0]
                    continue
                out = source
                for face, result in zip(faces, ready):
                    out = paste_back(out, result, face.box)
                yield pose_frame, expression_frame, out


    # ---- one frame from an explicit pose: the serve app's sliders
    def posed(self, source, face, rotation=(0.0, 0.0, 0.0), scale=1.0, expression=None, paste=True):
        """`source` (H, W, 3) uint8 with its SourceFace `face` turned by rotation = (yaw, pitch, roll) in degrees and
        scaled by `scale` from its own pose, with the expression of the largest face of the photo `expression`
        (None: the face's own); pasted back into the source, or (paste=False) the crop at S.

        The pose is [scale s_s R(yaw, pitch, roll) R_s | t_s] (`geometry.rotation_from_euler`'s angles, the turn
        in camera space after the source's own rotation). Either engine renders it as relative motion from a
        driving frame to itself (`infer.relative_motion`: R_d R_d^T R = R), the driving frame being the crop of
        `expression`'s face, or the source's own crop. ValueError when `expression` shows no face.
        """
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        if expression is None:
            pose_in, expression_in = face.inputs
        else:
            check_rgb_uint8(expression)
            points = largest_face(self.landmarker, expression)
            if points is None:
                raise ValueError("no face found in the expression image")
            pose_in, expression_in = self.driving_inputs(expression, points, face_box(points, self.framing))
        driving = self.wrapper.motion(pose_in[None], expression_in[None])
        source_pose, own_expression = face.motion
        turn = geometry.pose_from_params(*np.radians(np.asarray(rotation, np.float32)), 0.0, 0.0, scale)
        target_pose = source_pose.at[..., :3].set(turn[..., :3] @ source_pose[..., :3])
        target_expression = own_expression if expression is None else driving[1]
        result = self._drive(face.encoded, pose_in[None], expression_in[None],
                             (target_pose, target_expression, *driving))[0]
        return paste_back(source, result, face.box) if paste else result


def frames_mesh(batch):
    """A 'data' mesh of the local devices when there are several and they divide `batch`, else None."""
    devices = jax.device_count()
    return make_mesh({"data": -1}) if devices > 1 and batch % devices == 0 else None


def load_motion_model(checkpoint_dir, landmarker=None, batch=DRIVE_CHUNK, mesh=None):
    """A MotionPipeline of the newest intact step under `checkpoint_dir` (module docstring); EMA params if any.

    landmarker: the MediaPipe FaceLandmarker that finds the faces (default: a new one, up to MAX_FACES faces);
    mesh: a 'data' mesh that each batch of frames is sharded over (None: not sharded).
    """
    model, params, data, description = read_generator(checkpoint_dir)
    return MotionPipeline(MotionWrapper(model, params, description, mesh), data,
                          landmarker or FaceLandmarker(num_faces=MAX_FACES), batch)


def checkpoint_stage(checkpoint_dir):
    """The `stage` its config names of the training workdir or export at `checkpoint_dir` (None: not said)."""
    return read_train_config(checkpoint_paths(checkpoint_dir)[1]).get("stage")


def load_pipeline(checkpoint_dir, landmarker=None, batch=DRIVE_CHUNK, window=None, overlap=None, **sampling):
    """The pipeline of the checkpoint at `checkpoint_dir`, with the engine its config names, driving `batch`
    frames per call.

    An animator run or export (config.stage 'animator', or 'temporal' for Stage 3): the diffusion engine, sampled
    with the config's `sampling` where `sampling` (steps, guidance, cfg, eta; seed, default 0) leaves a value None;
    a Stage-3 model samples clips in windows of `window` frames overlapping by `overlap` (None: WINDOW, and
    OVERLAP or half a shorter window), which no other model takes (a ValueError if given).
    Anything else: the Stage-1 engine (`load_motion_model`), which takes no sampling options (a ValueError if
    any is not None).
    Either engine shards each batch of frames over the local devices when there are several that divide `batch`
    (`frames_mesh`); a Stage-3 window runs on one device.
    """
    given = {key: value for key, value in sampling.items() if value is not None}
    windows = {key: value for key, value in (("window", window), ("overlap", overlap)) if value is not None}
    mesh = frames_mesh(batch)
    stage = checkpoint_stage(checkpoint_dir)
    if stage not in ANIMATOR_STAGES:
        if given or windows:
            raise ValueError(f"{checkpoint_dir} is a Stage-1 model: {', '.join(sorted({**given, **windows}))} apply "
                             "to an animator checkpoint only")
        return load_motion_model(checkpoint_dir, landmarker, batch, mesh)
    if windows and stage != TEMPORAL_STAGE:
        raise ValueError(f"{checkpoint_dir} is a Stage-2 animator: {', '.join(sorted(windows))} apply to a Stage-3 "
                         "(temporal) checkpoint only")
    wrapper = AnimatorWrapper(read_animator(checkpoint_dir), checkpoint_dir, mesh=None if stage == TEMPORAL_STAGE
                              else mesh, **given)
    window = WINDOW if window is None else window
    overlap = min(OVERLAP, window // 2) if overlap is None else overlap
    return MotionPipeline(wrapper, wrapper.data_config, landmarker or FaceLandmarker(num_faces=MAX_FACES), batch,
                          window, overlap)

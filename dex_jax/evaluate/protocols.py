"""Reenactment protocols over a benchmark, for any model given as `animate(source, pose_frames, expression_frames)`.

`animate` takes a source portrait (H, W, 3) uint8 and two driving clips (T, H, W, 3) uint8, one for the head pose
and one for the expression (the same clip in self- and cross-reenactment), and returns the T generated frames
(T, H, W, 3) uint8 at the driving frames' size. A protocol turns a benchmark into tasks (named CLIP, SOURCE__DRIVER
and SOURCE__POSE__EXPRESSION after the clips they use):

  self          clip k: frame 0 is the source, frames 1.. drive both pose and expression and are the target.
  reconstruction  every frame t of clip k (task CLIP_tNNN) is its own source, drivers and target: nothing
                moves, so it measures the ceiling that the appearance path (encoder, volume, decoder) sets.
  cross         source = frame 0 of clip k, driven by the whole clip k+1 (cyclically): no target; CSIM against
                the source, AED and APD against the driving frames.
  disentangled  source = frame 0 of clip k, pose from clip k+1, expression from clip k+2 (cyclically, trimmed to
                the shorter clip): no target; AED against the expression clip, APD against the pose clip.
  ground-truth disentangled (SynthHeads; `disentangled` on a benchmark with a renderer): as disentangled, and the
                target is the renderer's frame of source identity k with clip k+1's poses and clip k+2's
                expressions, so every metric is measured against the truth.

Where the benchmark has a renderer (self and ground-truth disentangled on SynthHeads), a task also carries the
still target: the renderer's frames with the target's poses and the source frame's own expression, which is
what a model that ignores the expression driver would ideally draw; expression transfer is scored against it.

Every generated video is checked against its task (frame count and size) and scored by a `Scorer`; the result
keeps each video's accumulators, so reports give per-video figures and no-face counts. Each task also names its
source's clip: the tasks of one clip (the frames of one `reconstruction` clip) share an identity, and reports take
the clips, not the frames, as the independent samples of their intervals.
"""

import dataclasses
from typing import Callable

import numpy as np
import tqdm


PROTOCOL_NAMES = ("self", "reconstruction", "cross", "disentangled")


@dataclasses.dataclass(frozen=True)
class Task:
    """One video to generate: a source portrait from clip `clip`, the pose and expression drivers, and the target
    if known."""

    name: str
    clip: str
    source: np.ndarray
    pose: np.ndarray
    expression: np.ndarray
    target: np.ndarray | None = None
    still_target: np.ndarray | None = None

    @property
    def pose_reference(self):
        """What APD compares with: the target where there is one, else the pose driver."""
        return self.pose if self.target is None else self.target

    @property
    def expression_reference(self):
        """What AED compares with: the target where there is one, else the expression driver."""
        return self.expression if self.target is None else self.target


@dataclasses.dataclass(frozen=True)
class VideoScore:
    """The metric accumulators ({name: clu metric}) of one generated video, whose source is from clip `clip`."""

    name: str
    clip: str
    frames: int
    scores: dict


def _still_target(benchmark, source_clip, pose_clip, frames):
    """The renderer's frames of the source clip's identity with pose_clip's poses[frames] and the source clip's
    frame-0 expression, or None without a renderer."""
    if benchmark.render is None:
        return None
    poses = pose_clip.poses[frames]
    return benchmark.render(source_clip.identity, poses, np.repeat(source_clip.expressions[:1], len(poses), axis=0))


def self_reenactment(benchmark):
    """Clip k's frame 0 animated by its frames 1.., which are also the target."""
    tasks = []
    for clip in benchmark.clips:
        driving = clip.frames[1:]
        tasks.append(Task(clip.name, clip.name, clip.frames[0], driving, driving, driving,
                          _still_target(benchmark, clip, clip, slice(1, None))))
    return tasks


def reconstruction(benchmark):
    """Every frame of every clip as its own source, pose and expression driver, and target."""
    tasks = []
    for clip in benchmark.clips:
        for t, frame in enumerate(clip.frames):
            only = clip.frames[t:t + 1]
            tasks.append(Task(f"{clip.name}_t{t:03d}", clip.name, frame, only, only, only))
    return tasks


def _check_clip_count(benchmark, needed, protocol):
    if len(benchmark.clips) < needed:
        raise ValueError(f"{protocol} reenactment needs at least {needed} clips, {benchmark.name} has "
                         f"{len(benchmark.clips)}")


def cross_reenactment(benchmark):
    """Clip k's frame 0 driven by the whole of clip k+1 (cyclically); no target."""
    clips = benchmark.clips
    _check_clip_count(benchmark, 2, "cross")
    return [Task(f"{c.name}__{d.name}", c.name, c.frames[0], d.frames, d.frames)
            for c, d in zip(clips, clips[1:] + clips[:1])]


def _triples(benchmark, protocol):
    clips = benchmark.clips
    _check_clip_count(benchmark, 3, protocol)
    return list(zip(clips, clips[1:] + clips[:1], clips[2:] + clips[:2]))


def disentangled_reenactment(benchmark):
    """Clip k's frame 0 with the pose of clip k+1 and the expression of clip k+2; no target."""
    tasks = []
    for a, b, c in _triples(benchmark, "disentangled"):
        n = min(len(b.frames), len(c.frames))
        tasks.append(Task(f"{a.name}__{b.name}__{c.name}", a.name, a.frames[0], b.frames[:n], c.frames[:n]))
    return tasks


def ground_truth_disentangled(benchmark):
    """Disentangled reenactment with the renderer's true frames (identity k, poses k+1, expressions k+2)."""
    if benchmark.render is None:
        raise ValueError(f"{benchmark.name} has no renderer, so it has no ground-truth disentangled target")
    tasks = []
    for a, b, c in _triples(benchmark, "ground-truth disentangled"):
        n = min(len(b.frames), len(c.frames))
        target = benchmark.render(a.identity, b.poses[:n], c.expressions[:n])
        tasks.append(Task(f"{a.name}__{b.name}__{c.name}", a.name, a.frames[0], b.frames[:n], c.frames[:n], target,
                          _still_target(benchmark, a, b, slice(0, n))))
    return tasks


def protocol_tasks(protocol, benchmark):
    """(label, tasks) of a protocol name; `disentangled` on a benchmark with a renderer is the ground-truth one."""
    if protocol == "self":
        return "self-reenactment", self_reenactment(benchmark)
    if protocol == "reconstruction":
        return "reconstruction", reconstruction(benchmark)
    if protocol == "cross":
        return "cross-reenactment", cross_reenactment(benchmark)
    if protocol == "disentangled":
        if benchmark.render is not None:
            return "ground-truth disentangled reenactment", ground_truth_disentangled(benchmark)
        return "disentangled reenactment", disentangled_reenactment(benchmark)
    raise ValueError(f"unknown protocol {protocol!r}: use one of {', '.join(PROTOCOL_NAMES)}")


def check_prediction(task, frames):
    """ValueError unless `frames` is a (T, H, W, 3) uint8 video of the task's length and frame size."""
    want = (len(task.pose),) + (task.target if task.target is not None else task.pose).shape[1:]
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4:
        raise ValueError(f"{task.name}: prediction must be a (T, H, W, 3) uint8 video, got {frames.dtype} "
                         f"{frames.shape}")
    if frames.shape != want:
        raise ValueError(f"{task.name}: prediction has {frames.shape[0]} frames of {frames.shape[2]}x"
                         f"{frames.shape[1]}x{frames.shape[3]}, ground truth has {want[0]} frames of "
                         f"{want[2]}x{want[1]}x{want[3]}")
    return frames


def score_tasks(tasks, predict: Callable, scorer, progress=True):
    """[VideoScore] of `predict(task)` (a (T, H, W, 3) uint8 video) for every task, with a progress bar."""
    results = []
    for task in tqdm.tqdm(tasks, desc="evaluate", unit="video", disable=not progress):
        frames = check_prediction(task, predict(task))
        scores = scorer.score(frames, task.source, task.pose_reference, task.expression_reference, task.target,
                              task.still_target)
        results.append(VideoScore(task.name, task.clip, len(frames), scores))
    return results


def run_protocol(tasks, animate: Callable, scorer, progress=True):
    """Score `animate(source, pose_frames, expression_frames)` on every task."""
    return score_tasks(tasks, lambda task: animate(task.source, task.pose, task.expression), scorer, progress)

"""Reenactment protocols on tiny SynthHeads clips: tasks, ground truth, an untrained model, an oracle, no faces."""

import dataclasses
import math

import flax.linen as nn
import jax
import numpy as np
import pytest

from dex_jax.config_loading import load_config
from dex_jax.data import synth_heads
from dex_jax.data.pipeline import default_config as data_defaults
from dex_jax.evaluate.benchmarks import RENDER_CHUNK, Benchmark, Clip, synth_heads_benchmark
from dex_jax.evaluate.identity import DlibEmbedder
from dex_jax.evaluate.protocols import (
    cross_reenactment,
    disentangled_reenactment,
    ground_truth_disentangled,
    protocol_tasks,
    reconstruction,
    run_protocol,
    self_reenactment,
)
from dex_jax.evaluate.report import markdown, summarize
from dex_jax.evaluate.scoring import Scorer
from dex_jax.face.landmarker import FaceLandmarker
from dex_jax.image import resize, to_float
from dex_jax.infer.pipeline import MotionPipeline, nearest_faces
from dex_jax.infer.wrapper import MotionWrapper
from dex_jax.motion.generator import build_motion_generator
from dex_jax.motion.summary import example_inputs
from dex_jax.train.stages.stage1 import random_lpips_params

SIZE, CLIPS, FRAMES = 64, 3, 4


@pytest.fixture(scope="module")
def benchmark():
    return synth_heads_benchmark(CLIPS, FRAMES, SIZE)


def rendered(identity, poses, expressions, size=2 * SIZE):
    """The renderer's frames of `identity` drawn at `size` and area-averaged to SIZE (unchanged at SIZE)."""
    pad = np.minimum(np.arange(RENDER_CHUNK), len(poses) - 1)
    frames = synth_heads.render_frames(np.full(RENDER_CHUNK, identity), poses[pad], expressions[pad], size, size)
    return np.stack([resize(image, SIZE, SIZE) for image in np.asarray(frames["image"])[:len(poses)]])


def test_benchmark_frames_are_made_as_training_frames_are(benchmark):
    """Rendered at twice the size and area-averaged, as `data.source = "synth"` and the builds read at half size
    make their frames; a frame drawn at the size itself has aliased edges and differs from them."""
    clip = benchmark.clips[0]
    np.testing.assert_array_equal(clip.frames, rendered(clip.identity, clip.poses, clip.expressions))
    drawn = rendered(clip.identity, clip.poses, clip.expressions, size=SIZE)
    assert np.abs(to_float(drawn) - to_float(clip.frames)).mean() > 0.01


@pytest.fixture(scope="module")
def landmarker():
    with FaceLandmarker() as tool:
        yield tool


@pytest.fixture(scope="module")
def scorer(landmarker):
    return Scorer(DlibEmbedder(), landmarker, random_lpips_params())


@pytest.fixture(scope="module")
def untrained(landmarker):
    """The `test` motion trainer with random weights, N(0, 0.05^2) drawn with numpy into the shapes `jax.eval_shape`
    gives: compiling the model's init would take half a minute on a cold cache (test_motion_generator covers it)."""
    config = load_config("configs/motion_model.py:test")
    shapes = nn.unbox(jax.eval_shape(build_motion_generator(config).init, jax.random.key(0), *example_inputs(config)))
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: rng.normal(0.0, 0.05, s.shape).astype(np.float32), shapes["params"])
    return MotionPipeline(MotionWrapper(config, params, "untrained test model"), data_defaults(), landmarker)


def fake_benchmark(num_clips, lengths=None):
    lengths = lengths or [3] * num_clips
    clips = tuple(Clip(f"c{k}", np.full((n, 8, 8, 3), 10 * k + np.arange(n)[:, None, None, None], np.uint8))
                  for k, n in enumerate(lengths))
    return Benchmark("fake", clips)


def test_tasks_follow_each_protocol():
    bench = fake_benchmark(3, [3, 4, 5])
    for task, clip in zip(self_reenactment(bench), bench.clips):
        assert np.array_equal(task.source, clip.frames[0]) and np.array_equal(task.target, clip.frames[1:])
        assert task.pose is task.expression is task.target
    rebuilt = reconstruction(bench)
    assert [t.name for t in rebuilt][:4] == ["c0_t000", "c0_t001", "c0_t002", "c1_t000"] and len(rebuilt) == 12
    assert np.array_equal(rebuilt[4].source, bench.clips[1].frames[1])
    assert rebuilt[4].pose is rebuilt[4].expression is rebuilt[4].target
    assert np.array_equal(rebuilt[4].target, bench.clips[1].frames[1:2])
    cross = cross_reenactment(bench)
    assert [t.name for t in cross] == ["c0__c1", "c1__c2", "c2__c0"]
    assert cross[2].target is None and np.array_equal(cross[2].pose, bench.clips[0].frames)
    assert np.array_equal(cross[2].source, bench.clips[2].frames[0])
    tangled = disentangled_reenactment(bench)
    assert [t.name for t in tangled][0] == "c0__c1__c2"
    assert len(tangled[0].pose) == len(tangled[0].expression) == 4 and tangled[0].target is None
    assert np.array_equal(tangled[1].pose, bench.clips[2].frames[:3])
    assert np.array_equal(tangled[1].expression, bench.clips[0].frames)
    with pytest.raises(ValueError, match="needs at least 3 clips"):
        disentangled_reenactment(fake_benchmark(2))
    with pytest.raises(ValueError, match="needs at least 2 clips"):
        cross_reenactment(fake_benchmark(1))
    with pytest.raises(ValueError, match="no renderer"):
        ground_truth_disentangled(bench)
    with pytest.raises(ValueError, match="unknown protocol 'mirror'"):
        protocol_tasks("mirror", bench)


def test_ground_truth_target_is_the_renderers_frame_of_that_combination(benchmark):
    label, tasks = protocol_tasks("disentangled", benchmark)
    assert label == "ground-truth disentangled reenactment"
    a, b, c = benchmark.clips
    np.testing.assert_array_equal(tasks[0].target, rendered(a.identity, b.poses, c.expressions))
    still = rendered(a.identity, b.poses, np.repeat(a.expressions[:1], FRAMES, 0))
    np.testing.assert_array_equal(tasks[0].still_target, still)
    own = self_reenactment(benchmark)[0]
    assert own.still_target.shape == own.target.shape and not np.array_equal(own.still_target, own.target)
    assert self_reenactment(dataclasses.replace(benchmark, render=None))[0].still_target is None
    assert np.array_equal(tasks[0].source, a.frames[0])
    assert not np.array_equal(tasks[0].target, b.frames) and not np.array_equal(tasks[0].target, c.frames)
    assert len({clip.identity for clip in benchmark.clips}) == CLIPS


def assert_accounted(results, with_target, with_still_target=None):
    with_still_target = with_target if with_still_target is None else with_still_target
    for video in results:
        assert ("psnr" in video.scores) == with_target and ("lpips" in video.scores) == with_target
        assert ("expression_transfer" in video.scores) == with_still_target
        assert ("flicker" in video.scores) == (with_target and video.frames > 1)
        for name, metric in video.scores.items():
            figures = metric.compute()
            seen = int(figures["count"]) + int(figures.get("no_face", 0)) + int(figures.get("unchanged", 0))
            assert seen == video.frames - (name == "flicker"), (video.name, name)  # flicker: pairs of frames
            if figures["count"]:
                assert math.isfinite(float(figures["mean"])), (video.name, name)


@pytest.mark.parametrize("protocol,renderer", [("self", True), ("reconstruction", False), ("cross", True),
                                               ("disentangled", True), ("disentangled", False)])
def test_untrained_model_runs_every_protocol_with_finite_metrics(benchmark, scorer, untrained, protocol, renderer):
    bench = benchmark if renderer else dataclasses.replace(benchmark, render=None)
    _, tasks = protocol_tasks(protocol, bench)
    results = run_protocol(tasks, untrained, scorer, progress=False)
    assert [r.name for r in results] == [t.name for t in tasks]
    assert [r.frames for r in results] == [len(t.pose) for t in tasks]
    assert_accounted(results, with_target=protocol in ("self", "reconstruction") or
                     (protocol == "disentangled" and renderer),
                     with_still_target=renderer and protocol in ("self", "disentangled"))


def test_oracle_scores_perfectly_on_ground_truth_disentangled(benchmark, scorer):
    _, tasks = protocol_tasks("disentangled", benchmark)
    targets = {id(task.pose): task.target for task in tasks}
    results = run_protocol(tasks, lambda source, pose, expression: targets[id(pose)], scorer, progress=False)
    assert_accounted(results, with_target=True)
    total = summarize(results, method="oracle", protocol="gt", benchmark="b", csim_embedder="dlib")["metrics"]
    assert total["psnr"]["mean"] == pytest.approx(100.0) and total["psnr"]["count"] == CLIPS * FRAMES
    assert total["ssim"]["mean"] == pytest.approx(1.0, abs=1e-6)
    assert total["lpips"]["mean"] == pytest.approx(0.0, abs=1e-6)
    assert total["flicker"]["mean"] == 0.0 and total["flicker"]["count"] == CLIPS * (FRAMES - 1)
    assert total["aed"]["count"] > 0 and total["aed"]["mean"] == 0.0
    assert total["apd"]["count"] > 0 and total["apd"]["mean"] == 0.0
    transfer = total["expression_transfer"]
    assert transfer["count"] > 0 and transfer["count"] + transfer["unchanged"] == CLIPS * FRAMES
    assert transfer["mean"] == pytest.approx(1.0, abs=1e-6)


def test_a_model_that_keeps_the_source_expression_scores_minus_one_in_expression_transfer(benchmark, scorer):
    _, tasks = protocol_tasks("disentangled", benchmark)
    stills = {id(task.pose): task.still_target for task in tasks}
    results = run_protocol(tasks, lambda source, pose, expression: stills[id(pose)], scorer, progress=False)
    summary = summarize(results, method="still", protocol="gt", benchmark="b", csim_embedder="dlib")
    transfer = summary["metrics"]["expression_transfer"]
    assert transfer["count"] > 0 and transfer["mean"] == pytest.approx(-1.0, abs=1e-6)
    text = markdown(summary)
    assert "| -1.000 ± 0.000 |" in text
    assert f"expression transfer {transfer['count']} of {CLIPS * FRAMES} ({transfer['unchanged']} where" in text


def test_frames_without_a_face_are_counted_and_reported(benchmark, scorer):
    _, tasks = protocol_tasks("self", benchmark)
    results = run_protocol(tasks, lambda source, pose, expression: np.full_like(pose, 128), scorer,
                           progress=False)
    summary = summarize(results, method="grey", protocol="self", benchmark="b", csim_embedder="dlib_resnet_v1")
    frames = CLIPS * (FRAMES - 1)
    for name in ("csim", "aed", "apd"):
        assert summary["metrics"][name]["count"] == 0 and summary["metrics"][name]["no_face"] == frames
        assert summary["metrics"][name]["mean"] is None
        assert [v["metrics"][name]["no_face"] for v in summary["per_video"]] == [FRAMES - 1] * CLIPS
    assert summary["metrics"]["psnr"]["count"] == frames
    text = markdown(summary)
    assert "| grey |" in text and text.count(" no face |") == 3 and "(9 without a face)" in text
    assert "| synth000 | 3 | 3 | 3 | 3 |" in text


def test_predictions_of_the_wrong_length_size_or_type_are_refused(benchmark, scorer):
    tasks = self_reenactment(benchmark)[:1]
    with pytest.raises(ValueError, match=r"synth000: prediction has 2 frames of 64x64x3, ground truth has 3 frames"):
        run_protocol(tasks, lambda source, pose, expression: pose[:2], scorer, progress=False)
    with pytest.raises(ValueError, match=r"3 frames of 32x32x3, ground truth has 3 frames of 64x64x3"):
        run_protocol(tasks, lambda source, pose, expression: pose[:, ::2, ::2], scorer, progress=False)
    with pytest.raises(ValueError, match="must be a \\(T, H, W, 3\\) uint8 video"):
        run_protocol(tasks, lambda source, pose, expression: pose / 255.0, scorer, progress=False)


def test_nearest_face_borrowing():
    assert nearest_faces(np.array([False, True, False, False, True])).tolist() == [1, 1, 1, 4, 4]
    assert nearest_faces(np.zeros(3, bool)) is None

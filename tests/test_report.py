"""Evaluation reports: the interval over source clips (against scipy's t interval, and the cluster-robust variance
computed from the frames), the frames of a `reconstruction` clip as one sample, and what the table prints."""

import numpy as np
import pytest
from scipy import stats

from dex_jax.evaluate.benchmarks import Benchmark, Clip
from dex_jax.evaluate.clu_metrics import PSNR, FrameStatistic
from dex_jax.evaluate.protocols import VideoScore, reconstruction, score_tasks
from dex_jax.evaluate.report import interval_over_clips, markdown, summarize


def test_with_equal_counts_it_is_the_t_interval_of_the_clip_means():
    means = np.random.default_rng(7).normal(26.0, 1.8, 8)
    got = interval_over_clips([{"mean": float(m), "count": 16} for m in means])
    low, high = stats.t.interval(0.95, len(means) - 1, loc=means.mean(), scale=stats.sem(means))
    assert got["clips"] == 8
    np.testing.assert_allclose([got["clips_ci95_low"], got["clips_ci95_high"]], [low, high], rtol=1e-12)


def test_with_unequal_counts_it_is_the_cluster_robust_interval_of_the_mean_of_all_frames():
    rng = np.random.default_rng(8)
    frames = [rng.normal(centre, 1.0, n) for centre, n in zip(rng.normal(26.0, 2.0, 5), (3, 9, 4, 12, 7))]
    values = np.concatenate(frames)
    residual_sums = np.array([np.sum(clip - values.mean()) for clip in frames])  # the sandwich's meat, per clip
    half = stats.t.ppf(0.975, 4) * np.sqrt(5 / 4 * np.sum(residual_sums ** 2) / len(values) ** 2)
    got = interval_over_clips([{"mean": float(clip.mean()), "count": len(clip)} for clip in frames])
    np.testing.assert_allclose([got["clips_ci95_low"], got["clips_ci95_high"]],
                               [values.mean() - half, values.mean() + half], rtol=1e-12)


def test_clips_without_a_counted_frame_are_left_out():
    assert interval_over_clips([{"mean": None, "count": 0}, {"mean": 1.0, "count": 3}]) == {
        "clips": 1, "clips_ci95_low": None, "clips_ci95_high": None}
    with_empty = interval_over_clips([{"mean": None, "count": 0}, {"mean": 1.0, "count": 3},
                                       {"mean": 2.0, "count": 3}])
    assert with_empty == interval_over_clips([{"mean": 1.0, "count": 3}, {"mean": 2.0, "count": 3}])
    assert with_empty["clips"] == 2


def video(name, values):
    return VideoScore(name=name, clip=name, frames=len(values), scores={"psnr": FrameStatistic.from_values(values)})


def test_the_table_prints_the_interval_over_clips_and_the_json_keeps_both():
    # Three clips whose frames agree within each clip and differ between them: the frames are far from
    # independent, and the interval over clips is much wider than the one over frames
    rng = np.random.default_rng(9)
    results = [video(f"clip{k}", centre + rng.normal(0.0, 0.05, 10)) for k, centre in enumerate((24.0, 26.0, 28.0))]
    summary = summarize(results, method="m", protocol="self", benchmark="b", csim_embedder="dlib")
    psnr = summary["metrics"]["psnr"]
    assert psnr["count"] == 30 and psnr["mean"] == pytest.approx(26.0, abs=0.05)
    means = [v["metrics"]["psnr"]["mean"] for v in summary["per_video"]]
    low, high = stats.t.interval(0.95, 2, loc=np.mean(means), scale=stats.sem(means))
    np.testing.assert_allclose([psnr["clips_ci95_low"], psnr["clips_ci95_high"]], [low, high], rtol=1e-5)
    frames_half, clips_half = (psnr["ci95_high"] - psnr["ci95_low"]) / 2, (high - low) / 2
    assert clips_half > 5 * frames_half
    assert f"| {psnr['mean']:.2f} ± {clips_half:.2f} |" in markdown(summary)

    one = summarize(results[:1], method="m", protocol="self", benchmark="b", csim_embedder="dlib")
    figure = one["metrics"]["psnr"]
    assert figure["clips"] == 1 and figure["clips_ci95_low"] is None
    assert f"± {(figure['ci95_high'] - figure['ci95_low']) / 2:.2f} (frames) |" in markdown(one)


PSNR_UINT8 = PSNR.with_value_range(0, 255)


class PSNRScorer:
    def score(self, predictions, source, pose_reference, expression_reference, target=None, still_target=None):
        return {"psnr": PSNR_UINT8.from_model_output(predictions.astype(np.float32), target.astype(np.float32))}


def test_the_frames_of_a_reconstruction_clip_are_one_sample():
    # Each frame of `reconstruction` is a video of its own; a clip's frames share an identity, so they are one
    # sample of the interval, which is the t interval of the clip means
    rng = np.random.default_rng(10)
    clips = tuple(Clip(f"synth{k:03d}", rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)) for k in range(3))
    tasks = reconstruction(Benchmark("b", clips))
    noise = {clip.name: level for clip, level in zip(clips, (2, 8, 32))}  # each clip reproduced to its own PSNR
    results = score_tasks(tasks, lambda task: np.clip(task.target.astype(int) + rng.integers(
        -noise[task.clip], noise[task.clip] + 1, task.target.shape), 0, 255).astype(np.uint8), PSNRScorer(),
        progress=False)
    summary = summarize(results, method="m", protocol="reconstruction", benchmark="b", csim_embedder="dlib")
    assert summary["videos"] == 12 and [v["clip"] for v in summary["per_video"]] == [c.name for c in clips
                                                                                     for _ in range(4)]
    psnr = summary["metrics"]["psnr"]
    per_frame = np.array([v["metrics"]["psnr"]["mean"] for v in summary["per_video"]]).reshape(3, 4)
    low, high = stats.t.interval(0.95, 2, loc=per_frame.mean(), scale=stats.sem(per_frame.mean(axis=1)))
    assert psnr["clips"] == 3
    np.testing.assert_allclose([psnr["clips_ci95_low"], psnr["clips_ci95_high"]], [low, high], rtol=1e-5)

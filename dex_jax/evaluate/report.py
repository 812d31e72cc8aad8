"""Evaluation reports: a markdown table shaped like the paper's Table 1 and a JSON file of the same figures.

Each figure is a metric's mean over frames with its frame count and two 95% intervals: over frames, treated as
independent (`clu_metrics`), and over the source clips (`interval_over_clips`), the one the table prints. The frames
of one clip are correlated (one identity, one track), so the first understates the uncertainty of a benchmark
figure. The face metrics add `no_face`, the frames left out because a face was missing, overall and per video;
expression transfer adds `unchanged`, the frames whose true expression draws no change. The report folder is
written through `output_dir.staged_output_dir`: it appears only once both files are complete.
"""

import functools
import json
import math
from pathlib import Path

from scipy import stats

from dex_jax.evaluate.scoring import merge_scores
from dex_jax.output_dir import staged_output_dir

COLUMNS = (("psnr", "PSNR ↑"), ("ssim", "SSIM ↑"), ("l1", "L1 ↓"), ("lpips", "LPIPS ↓"),
           ("expression_transfer", "Expr. transfer ↑"), ("flicker", "Flicker ↓"), ("csim", "CSIM ↑"),
           ("aed", "AED ↓"), ("apd", "APD ↓"))
DIGITS = {"psnr": 2, "ssim": 3, "l1": 4, "lpips": 3, "expression_transfer": 3, "flicker": 4, "csim": 3, "aed": 4,
          "apd": 3}
FACE_METRICS = ("csim", "aed", "apd")
REPORT_NAMES = ("report.md", "report.json")


def _plain(value):
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def figures(metric):
    """A metric's compute() as plain numbers: mean, count, ci95_low, ci95_high (None where undefined), and no_face
    or unchanged."""
    return {name: _plain(value) for name, value in metric.compute().items()}


def interval_over_clips(per_clip):
    """The 95% interval of a frame-weighted mean, from the per-clip figures [{'mean', 'count'}] of one metric, with
    the clips, not the frames, as the independent samples. Over the C clips with a count n_c > 0 and mean m_c
    (N frames in all):
        m = sum_c n_c m_c / N                         (the mean over all frames)
        se^2 = C / (C - 1) * sum_c n_c^2 (m_c - m)^2 / N^2   (cluster-robust standard error of m)
        m -/+ t_{0.975, C - 1} * se                   (Student's t with C - 1 degrees of freedom)
    With equal counts this is the t interval of the C clip means. {'clips': C, 'clips_ci95_low',
    'clips_ci95_high'}, the bounds None when C < 2."""
    kept = [(clip["count"], clip["mean"]) for clip in per_clip if clip["count"] and clip["mean"] is not None]
    out = {"clips": len(kept), "clips_ci95_low": None, "clips_ci95_high": None}
    if len(kept) < 2:
        return out
    total = sum(count for count, _ in kept)
    mean = sum(count * value for count, value in kept) / total
    variance = len(kept) / (len(kept) - 1) * sum((count * (value - mean)) ** 2 for count, value in kept) / total ** 2
    half = float(stats.t.ppf(0.975, len(kept) - 1)) * math.sqrt(variance)
    return {**out, "clips_ci95_low": mean - half, "clips_ci95_high": mean + half}


def summarize(results, *, method, protocol, benchmark, csim_embedder, notes=()):
    """The JSON-ready summary of a protocol's [VideoScore] results: each metric's figures over all frames with its
    interval over the source clips (`interval_over_clips`), and each video's figures."""
    by_clip = {}
    for result in results:
        by_clip[result.clip] = merge_scores(by_clip.get(result.clip, {}), result.scores)
    per_clip = [{name: figures(metric) for name, metric in scores.items()} for scores in by_clip.values()]
    total = functools.reduce(merge_scores, by_clip.values(), {})
    metrics = {name: {**figures(metric), **interval_over_clips([clip[name] for clip in per_clip if name in clip])}
               for name, metric in total.items()}
    return {
        "method": method,
        "protocol": protocol,
        "benchmark": benchmark,
        "csim_embedder": csim_embedder,
        "videos": len(results),
        "frames": sum(r.frames for r in results),
        "metrics": metrics,
        "per_video": [{"name": r.name, "clip": r.clip, "frames": r.frames,
                       "metrics": {name: figures(metric) for name, metric in r.scores.items()}} for r in results],
        "notes": list(notes),
    }


def cell(name, figure):
    """A table cell: mean ± half-width of the 95% interval over clips; where fewer than two clips have the metric,
    ± that over frames, marked '(frames)'; 'no face' when no frame had one, '—' when not measured."""
    if figure is None:
        return "—"
    if not figure["count"]:
        return "no face"
    digits = DIGITS[name]
    if figure["clips_ci95_high"] is not None:
        half = (figure["clips_ci95_high"] - figure["clips_ci95_low"]) / 2
        return f"{figure['mean']:.{digits}f} ± {half:.{digits}f}"
    if figure["ci95_high"] is None:
        return f"{figure['mean']:.{digits}f}"
    return f"{figure['mean']:.{digits}f} ± {(figure['ci95_high'] - figure['ci95_low']) / 2:.{digits}f} (frames)"


def _row(values):
    return "| " + " | ".join(values) + " |"


def markdown(summary):
    """The report as markdown: the Table 1-shaped row, how it was measured, and the no-face counts."""
    metrics = summary["metrics"]
    lines = [f"# Evaluation: {summary['method']}", "",
             f"{summary['protocol']} on {summary['benchmark']}: {summary['videos']} videos, "
             f"{summary['frames']} generated frames.", "",
             _row(["Method"] + [f"CSIM ↑ ({summary['csim_embedder']})" if name == "csim" else title
                                for name, title in COLUMNS]),
             _row(["---"] + ["---:"] * len(COLUMNS)),
             _row([summary["method"]] + [cell(name, metrics.get(name)) for name, _ in COLUMNS]), "",
             "Cells: mean over frames ± half-width of its 95% interval over the source clips (the clips are the "
             "independent samples: cluster-robust, Student's t; report.json also has the interval over frames, "
             "which treats the correlated frames of a clip as independent and is narrower). '(frames)': fewer "
             "than two clips, the interval over frames. "
             "— : not measured (PSNR, SSIM and LPIPS need a ground-truth target, expression transfer also the true "
             "frame with the source's expression, which only a renderer draws; see the notes).",
             "Expression transfer: on the pixels where the true expression changes the frame, (mean |prediction - "
             "frame with the source's expression| - mean |prediction - target|) / mean |target - frame with the "
             "source's expression|; 1 draws the target's expression, -1 keeps the source's, 0 is as far from both.",
             f"CSIM: cosine similarity of {summary['csim_embedder']} embeddings of each frame and the source. "
             "AED: mean |blendshape difference| over MediaPipe's 52 scores; APD: mean |yaw, pitch, roll "
             "difference| in degrees, from MediaPipe's face landmarker.", ""]
    counted = [f"{name.upper()} {metrics[name]['count']} of {metrics[name]['count'] + metrics[name]['no_face']} "
               f"({metrics[name]['no_face']} without a face)" for name in FACE_METRICS if name in metrics]
    if "expression_transfer" in metrics:
        transfer = metrics["expression_transfer"]
        counted.append(f"expression transfer {transfer['count']} of {transfer['count'] + transfer['unchanged']} "
                       f"({transfer['unchanged']} where the expression draws no change)")
    lines += ["Frames averaged: " + "; ".join(counted) + ".", ""]
    lacking = [video for video in summary["per_video"]
               if any(video["metrics"].get(name, {}).get("no_face") for name in FACE_METRICS)]
    if lacking:
        lines += ["## Frames without a face, per video", "",
                  _row(["Video", "Frames"] + [name.upper() for name in FACE_METRICS]),
                  _row(["---"] + ["---:"] * (1 + len(FACE_METRICS)))]
        lines += [_row([video["name"], str(video["frames"])] +
                       [str(video["metrics"][name]["no_face"]) for name in FACE_METRICS]) for video in lacking]
        lines += ["", "Videos not listed had a face in every frame; report.json has every video.", ""]
    if summary["notes"]:
        lines += ["## Notes", ""] + [f"- {note}" for note in summary["notes"]]
    return "\n".join(lines) + "\n"


def write_report(out_dir, summary, overwrite=False):
    """Write the folder out_dir holding report.md and report.json (an existing one is refused unless overwrite);
    the two files' paths."""
    md_name, json_name = REPORT_NAMES
    with staged_output_dir(out_dir, overwrite) as staging:
        (staging / json_name).write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
        (staging / md_name).write_text(markdown(summary))
    return Path(out_dir) / md_name, Path(out_dir) / json_name

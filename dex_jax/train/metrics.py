"""Observability: CLU metric collections, TensorBoard event files (tensorboardX), image grids, a progress line."""

import datetime
import json
import time
from pathlib import Path

import clu.metrics
import cv2
import numpy as np
from tensorboardX import SummaryWriter

from dex_jax.image import to_uint8


def metric_collection(names):
    """A clu.metrics Collection class with one Average per metric name."""
    return clu.metrics.Collection.create(**{name: clu.metrics.Average.from_output(name) for name in names})


class MetricAccumulator:
    """Averages a step's host-side metrics over a logging interval with a clu Collection."""

    def __init__(self, names):
        self._collection = metric_collection(names)
        self._names = tuple(names)
        self._merged = None

    def add(self, metrics):
        update = self._collection.single_from_model_output(**{n: metrics[n] for n in self._names})
        self._merged = update if self._merged is None else self._merged.merge(update)

    def flush(self):
        """{name: float} averaged since the last flush ({} when nothing was added)."""
        if self._merged is None:
            return {}
        values = {name: float(value) for name, value in self._merged.compute().items()}
        self._merged = None
        return values


class EventWriter:
    """TensorBoard event files in workdir/tensorboard and one JSON line of scalars per log step in
    workdir/metrics.jsonl (the training curve in plain text); on processes other than 0 it writes nothing."""

    def __init__(self, workdir, enabled=True):
        self._writer = SummaryWriter(str(Path(workdir) / "tensorboard")) if enabled else None
        self._jsonl = Path(workdir) / "metrics.jsonl"

    def scalars(self, step, values):
        if self._writer:
            for name, value in values.items():
                self._writer.add_scalar(name, value, step)
            with self._jsonl.open("a") as f:
                f.write(json.dumps({"step": step, **values}) + "\n")

    def image(self, step, tag, image):
        """`image` uint8 (H, W, 3)."""
        if self._writer:
            self._writer.add_image(tag, image, step, dataformats="HWC")

    def flush(self):
        if self._writer:
            self._writer.flush()

    def close(self):
        if self._writer:
            self._writer.close()


def image_grid(columns):
    """A sequence of (N, H, W, 3) image batches in [-1, 1] -> uint8 (N*H, C*W, 3): one row per sample."""
    rows = np.concatenate([np.asarray(c, np.float32) for c in columns], axis=2)
    return to_uint8(rows.reshape(-1, *rows.shape[2:]))


def save_png(path, image):
    """Write a uint8 RGB image as PNG, creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.ascontiguousarray(image[..., ::-1])):
        raise OSError(f"could not write {path}")


class Progress:
    """Steps/s, examples/s and ETA over the steps since the last report (the first report starts the clock)."""

    def __init__(self, total_steps, batch_size):
        self.total_steps = total_steps
        self.batch_size = batch_size
        self._time = None
        self._step = None

    def rates(self, step):
        """(steps/s, examples/s, eta seconds) since the previous call; None on the first call."""
        now = time.perf_counter()
        result = None
        if self._time is not None and step > self._step:
            steps_per_s = (step - self._step) / (now - self._time)
            result = steps_per_s, steps_per_s * self.batch_size, (self.total_steps - step) / steps_per_s
        self._time, self._step = now, step
        return result

    def line(self, step, metrics, rates):
        """'step 20/200 | loss 1.23 ... | 3.10 steps/s | 24.8 examples/s | ETA 0:00:58'."""
        parts = [f"step {step}/{self.total_steps}"]
        parts += [f"{name} {value:.4g}" for name, value in metrics.items()]
        if rates:
            steps_per_s, examples_per_s, eta = rates
            parts += [f"{steps_per_s:.3g} steps/s", f"{examples_per_s:.3g} examples/s",
                      f"ETA {datetime.timedelta(seconds=round(eta))}"]
        return " | ".join(parts)

"""Observability: metric sums kept on the device, TensorBoard event files (tensorboardX), image grids, a
progress line."""

import datetime
import json
import time
from pathlib import Path

import cv2
import jax.numpy as jnp
import numpy as np
from tensorboardX import SummaryWriter

from dex_jax.image import to_uint8


def zero_sums(names):
    """Running sums of the named scalar metrics over a logging interval, zeroed: {"metrics": {name: 0},
    "count": 0} as float32 numpy scalars, to place on the device once per interval."""
    return {"metrics": {name: np.zeros((), np.float32) for name in names}, "count": np.zeros((), np.float32)}


def add_to_sums(sums, metrics, counted):
    """`sums` (as `zero_sums` lays them out) with this step's `metrics` added when `counted` (a traced bool),
    else unchanged; for use inside the jitted step, so the sums never leave the device between log steps."""
    return {"metrics": {name: total + jnp.where(counted, jnp.asarray(metrics[name], jnp.float32), 0.0)
                        for name, total in sums["metrics"].items()},
            "count": sums["count"] + counted.astype(jnp.float32)}


def averages(sums):
    """{name: float mean} of fetched sums; {} when no step was counted."""
    count = float(sums["count"])
    return {name: float(total) / count for name, total in sums["metrics"].items()} if count else {}


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

"""The paper's metrics as `clu.metrics.Metric` classes: per-frame values averaged, with counts and a 95% interval.

Every metric accumulates, over the frames it keeps, the count n, the mean and the sum of squared
deviations M2 = sum_t (v_t - mean)^2 of a per-frame value v_t. A batch computes them directly (two
passes); `merge` (across batches) and clu's `reduce` (across devices and hosts, after an all-gather)
combine two accumulators exactly with Chan et al.'s pairwise update
    n = n_a + n_b,  d = mean_b - mean_a,  mean = mean_a + d n_b / n,  M2 = M2_a + M2_b + d^2 n_a n_b / n,
which is the running sum S1 = n mean and sum of squares S2 = M2 + n mean^2 kept in a form that float32
does not cancel away (S2 - S1^2 / n loses most digits of the variance when the spread is small next to
the mean, as for PSNR). `compute()` gives

    mean
    s^2  = M2 / (n - 1)                                (unbiased sample variance)
    ci95 = mean -/+ 1.96 * s / sqrt(n)                 (normal approximation; NaN when n < 2)

The interval treats frames as independent samples; frames of one video are correlated, so it is a
lower bound on the uncertainty of a per-video average. Frames with `mask` False (batch padding) are
ignored. The face metrics (CSIM, AED, APD) also take a per-frame `*_found` flag; frames of the mask
without a face in both images are not averaged but counted in `no_face`, which `compute()` reports.
Expression transfer likewise counts frames whose true expression draws no change in `unchanged`.

Keyword arguments of `from_model_output` (NHWC images in [-1, 1] unless `with_value_range` says otherwise):
    predictions, targets                       PSNR, L1, SSIM, LPIPS (LPIPS also `lpips_params`)
    predictions, targets, still_targets        ExpressionTransfer
    predictions, next_predictions, targets, next_targets   Flicker (frames t and t + 1)
    identity, source_identity, identity_found  CSIM (embeddings; source (N, D) or one (D,) vector)
    blendshapes, target_blendshapes, blendshapes_found   AED (N, 52)
    head_pose, target_head_pose, head_pose_found         APD (N, 3) (yaw, pitch, roll) in degrees
"""

import flax
import jax
import jax.numpy as jnp
from clu import metrics

from dex_jax.evaluate.image_metrics import expression_transfer, flicker, l1, psnr, ssim
from dex_jax.evaluate.pose_expression_metrics import expression_distance, pose_distance
from dex_jax.motion.lpips import lpips_distance

Z_95 = 1.959963984540054
DEFAULT_VALUE_RANGE = (-1.0, 1.0)
FRAME_COUNTS = ("count", "no_face", "unchanged")


def cosine_similarity(a, b, eps=1e-12):
    """Cosine similarity along the last axis; broadcasts, so one source embedding (D,) serves (N, D) frames."""
    a, b = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
    dot = jnp.sum(a * b, axis=-1)
    return dot / jnp.maximum(jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(b, axis=-1), eps)


def _frame_mask(values, mask):
    """A (N,) bool mask (all True when `mask` is None) after checking it matches the values."""
    if mask is None:
        return jnp.ones(values.shape, bool)
    mask = jnp.asarray(mask)
    if mask.shape != values.shape:
        raise ValueError(f"mask must have one entry per frame, shape {values.shape}, got {mask.shape}")
    return mask.astype(bool)


@flax.struct.dataclass
class FrameStatistic(metrics.Metric):
    """Mean of a per-frame value with its frame count and normal-approximation 95% interval."""

    count: jnp.ndarray
    mean: jnp.ndarray
    m2: jnp.ndarray

    @classmethod
    def empty(cls):
        zeros = {name: jnp.zeros((), jnp.int32 if name in FRAME_COUNTS else jnp.float32)
                 for name in cls.__dataclass_fields__}
        return cls(**zeros)

    @classmethod
    def from_values(cls, values, mask=None, **extra):
        """Accumulate (N,) per-frame values, keeping frames where `mask` is True."""
        values = jnp.asarray(values, jnp.float32)
        keep = _frame_mask(values, mask)
        count = jnp.sum(keep, dtype=jnp.int32)
        mean = jnp.sum(jnp.where(keep, values, 0.0)) / jnp.maximum(count, 1)
        m2 = jnp.sum(jnp.where(keep, jnp.square(values - mean), 0.0))
        return cls(count=count, mean=mean, m2=m2, **extra)

    def merge(self, other):
        n_a = self.count.astype(jnp.float32)
        n = n_a + other.count.astype(jnp.float32)
        weight = other.count.astype(jnp.float32) / jnp.maximum(n, 1.0)
        delta = other.mean - self.mean
        summed = jax.tree_util.tree_map(jnp.add, self, other)
        return summed.replace(mean=self.mean + delta * weight, m2=self.m2 + other.m2 + delta * delta * n_a * weight)

    def compute(self):
        """{'mean', 'count', 'ci95_low', 'ci95_high'}: see the module docstring."""
        n = self.count.astype(jnp.float32)
        mean = jnp.where(n > 0, self.mean, jnp.nan)
        half = jnp.where(n >= 2, Z_95 * jnp.sqrt(self.m2 / jnp.maximum(n - 1.0, 1.0) / n), jnp.nan)
        return {"mean": mean, "count": self.count, "ci95_low": mean - half, "ci95_high": mean + half}


@flax.struct.dataclass
class FaceFrameStatistic(FrameStatistic):
    """A FrameStatistic over frames with a face; masked-in frames without one are counted in `no_face`."""

    no_face: jnp.ndarray

    @classmethod
    def from_face_values(cls, values, found, mask=None):
        values = jnp.asarray(values, jnp.float32)
        keep = _frame_mask(values, mask)
        found = _frame_mask(values, found)
        return cls.from_values(values, keep & found, no_face=jnp.sum(keep & ~found, dtype=jnp.int32))

    def compute(self):
        """FrameStatistic's figures plus 'no_face', the number of frames left out for lack of a face."""
        return {**super().compute(), "no_face": self.no_face}


@flax.struct.dataclass
class ImageFrameStatistic(FrameStatistic):
    """Base of the image-pair metrics. Images are first mapped from `value_range` (class attribute, set with
    `with_value_range`; the models' [-1, 1] by default) to [0, 1]: PSNR and L1 do not depend on that
    choice, but SSIM's luminance term does, and the literature computes it on [0, 1] (or [0, 255]) images."""

    value_range = DEFAULT_VALUE_RANGE

    @classmethod
    def with_value_range(cls, low, high):
        """This metric for images with values in [low, high] ((0, 1) for float images, (0, 255) for uint8 values)."""
        return flax.struct.dataclass(type(cls.__name__, (cls,), {"value_range": (float(low), float(high))}))

    @classmethod
    def to_unit(cls, images):
        low, high = cls.value_range
        return (jnp.asarray(images, jnp.float32) - low) / (high - low)


@flax.struct.dataclass
class PSNR(ImageFrameStatistic):
    """Per-frame PSNR in dB (capped at 100 dB), see `image_metrics.psnr`."""

    @classmethod
    def from_model_output(cls, predictions, targets, mask=None, **_):
        return cls.from_values(psnr(cls.to_unit(predictions), cls.to_unit(targets), 1.0), mask)


@flax.struct.dataclass
class L1(ImageFrameStatistic):
    """Per-frame mean absolute error of the images mapped to [0, 1], see `image_metrics.l1`."""

    @classmethod
    def from_model_output(cls, predictions, targets, mask=None, **_):
        return cls.from_values(l1(cls.to_unit(predictions), cls.to_unit(targets), 1.0), mask)


@flax.struct.dataclass
class Flicker(ImageFrameStatistic):
    """Per pair of consecutive frames, the L1 of the video's frame-to-frame change against the ground truth's, of
    the images mapped to [0, 1], see `image_metrics.flicker`; averaged over the pairs."""

    @classmethod
    def from_model_output(cls, predictions, next_predictions, targets, next_targets, mask=None, **_):
        return cls.from_values(flicker(cls.to_unit(predictions), cls.to_unit(next_predictions), cls.to_unit(targets),
                                       cls.to_unit(next_targets), 1.0), mask)


@flax.struct.dataclass
class SSIM(ImageFrameStatistic):
    """Per-frame SSIM (Gaussian window, sigma 1.5) of the images mapped to [0, 1], see `image_metrics.ssim`."""

    @classmethod
    def from_model_output(cls, predictions, targets, mask=None, **_):
        return cls.from_values(ssim(cls.to_unit(predictions), cls.to_unit(targets), 1.0), mask)


@flax.struct.dataclass
class ExpressionTransfer(ImageFrameStatistic):
    """Per-frame expression transfer in [-1, 1], see `image_metrics.expression_transfer`; masked-in frames whose
    true expression draws no change are counted in `unchanged`."""

    unchanged: jnp.ndarray

    @classmethod
    def from_model_output(cls, predictions, targets, still_targets, mask=None, **_):
        values, changed = expression_transfer(cls.to_unit(predictions), cls.to_unit(targets),
                                              cls.to_unit(still_targets), 1.0)
        keep = _frame_mask(values, mask)
        return cls.from_values(values, keep & changed, unchanged=jnp.sum(keep & ~changed, dtype=jnp.int32))

    def compute(self):
        """FrameStatistic's figures plus 'unchanged', the frames left out because the expression drew nothing."""
        return {**super().compute(), "unchanged": self.unchanged}


@flax.struct.dataclass
class LPIPS(FrameStatistic):
    """Per-frame LPIPS (VGG16, lpips v0.1) of images in [-1, 1], with the user's LPIPS `lpips_params`."""

    @classmethod
    def from_model_output(cls, predictions, targets, lpips_params, mask=None, **_):
        return cls.from_values(lpips_distance(lpips_params, predictions, targets), mask)


@flax.struct.dataclass
class CSIM(FaceFrameStatistic):
    """Per-frame cosine similarity of identity embeddings; `embedder` names the embedder (set with
    `with_embedder`) and must be reported with the figure."""

    embedder = "unspecified"

    @classmethod
    def with_embedder(cls, name):
        """This metric labelled with the embedder that produces its embeddings (e.g. DlibEmbedder.name)."""
        return flax.struct.dataclass(type(cls.__name__, (cls,), {"embedder": str(name)}))

    @classmethod
    def from_model_output(cls, identity, source_identity, identity_found, mask=None, **_):
        return cls.from_face_values(cosine_similarity(identity, source_identity), identity_found, mask)


@flax.struct.dataclass
class AED(FaceFrameStatistic):
    """Average expression distance: per-frame mean |blendshape difference|, see `pose_expression_metrics`."""

    @classmethod
    def from_model_output(cls, blendshapes, target_blendshapes, blendshapes_found, mask=None, **_):
        return cls.from_face_values(expression_distance(blendshapes, target_blendshapes), blendshapes_found, mask)


@flax.struct.dataclass
class APD(FaceFrameStatistic):
    """Average pose distance: per-frame mean |yaw, pitch, roll difference| in degrees, see `pose_expression_metrics`."""

    @classmethod
    def from_model_output(cls, head_pose, target_head_pose, head_pose_found, mask=None, **_):
        return cls.from_face_values(pose_distance(head_pose, target_head_pose), head_pose_found, mask)

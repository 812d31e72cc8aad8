"""Score one generated video with the paper's metrics, one `clu_metrics` accumulator per metric.

PSNR, SSIM, L1 (on [0, 1]) and LPIPS compare the prediction with a ground-truth target, frame by frame, and
flicker compares its frame-to-frame changes with the target's (ours, for Stage 3: temporal consistency against
the truth); where the task also knows the true frame with the source's own expression, expression transfer
measures how far the prediction moved from that frame towards the target on the pixels the expression changes. CSIM compares each
predicted frame's identity embedding with the source portrait's. AED compares MediaPipe blendshapes with the
expression reference's, APD head poses with the pose reference's (the target where there is one, else the
driving clips). Videos are uint8 RGB arrays (T, H, W, 3); frames without a face in either image of a pair are
counted in the face metrics' `no_face`, never averaged in (see `clu_metrics`).
"""

import jax
import numpy as np

from dex_jax.evaluate.clu_metrics import AED, APD, CSIM, L1, LPIPS, PSNR, SSIM, ExpressionTransfer, Flicker
from dex_jax.evaluate.identity import embed_frames
from dex_jax.face.landmarker import observe_frames
from dex_jax.image import to_float

IMAGE_CHUNK = 8


@jax.jit
def _image_metrics(predictions, targets, mask, lpips_params, still_targets):
    p, t = to_float(predictions), to_float(targets)
    scores = {"psnr": PSNR.from_model_output(predictions=p, targets=t, mask=mask),
              "ssim": SSIM.from_model_output(predictions=p, targets=t, mask=mask),
              "l1": L1.from_model_output(predictions=p, targets=t, mask=mask)}
    if lpips_params is not None:
        scores["lpips"] = LPIPS.from_model_output(predictions=p, targets=t, lpips_params=lpips_params, mask=mask)
    if still_targets is not None:
        scores["expression_transfer"] = ExpressionTransfer.from_model_output(
            predictions=p, targets=t, still_targets=to_float(still_targets), mask=mask)
    return scores


@jax.jit
def _flicker(predictions, next_predictions, targets, next_targets, mask):
    return Flicker.from_model_output(predictions=to_float(predictions), next_predictions=to_float(next_predictions),
                                     targets=to_float(targets), next_targets=to_float(next_targets), mask=mask)


def merge_scores(a, b):
    """Merge two {metric name: accumulator} dicts; a name in only one of them keeps its accumulator."""
    return {name: a[name].merge(b[name]) if name in a and name in b else a.get(name, b.get(name))
            for name in dict.fromkeys([*a, *b])}


class Scorer:
    """The metrics with their tools: an identity `embedder` (named in reports), a MediaPipe `landmarker`, and
    LPIPS params (None leaves LPIPS out)."""

    def __init__(self, embedder, landmarker, lpips_params=None):
        self.embedder = embedder
        self.landmarker = landmarker
        self.lpips_params = lpips_params
        self._csim = CSIM.with_embedder(embedder.name)

    def image_scores(self, predictions, targets, still_targets=None):
        """PSNR, SSIM, L1 (LPIPS, and expression transfer with still targets) accumulators over the frames and
        flicker over the pairs of consecutive frames (none for one frame), computed in fixed-size jitted chunks."""
        n, scores = len(predictions), {}
        for start in range(0, n, IMAGE_CHUNK):
            take = np.minimum(np.arange(start, start + IMAGE_CHUNK), n - 1)
            mask = np.arange(start, start + IMAGE_CHUNK) < n
            still = None if still_targets is None else still_targets[take]
            scores = merge_scores(scores, _image_metrics(predictions[take], targets[take], mask, self.lpips_params,
                                                         still))
        for start in range(0, n - 1, IMAGE_CHUNK):  # pairs (t, t + 1)
            take = np.minimum(np.arange(start, start + IMAGE_CHUNK), n - 2)
            mask = np.arange(start, start + IMAGE_CHUNK) < n - 1
            scores = merge_scores(scores, {"flicker": _flicker(predictions[take], predictions[take + 1], targets[take],
                                                               targets[take + 1], mask)})
        return scores

    def identity_scores(self, predictions, source):
        """CSIM accumulator: each frame's embedding against the source's."""
        frames, found = embed_frames(self.embedder, list(predictions))
        source_embedding, source_found = embed_frames(self.embedder, [source])
        return self._csim.from_model_output(identity=frames, source_identity=source_embedding[0],
                                            identity_found=found & source_found[0])

    def motion_scores(self, predictions, pose_reference, expression_reference):
        """AED and APD accumulators against the expression and pose references (MediaPipe on every frame)."""
        observed = observe_frames(self.landmarker, predictions)
        expression = observe_frames(self.landmarker, expression_reference)
        pose = expression if pose_reference is expression_reference else observe_frames(self.landmarker,
                                                                                         pose_reference)
        return {"aed": AED.from_model_output(blendshapes=observed["blendshapes"],
                                             target_blendshapes=expression["blendshapes"],
                                             blendshapes_found=observed["found"] & expression["found"]),
                "apd": APD.from_model_output(head_pose=observed["head_pose"], target_head_pose=pose["head_pose"],
                                             head_pose_found=observed["found"] & pose["found"])}

    def score(self, predictions, source, pose_reference, expression_reference, target=None, still_target=None):
        """{metric name: accumulator} of one video; the image metrics only with a target, expression transfer only
        with the still target too (the target's pose with the source's expression)."""
        scores = self.image_scores(predictions, target, still_target) if target is not None else {}
        scores["csim"] = self.identity_scores(predictions, source)
        scores.update(self.motion_scores(predictions, pose_reference, expression_reference))
        return scores

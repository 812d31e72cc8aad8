"""`dex-portrait serve`: the browser app (Gradio) on localhost, one model loaded at start.

The page has a source image upload and two ways to animate it:
  pose sliders   yaw, pitch and roll (degrees) and scale turn and scale the source's own pose
                 (`MotionPipeline.posed`), with the expression of an optional driving image (none: the source's
                 own); the result image follows every change of the sliders or images;
  driving video  a driving clip's upload and a button that animates the source with it as `dex-portrait animate`
                 does (relative motion, the largest face, paste-back), showing the result video (H.264 with the
                 clip's sound).
--checkpoint names a model of either engine (its config picks it); without it --engine picks the bundled one
(stage1, the default: data/motion_synth; diffusion: data/animator_synth), as in `dex-portrait animate`. Bad
input (no face, a photo out of the size limits, an unreadable clip) is shown in the page as a one-line error.
The server listens on --host (127.0.0.1) and --port; it prints its address once it accepts connections.
"""

import argparse
import hashlib
import tempfile
import threading
from pathlib import Path

import numpy as np

from dex_jax.arguments import ArgumentParser
from dex_jax.data.h264 import H264Writer
from dex_jax.data.video_io import video_fps
from dex_jax.face.landmarker import FaceLandmarker, check_rgb_uint8
from dex_jax.infer.animate import add_model_arguments, checkpoint_of, drive_clips, sampling_options
from dex_jax.infer.faces import MAX_FACES, check_photo_size, find_faces
from dex_jax.infer.pipeline import DRIVE_CHUNK, load_pipeline

SLIDERS = {"yaw": (-45.0, 45.0, 0.0), "pitch": (-30.0, 30.0, 0.0), "roll": (-30.0, 30.0, 0.0),
           "scale": (0.7, 1.3, 1.0)}  # name: (minimum, maximum, start)
VIDEO_HEIGHT = 280  # pixels of the page the video players take


def parse_args(argv):
    parser = ArgumentParser(prog="dex-portrait serve", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--batch", default=DRIVE_CHUNK, type=int,
                        help="frames per call of the compiled model (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", default=7860, type=int, help="port to listen on (default: %(default)s)")
    return parser.parse_args(argv)


class Animator:
    """The app's model side: a pipeline and its landmarker, one request at a time; the last source's face kept."""

    def __init__(self, pipeline, landmarker):
        self.pipeline, self.landmarker = pipeline, landmarker
        self.lock = threading.Lock()
        self.last = (None, None)  # (source digest, (landmarks, SourceFace))
        self.outputs = Path(tempfile.mkdtemp(prefix="dex-serve-"))

    def face(self, source):
        """(landmarks, SourceFace) of the largest face of a source photo; ValueError without one."""
        check_rgb_uint8(source)
        check_photo_size(source, "source image")
        digest = hashlib.sha1(np.ascontiguousarray(source).tobytes() + str(source.shape).encode()).hexdigest()
        if self.last[0] != digest:
            found = find_faces(self.landmarker, source)
            if not found:
                raise ValueError("no face found in the source image")
            self.last = (digest, (found[0], self.pipeline.source_face(source, found[0])))
        return self.last[1]

    def posed(self, source, yaw, pitch, roll, scale, expression=None):
        """The source with its face turned and scaled by the sliders, with `expression`'s expression (or its own)."""
        with self.lock:
            _, face = self.face(source)
            return self.pipeline.posed(source, face, (yaw, pitch, roll), scale, expression)

    def video(self, source, driving):
        """The path of the source animated by the driving clip at path `driving`: an H.264 mp4 with its sound."""
        with self.lock:
            points, _ = self.face(source)
            frames, _ = drive_clips(self.pipeline, self.landmarker, source, [points], Path(driving))
            path = Path(tempfile.mkstemp(suffix=".mp4", dir=self.outputs)[1])
            with H264Writer(path, video_fps(driving), driving) as writer:
                for _, _, result in frames:
                    writer.write(result)
            return str(path)


def build_app(animator, title):
    """The Gradio Blocks of the app (module docstring), calling `animator`."""
    import gradio as gr

    def shown_errors(function):
        def call(source, *rest):
            if source is None:
                return None
            try:
                return function(source, *rest)
            except ValueError as err:
                raise gr.Error(str(err)) from None
        return call

    with gr.Blocks(title="dex-portrait", analytics_enabled=False) as app:
        gr.Markdown(f"### dex-portrait\n{title}")
        with gr.Row():
            source = gr.Image(label="source", type="numpy", image_mode="RGB", sources=["upload"],
                              elem_id="source")
            expression = gr.Image(label="expression image (optional)", type="numpy", image_mode="RGB",
                                  sources=["upload"], elem_id="expression")
            result = gr.Image(label="result", type="numpy", interactive=False, format="png", elem_id="result")
        with gr.Row():
            sliders = [gr.Slider(low, high, value=start, step=0.01 if name == "scale" else 1.0, label=name,
                                 elem_id=name) for name, (low, high, start) in SLIDERS.items()]
        inputs = [source, *sliders, expression]

        def posed(image, yaw, pitch, roll, scale, expression_image):
            return animator.posed(image, yaw, pitch, roll, scale, expression_image)

        for control in inputs:
            control.change(shown_errors(posed), inputs, result, trigger_mode="always_last")
        with gr.Row():
            driving = gr.Video(label="driving video", sources=["upload"], height=VIDEO_HEIGHT, elem_id="driving")
            animated = gr.Video(label="result video", interactive=False, height=VIDEO_HEIGHT, elem_id="animated")
        button = gr.Button("Animate with the driving video", elem_id="animate")
        button.click(shown_errors(lambda image, clip: None if clip is None else animator.video(image, clip)),
                     [source, driving], animated)
    return app


def main(argv):
    args = parse_args(argv)
    checkpoint = checkpoint_of(args)
    with FaceLandmarker(num_faces=MAX_FACES) as landmarker:
        pipeline = load_pipeline(checkpoint, landmarker, args.batch, **sampling_options(args))
        app = build_app(Animator(pipeline, landmarker), f"model: {pipeline.description}")
        app.queue(default_concurrency_limit=1)
        app.launch(server_name=args.host, server_port=args.port, share=False, quiet=True, ssr_mode=False,
                   prevent_thread_lock=True)
        print(f"serving {checkpoint} on http://{args.host}:{args.port} (Ctrl-C stops)", flush=True)
        try:
            app.block_thread()
        finally:
            app.close()
    return 0

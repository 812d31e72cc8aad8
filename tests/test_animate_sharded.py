"""The Stage-1 engine's batches sharded over local devices: on 2 fake CPU devices (a subprocess, as XLA reads the
device count at start), the bundled model's frames driven through a 'data' mesh equal the unsharded ones and come
back split over both devices; load_pipeline shards only a batch that divides over the devices."""

import json
import os
import subprocess
import sys

import jax

TWO_DEVICES = r"""
import json, sys
import jax
import numpy as np
from dex_jax.compilation_cache import enable_compilation_cache
from dex_jax.data.video_io import read_clip, read_image
from dex_jax.image import to_model
from dex_jax.infer.animate import DEFAULTS
from dex_jax.infer.pipeline import frames_mesh, load_pipeline
from dex_jax.infer.wrapper import MotionWrapper, read_generator

enable_compilation_cache()
model, params, data, description = read_generator(DEFAULTS["checkpoint"])
plain, sharded = MotionWrapper(model, params), MotionWrapper(model, params, mesh=frames_mesh(4))
size, expression_size = plain.image_size, plain.expression_size
frames = read_clip(DEFAULTS["driving"])[0][::15][:4]
poses = np.stack([to_model(f, size) for f in frames])
expressions = np.stack([to_model(f, expression_size) for f in frames])
source = to_model(read_image(DEFAULTS["source"]), size)[None]
outputs = {}
for name, wrapper in (("plain", plain), ("sharded", sharded)):
    encoded = wrapper.encode(source)
    reference = (encoded[-1], wrapper.motion(source, expressions[:1])[1], *wrapper.motion(poses[:1], expressions[:1]))
    images = wrapper.drive(*encoded, poses, expressions, reference)
    outputs[name] = (np.asarray(images), len(images.sharding.device_set))
    absolute = np.asarray(wrapper.drive(*encoded, poses, expressions, None))
    outputs[name + "_absolute"] = (absolute, 0)
pipeline = load_pipeline(DEFAULTS["checkpoint"], batch=4)
report = {"devices": jax.device_count(), "plain_devices": outputs["plain"][1],
          "sharded_devices": outputs["sharded"][1],
          "relative_diff": float(np.abs(outputs["plain"][0] - outputs["sharded"][0]).max()),
          "absolute_diff": float(np.abs(outputs["plain_absolute"][0] - outputs["sharded_absolute"][0]).max()),
          "frames_differ": float(np.abs(outputs["plain"][0][0] - outputs["plain"][0][-1]).mean()),
          "pipeline_devices": len(jax.tree.leaves(pipeline.wrapper.params)[0].sharding.device_set),
          "unsharded_batch": frames_mesh(3) is None}
print(json.dumps(report))
"""


def test_sharded_frames_equal_unsharded_on_two_devices():
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "DEX_JAX_CACHE": jax.config.jax_compilation_cache_dir,
           "XLA_FLAGS": os.environ["XLA_FLAGS"] + " --xla_force_host_platform_device_count=2"}
    done = subprocess.run([sys.executable, "-c", TWO_DEVICES], env=env, capture_output=True, text=True, timeout=600,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["devices"] == 2
    assert report["plain_devices"] == 1 and report["sharded_devices"] == 2
    assert report["frames_differ"] > 1e-3  # the frames are not all alike, so agreeing frame by frame means something
    assert report["relative_diff"] < 1e-4 and report["absolute_diff"] < 1e-4
    assert report["pipeline_devices"] == 2  # load_pipeline's Stage-1 params on both devices
    assert report["unsharded_batch"]  # a batch of 3 does not divide over 2 devices: no mesh


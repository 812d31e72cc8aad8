"""Does a small CNN read SynthHeads expressions from 64-px crops, and what stops it? The study behind
docs/experiments/learnability.md ("It is the pose range, not the FAN"):

    python -m tools.expression_crop_study --poses frontal half no_roll full
    python -m tools.expression_crop_study --poses full --align landmarks
    python -m tools.expression_crop_study --poses full --align landmarks --pool mean

For each pose setting it renders 3,072 training identities and 512 held-out ones (ids from 1,000,000) at 128 px,
each with a random expression (`sample_expression`), crops the face to 64 px (`--align box`: the pipeline's
`expression_crop` of the face box, no added rotation; `landmarks`: the pipeline's crop aligned by the eyes and
mouth, `data.expression_align = "landmarks"`), trains a plain CNN (four stride-2
3x3 convs of 32, 64, 128, 128 channels with ReLU, flattened (`--pool mean`: averaged over positions instead),
a dense layer) on the squared error of the 11
expression values (batch 32, Adam 3e-4, 50 warmup steps, cosine decay, 1,500 steps) and prints the held-out and
training R^2 of each value. About 3 minutes per setting on 2 CPU cores.
"""

import argparse
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dex_jax.compilation_cache import enable_compilation_cache
from dex_jax.data import synth_heads
from dex_jax.data.augment import EXPRESSION_ALIGNMENTS, expression_crop
from dex_jax.data.synth_face import EXPRESSION_NAMES, REGIONS
from dex_jax.face.regions import masked_groups
from dex_jax.image import to_float
from dex_jax.motion.losses import expression_supervision_loss
from dex_jax.nn.layers import conv2d, dense

SIZE, RENDER = 64, 128
POSE_SCALES = {"frontal": (0, 0, 0), "half": (0.5, 0.5, 0.5), "no_roll": (1, 1, 0), "full": (1, 1, 1)}
GROUPS = masked_groups(REGIONS)


class PlainCNN(nn.Module):
    pool: str = "flatten"

    @nn.compact
    def __call__(self, x):
        for width in (32, 64, 128, 128):
            x = nn.relu(conv2d(width, 3, strides=2, padding=1)(x))
        return dense(128)(x.mean(axis=(1, 2)) if self.pool == "mean" else x.reshape(x.shape[0], -1))


def render(n, first_id, seed, scales):
    """n frames of identities first_id.. with poses scaled by `scales` (yaw, pitch, roll): (frames, expressions)."""
    k_pose, k_expr = jax.random.split(jax.random.key(seed))
    poses = synth_heads.sample_pose(k_pose, (n,)) * jnp.array(tuple(scales) + (1, 1, 1), jnp.float32)
    expressions = synth_heads.sample_expression(k_expr, (n,))
    frames = []
    for s in range(0, n, 256):
        f = jax.device_get(synth_heads.render_frames(np.arange(first_id + s, first_id + min(n, s + 256)),
                                                     poses[s:s + 256], expressions[s:s + 256], RENDER, RENDER))
        frames += [(f["image"][i], f["face_box"][i], np.asarray(f["landmarks"][i])) for i in range(len(f["image"]))]
    return frames, np.asarray(expressions, np.float32)


def crops(frames, align):
    return np.stack([to_float(expression_crop(image, box, SIZE, align=align, landmarks=marks, groups=GROUPS))
                     for image, box, marks in frames])


def r2(model, params, images, targets):
    predict = jax.jit(lambda x: model.apply({"params": params}, x)[:, :targets.shape[1]])
    predicted = np.concatenate([np.asarray(predict(images[s:s + 128])) for s in range(0, len(images), 128)])
    return 1 - ((predicted - targets) ** 2).mean(0) / targets.var(0)


def study(scales, align, steps, num_train, pool="flatten"):
    train_frames, y_train = render(num_train, 0, 1, scales)
    test_frames, y_test = render(512, 1_000_000, 2, scales)
    x_train, x_test = crops(train_frames, align), crops(test_frames, align)
    model = PlainCNN(pool)
    params = model.init(jax.random.key(0), x_train[:1])["params"]
    optimizer = optax.adam(optax.warmup_cosine_decay_schedule(0.0, 3e-4, 50, steps, 3e-5))
    opt_state = optimizer.init(params)

    @jax.jit
    def step(params, opt_state, x, y):
        grads = jax.grad(lambda p: expression_supervision_loss(model.apply({"params": p}, x), y))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    rng = np.random.default_rng(0)
    for _ in range(steps):
        rows = rng.integers(0, len(x_train), 32)
        params, opt_state = step(params, opt_state, x_train[rows], y_train[rows])
    return r2(model, params, x_test, y_test), r2(model, params, x_train[:512], y_train[:512])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--poses", nargs="+", choices=sorted(POSE_SCALES), default=["full"])
    parser.add_argument("--align", choices=EXPRESSION_ALIGNMENTS, default="box")
    parser.add_argument("--pool", choices=("flatten", "mean"), default="flatten")
    parser.add_argument("--steps", type=int, default=1_500)
    parser.add_argument("--num-train", type=int, default=3_072)
    args = parser.parse_args()
    if args.steps <= 50 or args.num_train < 32:
        parser.error("--steps must exceed the 50 warmup steps and --num-train be at least one batch of 32")
    enable_compilation_cache()
    for name in args.poses:
        held_out, train = study(POSE_SCALES[name], args.align, args.steps, args.num_train, args.pool)
        held_out_r2 = {value_name: round(float(r2), 2) for value_name, r2 in zip(EXPRESSION_NAMES, held_out)}
        print(json.dumps({"poses": name, "align": args.align, "pool": args.pool, "held_out_r2": held_out_r2,
                          "train_r2_mean": round(float(np.mean(train)), 2)}), flush=True)


if __name__ == "__main__":
    main()

"""A small stand-in stage for the shared-loop tests (compiles in seconds), and a script that trains it.

The model is two convs with logical axis names, trained with Adam on L2 towards the driving frame, with RNG
noise on the input and an EMA, so sharding, checkpoints, resume and the RNG all take part. Steps listed in
`nan_steps` (0-based) get a NaN loss.

As a script: python tests/toy_stage.py WORKDIR STEPS [--mesh d,f,t] [--delay S] [--nan-steps a,b] [--out F.npz]
[--dataset DIR --workers N] [--log] trains under WORKDIR (resuming if it holds a run) and writes the final params
(gathered) to --out; with --dataset, on that tfds dataset's pairs through N grain worker processes.
"""

import argparse
import logging
import sys
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dex_jax.config_loading import load_config  # noqa: E402
from dex_jax.nn.layers import conv2d  # noqa: E402
from dex_jax.train.loop import Stage  # noqa: E402
from dex_jax.train.state import apply_gradients, create_state, ema_update, step_rng  # noqa: E402


class ToyModel(nn.Module):
    @nn.compact
    def __call__(self, x):
        return conv2d(3, 3, name="out")(nn.relu(conv2d(8, 3, name="hidden")(x)))


def toy_config(**overrides):
    """The test train config with 16 px random batches of 8, every step logged, checkpoints every 2 steps."""
    config = load_config("configs/motion_test.py")
    config.data.update(image_size=16, expression_size=16, batch_size=8, num_driving=1)
    config.update(total_steps=4, nonfinite_limit=3)
    config.checkpoint.update(every_steps=2, keep=3, async_save=True)
    config.log.update(every_steps=1, image_every_steps=2, num_images=2)
    for key, value in overrides.items():
        node = config
        *parents, leaf = key.split(".")
        for name in parents:
            node = node[name]
        node[leaf] = value
    return config


def make_toy_stage(config, nan_steps=()):
    model = ToyModel()
    optimizer = optax.adam(config.optimizer.lr)
    size = config.data.image_size

    def init(rng):
        params = model.init(rng, jnp.zeros((1, size, size, 3)))["params"]
        return create_state({"model": params}, {"model": optimizer}, jax.random.fold_in(rng, 1), ("model",))

    def step(state, batch, frozen):
        x = batch["source"] + 0.01 * jax.random.normal(step_rng(state), batch["source"].shape)
        target = batch["driving"][:, 0]

        def objective(params):
            pred = model.apply({"params": params}, x) * frozen["gain"]
            return jnp.mean(jnp.square(pred - target)), pred

        (loss, pred), grads = jax.value_and_grad(objective, has_aux=True)(state.params["model"])
        loss = jnp.where(jnp.isin(state.step, jnp.asarray(nan_steps, jnp.int32)), jnp.nan, loss)
        params, opt_state = apply_gradients(state, "model", grads, optimizer)
        new = state.replace(step=state.step + 1, params={"model": params}, opt_state={"model": opt_state},
                            ema={"model": ema_update(state.ema["model"], params, 0.9)})
        n = config.log.num_images
        return new, {"loss": loss, "grad_norm": optax.tree.norm(grads)}, (x[:n], target[:n], pred[:n])

    return Stage(init=init, step=step, frozen={"gain": jnp.ones(())}, metric_names=("loss", "grad_norm"),
                 preview_names=("input", "target", "prediction"))


class SlowIterator:
    """Wraps an iterator (keeping get_state/set_state) and sleeps `delay` seconds before each batch."""

    def __init__(self, iterator, delay):
        self._iterator, self._delay = iterator, delay

    def __iter__(self):
        return self

    def __next__(self):
        time.sleep(self._delay)
        return next(self._iterator)

    def get_state(self):
        return self._iterator.get_state()

    def set_state(self, state):
        self._iterator.set_state(state)

    def start_prefetch(self):
        self._iterator.start_prefetch()


def flat_params(state):
    """{path: numpy array} of every param and EMA leaf, gathered from every process."""
    from jax.experimental import multihost_utils
    leaves = jax.tree_util.tree_leaves_with_path({"params": state.params, "ema": state.ema})
    return {jax.tree_util.keystr(path): np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
            for path, leaf in leaves}


def main(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir")
    parser.add_argument("steps", type=int)
    parser.add_argument("--mesh", default="-1,1,1")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--nan-steps", default="")
    parser.add_argument("--out", default="")
    parser.add_argument("--dataset", default="")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--log", action="store_true", help="print the loop's INFO log lines")
    args = parser.parse_args(argv)
    if args.log:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        logging.getLogger("dex_jax").addHandler(handler)
        logging.getLogger("dex_jax").setLevel(logging.INFO)

    from dex_jax.train.distributed import initialize_from_environment
    from dex_jax.train.input import make_iterator
    from dex_jax.train.loop import train
    initialize_from_environment()
    data, fsdp, tensor = (int(v) for v in args.mesh.split(","))
    config = toy_config(total_steps=args.steps)
    config.mesh.update(data=data, fsdp=fsdp, tensor=tensor)
    if args.dataset:
        config.data.update(source="tfds", dataset_dir=args.dataset, worker_count=args.workers)
    nan_steps = tuple(int(s) for s in args.nan_steps.split(",") if s)
    with make_iterator(config.data) as batches:
        state, step = train(config, args.workdir, make_toy_stage(config, nan_steps), SlowIterator(batches, args.delay))
    params = flat_params(state)
    if args.out and jax.process_index() == 0:
        np.savez(args.out, step=step, **params)


if __name__ == "__main__":
    main(sys.argv[1:])

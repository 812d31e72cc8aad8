"""Orbax checkpoints of the train state and the grain iterator: keep the last N, async save, resume with fallback.

A checkpoint `DIR/<step>/` holds two items: `state` (the whole TrainState: params, optimizer states, EMA, step,
RNG, non-finite counters; sharded arrays, restored straight into their shardings) and `data` (the input
iterator's position, one JSON per process through grain's orbax handler), when the iterator has one.
Resume tries the newest step first; a step that fails to restore is skipped with a warning and the previous
one is tried (the skipped ones are then renamed `<step>.corrupt`, so new saves can take their step numbers).
Readers of a finished run (export, warm start, evaluate, animate) find its checkpoints and config.json here too.
"""

import json
import logging
from pathlib import Path

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

log = logging.getLogger(__name__)


def _has_state(iterator):
    return hasattr(iterator, "get_state") and hasattr(iterator, "set_state")


class Checkpointer:
    """Saves every `every_steps` steps (or when forced), keeps the newest `keep`, asynchronously if asked."""

    def __init__(self, directory, keep=3, every_steps=1000, async_save=True):
        self.directory = Path(directory).absolute()
        self.every_steps = every_steps
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save, create=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "data"))

    def steps(self):
        return sorted(self._manager.all_steps())

    def due(self, step):
        """True when `save` at `step` writes without being forced."""
        return bool(self.every_steps) and step % self.every_steps == 0

    def save(self, step, state, data_iterator=None, force=False):
        """Start saving `state` (and the iterator position) at `step` if due or forced; True if it saves."""
        if not (force or self.due(step)):
            return False
        items = {"state": ocp.args.StandardSave(state)}
        if _has_state(data_iterator):
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        return self._manager.save(step, args=ocp.args.Composite(**items), force=True)

    def restore(self, abstract_state, data_iterator=None):
        """(state, step) from the newest intact checkpoint, or None when there is none to restore.

        abstract_state: ShapeDtypeStructs carrying the target shardings. Newer checkpoints that fail to restore
        are set aside as `<step>.corrupt` with a warning once an older one restores; if every one fails, nothing
        is renamed and ValueError names each failure.
        """
        failures = []
        for step in reversed(self.steps()):
            try:
                state = self._restore_step(step, abstract_state, data_iterator)
            except Exception as err:  # noqa: BLE001 - any failure to read means this checkpoint is unusable
                reason = (str(err).splitlines() or [type(err).__name__])[0]
                log.warning("checkpoint %s/%d is corrupt (%s); falling back to the previous one",
                            self.directory, step, reason[:200])
                failures.append((step, reason))
                continue
            for failed, _ in failures:
                self._set_aside(failed)
            return state, step
        if failures:
            listed = "; ".join(f"step {step}: {reason[:120]}" for step, reason in failures)
            raise ValueError(f"no intact checkpoint in {self.directory} ({listed})")
        return None

    def _restore_step(self, step, abstract_state, data_iterator):
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        has_data = (self.directory / str(step) / "data").is_dir()
        if has_data and _has_state(data_iterator):
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        return self._manager.restore(step, args=ocp.args.Composite(**items))["state"]

    def _set_aside(self, step):
        if jax.process_index() == 0:
            source = self.directory / str(step)
            source.rename(source.with_name(f"{step}.corrupt"))
        multihost_utils.sync_global_devices(f"dex_jax_set_aside_{step}")
        self._manager.reload()

    def wait(self):
        """Block until an asynchronous save has been written."""
        self._manager.wait_until_finished()

    def close(self):
        self._manager.wait_until_finished()
        self._manager.close()


def read_checkpoint(directory, device=None):
    """The newest intact checkpoint's train state under `directory` as a nested dict of arrays on one device.

    For tools that read a trained model (evaluation, animation), whatever mesh or process count wrote it.
    ValueError when the folder is missing, holds no checkpoint, or none of its checkpoints reads.
    """
    directory = Path(directory).absolute()
    if not directory.is_dir():
        raise ValueError(f"no checkpoint folder at {directory}")
    manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(read_only=True),
                                    item_names=("state",), item_handlers={"state": ocp.StandardCheckpointHandler()})
    steps = sorted(manager.all_steps(), reverse=True)
    if not steps:
        raise ValueError(f"{directory} holds no checkpoint")
    placement = jax.sharding.SingleDeviceSharding(device or jax.local_devices()[0])
    failures = []
    for step in steps:
        try:
            metadata = manager.item_metadata(step)["state"]
            target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=placement), metadata)
            return manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]
        except Exception as err:  # noqa: BLE001 - any failure to read means this checkpoint is unusable
            failures.append(f"step {step}: {(str(err).splitlines() or [type(err).__name__])[0][:120]}")
    raise ValueError(f"no intact checkpoint in {directory} ({'; '.join(failures)})")


def generator_params(state):
    """(the generator's params, True when they are the EMA ones) of a train state dict: EMA where present."""
    ema = state.get("ema") or {}
    if "generator" in ema:
        return ema["generator"], True
    return state["params"]["generator"], False


def _tuples(tree):
    if isinstance(tree, dict):
        return {key: _tuples(value) for key, value in tree.items()}
    if isinstance(tree, list):
        return tuple(_tuples(value) for value in tree)
    return tree


def checkpoint_paths(path):
    """(checkpoints folder, config.json) of a training workdir or of its checkpoints/ folder."""
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"checkpoint not found: {path}")
    folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    config = folder.parent / "config.json"
    if not config.is_file():
        raise ValueError(f"no config.json beside the checkpoints in {folder} (a training workdir holds both)")
    return folder, config


def read_train_config(config_path):
    """The training run's config (config.json) as a ConfigDict, lists back to tuples."""
    return ml_collections.ConfigDict(_tuples(json.loads(Path(config_path).read_text())))

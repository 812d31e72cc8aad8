"""`dex-portrait train --config configs/NAME.py[:ARG] --workdir DIR [--config.a.b=value ...]`.

The workdir keeps config.json, checkpoints/, tensorboard/ and images/. Running again on the same workdir
resumes; a workdir that holds a run of a different config is refused (only total_steps, nonfinite_limit, the
log and checkpoint fields, the dataset's location and the data-loading speed fields may change between runs).
"""

import argparse
import importlib
import json
import logging
import shutil
import sys
from pathlib import Path

import jax

from dex_jax.config_loading import ConfigError, apply_overrides, load_config
from dex_jax.train import loop
from dex_jax.train.distributed import initialize_from_environment
from dex_jax.train.input import make_iterator
from dex_jax.train.nonfinite import NonFiniteError

STAGES = ("stage1", "expression")
MAY_CHANGE = ("total_steps", "nonfinite_limit", "log.", "checkpoint.", "data.dataset_dir", "data.worker_count",
              "data.worker_buffer_size")


def parse_args(argv):
    """(config spec, workdir, {dotted key: value text}) from the command line."""
    parser = argparse.ArgumentParser(prog="dex-portrait train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="configs/NAME.py[:ARG]")
    parser.add_argument("--workdir", required=True, help="folder for checkpoints, logs and images")
    args, rest = parser.parse_known_args(argv)
    overrides, i = {}, 0
    while i < len(rest):
        item = rest[i]
        if not item.startswith("--config."):
            raise ConfigError(f"unexpected argument {item!r}: overrides look like --config.a.b=value")
        key, sep, value = item[len("--config."):].partition("=")
        if not sep:
            if i + 1 >= len(rest):
                raise ConfigError(f"{item} needs a value")
            i, value = i + 1, rest[i + 1]
        overrides[key] = value
        i += 1
    return args.config, Path(args.workdir), overrides


def _flatten(tree, prefix=""):
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_workdir(config, workdir):
    """Store the config in a new workdir; in an existing one, ValueError if it holds another config's run."""
    path = workdir / "config.json"
    current = _flatten(json.loads(config.to_json()))
    if path.exists():
        stored = _flatten(json.loads(path.read_text()))
        for key in sorted(set(current) | set(stored)):
            if key.startswith(MAY_CHANGE) or current.get(key) == stored.get(key):
                continue
            raise ValueError(f"{workdir} holds a run of another config ({key}: {stored.get(key, '<absent>')!r} "
                             f"there, {current.get(key, '<absent>')!r} now); use a new --workdir")
    elif jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
        path.write_text(config.to_json(indent=2))


def main(argv):
    spec, workdir, overrides = parse_args(argv)
    config = apply_overrides(load_config(spec), overrides)
    if config.get("stage") not in STAGES:
        raise ConfigError(f"config.stage must be one of {STAGES}, got {config.get('stage')!r}")
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("dex_jax").setLevel(logging.INFO)
    initialize_from_environment()
    stage_module = importlib.import_module(f"dex_jax.train.stages.{config.stage}")
    stage_module.check_config(config)
    data = make_iterator(config.data)
    stage = stage_module.make_stage(config)  # before the workdir exists: a bad loss setting leaves nothing behind
    created = not workdir.exists()
    check_workdir(config, workdir)
    try:
        loop.train(config, workdir, stage, data)
    except ValueError:  # a setting train refused (mesh, batch, init_from): leave no run that was never trained
        if created and jax.process_index() == 0 and not any((workdir / "checkpoints").glob("[0-9]*")):
            shutil.rmtree(workdir, ignore_errors=True)
        raise
    except NonFiniteError as err:
        print(f"dex-portrait train: {err}", file=sys.stderr)
        return 1
    return 0

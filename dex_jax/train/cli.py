"""dex-portrait train --config CONFIG[:VARIANT] --workdir DIR [--config.a.b=value ...]

CONFIG is a config file (a Python file whose get_config(VARIANT) returns a ConfigDict): a path with a folder
part (configs/motion_synth.py, ./mine.py) is relative to the working directory; a bare name (motion_synth or
motion_synth.py) names a file of this checkout's configs/ folder, listed below with their variants.

Overrides, parsed by ml_collections' config_flags and typed by the field they set:
  --config.a.b=value or --config.a.b value     numbers, strings
  --config.a.b=true|false, --config.a.b, --noconfig.a.b     booleans
  --config.a.b="(1, 2)", or --config.a.b repeated            tuples
  --config.a.b="{'k': 1.0}"                    a whole sub-config, replaced
An unknown key, or a value its field's type does not take, is an error.

Datasets: a config names a built dataset (`dex-portrait data build`) as builder/config/version under the tfds data
folder, $DEX_DATA_DIR, else $TFDS_DATA_DIR, else ~/tensorflow_datasets, the folder `data build` writes to; or
--config.data.dataset_dir=DIR names a dataset folder itself. A config whose losses read labels its dataset does
not record (poses, expressions) is refused before training, naming every such field.

The workdir keeps config.json, checkpoints/, tensorboard/ and images/. Running again on the same workdir
resumes; a workdir that holds a run of a different config is refused (only total_steps, nonfinite_limit, the
log and checkpoint fields, the dataset's location, the data-loading speed fields and the pretrained files, read
only when a run starts, may change between runs).
"""

import argparse
import importlib
import json
import logging
import shutil
import sys
from pathlib import Path

import jax

from dex_jax.arguments import ArgumentParser
from dex_jax.config_loading import CONFIG_DIR, ConfigError, apply_overrides, load_config, load_module
from dex_jax.train import loop
from dex_jax.train.distributed import initialize_from_environment
from dex_jax.train.input import check_fields, make_iterator
from dex_jax.train.nonfinite import NonFiniteError

STAGES = ("stage1", "expression", "pose", "reconstruction", "animator", "temporal")
MAY_CHANGE = ("total_steps", "nonfinite_limit", "log.", "checkpoint.", "data.dataset_dir", "data.worker_count",
              "data.worker_buffer_size", "pretrained.", "allow_random_init")  # the last two: read at the start only


def _variant_names(names):
    """Variant names, runs of consecutive numbers shortened: 1, 2, 3, x -> '1..3,x'."""
    numbers = sorted(int(name) for name in names if name.isdigit())
    runs = []
    for number in numbers:
        if runs and number == runs[-1][1] + 1:
            runs[-1][1] = number
        else:
            runs.append([number, number])
    return ",".join([f"{a}..{b}" if b > a else str(a) for a, b in runs] + [n for n in names if not n.isdigit()])


def config_listing():
    """The configs of CONFIG_DIR, each with its variants and its docstring's first line."""
    lines = [f"configs ({CONFIG_DIR}):"]
    for path in sorted(CONFIG_DIR.glob("*.py")):
        try:
            module = load_module(path)
        except ConfigError as err:
            lines.append(f"  {path.name}\n      does not load: {err}")
            continue
        variants = getattr(module, "VARIANTS", None)
        summary = (module.__doc__ or "").strip().split("\n", 1)[0]
        lines.append(f"  {path.name}{':' + _variant_names(list(variants)) if variants else ''}\n      {summary}")
    return "\n".join(lines)


class _HelpWithConfigs(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        parser.epilog = config_listing()
        parser.print_help()
        parser.exit()


def parse_args(argv):
    """(config spec, workdir, override arguments) from the command line (module docstring)."""
    parser = ArgumentParser(prog="dex-portrait train", description=__doc__, add_help=False,
                            allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-h", "--help", action=_HelpWithConfigs, nargs=0, help="show this help and the configs")
    parser.add_argument("--config", required=True, metavar="CONFIG[:VARIANT]", help="the config file, see above")
    parser.add_argument("--workdir", required=True, type=Path, help="folder for checkpoints, logs and images")
    args, overrides = parser.parse_known_args(argv)
    return args.config, args.workdir, overrides


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
    check_fields(config)
    stage = stage_module.make_stage(config)  # before the workdir exists: a bad loss setting leaves nothing behind
    created = not workdir.exists()
    check_workdir(config, workdir)
    try:
        with make_iterator(config.data) as data:
            loop.train(config, workdir, stage, data)
    except ValueError:  # a setting train refused (mesh, batch, init_from): leave no run that was never trained
        if created and jax.process_index() == 0 and not any((workdir / "checkpoints").glob("[0-9]*")):
            shutil.rmtree(workdir, ignore_errors=True)
        raise
    except NonFiniteError as err:
        print(f"dex-portrait train: {err}", file=sys.stderr)
        return 1
    return 0

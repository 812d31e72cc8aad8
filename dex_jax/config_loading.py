"""Config files and `--config.a.b=value` overrides, with one-line errors.

A config file is a Python file whose `get_config(arg)` returns a `ml_collections.ConfigDict`; a file with named
variants lists them in a module-level `VARIANTS` mapping. `load_config("PATH[:ARG]")` names one: a path with a
folder part (`configs/motion_synth.py`, `./mine.py`, `/abs/mine.py`) is taken relative to the working directory;
a bare name (`motion_synth.py` or `motion_synth`) names a file of this checkout's `configs/` folder
(`CONFIG_DIR`). Config files load each other with `load_config_file(Path(__file__).parent / "other.py", arg)`,
so they load from any working directory.

Overrides are parsed by ml_collections' `config_flags` (absl flags, a fresh `FlagValues` per call), typed by the
field they set: `--config.a.b=value` and `--config.a.b value` for numbers, strings, tuples (`"(1, 2)"` or the
flag repeated) and dicts (`"{'k': 1.0}"`, replacing the whole sub-config); booleans as `--config.a.b=true|false`,
`--config.a.b` or `--noconfig.a.b`.
"""

import importlib.util
import inspect
from pathlib import Path

import ml_collections
from absl import flags
from ml_collections.config_flags import config_flags, config_path

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


class ConfigError(ValueError):
    """A config file, argument or override that does not exist, does not load or does not parse."""


def _one_line(err):
    return f"{type(err).__name__}: {' '.join(str(err).split())}"


def resolve_config(spec):
    """`PATH[:ARG]` -> (config file, ARG or None), by the rules in the module docstring."""
    path_text, sep, arg = spec.rpartition(":")
    if not sep or "/" in arg:
        path_text, arg = spec, None
    if "/" in path_text:
        return Path(path_text), arg or None
    return CONFIG_DIR / (path_text if path_text.endswith(".py") else f"{path_text}.py"), arg or None


def load_config(spec):
    """The ConfigDict that `PATH[:ARG]` names (module docstring); ConfigError if it cannot be loaded."""
    path, arg = resolve_config(spec)
    if not path.is_file() and not path.is_absolute() and (CONFIG_DIR / path.name).is_file():
        raise ConfigError(f"config file not found: {path} (relative to the working directory); the bare name "
                          f"{path.stem} names {CONFIG_DIR / path.name}")
    return load_config_file(path, arg)


def load_module(path):
    """A config file executed as a fresh module; ConfigError naming the file if it is missing or fails to run."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    module_spec = importlib.util.spec_from_file_location(f"dex_config_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure of a config file is that file's one-line error
        raise ConfigError(f"config file {path} does not load: {_one_line(err)}") from None
    if not callable(getattr(module, "get_config", None)):
        raise ConfigError(f"config file {path} defines no get_config(arg)")
    return module


def load_config_file(path, arg=None):
    """`get_config(arg)` (or `get_config()`) of the config file at `path`, checked to be a ConfigDict."""
    module = load_module(path)
    variants = getattr(module, "VARIANTS", None)
    if arg is not None:
        if variants is not None and arg not in variants:
            raise ConfigError(f"config file {path} has no variant {arg!r}; it has {', '.join(variants)}")
        if not inspect.signature(module.get_config).parameters:
            raise ConfigError(f"config file {path} takes no variant, got {arg!r}")
    try:
        config = module.get_config() if arg is None else module.get_config(arg)
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 - see load_module
        call = "get_config()" if arg is None else f"get_config({arg!r})"
        raise ConfigError(f"config file {path}: {call} failed: {_one_line(err)}") from None
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"config file {path}: get_config returned a {type(config).__name__}, not a ConfigDict")
    return config


def _override_keys(args):
    """The dotted keys named by `--config.KEY[=...]` / `--noconfig.KEY` arguments, in order."""
    keys = []
    for arg in args:
        name = arg.lstrip("-").split("=", 1)[0]
        for prefix in ("config.", "noconfig."):
            if arg.startswith("-") and name.startswith(prefix):
                keys.append(name[len(prefix):])
    return keys


def apply_overrides(config, args):
    """Apply the override arguments `args` (module docstring) to `config` in place and return it.

    ConfigError (one line) for an unknown key, naming it; for a value its field's type does not take, naming the
    key and the type; for any argument that is not an override.
    """
    keys = _override_keys(args)
    for key in keys:
        try:
            config_path.get_type(key, config)
        except (KeyError, AttributeError, IndexError, ValueError):
            raise ConfigError(f"unknown config key: {key}") from None
    argv = ["dex-portrait", *args]
    flag_values = flags.FlagValues()
    try:
        config_flags.DEFINE_config_dict("config", config, flag_values=flag_values, sys_argv=argv,
                                        lock_config=False)
        rest = flag_values(argv)[1:]
    except flags.IllegalFlagValueError as err:
        text = str(err).removeprefix("flag ")
        key = max((k for k in keys if text.startswith(f"--config.{k}=")), key=len, default=None)
        if key is None:
            raise ConfigError(" ".join(text.split())) from None
        expected = config_path.get_type(key, config).__name__
        raise ConfigError(f"config.{key} expects {expected}: {' '.join(text.split())}") from None
    except flags.UnrecognizedFlagError as err:
        raise ConfigError(f"unexpected argument --{err.flagname}: overrides look like --config.a.b=value") from None
    except flags.Error as err:
        raise ConfigError(" ".join(str(err).split())) from None
    if rest:
        raise ConfigError(f"unexpected argument {rest[0]!r}: overrides look like --config.a.b=value (booleans: "
                          "--config.a.b=true|false)")
    return config

"""Load `configs/NAME.py[:ARG]` files and apply dotted overrides, with one-line errors."""

import ast
import importlib.util
from pathlib import Path

import ml_collections

REPO = Path(__file__).resolve().parents[1]


class ConfigError(ValueError):
    """A config file, argument or override that does not exist or does not parse."""


def load_config(spec: str) -> ml_collections.ConfigDict:
    """`configs/motion_model.py:tiny` -> the ConfigDict that file's `get_config('tiny')` returns.

    Relative paths resolve against the working directory first, then the repository root.
    """
    path_text, _, arg = spec.partition(":")
    path = Path(path_text)
    if not path.exists() and not path.is_absolute():
        path = REPO / path_text
    if not path.is_file():
        raise ConfigError(f"config file not found: {path_text}")
    module_spec = importlib.util.spec_from_file_location(f"dex_config_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"{path_text} defines no get_config(arg)")
    try:
        config = module.get_config(arg) if arg else module.get_config()
    except KeyError as err:
        raise ConfigError(f"{path_text} has no variant {arg!r}: {err}") from None
    return config


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict[str, str]) -> ml_collections.ConfigDict:
    """Set `a.b.c=value` pairs; values parse as Python literals, else stay strings. Unknown keys fail."""
    for dotted, text in overrides.items():
        *parents, leaf = dotted.split(".")
        node = config
        for i, key in enumerate(parents):
            if key not in node:
                raise ConfigError(f"unknown config key: {'.'.join(parents[: i + 1])}")
            node = node[key]
        if leaf not in node:
            raise ConfigError(f"unknown config key: {dotted}")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        try:
            node[leaf] = value
        except TypeError as err:
            raise ConfigError(f"bad value for {dotted}: {err}") from None
    return config

